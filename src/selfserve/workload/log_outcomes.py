"""What the gateway's request log says about serving: outcomes per policy arm.

For a log written by `selfserve serve` (records with a `status`), summarise per arm
(baseline, canary, …): requests, error rate, TTFT p50/p99, mean TPOT and E2E, and the
prefix-cache hit rate the engines reported (cached tokens / prompt tokens). Requests
without an outcome (synthetic ones) are not counted.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from selfserve.workload.log import RequestLogRecord, iter_log_records


@dataclass(frozen=True, slots=True)
class ArmOutcomes:
    arm: str
    requests: int
    error_rate: float
    ttft_p50_s: float
    ttft_p99_s: float
    tpot_mean_s: float
    e2e_mean_s: float
    prefix_hit_rate: float


def _nan_stat(values: list[float], fn) -> float:
    return float(fn(np.asarray(values))) if values else float("nan")


def summarize_outcomes(records: list[RequestLogRecord]) -> list[ArmOutcomes]:
    by_arm: dict[str, list[RequestLogRecord]] = defaultdict(list)
    for record in records:
        if record.status is not None:
            by_arm[record.policy_arm or "-"].append(record)
    out = []
    for arm in sorted(by_arm):
        group = by_arm[arm]
        ok = [r for r in group if r.status == "ok"]
        ttft = [r.ttft_s for r in ok if r.ttft_s is not None]
        tpot = [r.tpot_s for r in ok if r.tpot_s is not None]
        e2e = [r.e2e_s for r in ok if r.e2e_s is not None]
        with_cache = [r for r in ok if r.cached_tokens is not None]
        prompt = sum(r.request.prompt_tokens for r in with_cache)
        out.append(
            ArmOutcomes(
                arm=arm,
                requests=len(group),
                error_rate=1.0 - len(ok) / len(group),
                ttft_p50_s=_nan_stat(ttft, lambda a: np.percentile(a, 50)),
                ttft_p99_s=_nan_stat(ttft, lambda a: np.percentile(a, 99)),
                tpot_mean_s=_nan_stat(tpot, np.mean),
                e2e_mean_s=_nan_stat(e2e, np.mean),
                prefix_hit_rate=(
                    sum(r.cached_tokens for r in with_cache) / prompt if prompt else float("nan")
                ),
            )
        )
    return out


def log_outcomes(path: str | Path, *, skip_bad: bool = False) -> list[ArmOutcomes]:
    """Per-arm outcomes of a request log (file, rotation set or folder); [] if none served."""
    return summarize_outcomes(list(iter_log_records(path, skip_bad=skip_bad)))
