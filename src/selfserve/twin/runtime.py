"""The twin's real-time engine loop: the engine model's steps, paced by the wall clock.

One asyncio task calls `EngineReplica.step(now_s)` with the model-time "now"
(``(wall - wall0) * time_scale``), sleeps until the step's end in wall time
(``end_s / time_scale``), then hands the step's tokens to the waiting requests. Token
timing therefore follows the engine model exactly — queueing, chunked prefill, batching
and preemption included — and under overload requests wait in the engine's queue (visible
as `vllm:num_requests_waiting`) instead of failing. How late each step's tokens went out
against that schedule is recorded as the lag (the twin's own fidelity figure).

Requests that do not ask for ``ignore_eos`` stop "naturally" after a length drawn from a
geometric distribution with mean `natural_output_mean_tokens` (seeded), as an engine would
stop at EOS; `max_tokens` caps it (finish reason ``length``).
"""

from __future__ import annotations

import asyncio
import math
import random
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from selfserve.twin.metrics import SchedulerGauges, TwinMetrics


@dataclass(slots=True)
class LiveRequest:
    """A request the twin is serving: what the HTTP handler waits on."""

    request_id: str
    prompt_tokens: int
    target_output_tokens: int
    finish_reason: str
    arrival_wall_s: float
    first_token_wall_s: float | None = None
    last_token_wall_s: float = 0.0
    emitted_tokens: int = 0
    cached_tokens: int = 0
    is_finished: bool = False
    waiter: asyncio.Future | None = None
    engine_request: object = None  # the engine's EngineRequest (its cache-hit count)
    # Set by a streaming handler once its headers are out: writes new tokens synchronously
    # from the engine loop (one syscall, no task switch per token); returns False when it
    # cannot (back-pressure, closed socket) and the handler should take over.
    sink: Callable[[LiveRequest], bool] | None = None


@dataclass(slots=True)
class LagStats:
    """Schedule lag of delivered steps (wall seconds), kept as a bounded window."""

    samples_s: deque = field(default_factory=lambda: deque(maxlen=200_000))
    steps: int = 0

    def percentiles(self) -> dict[str, float]:
        if not self.samples_s:
            return {"steps": self.steps, "p50_s": 0.0, "p90_s": 0.0, "p99_s": 0.0, "max_s": 0.0}
        values = np.fromiter(self.samples_s, dtype=float)
        p50, p90, p99 = np.percentile(values, [50, 90, 99])
        return {
            "steps": self.steps,
            "p50_s": float(p50),
            "p90_s": float(p90),
            "p99_s": float(p99),
            "max_s": float(values.max()),
        }


