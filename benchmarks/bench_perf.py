"""Perf-model call rates (`make bench`, suite `perf`).

The simulator calls `decode_step_time_s` / `decode_stretch` for every batch-changing event
and `step_time_s` for every step with a prefill chunk, millions of times per run, so each
must be a few float operations on precomputed coefficients. Figures: calls per second of
each on llama-3.1-8b / H200 (dense) and qwen3-30b-a3b (MoE), with varying batch sizes so
per-batch caching is exercised as in a simulation.
"""

from __future__ import annotations

import time

from selfserve.perf import PerfModel

CALLS = 200_000


def _rate(fn, calls: int = CALLS) -> float:
    started = time.perf_counter()
    fn(calls)
    return calls / (time.perf_counter() - started)


def run() -> list[dict]:
    dense = PerfModel.create("llama-3.1-8b", "h200")
    moe = PerfModel.create("qwen3-30b-a3b", "h200")
    decodes = [1024 + 37 * i for i in range(32)]
    prefill = [(512, 2048)]

    def decode_calls(n: int, perf: PerfModel = dense) -> None:
        f = perf.decode_step_time_s
        for i in range(n):
            f(1 + (i & 255), 4096 * (1 + (i & 255)) + i)

    def stretch_calls(n: int) -> None:
        f = dense.decode_stretch
        for i in range(n):
            f(1 + (i & 255), 4096 + i, 1 + (i & 63))

    def mixed_calls(n: int) -> None:
        f = dense.step_time_s
        for _ in range(n):
            f(prefill, decodes)

    rows = []
    for name, fn, target in (
        ("decode_step_time_s calls/s (8b/h200)", decode_calls, 1_000_000),
        ("decode_step_time_s calls/s (moe 30b-a3b)", lambda n: decode_calls(n, moe), 1_000_000),
        ("decode_stretch calls/s", stretch_calls, 400_000),
        ("step_time_s calls/s (1 prefill chunk + 32 decodes)", mixed_calls, 150_000),
    ):
        value = _rate(fn)
        rows.append(
            {
                "name": name,
                "value": round(value),
                "unit": "calls/s",
                "target": f">= {target:,}",
                "ok": value >= target,
            }
        )
    return rows
