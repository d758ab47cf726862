"""Workload speed: trace loading, analysis with the LRU curve, 1M-request generation memory.

Targets (issue 2): load the full Mooncake conversation trace < 0.3 s; analyze it including
the LRU curve < 3 s; load the 40 kv-cache-tester sessions (27 MB) < 2 s; generate and stream
1M synthetic requests with peak RSS < ~1 GB. Rows that need ../shared are left out when it
is absent; the embedded-slice rows always run. Times are the best of a few runs (the
machine is shared, and the best run is the least disturbed one).
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import orjson

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT / ".." / "shared" / "traces"
MOONCAKE = SHARED / "mooncake-fast25" / "conversation_trace.jsonl"
AGENTIC = SHARED / "kv-cache-tester" / "traces"


def best_of(fn: Callable[[], object], repeats: int = 3) -> tuple[float, float]:
    """(best wall-clock s, best CPU s of this process) over `repeats` runs.

    Targets are checked on CPU time: on a shared, oversubscribed machine wall-clock time
    measures the neighbours; both are reported.
    """
    best_wall = best_cpu = float("inf")
    for _ in range(repeats):
        wall, cpu = time.perf_counter(), time.process_time()
        fn()
        best_cpu = min(best_cpu, time.process_time() - cpu)
        best_wall = min(best_wall, time.perf_counter() - wall)
    return best_wall, best_cpu


def timed_rows(
    name: str, fn: Callable[[], object], target_s: float | None, repeats: int = 3
) -> list[dict]:
    wall, cpu = best_of(fn, repeats)
    target = f"< {target_s:g} s" if target_s else ""
    return [
        row(f"{name} (CPU)", cpu, "s", target, cpu < target_s if target_s else None),
        row(f"{name} (wall)", wall, "s", "", None),
    ]


def row(name: str, value: float, unit: str, target: str, ok: bool | None) -> dict:
    return {"name": name, "value": value, "unit": unit, "target": target, "ok": ok}


def run() -> list[dict]:
    from selfserve.workload.analysis import analyze_workload
    from selfserve.workload.embedded import load_embedded
    from selfserve.workload.io import load_workload

    rows: list[dict] = []
    rows += timed_rows("load embedded Mooncake 10 min", lambda: load_embedded(), None)
    slice_ = load_embedded()
    rows += timed_rows("analyze embedded Mooncake 10 min", lambda: analyze_workload(slice_), None)
    if MOONCAKE.exists():
        rows += timed_rows(
            "load Mooncake conversation (12,031 req)", lambda: load_workload(MOONCAKE), 0.3, 5
        )
        workload = load_workload(MOONCAKE)
        rows += timed_rows(
            "analyze Mooncake incl. LRU curve", lambda: analyze_workload(workload), 3.0
        )
        hit = 100 * analyze_workload(workload).prefix.infinite_block_hit_rate
        rows.append(
            row("Mooncake infinite-cache block hit", hit, "%", "36.6", round(hit, 1) == 36.6)
        )
    if AGENTIC.is_dir():
        rows += timed_rows(
            "load 40 agentic sessions (27 MB)", lambda: load_workload(AGENTIC), 2.0, 2
        )
    rows.extend(_generate_million())
    return rows


def _generate_million() -> list[dict]:
    """1M chat requests streamed to a log in a fresh process, so its peak RSS is its own."""
    with tempfile.TemporaryDirectory() as tmp:
        out, summary = Path(tmp) / "million.jsonl", Path(tmp) / "summary.json"
        command = [
            sys.executable,
            "-m",
            "selfserve.cli.main",
            "generate",
            "chat",
            "--requests",
            "1000000",
            "--rate",
            "200",
            "--system-prompt-tokens",
            "512",
            "--out",
            str(out),
            "--json",
            str(summary),
        ]
        done = subprocess.run(command, capture_output=True, text=True, timeout=1200)
        if done.returncode != 0:
            return [row("generate 1M requests", float("nan"), "", done.stderr[-200:], False)]
        data = orjson.loads(summary.read_bytes())
    peak_mib = data["peak_rss_bytes"] / 2**20
    return [
        row("generate+stream 1M chat requests: time", data["elapsed_s"], "s", "", None),
        row(
            "generate+stream 1M chat requests: peak RSS",
            peak_mib,
            "MiB",
            "< ~1 GB",
            peak_mib < 1024,
        ),
        row("generate+stream 1M chat requests: log size", data["bytes"] / 1e6, "MB", "", None),
    ]
