"""`simulate`: replay a workload on a simulated cluster through the real `Router`.

At each arrival the router sees engine metrics as of the last scrape tick (every
`scrape_interval_s`; replicas advance lazily to the tick, are read, then advance to the
arrival) and its own bookkeeping, kept current by first-token and completion events
delivered in time order before the arrival. Ties at one instant: arrivals first, then
replica events in replica order, so a request arriving when a step ends joins the next
step, in both modes.

Two modes give the same per-request results (within float rounding): `fast` (replicas
advance lazily with closed-form decode stretches) and `step` (every engine step is an
event on the `Environment` heap — the reference).
"""

from __future__ import annotations

import gc
import math
import time
from collections.abc import Callable
from typing import Any

from selfserve.engine import EngineReplica, EngineRequest, RequestTooLarge
from selfserve.engine.replica import FIRST_TOKEN
from selfserve.policy import make_policy
from selfserve.policy.router import Router
from selfserve.policy.snapshot import EngineMetrics, RequestView
from selfserve.policy.views import positional_constructor
from selfserve.sim.cluster import ClusterSpec
from selfserve.sim.environment import Environment
from selfserve.sim.result import ReplicaStats, RequestRecord, SimResult
from selfserve.sim.slo import SLO
from selfserve.workload.request import Request, Workload

ARRIVAL_PRIORITY = 0  # replica i's events use priority 1 + i
# Built once per request per run: positional, skipping the frozen __init__'s setattr calls.
_request_view = positional_constructor(RequestView)
_request_record = positional_constructor(RequestRecord)
_engine_metrics = positional_constructor(EngineMetrics)
ProgressFn = Callable[[int, int], None]


class SimulationError(ValueError):
    """A simulation that cannot run as asked (bad mode, empty cluster, …)."""


def simulate(
    workload: Workload,
    cluster: str | ClusterSpec,
    policy: Any = "round-robin",
    *,
    rate_scale: float = 1.0,
    seed: int = 0,
    slo: SLO | str | None = None,
    mode: str = "fast",
    scrape_interval_s: float = 0.05,
    progress: ProgressFn | None = None,
) -> SimResult:
    """Replay `workload` on `cluster` routed by `policy` (a spec for `make_policy`; a fresh
    instance per run). `rate_scale` > 1 compresses inter-arrival times (faster arrivals)."""
    if mode not in ("fast", "step"):
        raise SimulationError(f"mode must be 'fast' or 'step', got {mode!r}")
    if rate_scale <= 0:
        raise SimulationError(f"rate_scale must be > 0, got {rate_scale}")
    spec = ClusterSpec.parse(cluster)
    replicas, infos = spec.build()
    policy_obj = make_policy(policy)
    router = Router(policy_obj, infos, keep_unread_state=False)
    env = Environment(seed)
    started = time.perf_counter()
    run = _Run(workload, replicas, router, env, rate_scale, scrape_interval_s, progress)
    # The run allocates many small acyclic objects (the records too); pausing the cyclic
    # collector saves its repeated walks over them (anything cyclic is collected once it
    # is re-enabled).
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        if mode == "fast":
            run.run_fast()
        else:
            run.run_step()
        wall_s = time.perf_counter() - started
        return run.result(
            policy=getattr(policy_obj, "name", str(policy)),
            cluster=spec.label,
            mode=mode,
            seed=seed,
            rate_scale=rate_scale,
            wall_s=wall_s,
            slo=SLO.parse(slo),
        )
    finally:
        if gc_was_enabled:
            gc.enable()


