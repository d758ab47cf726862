"""Simulator speed and memory: full public traces replayed in fast mode, each in its own
process (so peak RSS is that run's), plus fast-vs-step speedup measured side by side.

Targets (issue 3, round-robin): Mooncake conversation (12,031 requests) on
8xh200/llama-3.1-8b in <= 1.2 s; Azure conversation (19,366 requests, 4 replicas) in
<= 2 s; >= 10,000 simulated requests per second; peak memory < 500 MB. Mooncake is also
timed with lmetric and llm-d (no target), policies that make the Router do more. Wall time covers `simulate` only (trace
loading is reported apart). `router_s` is the part of it spent inside the shared `Router`
(snapshot building, prefix index, policy), which the simulator calls at every arrival.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from selfserve.native_build import running_build

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT / ".." / "shared" / "traces"

CASES = (
    ("mooncake-conv", SHARED / "mooncake-fast25/conversation_trace.jsonl", "8xh200/llama-3.1-8b", 1.2),
    ("azure-conv", SHARED / "azure-llm-2023/AzureLLMInferenceTrace_conv.csv", "4xh200/llama-3.1-8b", 2.0),
)  # fmt: skip

# Policies whose cost on the full Mooncake trace is reported next to round-robin's: they
# read the router's prefix index (lmetric) or scraped metrics and their own index (llm-d).
POLICIES = ("lmetric", "llm-d")

CHILD = r"""
import json, resource, sys, time
from pathlib import Path
path, cluster, policy, mode, limit = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5])
t0 = time.perf_counter()
try:
    from selfserve.workload.io import load_workload
    workload = load_workload(path)
except ImportError:  # helper A's loader absent: a minimal Mooncake JSONL reader
    from selfserve.workload.request import Request, Workload
    reqs = []
    for i, line in enumerate(Path(path).read_text().splitlines()):
        d = json.loads(line)
        reqs.append(Request(str(i), d["timestamp"] / 1000, d["input_length"], d["output_length"],
                            tuple(d.get("hash_ids", ())), 512))
    workload = Workload(reqs, block_size=512)
if limit:
    from selfserve.workload.request import Workload
    workload = Workload(workload.requests[:limit], block_size=workload.block_size)
load_s = time.perf_counter() - t0
from selfserve.policy.router import Router
router_s = [0.0]
def timed(fn):
    def wrapper(*a, **k):
        s = time.perf_counter()
        try:
            return fn(*a, **k)
        finally:
            router_s[0] += time.perf_counter() - s
    return wrapper
timing = sys.argv[6] == "1"
if timing:
    for name in ("route", "on_first_token", "on_complete"):
        setattr(Router, name, timed(getattr(Router, name)))
from selfserve.native_build import running_build
from selfserve.sim import simulate
cpu0 = time.process_time()
result = simulate(workload, cluster, policy, mode=mode)
cpu_s = time.process_time() - cpu0
summary = result.summary()
print(json.dumps({
    "requests": len(workload), "load_s": load_s, "wall_s": result.wall_s, "cpu_s": cpu_s,
    "router_s": router_s[0] if timing else None,
    "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    "attainment": summary["slo_attainment"], "completed": summary["completed"],
    "engine_build": running_build(),
}))
"""


def _child(path, cluster, policy="round-robin", mode="fast", limit=0, timing=False) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", CHILD, str(path), cluster, policy, mode, str(limit), "1" if timing else "0"],
        capture_output=True, text=True, check=True, cwd=ROOT,
    )  # fmt: skip
    return json.loads(out.stdout.strip().splitlines()[-1])


def run() -> list[dict]:
    rows: list[dict] = [
        {"name": "load average (1 min) when the suite started: timings scale with it",
         "value": os.getloadavg()[0], "unit": f"on {os.cpu_count()} cores", "target": "", "ok": None}
    ]  # fmt: skip
    rows += _timed_rows()
    # (no trace: the build this process imports)
    builds = {row["engine_build"] for row in rows if "engine_build" in row} or {running_build()}
    # "mypyc": the engine, perf step cost and simulator loop ran compiled (setup.py);
    # "pure": from the .py sources (no compiled build, or it was skipped or failed)
    rows.insert(1, {"name": "engine build the figures below ran with", "value": "/".join(sorted(builds)),
                    "unit": "mypyc = compiled, pure = Python sources", "target": "", "ok": None,
                    "engine_build": "/".join(sorted(builds))})  # fmt: skip
    return rows


def _timed_rows() -> list[dict]:
    rows: list[dict] = []
    for name, path, cluster, target_s in CASES:
        if not path.exists():
            rows.append(
                {"name": f"{name}: trace missing ({path})", "value": 0.0, "unit": "", "ok": None}
            )
            continue
        best = min((_child(path, cluster) for _ in range(3)), key=lambda r: r["wall_s"])
        timed = _child(path, cluster, timing=True)
        n = best["requests"]
        rows += _tagged(best, [
            {"name": f"{name} {n:,} req on {cluster}: simulate wall (best of 3)",
             "value": best["wall_s"], "unit": "s", "target": f"<= {target_s}", "ok": best["wall_s"] <= target_s},
            {"name": f"{name}: simulated requests per wall-second",
             "value": n / best["wall_s"], "unit": "req/s", "target": ">= 10,000", "ok": n / best["wall_s"] >= 10_000},
            {"name": f"{name}: simulate CPU time (same run)", "value": best["cpu_s"], "unit": "s",
             "target": "", "ok": None},
            {"name": f"{name}: share of wall inside the Router (timed run)",
             "value": timed["router_s"] / timed["wall_s"], "unit": "fraction", "target": "", "ok": None},
            {"name": f"{name}: peak RSS of the whole process",
             "value": best["peak_rss_mb"], "unit": "MB", "target": "< 500", "ok": best["peak_rss_mb"] < 500},
            {"name": f"{name}: trace load", "value": best["load_s"], "unit": "s", "target": "", "ok": None},
        ])  # fmt: skip
    mooncake = CASES[0][1]
    for policy in POLICIES if mooncake.exists() else ():
        best = min(
            (_child(mooncake, CASES[0][2], policy) for _ in range(2)), key=lambda r: r["cpu_s"]
        )
        rows += _tagged(best, [
            {"name": f"mooncake-conv with {policy}: simulate wall (best of 2)",
             "value": best["wall_s"], "unit": "s", "target": "", "ok": None},
            {"name": f"mooncake-conv with {policy}: simulate CPU time (same run)",
             "value": best["cpu_s"], "unit": "s", "target": "", "ok": None},
        ])  # fmt: skip
    if mooncake.exists():
        fast = _child(mooncake, "4xh200/llama-3.1-8b", mode="fast", limit=1500)
        step = _child(mooncake, "4xh200/llama-3.1-8b", mode="step", limit=1500)
        rows += _tagged(fast, [
            {"name": "fast vs step mode speedup (1,500 Mooncake req, 4xh200)",
             "value": step["wall_s"] / fast["wall_s"], "unit": "x", "target": "", "ok": None}
        ])  # fmt: skip
    return rows


def _tagged(result: dict, rows: list[dict]) -> list[dict]:
    """`rows` with the engine build of the run they come from (`engine_build`)."""
    return [{**row, "engine_build": result["engine_build"]} for row in rows]


if __name__ == "__main__":
    for row in run():
        print(row)
