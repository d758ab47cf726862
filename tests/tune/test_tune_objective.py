"""Capacity estimates from few probes, and the evaluation cache."""

from __future__ import annotations

import math

import pytest

from selfserve.policy.expression import anchor_document
from selfserve.sim import SLO
from selfserve.tune.objective import (
    SMOOTH_GRID_STEP,
    EvalPlan,
    Probe,
    _closest_passing,
    _extrapolate,
    figures_at_capacity,
    search_capacity,
    smooth_capacity,
)
from selfserve.tune.pool import CachedEvaluator, SerialEvaluator
from selfserve.tune.windows import fingerprint, window
from selfserve.workload.embedded import load_embedded


def test_estimate_never_runs_beyond_what_the_probes_showed():
    # both probes pass with a nearly flat curve: a straight line would cross 0.9 far away
    flat = [Probe(2.0, 0.95, 1.0), Probe(2.24, 0.949, 1.0)]
    assert _extrapolate(flat, 0.9) == pytest.approx(2.24 * 1.049)
    # both fail: the estimate stays below the lowest failing rate, lower for worse attainment
    failing = [Probe(1.0, 0.8, 1.0), Probe(0.9, 0.85, 1.0)]
    worse = [Probe(1.0, 0.6, 1.0), Probe(0.9, 0.7, 1.0)]
    assert _extrapolate(failing, 0.9) < 0.9
    assert _extrapolate(worse, 0.9) < _extrapolate(failing, 0.9)


def test_cache_reuses_an_evaluation_across_evaluators(tmp_path):
    trace = load_embedded("mooncake-conversation-10min")
    part = window(trace, "0s:30s")
    slo = SLO.parse("ttft=10s,tpot=200ms")
    plan = EvalPlan(start_rate=0.7, rel_tol=0.2, max_sims=2)
    doc = anchor_document("lmetric")
    path = tmp_path / "evals.pkl"

    def evaluator() -> CachedEvaluator:
        inner = SerialEvaluator({"w": part}, "2xh200/llama-3.1-8b", slo)
        return CachedEvaluator(inner, path, {"w": fingerprint(part)}, context="2xh200|loose")

    first = evaluator()
    fresh = first.submit("w", doc, plan).result()
    first.close()
    second = evaluator()
    again = second.submit("w", doc, plan).result()
    assert second.hits == 1 and again.score == fresh.score
    other_plan = second.submit("w", doc, EvalPlan(start_rate=0.5, rel_tol=0.2, max_sims=1)).result()
    assert second.hits == 1 and other_plan.probes[0].rate == 0.5


def _wiggly_curve(rate: float) -> Probe:
    """Attainment falling through 90% near x1.0 with a +-0.4% wiggle every ~1%: not
    monotone at the scale the bisection resolves (like the simulator's curves)."""
    wiggle = 0.004 * math.sin(rate * 700.0)
    return Probe(rate, 0.9 - 0.3 * math.log(rate) + wiggle, 1.0)


def test_bisection_alone_lands_where_its_start_leads_it_on_a_wiggly_curve():
    plain = {
        start: search_capacity(
            _wiggly_curve, EvalPlan(start_rate=start, rel_tol=0.005, max_sims=30)
        )[0]
        for start in (0.5, 0.8, 0.97, 1.3, 2.0)
    }
    assert max(plain.values()) / min(plain.values()) > 1.005


def test_smoothed_capacity_does_not_depend_on_where_the_search_started():
    smoothed = []
    for start in (0.5, 0.8, 0.97, 1.3, 2.0):
        plan = EvalPlan(start_rate=start, rel_tol=0.005, max_sims=40, smooth_points=7)
        capacity, probes, exact = search_capacity(_wiggly_curve, plan)
        assert exact
        smoothed.append(capacity)
        # the extra probes sit on the shared grid (1 + step)^k
        grid = [p.rate for p in probes[-7:]]
        ks = [math.log(r) / math.log1p(SMOOTH_GRID_STEP) for r in grid]
        assert all(abs(k - round(k)) < 1e-9 for k in ks)
        assert [round(b - a) for a, b in zip(ks, ks[1:], strict=False)] == [1] * 6
    assert max(smoothed) / min(smoothed) < 1.002
    assert smoothed[0] == pytest.approx(1.0, rel=0.01)  # the trend's own root