class TwinRuntime:
    """Owns the engine model, the live requests and the pacing task."""

    def __init__(
        self,
        engine,
        metrics_factory,
        *,
        time_scale: float = 1.0,
        seed: int = 0,
        natural_output_mean_tokens: int = 256,
    ) -> None:
        if time_scale <= 0:
            raise ValueError(f"time_scale must be > 0, got {time_scale}")
        self.engine = engine
        self.time_scale = time_scale
        self.natural_output_mean_tokens = natural_output_mean_tokens
        self.lag = LagStats()
        self.metrics: TwinMetrics = metrics_factory(self.scheduler_gauges)
        self._rng = random.Random(seed)
        self._live: dict[str, LiveRequest] = {}
        self._wall0_s = time.perf_counter()
        self._wake = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._idle_arrival_s = math.inf  # earliest arrival while the engine was idle
        self._next_id = 0

    # -- time -----------------------------------------------------------------
    def model_now_s(self) -> float:
        return (time.perf_counter() - self._wall0_s) * self.time_scale

    def to_model_s(self, wall_duration_s: float) -> float:
        return wall_duration_s * self.time_scale

    # -- requests -------------------------------------------------------------
    def new_request_id(self, prefix: str) -> str:
        self._next_id += 1
        return f"{prefix}-{self._next_id:x}{self._rng.getrandbits(48):012x}"

    def output_budget(self, max_tokens: int, min_tokens: int, ignore_eos: bool) -> tuple[int, str]:
        """How many tokens to generate and the finish reason that ends the request."""
        if ignore_eos:
            return max_tokens, "length"
        p = 1.0 / max(1, self.natural_output_mean_tokens)
        natural = 1 + int(math.log(1.0 - self._rng.random()) / math.log(1.0 - p)) if p < 1 else 1
        natural = max(natural, min_tokens, 1)
        if natural >= max_tokens:
            return max_tokens, "length"
        return natural, "stop"

    def submit(self, live: LiveRequest, engine_request) -> None:
        """Queue a request in the engine model (raises the engine's RequestTooLarge).

        The engine sees the request as arrived when its HTTP request arrived, not after
        the body was parsed and tokenized: an idle engine starts its step at that earlier
        model time, so the twin's own CPU work is hidden behind the modelled step instead
        of adding to TTFT (the simulator has no such overhead).
        """
        arrival_s = (live.arrival_wall_s - self._wall0_s) * self.time_scale
        engine_request.arrival_s = arrival_s
        self.engine.add(engine_request, arrival_s)
        self._live[live.request_id] = live
        if arrival_s < self._idle_arrival_s:
            self._idle_arrival_s = arrival_s
        self._wake.set()

    def abort(self, live: LiveRequest) -> None:
        if self._live.pop(live.request_id, None) is not None:
            self.engine.abort(live.request_id)
            self.metrics.success["abort"].inc()

    async def wait(self, live: LiveRequest) -> None:
        """Until the engine emits a token for `live` or finishes it."""
        waiter = asyncio.get_running_loop().create_future()
        live.waiter = waiter
        try:
            await waiter
        finally:
            live.waiter = None

    # -- the loop -------------------------------------------------------------
    def start(self) -> None:
        self._wall0_s = time.perf_counter()
        self._task = asyncio.get_running_loop().create_task(self._run(), name="twin-engine")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None

    async def _run(self) -> None:
        busy_until_s: float | None = None
        while True:
            # While busy, the next step starts when the previous one ended in model time,
            # not when this task woke up: wake-up lateness then delays delivery a little
            # but never accumulates into the engine's timeline (at time_scale 10, 1 ms
            # of timer slack per step would otherwise add 10 ms to every decode step).
            if busy_until_s is None:
                now_s = min(self.model_now_s(), self._idle_arrival_s)
            else:
                now_s = busy_until_s
            self._idle_arrival_s = math.inf
            output = self.engine.step(now_s)
            if output is None:
                busy_until_s = None
                self._wake.clear()
                await self._wake.wait()
                continue
            busy_until_s = output.end_s
            target_wall_s = self._wall0_s + output.end_s / self.time_scale
            delay_s = target_wall_s - time.perf_counter()
            # Sleeping 0 still yields, so HTTP handlers run even when the loop lags.
            await asyncio.sleep(delay_s if delay_s > 0 else 0)
            wall_s = time.perf_counter()
            lag_s = max(0.0, wall_s - target_wall_s)
            self.lag.samples_s.append(lag_s)
            self.lag.steps += 1
            self.metrics.schedule_lag.observe(lag_s)
            self._deliver(output, wall_s)

    def _deliver(self, output, wall_s: float) -> None:
        live_by_id = self._live
        itl = self.metrics.itl
        tpot_legacy = self.metrics.tpot_legacy
        scale = self.time_scale
        emitted = 0
        for request_id in output.token_ids:
            live = live_by_id.get(request_id)
            if live is None:
                continue
            emitted += 1
            live.emitted_tokens += 1
            if live.first_token_wall_s is None:
                live.first_token_wall_s = wall_s
                live.cached_tokens = max(0, getattr(live.engine_request, "num_cached_tokens", 0))
            else:
                gap_s = (wall_s - live.last_token_wall_s) * scale
                itl.observe(gap_s)
                tpot_legacy.observe(gap_s)
            live.last_token_wall_s = wall_s
            sink = live.sink
            if sink is not None:
                if sink(live):
                    continue  # written straight to the socket; no handler wake-up needed
                live.sink = None  # back-pressure or a closed socket: the handler takes over
            if live.waiter is not None and not live.waiter.done():
                live.waiter.set_result(None)
        self.metrics.generation_tokens.inc(emitted)
        for request_id in output.finished_ids:
            live = live_by_id.pop(request_id, None)
            if live is None:
                continue
            live.is_finished = True
            first_s = live.first_token_wall_s if live.first_token_wall_s is not None else wall_s
            self.metrics.observe_finished(
                reason=live.finish_reason,
                prompt_tokens=live.prompt_tokens,
                output_tokens=live.emitted_tokens,
                ttft_s=(first_s - live.arrival_wall_s) * scale,
                e2e_s=(wall_s - live.arrival_wall_s) * scale,
            )
            if live.waiter is not None and not live.waiter.done():
                live.waiter.set_result(None)

    # -- engine read-outs -----------------------------------------------------
    def scheduler_gauges(self) -> SchedulerGauges:
        stats = self.engine.metrics()
        return SchedulerGauges(
            num_running=stats.num_running,
            num_waiting=stats.num_waiting,
            kv_usage=stats.kv_usage,
            prefix_queries_tokens=stats.prefix_queries_tokens,
            prefix_hits_tokens=stats.prefix_hits_tokens,
            num_preemptions=stats.num_preemptions,
        )

    @property
    def num_live(self) -> int:
        return len(self._live)
