"""InferenceMAX curve arithmetic: frontier, matched interactivity, load multipliers."""

from __future__ import annotations

import pytest

from selfserve.plan.sweep import (
    CurvePoint,
    matched_levels,
    pareto_frontier,
    sweep_multipliers,
    throughput_at_interactivity,
)


def point(user: float, gpu: float, scale: float = 1.0) -> CurvePoint:
    return CurvePoint(scale, user, gpu, 0.95, 1.0)


def test_frontier_drops_points_beaten_on_both_axes():
    points = [point(100, 50), point(80, 40), point(60, 200), point(30, 150)]
    frontier = pareto_frontier(points)
    assert [(p.tokens_per_s_per_user, p.output_tokens_per_s_per_gpu) for p in frontier] == [
        (100, 50),
        (60, 200),
    ]


def test_throughput_interpolates_between_bracketing_points():
    curve = [point(100, 100), point(50, 300)]
    assert throughput_at_interactivity(curve, 75) == pytest.approx(200)
    assert throughput_at_interactivity(curve, 100) == pytest.approx(100)


def test_interactivity_beyond_the_curve_is_not_extrapolated():
    curve = [point(100, 100), point(50, 300)]
    assert throughput_at_interactivity(curve, 120) is None
    # slower than any measured point: the best measured throughput, not a guess beyond it
    assert throughput_at_interactivity(curve, 10) == pytest.approx(300)


def test_matched_levels_are_reached_by_at_least_two_options():
    a = [point(150, 50), point(50, 400)]
    b = [point(100, 80), point(20, 300)]
    c = [point(300, 10), point(200, 900)]  # always faster per user than a and b
    levels = matched_levels([a, b, c], slo_tokens_per_s_per_user=75.0)
    assert max(levels) == pytest.approx(150)  # the second-fastest top, not c's 300
    assert min(levels) == pytest.approx(20)
    assert 75.0 in levels
    for level in levels:
        reached = [throughput_at_interactivity(curve, level) for curve in (a, b, c)]
        assert sum(value is not None for value in reached) >= 2
    # at 120 tok/s/user b's curve never gets there: it is not compared at another point
    assert throughput_at_interactivity(b, 120) is None


def test_an_slo_level_no_two_options_reach_is_left_out():
    a = [point(50, 400)]
    b = [point(40, 300)]
    assert 75.0 not in matched_levels([a, b], slo_tokens_per_s_per_user=75.0)


def test_sweep_multipliers_scale_with_headroom():
    assert sweep_multipliers(2.0) == [0.3, 0.8, 1.4]
    assert sweep_multipliers(None) == [0.15, 0.4, 0.7]


def test_the_top_level_is_reached_by_two_curves_despite_rounding():
    a = [point(75.43, 14), point(30, 100)]
    b = [point(74.8048, 14), point(30, 100)]  # rounds *up* to 74.805 at 3 decimals
    top = max(matched_levels([a, b], None))
    assert throughput_at_interactivity(a, top) is not None
    assert throughput_at_interactivity(b, top) is not None
