"""`EngineReplica`: one engine replica in simulated time — scheduler + block ledger +
perf model, in two modes that give the same results.

- Step mode (`step(now_s)`): one engine iteration per call, the real-time twin's driver
  and the simulator's reference. A step's state change applies when it starts; its tokens
  become visible at `end_s`.
- Fast mode (`advance_to(t_s)`): runs every step that starts before `t_s`, but replaces
  runs of identical pure-decode steps by one closed-form stretch, and logs first-token and
  completion events (`events`) for the caller to deliver in time order.

The replica knows nothing of other replicas or of wall clocks: time arrives as arguments.
"""

from __future__ import annotations

import math
from bisect import bisect_left

from selfserve.engine.config import EngineConfig, EngineConfigError, RequestTooLarge
from selfserve.engine.outputs import EngineStats, StepOutput
from selfserve.engine.request import ABORTED, RUNNING, WAITING, EngineRequest
from selfserve.engine.scheduler import Batch, Scheduler
from selfserve.engine.stretch import (
    DecodePlan,
    decode_coefficients,
    new_blocks,
    sorted_if_small,
    steps_within_kv,
)
from selfserve.perf.model import PerfModel

FIRST_TOKEN = 0
FINISHED = 1
Requests = list[EngineRequest]


class EngineReplica:
    """One replica: `add` requests, then drive it with `step` or `advance_to`."""

    def __init__(
        self, perf: PerfModel, config: EngineConfig | None = None, *, name: str = "replica"
    ) -> None:
        self.perf = perf
        self.config = config = config or EngineConfig()
        self.name = name
        if config.num_gpu_blocks_override is not None:
            num_blocks = config.num_gpu_blocks_override
            kv_tokens = num_blocks * config.block_size
        else:
            kv_tokens = int(perf.kv_capacity_tokens(config.gpu_memory_utilization))
            num_blocks = kv_tokens // config.block_size
        if num_blocks < 1:
            raise EngineConfigError(
                f"{name}: no room for a KV cache (capacity {kv_tokens} tokens at "
                f"gpu_memory_utilization={config.gpu_memory_utilization}); "
                "use a larger card, more tensor parallelism or FP8 weights"
            )
        self.num_blocks = num_blocks
        self.kv_capacity_tokens = num_blocks * config.block_size
        self.max_model_len = int(perf.max_model_len)
        self.has_encoder = perf.encoder_time_s(1024) > 0.0
        self.scheduler = Scheduler(config, num_blocks, self.has_encoder)
        self.requests: dict[str, EngineRequest] = {}  # admitted and not yet finished
        self.clock_s = 0.0  # when the next step may start
        self.events: list[tuple[float, int, EngineRequest]] = []  # fast mode only
        self.num_steps = 0
        self.busy_s = 0.0
        self.energy_j = 0.0
        self._stable_decode = False  # the next step decodes the running batch unchanged
        self._plan: DecodePlan | None = None  # a lazy run of such steps (fast mode)
        self._decode_coeffs: dict[int, tuple[float, float, float, float]] = {}
        self.next_change_s = math.inf  # see `_sync_next_change`

    # ---- requests ---------------------------------------------------------------------
    def check_fits(self, req: EngineRequest) -> None:
        """Raise `RequestTooLarge` if `req` can never run here (context or KV).

        `req` must be `prepare`d for this replica's block size (`add` does it).
        """
        total = req.total_prompt_tokens + max(1, req.output_tokens)
        if total > self.max_model_len:
            raise RequestTooLarge(
                req.request_id,
                f"prompt ({req.total_prompt_tokens}) + output ({req.output_tokens}) = "
                f"{total} tokens exceeds {self.name}'s max_model_len {self.max_model_len}",
            )
        config = self.config
        if not config.enable_chunked_prefill and total - 1 > config.max_num_batched_tokens:
            # unchunked, a prompt (or a preempted request's recompute) runs in one step
            raise RequestTooLarge(
                req.request_id,
                f"{total - 1} tokens to prefill exceed {self.name}'s max_num_batched_tokens "
                f"{config.max_num_batched_tokens} with chunked prefill disabled",
            )
        needed = req.blocks_for(total - 1, self.config.block_size)
        if needed > self.num_blocks:
            raise RequestTooLarge(
                req.request_id,
                f"needs {needed} KV blocks ({total - 1} tokens) but {self.name} holds "
                f"{self.num_blocks} blocks ({self.kv_capacity_tokens} tokens)",
            )

    def add(self, req: EngineRequest, now_s: float) -> None:
        """Queue `req` (arrived at `now_s`); raises `RequestTooLarge` if it can never fit."""
        if req.request_id in self.requests:
            raise ValueError(f"request {req.request_id!r} is already on {self.name}")
        if req.output_tokens < 1:
            req.output_tokens = 1  # vLLM always samples at least one token
        req.prepare(self.config.block_size)
        self.check_fits(req)
        if self._plan is not None:
            self.materialize(now_s)
        req.status = WAITING
        sched = self.scheduler
        if not sched.running and not sched.waiting and self.clock_s < now_s:
            self.clock_s = now_s
        sched.waiting.append(req)
        self.requests[req.request_id] = req
        self._stable_decode = False
        self.next_change_s = self.clock_s  # busy; `materialize` consumed any plan

    def abort(self, request_id: str) -> bool:
        """Drop a request wherever it is; returns False if it is not here."""
        if request_id not in self.requests:
            return False
        if self._plan is not None:
            self.materialize(self._plan.start_s)  # drop the lazy plan; nothing applied
        req = self.requests.pop(request_id)
        sched = self.scheduler
        if req.status == RUNNING:
            sched.ledger.release_units(req.held_units, req.plain_blocks)
            sched.running.remove(req)
        else:
            sched.waiting.remove(req)
        req.held_units = []
        req.plain_blocks = req.held_blocks = 0
        req.status = ABORTED
        self._stable_decode = False
        self._sync_next_change()
        return True

    @property
    def is_idle(self) -> bool:
        return not self.scheduler.running and not self.scheduler.waiting

    # ---- step mode --------------------------------------------------------------------
    def step(self, now_s: float) -> StepOutput | None:
        """Run one iteration starting at max(now_s, end of the previous one); None if idle."""
        self.materialize(now_s)
        start_s = max(now_s, self.clock_s)
        sched = self.scheduler
        if not sched.running and not sched.waiting:
            self._sync_next_change()
            return None
        batch, first, emitted, finished, end_s, energy_j = self._run_step(start_s)
        self._sync_next_change()
        return StepOutput(
            start_s=start_s,
            end_s=end_s,
            first_token_ids=tuple(r.request_id for r in first),
            token_ids=tuple(r.request_id for r in emitted),
            finished_ids=tuple(r.request_id for r in finished),
            preempted_ids=tuple(r.request_id for r in batch.preempted),
            num_prefill_tokens=sum(n for n, _ in batch.prefill),
            num_decode_tokens=len(batch.decode_contexts),
            energy_j=energy_j,
        )

    def _run_step(self, start_s: float) -> tuple[Batch, Requests, Requests, Requests, float, float]:
        """Schedule and apply one step starting at `start_s` (something runs or waits):
        (batch, first-token, token-emitting and finished requests, end_s, energy_j)."""
        sched = self.scheduler
        batch = sched.schedule()
        if batch.scheduled:
            time_s, energy_j = self.perf.step_cost(batch.prefill, batch.decode_contexts)
            for kind, tokens in batch.encoder_tokens:
                time_s += self.perf.encoder_time_s(tokens, kind)
        else:  # everything running was preempted; admission happens next step
            time_s = energy_j = 0.0
        end_s = start_s + time_s
        first, emitted, finished = sched.update(batch, end_s)
        for req in finished:
            del self.requests[req.request_id]
        self.clock_s = end_s
        self.num_steps += 1
        self.busy_s += time_s
        self.energy_j += energy_j
        return batch, first, emitted, finished, end_s, energy_j

    # ---- fast mode --------------------------------------------------------------------
    def advance_to(self, t_s: float) -> None:
        """Bring the replica to `t_s`: every step that starts before `t_s` takes effect,
        except that a decode plan still running at `t_s` stays lazy (see `materialize`).
        First-token and completion events are appended to `self.events`."""
        sched = self.scheduler
        events = self.events
        while True:
            plan = self._plan
            if plan is not None:
                if plan.last_start_s >= t_s:
                    # inside the plan: nothing observable changes before t_s
                    self.next_change_s = plan.last_start_s
                    return
                self._apply_plan(plan.max_steps)
                continue
            if not (sched.running or sched.waiting):
                self.next_change_s = math.inf
                return
            if self.clock_s >= t_s:
                self.next_change_s = self.clock_s
                return
            if self._stable_decode and self._start_plan():
                continue
            batch, first, _, finished, end_s, _ = self._run_step(self.clock_s)
            for req in first:
                events.append((end_s, FIRST_TOKEN, req))
            for req in finished:
                events.append((end_s, FINISHED, req))
            self._stable_decode = self._next_step_is_pure_decode(batch, finished)

    def _sync_next_change(self) -> None:
        """Set `next_change_s`: `advance_to(t)` does work only for t > it (inf when idle).

        A plain attribute, not a property: the simulator reads it for every replica at
        every arrival. Every public method that changes the replica's state sets it.
        """
        plan = self._plan
        if plan is not None:
            self.next_change_s = plan.last_start_s
            return
        sched = self.scheduler
        self.next_change_s = self.clock_s if (sched.running or sched.waiting) else math.inf

    def materialize(self, t_s: float) -> None:
        """Apply the steps of a pending decode plan that start before `t_s`."""
        plan = self._plan
        if plan is not None:
            self._apply_plan(plan.steps_started_before(t_s, self.perf))
            self._sync_next_change()

    def kv_usage_at(self, t_s: float) -> float:
        """KV usage after the steps that start before `t_s` (without applying them)."""
        plan = self._plan
        ledger = self.scheduler.ledger
        if plan is None:
            return 1.0 - ledger.num_free_blocks / ledger.num_blocks  # `ledger.usage`, inlined
        if t_s > plan.last_start_s:
            used = plan.used_blocks + plan.blocks_at_end
        elif t_s <= plan.start_s:
            used = plan.used_blocks
        else:
            steps = plan.steps_started_before(t_s, self.perf)
            used = plan.used_blocks
            if steps:
                used += plan.new_blocks(steps, self.config.block_size)
        return 1.0 - (ledger.num_blocks - used) / ledger.num_blocks  # as `ledger.usage`

    def _next_step_is_pure_decode(self, batch: Batch, finished: list[EngineRequest]) -> bool:
        """Will the next step decode exactly the running batch, admitting nothing?

        True when this step already was such a step (a waiting head that failed to fit
        keeps failing while decode only consumes KV), or when nothing waits and every
        running request is past its prefill.
        """
        sched = self.scheduler
        running = sched.running
        if not running or len(running) > self.config.max_num_batched_tokens:
            return False
        if (
            not batch.prefill
            and not batch.preempted
            and not finished
            and not batch.num_admitted
            and len(batch.scheduled) == len(running)
        ):
            return True
        if sched.waiting:
            return False
        if len(batch.scheduled) - len(finished) == len(running):  # every one ran this step
            return not sched.num_mid_prefill
        for req in running:
            if (
                req.num_emitted_tokens == 0
                or req.num_computed_tokens != req.prompt_total + req.num_emitted_tokens - 1
            ):
                return False
        return True

    def _start_plan(self) -> bool:
        """Plan the decode run from the current state; False if not even one step fits."""
        sched = self.scheduler
        running = sched.running
        block_size = self.config.block_size
        to_finish = 1 << 62
        context = 0
        slacks: list[int] = []
        slacks_append = slacks.append
        for r in running:
            left = r.output_tokens - r.num_emitted_tokens
            if left < to_finish:
                to_finish = left
            computed = r.num_computed_tokens
            context += computed
            slacks_append(
                (r.held_blocks - r.units_end_blocks) * block_size - (computed - r.units_end_tokens)
            )
        ledger = sched.ledger
        max_steps = to_finish
        ordered = sorted_if_small(slacks, block_size)
        if ordered is not None:  # DecodePlan.new_blocks, inlined
            q, rem = divmod(to_finish, block_size)
            blocks_at_end = len(ordered) * q + bisect_left(ordered, rem)
        else:
            blocks_at_end = new_blocks(slacks, to_finish, block_size)
        if blocks_at_end > ledger.num_free_blocks:  # the KV cache fills up first
            max_steps = steps_within_kv(slacks, to_finish, ledger.num_free_blocks, block_size)
            if max_steps <= 0:
                self._stable_decode = False
                return False
            blocks_at_end = new_blocks(slacks, max_steps, block_size)
        batch_size = len(running)
        context += batch_size
        coeffs = self._decode_coeffs.get(batch_size)
        if coeffs is None:
            coeffs = self._decode_coeffs[batch_size] = decode_coefficients(self.perf, batch_size)
        alpha, beta = coeffs[0], coeffs[1]
        start_s = self.clock_s
        if alpha == alpha:  # affine: the perf model's own closed form, summed here
            q = max_steps - 1
            last_start_s = start_s + (
                q * alpha + beta * (q * context + batch_size * (q * (q - 1) // 2))
            )
            q = max_steps
            end_s = start_s + (q * alpha + beta * (q * context + batch_size * (q * (q - 1) // 2)))
        else:
            perf = self.perf
            last_start_s = start_s + perf.decode_stretch(batch_size, context, max_steps - 1).time_s
            end_s = start_s + perf.decode_stretch(batch_size, context, max_steps).time_s
        self._plan = DecodePlan(
            start_s,
            batch_size,
            context,
            max_steps,
            last_start_s,
            end_s,
            slacks,
            ledger.num_blocks - ledger.num_free_blocks,
            max_steps < to_finish,
            alpha,
            beta,
            blocks_at_end,
            0.5 * beta * batch_size,
            alpha + beta * context - 0.5 * beta * batch_size,
            ordered,
        )
        return True

    def _apply_plan(self, steps: int) -> None:
        """Apply the first `steps` steps of the pending plan, which is then consumed."""
        plan = self._plan
        self._plan = None
        if plan is None or steps <= 0:
            return
        sched = self.scheduler
        running = sched.running
        block_size = self.config.block_size
        b, context = plan.batch_size, plan.context_tokens
        alpha_s, beta_s, alpha_j, beta_j = self._decode_coeffs[b]
        if alpha_s == alpha_s:  # affine: closed-form sums (as PerfModel.decode_stretch)
            context_sum = steps * context + b * (steps * (steps - 1) // 2)
            if steps == plan.max_steps:
                cost_time_s = plan.end_s - plan.start_s
            else:
                cost_time_s = steps * alpha_s + beta_s * context_sum
            energy_j = steps * alpha_j + beta_j * context_sum
        else:
            cost = self.perf.decode_stretch(b, context, steps)
            cost_time_s, energy_j = cost.time_s, cost.energy_j
        end_s = plan.start_s + cost_time_s
        finished: list[EngineRequest] | None = None
        total_new_blocks = 0
        for req, slack in zip(running, plan.slacks, strict=False):
            if steps > slack:
                extra = (steps - slack + block_size - 1) // block_size
                req.plain_blocks += extra
                req.held_blocks += extra
                total_new_blocks += extra
            req.num_computed_tokens += steps
            emitted = req.num_emitted_tokens + steps
            req.num_emitted_tokens = emitted
            if emitted >= req.output_tokens:
                if finished is None:
                    finished = [req]
                else:
                    finished.append(req)
        if total_new_blocks:
            sched.ledger.allocate(total_new_blocks)
        sched.generation_tokens += steps * b
        self.num_steps += steps
        self.busy_s += cost_time_s
        self.energy_j += energy_j
        self.clock_s = end_s
        if finished is not None:
            requests = self.requests
            events = self.events
            for req in finished:
                sched._finish(req, end_s)
                del requests[req.request_id]
                events.append((end_s, FINISHED, req))
            sched.running = [r for r in running if r.status == RUNNING]
            # the rest keep decoding unless a waiting request may now be admitted
            self._stable_decode = bool(sched.running) and not sched.waiting
        elif steps == plan.max_steps and plan.kv_limited:
            self._stable_decode = False  # the KV cache is full: the next step preempts

    # ---- metrics ----------------------------------------------------------------------
    def metrics(self, now_s: float | None = None) -> EngineStats:
        """Counters and gauges; in fast mode pass `now_s` to apply a pending decode plan."""
        if now_s is not None:
            self.materialize(now_s)
        sched = self.scheduler
        ledger = sched.ledger
        return EngineStats(
            num_running=len(sched.running),
            num_waiting=len(sched.waiting),
            kv_usage=ledger.usage,
            prefix_queries_tokens=sched.prefix_queries_tokens,
            prefix_hits_tokens=sched.prefix_hits_tokens,
            num_preemptions=sched.num_preemptions,
            num_steps=self.num_steps,
            prompt_tokens=sched.prompt_tokens_computed,
            generation_tokens=sched.generation_tokens,
            busy_s=self.busy_s,
            energy_j=self.energy_j,
            num_free_blocks=ledger.num_free_blocks,
            num_blocks=ledger.num_blocks,
        )
