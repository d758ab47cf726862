"""The InferenceMAX view: throughput per GPU against tokens/s per user, swept over load.

SemiAnalysis' InferenceMAX/InferenceX traces, for each system, the frontier of output
tokens/s per GPU (what the owner earns) against tokens/s per user (interactivity, 1/TPOT)
as load rises, and compares systems *at the same interactivity* — never one system's best
point against another's worst. Here the load is the workload's own arrival process scaled
by a rate multiplier, and the fleet is the one the plan sized for the SLO. This module holds
the curve arithmetic (frontier, interpolation at matched interactivity); `planner` runs
the simulations.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from selfserve.plan.measure import FleetMeasurement


@dataclass(frozen=True, slots=True)
class CurvePoint:
    """One load level of one option: its interactivity and per-GPU throughput."""

    rate_scale: float
    tokens_per_s_per_user: float
    output_tokens_per_s_per_gpu: float
    attainment: float
    p99_ttft_s: float


def curve_points(measurements: Sequence[FleetMeasurement]) -> list[CurvePoint]:
    """Points with a finite interactivity, ordered by rising load."""
    points = [
        CurvePoint(
            m.rate_scale,
            m.tokens_per_s_per_user,
            m.output_tokens_per_s_per_gpu,
            m.attainment,
            m.p99_ttft_s,
        )
        for m in measurements
        if math.isfinite(m.tokens_per_s_per_user) and m.output_tokens_per_s_per_gpu > 0
    ]
    return sorted(points, key=lambda p: p.rate_scale)


def pareto_frontier(points: Sequence[CurvePoint]) -> list[CurvePoint]:
    """Points not beaten on both axes, by falling interactivity (rising throughput)."""
    ordered = sorted(
        points, key=lambda p: (-p.tokens_per_s_per_user, -p.output_tokens_per_s_per_gpu)
    )
    frontier: list[CurvePoint] = []
    best_throughput = -math.inf
    for point in ordered:
        if point.output_tokens_per_s_per_gpu > best_throughput:
            frontier.append(point)
            best_throughput = point.output_tokens_per_s_per_gpu
    return frontier


def throughput_at_interactivity(
    points: Sequence[CurvePoint], tokens_per_s_per_user: float
) -> float | None:
    """Best tokens/s/GPU the option reaches while serving each user at ≥ this speed.

    Linear interpolation between the two frontier points that bracket the level; None when
    the option never serves users that fast (the level is beyond its curve). Below the
    slowest measured point the best measured throughput is returned: more load would not
    be measured, so nothing is extrapolated.
    """
    frontier = pareto_frontier(points)
    if not frontier or tokens_per_s_per_user > frontier[0].tokens_per_s_per_user:
        return None
    for fast, slow in zip(frontier, frontier[1:], strict=False):
        if slow.tokens_per_s_per_user <= tokens_per_s_per_user <= fast.tokens_per_s_per_user:
            span = fast.tokens_per_s_per_user - slow.tokens_per_s_per_user
            if span <= 0:
                return slow.output_tokens_per_s_per_gpu
            weight = (fast.tokens_per_s_per_user - tokens_per_s_per_user) / span
            return fast.output_tokens_per_s_per_gpu + weight * (
                slow.output_tokens_per_s_per_gpu - fast.output_tokens_per_s_per_gpu
            )
    return frontier[-1].output_tokens_per_s_per_gpu


def matched_levels(
    curves: Sequence[Sequence[CurvePoint]], slo_tokens_per_s_per_user: float | None, count: int = 4
) -> list[float]:
    """Interactivity levels at which at least two options can be compared like for like.

    An option reaches level L when some point of its curve serves users at ≥ L tokens/s;
    its throughput there is read off its own frontier. Levels run (geometrically) from the
    slowest measured point of any curve up to the second-fastest curve's top, so every
    level has at least two options; options that never reach a level are shown as such,
    not compared at some other point. The SLO's own level (1/TPOT target) is included
    when at least two options reach it.
    """
    usable = [c for c in curves if c]
    if not usable:
        return []
    tops = sorted((max(p.tokens_per_s_per_user for p in c) for c in usable), reverse=True)
    high = tops[1] if len(tops) > 1 else tops[0]
    low = min(min(p.tokens_per_s_per_user for p in c) for c in usable)
    low = min(low, high)
    if count <= 1 or high <= low:
        levels = [high]
    else:
        ratio = (high / low) ** (1.0 / (count - 1))
        levels = [low * ratio**i for i in range(count)]
    if slo_tokens_per_s_per_user and slo_tokens_per_s_per_user <= high:
        levels.append(slo_tokens_per_s_per_user)
    # Round down: a level rounded up past the second curve's top would leave it unreached.
    return sorted({math.floor(level * 1000 + 1e-6) / 1000 for level in levels}, reverse=True)


def sweep_multipliers(headroom: float | None) -> list[float]:
    """Low-load multipliers below the capacity point (the headroom bisection already
    measured the points around and past capacity, so three more complete the curve)."""
    top = headroom if headroom and math.isfinite(headroom) else 1.0
    return [round(top * fraction, 4) for fraction in (0.15, 0.4, 0.7)]
