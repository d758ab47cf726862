"""`capacity`: the largest arrival-rate multiplier at which SLO attainment stays >= the
target (90% by default), found by bracketing then bisection on the time-scaled trace."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from selfserve.sim.cluster import ClusterSpec
from selfserve.sim.simulator import SimulationError, simulate
from selfserve.sim.slo import SLO
from selfserve.workload.request import Workload


@dataclass(frozen=True, slots=True)
class CapacityResult:
    """`multiplier`: the highest rate multiplier found meeting the target (0.0 if even
    `lo` fails); `attainment_curve`: every (multiplier, attainment) evaluated, sorted;
    `summary`: the simulation summary at `multiplier` (None when it is 0)."""

    multiplier: float
    attainment_curve: tuple[tuple[float, float], ...]
    target: float
    slo: SLO
    summary: dict | None
    bracketed: bool  # False when the answer is pinned at `lo` or `hi`

    def as_dict(self) -> dict:
        return {
            "multiplier": self.multiplier,
            "target": self.target,
            "slo": self.slo.as_dict(),
            "bracketed": self.bracketed,
            "attainment_curve": [list(p) for p in self.attainment_curve],
            "summary": self.summary,
        }


def capacity(
    workload: Workload,
    cluster: str | ClusterSpec,
    policy: Any,
    slo: SLO | str | None = None,
    *,
    seed: int = 0,
    lo: float = 1 / 64,
    hi: float = 64.0,
    tol: float = 0.02,
    target: float = 0.9,
    mode: str = "fast",
    scrape_interval_s: float = 0.05,
    on_point: Callable[[float, float], None] | None = None,
) -> CapacityResult:
    """Bisection on the rate multiplier until the bracket is within `tol` (relative)."""
    if not 0 < lo < hi:
        raise SimulationError(f"need 0 < lo < hi, got lo={lo}, hi={hi}")
    if not 0 < target <= 1:
        raise SimulationError(f"target attainment must be in (0, 1], got {target}")
    slo = SLO.parse(slo)
    spec = ClusterSpec.parse(cluster)
    curve: dict[float, float] = {}
    summaries: dict[float, dict] = {}

    def attainment(m: float) -> float:
        if m not in curve:
            result = simulate(
                workload, spec, policy, rate_scale=m, seed=seed, slo=slo, mode=mode,
                scrape_interval_s=scrape_interval_s,
            )  # fmt: skip
            summary = result.summary(slo)
            curve[m] = summary["slo_attainment"]
            summaries[m] = summary
            if on_point is not None:
                on_point(m, curve[m])
        return curve[m]

    # Bracket: good <= capacity < bad, starting from the trace's own rate.
    m = min(max(1.0, lo), hi)
    if attainment(m) >= target:
        good, bad = m, None
        while bad is None:
            nxt = min(good * 2.0, hi)
            if nxt == good:
                break
            if attainment(nxt) >= target:
                good = nxt
            else:
                bad = nxt
    else:
        good, bad = None, m
        while good is None:
            nxt = max(bad / 2.0, lo)
            if nxt == bad:
                break
            if attainment(nxt) >= target:
                good = nxt
            else:
                bad = nxt
    if good is None or bad is None:
        best = good or 0.0
        return CapacityResult(
            best, tuple(sorted(curve.items())), target, slo, summaries.get(best), False
        )
    while bad / good - 1.0 > tol:
        mid = (good * bad) ** 0.5  # geometric: the bracket spans factors, not offsets
        if attainment(mid) >= target:
            good = mid
        else:
            bad = mid
    return CapacityResult(good, tuple(sorted(curve.items())), target, slo, summaries[good], True)
