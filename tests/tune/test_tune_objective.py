"""Capacity estimates from few probes, and the evaluation cache."""

from __future__ import annotations

import pytest

from selfserve.policy.expression import anchor_document
from selfserve.sim import SLO
from selfserve.tune.objective import EvalPlan, Probe, _extrapolate
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
