"""Fidelity of the twin against the simulator: the same workload, twice.

`run_fidelity` starts N twin processes (time-scaled), replays the workload through
`bench` with client-side round-robin (request k → twin k mod N, which is exactly the
simulator's `round-robin` policy), runs `selfserve.sim.simulate` on the same workload and
cluster, and returns both distributions plus the pacing error of the live run.

Both sides use the same engine and performance model, so in a perfectly paced run they
differ only by (a) when the client actually sent each request (its send lag), (b) how late
each twin delivered its steps' tokens (its schedule lag), both in wall seconds and
multiplied by the time scale in model time, and (c) prefix-cache granularity (the twin
hashes 16-token blocks of real text, the simulator the trace's blocks). `pacing_error_s`
is (a) + (b) at their medians in model seconds: the typical part of any difference that
the host, not the model, is responsible for.
"""

from __future__ import annotations

import json
import urllib.request
from dataclasses import asdict, dataclass

import numpy as np

from selfserve.bench.runner import run_bench
from selfserve.twin.launch import spawn_twins
from selfserve.workload.request import Workload


@dataclass(frozen=True, slots=True)
class Distribution:
    p10: float
    p50: float
    p90: float
    mean: float

    @classmethod
    def of(cls, values: np.ndarray) -> Distribution:
        if values.size == 0:
            return cls(0.0, 0.0, 0.0, 0.0)
        p10, p50, p90 = np.percentile(values, [10, 50, 90])
        return cls(float(p10), float(p50), float(p90), float(values.mean()))


@dataclass(frozen=True, slots=True)
class FidelityReport:
    """Twin (over HTTP) vs simulator on one workload; times in model seconds."""

    requests: int
    completed: int
    time_scale: float
    cluster: str
    ttft_sim: Distribution
    ttft_twin: Distribution
    tpot_sim: Distribution
    tpot_twin: Distribution
    cache_hit_sim: float
    cache_hit_twin: float
    send_lag_p50_s: float  # model seconds
    send_lag_p90_s: float
    twin_lag_p50_s: float  # model seconds, worst twin
    twin_lag_p90_s: float
    paired_ttft_diff_p50_s: float  # median of (twin - sim) per request

    @property
    def pacing_error_s(self) -> float:
        """Typical (median) pacing error of the live run, in model seconds."""
        return self.send_lag_p50_s + self.twin_lag_p50_s

    def differences(self) -> dict[str, float]:
        def rel(twin: float, sim: float) -> float:
            return (twin - sim) / sim if sim else 0.0

        return {
            "ttft_p50_rel": rel(self.ttft_twin.p50, self.ttft_sim.p50),
            "ttft_p90_rel": rel(self.ttft_twin.p90, self.ttft_sim.p90),
            "ttft_mean_rel": rel(self.ttft_twin.mean, self.ttft_sim.mean),
            "tpot_p50_rel": rel(self.tpot_twin.p50, self.tpot_sim.p50),
            "tpot_p90_rel": rel(self.tpot_twin.p90, self.tpot_sim.p90),
            "tpot_mean_rel": rel(self.tpot_twin.mean, self.tpot_sim.mean),
            "cache_hit_abs": self.cache_hit_twin - self.cache_hit_sim,
            "paired_ttft_diff_p50_s": self.paired_ttft_diff_p50_s,
            "pacing_error_s": self.pacing_error_s,
        }

    def as_dict(self) -> dict:
        return {**asdict(self), "differences": self.differences()}


def _lag_s(url: str) -> dict[str, float]:
    with urllib.request.urlopen(url + "/twin/stats", timeout=10) as response:
        return json.loads(response.read())["lag"]


def run_fidelity(
    workload: Workload,
    *,
    model: str,
    hardware: str,
    replicas: int,
    time_scale: float,
    extra_twin_args: tuple[str, ...] = (),
) -> FidelityReport:
    """Replay `workload` on `replicas` twins and in the simulator; compare (module doc)."""
    from selfserve.sim import simulate

    cluster = f"{replicas}x{hardware}/{model}"
    sim = simulate(workload, cluster, "round-robin")
    sim_records = {r.request_id: r for r in sim.records if r.is_ok}
    with spawn_twins(
        replicas, model, hardware, time_scale=time_scale, extra_args=extra_twin_args
    ) as twins:
        result = run_bench([t.url for t in twins], workload, time_scale=time_scale, progress=False)
        lags = [_lag_s(t.url) for t in twins]
    summary = result.summary()
    ok = [o for o in result.outcomes if o.ok]
    ttft_twin = np.array([o.ttft_s for o in ok]) * time_scale
    tpot_twin = np.array([o.tpot_s for o in ok if o.tpot_s is not None]) * time_scale
    ttft_sim = np.array([r.ttft_s for r in sim_records.values()])
    tpot_sim = np.array([r.tpot_s for r in sim_records.values() if r.output_tokens > 1])
    paired = [
        o.ttft_s * time_scale - sim_records[o.request_id].ttft_s
        for o in ok
        if o.request_id in sim_records
    ]
    prompt_sim = sum(r.prompt_tokens for r in sim_records.values())
    return FidelityReport(
        requests=len(workload),
        completed=len(ok),
        time_scale=time_scale,
        cluster=cluster,
        ttft_sim=Distribution.of(ttft_sim),
        ttft_twin=Distribution.of(ttft_twin),
        tpot_sim=Distribution.of(tpot_sim),
        tpot_twin=Distribution.of(tpot_twin),
        cache_hit_sim=sum(r.cached_tokens for r in sim_records.values()) / max(1, prompt_sim),
        cache_hit_twin=float(summary["prefix_cache_hit_rate"] or 0.0),
        send_lag_p50_s=summary["send_lag_s"]["p50"] * time_scale,
        send_lag_p90_s=summary["send_lag_s"]["p90"] * time_scale,
        twin_lag_p50_s=max(lag["p50_s"] for lag in lags) * time_scale,
        twin_lag_p90_s=max(lag["p90_s"] for lag in lags) * time_scale,
        paired_ttft_diff_p50_s=float(np.median(paired)) if paired else 0.0,
    )
