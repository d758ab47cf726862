"""One simulation of one fleet, reduced to the figures a plan needs.

This is the only module of `plan/` that calls the simulator (`selfserve.sim`, contract C):
it builds the cluster from a deployment option and a replica count, replays the workload
with the routing policy at a rate multiplier, and returns a `FleetMeasurement` — SLO
attainment, token rates, energy and the interactivity (tokens/s per user) of the run.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass

from selfserve.plan.economics import FleetEconomics
from selfserve.plan.options import DeploymentOption
from selfserve.workload.request import Workload


@dataclass(frozen=True, slots=True)
class FleetMeasurement:
    """What one replay of the workload on `replicas` × `option` measured."""

    replicas: int
    num_gpus: int
    rate_scale: float
    attainment: float  # fraction of all requests meeting TTFT and TPOT (rejected = miss)
    num_requests: int
    num_rejected: int
    output_tokens: float
    total_tokens: float  # prompt + media + output tokens of the completed requests
    span_s: float  # the measured window (first arrival → last completion)
    energy_j: float
    p50_ttft_s: float
    p99_ttft_s: float
    median_tpot_s: float

    @property
    def output_tokens_per_s(self) -> float:
        return self.output_tokens / self.span_s if self.span_s > 0 else 0.0

    @property
    def total_tokens_per_s(self) -> float:
        return self.total_tokens / self.span_s if self.span_s > 0 else 0.0

    @property
    def output_tokens_per_s_per_gpu(self) -> float:
        return self.output_tokens_per_s / self.num_gpus

    @property
    def tokens_per_s_per_user(self) -> float:
        """Interactivity as InferenceMAX defines it: 1 / TPOT (median over requests)."""
        return 1.0 / self.median_tpot_s if self.median_tpot_s > 0 else math.inf

    def economics(self, usd_per_gpu_hour: float | None) -> FleetEconomics:
        return FleetEconomics(
            num_gpus=self.num_gpus,
            usd_per_gpu_hour=usd_per_gpu_hour,
            output_tokens_per_s=self.output_tokens_per_s,
            total_tokens_per_s=self.total_tokens_per_s,
            energy_j=self.energy_j,
            output_tokens=self.output_tokens,
            total_tokens=self.total_tokens,
        )


def measure_fleet(
    workload: Workload,
    option: DeploymentOption,
    replicas: int,
    policy: object,
    slo: object,
    *,
    rate_scale: float = 1.0,
    seed: int = 0,
) -> FleetMeasurement:
    """Replay `workload` on `replicas` copies of `option` and measure it against `slo`."""
    from selfserve.sim import ClusterSpec, simulate

    cluster = ClusterSpec.parse(option.cluster_spec(replicas))
    result = simulate(workload, cluster, policy, rate_scale=rate_scale, seed=seed, slo=slo)
    summary = result.summary(slo)
    return _reduce(result, summary, option, replicas, rate_scale)


def _reduce(result, summary, option, replicas, rate_scale) -> FleetMeasurement:
    """Token totals and TPOT from the records; attainment and energy from the summary.

    The summary's energy is step energy plus idle power over the run for every replica,
    so a fleet with idle replicas pays for them, as a provisioned fleet does.
    """
    ok = [record for record in result.records if record.rejected is None]
    output_tokens = float(sum(record.output_tokens for record in ok))
    total_tokens = output_tokens + float(sum(record.prompt_tokens for record in ok))
    tpots = [record.tpot_s for record in ok if record.output_tokens > 1]
    return FleetMeasurement(
        replicas=replicas,
        num_gpus=replicas * option.tp,
        rate_scale=rate_scale,
        attainment=float(summary["slo_attainment"]),
        num_requests=len(result.records),
        num_rejected=len(result.records) - len(ok),
        output_tokens=output_tokens,
        total_tokens=total_tokens,
        span_s=float(summary["duration_s"]),
        energy_j=float(summary["energy_j"]),
        p50_ttft_s=float(summary["ttft_p50_s"]) if ok else math.nan,
        p99_ttft_s=float(summary["ttft_p99_s"]) if ok else math.nan,
        median_tpot_s=statistics.median(tpots) if tpots else math.nan,
    )