class _Run:
    """The state of one simulation run (replicas, router, requests, outcomes)."""

    def __init__(
        self,
        workload: Workload,
        replicas: list[EngineReplica],
        router: Router,
        env: Environment,
        rate_scale: float,
        scrape_interval_s: float,
        progress: ProgressFn | None,
    ) -> None:
        self.requests: list[Request] = list(workload.requests)
        if any(
            b.arrival_s < a.arrival_s
            for a, b in zip(self.requests, self.requests[1:], strict=False)
        ):
            self.requests.sort(key=lambda r: r.arrival_s)  # stable: ties keep trace order
        self.replicas = replicas
        self.router = router
        self.env = env
        self.scrape_interval_s = scrape_interval_s
        self.progress = progress
        start = self.requests[0].arrival_s if self.requests else 0.0
        self.start_s = 0.0
        self.arrivals = [(r.arrival_s - start) / rate_scale for r in self.requests]
        self.ids = _unique_ids(self.requests)
        self.engine_requests: list[EngineRequest | None] = [None] * len(self.requests)
        self.routes = [-1] * len(self.requests)
        self.rejected: list[str | None] = [None] * len(self.requests)
        self.metrics: list[EngineMetrics | None] = [None] * len(replicas)
        self.routed_counts = [0] * len(replicas)
        self.by_id: dict[str, EngineRequest] = {}

    # ---- shared pieces ----------------------------------------------------------------
    def _scrape(self, tick_s: float) -> None:
        """Read every replica's metrics as of `tick_s`. Skipped when the policy reads no
        scraped feature: the reads have no side effect, and the router's snapshots for
        such a policy never carry them."""
        if not self.router.reads_engine_metrics:
            return
        metrics = self.metrics
        i = 0
        for replica in self.replicas:
            sched = replica.scheduler
            metrics[i] = _engine_metrics(
                len(sched.running), len(sched.waiting), replica.kv_usage_at(tick_s), tick_s
            )
            i += 1

    def _tick_of(self, t_s: float) -> float:
        interval = self.scrape_interval_s
        if interval <= 0:
            return t_s
        return math.floor(t_s / interval) * interval

    def _route(self, k: int, arrival_s: float) -> None:
        req = self.requests[k]
        rid = self.ids[k]
        media = req.media
        if media:
            media_hashes = tuple(p.content_hash for p in media)
            media_tokens = req.media_tokens
        else:
            media_hashes = ()
            media_tokens = 0
        view = _request_view(
            rid,
            arrival_s,
            req.prompt_tokens,
            media_tokens,
            req.output_tokens,
            req.block_hashes,
            req.block_size,
            media_hashes,
            req.session_id,
        )
        choice = self.router.route(view, arrival_s, self.metrics, self.env.rng)
        self.routes[k] = choice
        self.routed_counts[choice] += 1
        ereq = EngineRequest(
            request_id=rid,
            prompt_tokens=req.prompt_tokens,
            output_tokens=req.output_tokens,
            block_hashes=req.block_hashes,
            media_tokens=media_tokens,
            media_hashes=media_hashes,
            arrival_s=arrival_s,
            hash_block_tokens=req.block_size,
            media_part_tokens=tuple(p.tokens for p in media) if media else (),
            media_kinds=tuple(p.kind for p in media) if media else (),
        )
        ereq.num_cached_tokens = -1
        self.engine_requests[k] = ereq
        self.by_id[rid] = ereq
        try:
            self.replicas[choice].add(ereq, arrival_s)
        except RequestTooLarge as exc:
            self.rejected[k] = exc.reason
            self.router.on_complete(rid, arrival_s, 0, ok=False)

    def _tell_progress(self, k: int) -> None:
        if self.progress is not None and (k % 1000 == 0 or k == len(self.requests)):
            self.progress(k, len(self.requests))

    # ---- fast mode --------------------------------------------------------------------
    def run_fast(self) -> None:
        replicas = self.replicas
        arrivals = self.arrivals
        interval = self.scrape_interval_s
        floor = math.floor
        scrape = self._scrape
        deliver_before = self._deliver_before
        route = self._route
        tell = self._tell_progress if self.progress is not None else None
        last_tick = -math.inf
        # Replicas stop at a scrape tick only to be read there. `advance_to` runs whole
        # steps (a lazy decode plan is never split by it), so stopping at the tick first
        # changes nothing that happens by the arrival; a policy that reads no scraped
        # feature skips the ticks.
        scrapes = self.router.reads_engine_metrics
        for k in range(len(self.requests)):
            a = arrivals[k]
            tick = floor(a / interval) * interval if interval > 0 else a  # as `_tick_of`
            if scrapes and tick != last_tick:
                for replica in replicas:
                    if replica.next_change_s < tick:
                        replica.advance_to(tick)
                scrape(tick)
                last_tick = tick
            for replica in replicas:
                if replica.next_change_s < a:
                    replica.advance_to(a)
            deliver_before(a)
            route(k, a)
            if tell is not None:
                tell(k + 1)
        for replica in replicas:
            replica.advance_to(math.inf)
        deliver_before(math.inf)

    def _deliver_before(self, t_s: float) -> None:
        """Deliver logged replica events earlier than `t_s` to the router, in time order."""
        pending = []
        for i, replica in enumerate(self.replicas):
            events = replica.events
            if not events or events[0][0] >= t_s:
                continue
            n = 0
            for event in events:
                if event[0] >= t_s:
                    break
                pending.append((event[0], i, n, event[1], event[2]))
                n += 1
            del events[:n]
        if not pending:
            return
        if len(pending) > 1:
            pending.sort()  # by (time, replica, position): unique, so never compares the rest
        router = self.router
        on_first_token = router.on_first_token
        on_complete = router.on_complete
        for time_s, _, _, kind, req in pending:  # router methods bound once per call
            if kind == FIRST_TOKEN:
                on_first_token(req.request_id, time_s)
            else:
                on_complete(req.request_id, time_s, req.num_emitted_tokens, True)

    # ---- step mode (reference) --------------------------------------------------------
    def run_step(self) -> None:
        env = self.env
        replicas = self.replicas
        busy = [False] * len(replicas)
        for k, a in enumerate(self.arrivals):
            env.schedule(a, ARRIVAL_PRIORITY, ("arrival", k))
        interval = self.scrape_interval_s
        last_tick_index = None
        while len(env):
            t, _, payload = env.pop()
            if interval > 0:
                tick_index = math.floor(t / interval)
                if tick_index != last_tick_index:
                    self._scrape(tick_index * interval)
                    last_tick_index = tick_index
            if payload[0] == "arrival":
                k = payload[1]
                if interval <= 0:
                    self._scrape(t)
                self._route(k, t)
                self._tell_progress(k + 1)
                choice = self.routes[k]
                if not busy[choice] and self.rejected[k] is None:
                    busy[choice] = True
                    env.schedule(t, 1 + choice, ("wake", choice, None))
            else:
                _, i, out = payload
                if out is not None:
                    for rid in out.first_token_ids:
                        self.router.on_first_token(rid, t)
                    for rid in out.finished_ids:
                        req = self.by_id[rid]
                        self.router.on_complete(rid, t, req.num_emitted_tokens, True)
                nxt = replicas[i].step(t)
                if nxt is None:
                    busy[i] = False
                else:
                    env.schedule(nxt.end_s, 1 + i, ("step", i, nxt))

    # ---- result -----------------------------------------------------------------------
    def result(self, *, policy, cluster, mode, seed, rate_scale, wall_s, slo) -> SimResult:
        records: list[RequestRecord] = []
        append = records.append
        end_s = self.arrivals[-1] if self.arrivals else 0.0
        for k, req in enumerate(self.requests):
            ereq = self.engine_requests[k]
            a = self.arrivals[k]
            rejected = self.rejected[k]
            if rejected is not None or ereq is None:
                append(
                    _request_record(
                        self.ids[k], a, self.routes[k], req.total_prompt_tokens,
                        req.output_tokens, 0, -1.0, -1.0, -1.0, 0, rejected or "never routed",
                    )
                )  # fmt: skip
                continue
            finish_s = ereq.finish_s
            if finish_s < 0:
                raise SimulationError(f"request {ereq.request_id!r} never finished")
            ttft = ereq.first_token_s - a
            e2e = finish_s - a
            out = ereq.num_emitted_tokens
            cached = ereq.num_cached_tokens
            append(
                _request_record(
                    ereq.request_id, a, self.routes[k], ereq.prompt_tokens + ereq.media_tokens,
                    out, cached if cached > 0 else 0, ttft,
                    (e2e - ttft) / (out - 1) if out > 1 else 0.0, e2e, ereq.num_preemptions, None,
                )
            )  # fmt: skip
            if finish_s > end_s:
                end_s = finish_s
        stats = []
        for i, replica in enumerate(self.replicas):
            m = replica.metrics()
            perf = replica.perf
            stats.append(
                ReplicaStats(
                    name=replica.name,
                    hardware=getattr(perf.hardware, "name", str(perf.hardware)),
                    model=getattr(perf.model, "name", str(perf.model)),
                    num_gpus=perf.num_gpus,
                    requests=self.routed_counts[i],
                    busy_s=m.busy_s,
                    step_energy_j=m.energy_j,
                    idle_power_w=perf.idle_power_w * perf.num_gpus,
                    price_per_hour=perf.price_per_gpu_hour * perf.num_gpus,
                    prefix_queries_tokens=m.prefix_queries_tokens,
                    prefix_hits_tokens=m.prefix_hits_tokens,
                    preemptions=m.num_preemptions,
                    steps=m.num_steps,
                )
            )
        return SimResult(
            records=records,
            replicas=stats,
            start_s=self.start_s,
            end_s=end_s,
            policy=policy,
            cluster=cluster,
            mode=mode,
            seed=seed,
            rate_scale=rate_scale,
            wall_s=wall_s,
            slo=slo,
        )


def _unique_ids(requests: list[Request]) -> list[str]:
    """Request ids, with repeats made unique (`id#2`, …) so none is lost or merged."""
    seen: dict[str, int] = {}
    ids = []
    for req in requests:
        rid = req.request_id
        n = seen.get(rid, 0) + 1
        seen[rid] = n
        ids.append(rid if n == 1 else f"{rid}#{n}")
    return ids
