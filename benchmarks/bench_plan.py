"""`selfserve plan` cost (`make bench`, suite `plan`).

A plan is dominated by how many simulations each option needs, so the figures are the
simulations per option (replica search + headroom bisection + curve sweep) and the wall
time of a small plan (embedded Mooncake slice, busiest 400 requests, llama-3.1-8b on two
cards at TP 1, one process), plus how many simulations the throughput lower bound saves
in the replica search against plain doubling on the same fleet measurements.
"""

from __future__ import annotations

import time

from selfserve.plan.fleet_plan import plan_fleet
from selfserve.plan.search import Probe, min_replicas
from selfserve.workload.embedded import load_embedded


def run() -> list[dict]:
    workload = load_embedded("mooncake-conversation-10min")
    started = time.perf_counter()
    result = plan_fleet(
        workload,
        "llama-3.1-8b",
        hardware=["h100", "mi300x"],
        tps=[1],
        slo="ttft=2s,tpot=100ms",
        max_requests=400,
        jobs=1,
    )
    wall_s = time.perf_counter() - started
    sims = [p.num_simulations for p in result.options]
    rows = [
        {
            "name": "small plan wall time (2 options, 400 requests, 1 process)",
            "value": round(wall_s, 1),
            "unit": "s",
            "target": "≤ 120 s on a shared 2-core machine",
            "ok": wall_s <= 120,
        },
        {
            "name": "simulations per option (search + headroom + sweep)",
            "value": max(sims),
            "unit": "sims",
            "target": "≤ 20",
            "ok": max(sims) <= 20,
        },
    ]

    # Replica search on a synthetic 45-replica need: jump to the lower bound vs doubling.
    def probe(n: int) -> Probe:
        return Probe(0.95 if n >= 45 else 0.0, 100.0 * min(n, 45))

    blind = min_replicas(probe).num_simulations
    informed = min_replicas(probe, demand_output_tokens_per_s=4000.0).num_simulations
    rows.append(
        {
            "name": "replica search simulations, lower-bound jump ÷ doubling (45 needed)",
            "value": round(informed / blind, 2),
            "unit": "ratio",
            "target": "< 1",
            "ok": informed < blind,
        }
    )
    return rows
