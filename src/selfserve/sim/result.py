"""What a simulation returns: one record per request, per-replica totals, and the summary
metrics (defined as in ARCHITECTURE.md, which follows vLLM's benchmark definitions)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from selfserve.sim.slo import SLO

J_PER_MWH = 3.6e9


@dataclass(frozen=True, slots=True)
class RequestRecord:
    """One request's outcome. Times are seconds from its (rate-scaled) arrival; -1 when the
    request was rejected. `rejected` holds the reason a replica refused it, else None."""

    request_id: str
    arrival_s: float
    replica: int
    prompt_tokens: int
    output_tokens: int
    cached_tokens: int
    ttft_s: float
    tpot_s: float
    e2e_s: float
    preemptions: int
    rejected: str | None = None

    @property
    def route(self) -> int:
        """The replica index the router chose (contract C's name for `replica`)."""
        return self.replica

    @property
    def is_ok(self) -> bool:
        return self.rejected is None

    def meets(self, slo: SLO) -> bool:
        if self.rejected is not None:
            return False
        if self.ttft_s > slo.ttft_s or self.tpot_s > slo.tpot_s:
            return False
        return slo.e2e_s is None or self.e2e_s <= slo.e2e_s


@dataclass(frozen=True, slots=True)
class ReplicaStats:
    """One replica's totals over the run."""

    name: str
    hardware: str
    model: str
    num_gpus: int
    requests: int
    busy_s: float
    step_energy_j: float
    idle_power_w: float  # whole replica
    price_per_hour: float  # whole replica
    prefix_queries_tokens: int
    prefix_hits_tokens: int
    preemptions: int
    steps: int


@dataclass(slots=True)
class SimResult:
    """Per-request records plus replica totals; `summary(slo)` computes the aggregates."""

    records: list[RequestRecord]
    replicas: list[ReplicaStats]
    start_s: float
    end_s: float
    policy: str
    cluster: str
    mode: str
    seed: int
    rate_scale: float
    wall_s: float = 0.0
    slo: SLO = field(default_factory=SLO)

    @property
    def duration_s(self) -> float:
        return max(self.end_s - self.start_s, 1e-12)

    def summary(self, slo: SLO | str | None = None) -> dict:
        slo = SLO.parse(slo) if slo is not None else self.slo
        records = self.records
        ok = [r for r in records if r.rejected is None]
        duration = self.duration_s
        ttft = np.array([r.ttft_s for r in ok]) if ok else np.zeros(0)
        tpot = np.array([r.tpot_s for r in ok]) if ok else np.zeros(0)
        e2e = np.array([r.e2e_s for r in ok]) if ok else np.zeros(0)
        out_tokens = sum(r.output_tokens for r in ok)
        in_tokens = sum(r.prompt_tokens for r in ok)
        good = [r for r in ok if r.meets(slo)]
        decode_s = sum(r.e2e_s - r.ttft_s for r in ok if r.output_tokens > 1)
        gaps = sum(r.output_tokens - 1 for r in ok if r.output_tokens > 1)
        busy = [rep.busy_s for rep in self.replicas]
        util = [b / duration for b in busy]
        mean_util = sum(util) / len(util) if util else 0.0
        routed = [rep.requests for rep in self.replicas]
        mean_routed = sum(routed) / len(routed) if routed else 0.0
        energy = sum(
            rep.step_energy_j + rep.idle_power_w * max(0.0, duration - rep.busy_s)
            for rep in self.replicas
        )
        price_per_hour = sum(rep.price_per_hour for rep in self.replicas)
        cost = price_per_hour * duration / 3600.0
        queries = sum(rep.prefix_queries_tokens for rep in self.replicas)
        hits = sum(rep.prefix_hits_tokens for rep in self.replicas)
        return {
            "policy": self.policy,
            "cluster": self.cluster,
            "slo": slo.as_dict(),
            "num_requests": len(records),
            "completed": len(ok),
            "rejected": len(records) - len(ok),
            "duration_s": duration,
            "request_throughput": len(ok) / duration,
            "output_throughput": out_tokens / duration,
            "total_token_throughput": (in_tokens + out_tokens) / duration,
            "slo_attainment": len(good) / len(records) if records else 0.0,
            "attainment": len(good) / len(records) if records else 0.0,  # contract alias
            "goodput_rps": len(good) / duration,
            "goodput_output_tokens_per_s": sum(r.output_tokens for r in good) / duration,
            "ttft_mean_s": _mean(ttft),
            "ttft_p50_s": _pct(ttft, 50),
            "ttft_p90_s": _pct(ttft, 90),
            "ttft_p99_s": _pct(ttft, 99),
            "tpot_mean_s": _mean(tpot),
            "tpot_p50_s": _pct(tpot, 50),
            "tpot_p99_s": _pct(tpot, 99),
            "itl_mean_s": decode_s / gaps if gaps else 0.0,
            "e2e_mean_s": _mean(e2e),
            "e2e_p50_s": _pct(e2e, 50),
            "e2e_p99_s": _pct(e2e, 99),
            "prefix_hit_rate": sum(r.cached_tokens for r in ok) / in_tokens if in_tokens else 0.0,
            "engine_prefix_hit_rate": hits / queries if queries else 0.0,
            "preemptions": sum(r.preemptions for r in records),
            "utilization_mean": mean_util,
            "load_imbalance": max(util) / mean_util if mean_util > 0 else 1.0,
            "request_imbalance": max(routed) / mean_routed if mean_routed > 0 else 1.0,
            "energy_j": energy,
            "joules_per_token": energy / out_tokens if out_tokens else 0.0,
            "tokens_per_mwh": out_tokens / (energy / J_PER_MWH) if energy > 0 else 0.0,
            "tokens_per_mw_s": out_tokens / (energy / 1e6) if energy > 0 else 0.0,
            "cost_usd": cost,
            "cost_per_million_tokens": cost / out_tokens * 1e6 if out_tokens else 0.0,
            "replicas": [
                {
                    "name": rep.name,
                    "hardware": rep.hardware,
                    "model": rep.model,
                    "requests": rep.requests,
                    "utilization": u,
                    "prefix_hit_rate": (
                        rep.prefix_hits_tokens / rep.prefix_queries_tokens
                        if rep.prefix_queries_tokens
                        else 0.0
                    ),
                    "preemptions": rep.preemptions,
                    "energy_j": rep.step_energy_j
                    + rep.idle_power_w * max(0.0, duration - rep.busy_s),
                }
                for rep, u in zip(self.replicas, util, strict=True)
            ],
            "wall_s": self.wall_s,
            "simulated_requests_per_wall_s": len(records) / self.wall_s if self.wall_s else 0.0,
            "mode": self.mode,
            "seed": self.seed,
            "rate_scale": self.rate_scale,
        }

    def records_as_dicts(self) -> list[dict]:
        return [asdict(r) for r in self.records]


def _mean(values: np.ndarray) -> float:
    return float(values.mean()) if values.size else 0.0


def _pct(values: np.ndarray, q: float) -> float:
    return float(np.percentile(values, q)) if values.size else 0.0