def test_smoothing_keeps_the_estimate_when_the_margins_do_not_fall():
    rising = lambda rate: Probe(rate, 0.8 + 0.1 * rate, 1.0)  # noqa: E731
    assert smooth_capacity(1.0, rising, 5) == 1.0
    # pure noise around 90%: whatever the line says, the answer stays inside the probed span
    flat = lambda rate: Probe(rate, 0.9 + 0.01 * math.sin(rate * 900.0), 1.0)  # noqa: E731
    span = (1 + SMOOTH_GRID_STEP) ** 3
    assert 1.0 / span - 1e-9 <= smooth_capacity(1.0, flat, 7) <= span + 1e-9


def _steep_long_curve(rate: float) -> Probe:
    """The wiggly curve, with the long prompts' attainment falling ~4 points per 1.5 % rate
    step near capacity (lmetric on Mooncake conversation x12) and a p99 TTFT that rises
    with the rate; each carries a wiggle like the simulator's."""
    probe = _wiggly_curve(rate)
    long = 0.78 - 2.7 * math.log(rate) + 0.01 * math.sin(rate * 900.0)
    p99 = 10.0 * (1.0 + 3.0 * math.log(rate)) + 0.3 * math.sin(rate * 500.0)
    return Probe(rate, probe.attainment, p99, {"long_attainment": long}, long_attainment=long)


def test_figures_at_capacity_do_not_move_with_where_the_search_started():
    """The long-prompt floor of a tune run is the best anchor's long attainment at its
    capacity: read off the highest passing probe, it sits up to a grid step below capacity
    and moved several points with the seed; read from a line through the smoothing grid
    it stays where the curve crosses the capacity."""
    at_probe, fitted, p99s = [], [], []
    for start in (0.5, 0.8, 0.97, 1.3, 2.0):
        plan = EvalPlan(start_rate=start, rel_tol=0.005, max_sims=40, smooth_points=7)
        capacity, probes, exact = search_capacity(_steep_long_curve, plan)
        p99, fields = figures_at_capacity(probes, capacity, exact, plan)
        at_probe.append(_closest_passing(probes, capacity).long_attainment)
        fitted.append(fields["long_attainment"])
        p99s.append(p99)
        true_long = 0.78 - 2.7 * math.log(capacity)
        assert fields["long_attainment"] == pytest.approx(true_long, abs=0.01)
        assert p99 == pytest.approx(10.0 * (1.0 + 3.0 * math.log(capacity)), abs=0.3)
    assert max(fitted) - min(fitted) < 0.001
    assert max(p99s) - min(p99s) < 0.01
    assert max(at_probe) - min(at_probe) > 0.03  # the highest passing probe moves with it


def test_figures_at_capacity_are_the_probes_own_without_smoothing():
    plan = EvalPlan(start_rate=1.0, rel_tol=0.02, max_sims=20)
    capacity, probes, exact = search_capacity(_steep_long_curve, plan)
    p99, fields = figures_at_capacity(probes, capacity, exact, plan)
    closest = _closest_passing(probes, capacity)
    assert fields["long_attainment"] == closest.long_attainment and p99 == closest.p99_ttft_s
    assert figures_at_capacity([Probe(1.0, 0.5, 1.0)], 1.0, True, plan) == (math.inf, {})


def test_a_probe_fails_when_the_hopeless_requests_wait_past_their_limit():
    """The p99 TTFT does not see requests no replica serves in time when they are under 1 %;
    their median TTFT has its own limit (chat + 1M mix: parked a median 39 minutes)."""
    probe = Probe(1.0, 0.95, 30.0, hopeless_p50_ttft_s=2357.6, hopeless_limit_s=174.6)
    assert not probe.passes() and probe.margin() < -10.0
    assert Probe(1.0, 0.95, 30.0, hopeless_p50_ttft_s=90.0, hopeless_limit_s=174.6).passes()
    # no hopeless requests (NaN) or no limit: the guard does not apply
    assert Probe(1.0, 0.95, 30.0, hopeless_limit_s=174.6).passes()
    assert Probe(1.0, 0.95, 30.0, hopeless_p50_ttft_s=2357.6).passes()
