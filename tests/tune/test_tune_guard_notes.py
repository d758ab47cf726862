"""The guards are measured on training; where the learned policy breaks them on
validation, the result says so."""

from __future__ import annotations

from selfserve.tune.objective import Evaluation
from selfserve.tune.tuner import TuneConfig
from selfserve.tune.validation import WINNER, guard_notes


def _at_capacity(
    long_attainment: float, p99_ttft_s: float, hopeless_p50_s: float = float("nan")
) -> Evaluation:
    return Evaluation(
        score=5.0,
        objective="capacity",
        capacity=5.0,
        p99_ttft_s=p99_ttft_s,
        probes=(),
        is_exact=True,
        long_attainment=long_attainment,
        infeasible_p50_ttft_s=hopeless_p50_s,
    )


def test_long_prompts_losing_more_than_the_margin_on_validation_is_reported():
    # Mooncake conversation x12 (session 5): 68.2 % vs lmetric's 78.0 %
    validation = {WINNER: _at_capacity(0.682, 15.4), "lmetric": _at_capacity(0.780, 8.2)}
    notes = guard_notes(validation, "lmetric", TuneConfig())
    assert len(notes) == 1
    assert "68.2%" in notes[0] and "78.0%" in notes[0] and "lmetric" in notes[0]


def test_a_tail_beyond_the_factor_on_validation_is_reported():
    validation = {WINNER: _at_capacity(0.754, 24.8), "lmetric": _at_capacity(0.782, 8.6)}
    notes = guard_notes(validation, "lmetric", TuneConfig())
    assert len(notes) == 1 and "24.8 s" in notes[0] and "2x" in notes[0]
    assert guard_notes(validation, "lmetric", TuneConfig(tail_factor=3.0)) == []
    assert guard_notes(validation, "lmetric", TuneConfig(tail_factor=0.0)) == []


def test_guards_that_held_or_do_not_apply_add_nothing():
    held = {WINNER: _at_capacity(0.75, 10.0), "lmetric": _at_capacity(0.78, 8.6)}
    assert guard_notes(held, "lmetric", TuneConfig()) == []
    broken = {WINNER: _at_capacity(0.5, 90.0), "lmetric": _at_capacity(0.78, 8.6)}
    assert guard_notes(broken, "lmetric", TuneConfig(objective="capacity-all")) == []
    assert guard_notes({"lmetric": broken["lmetric"]}, "lmetric", TuneConfig()) == []


def test_hopeless_requests_parked_beyond_the_factor_on_validation_are_reported():
    # chat + 1M mix (session 8): 0.9 % of requests, under the p99's reach, wait a median
    # 2357.6 s under the learned policy vs 87.3 s under llm-d
    validation = {
        WINNER: _at_capacity(0.92, 34.0, 2357.6),
        "llm-d": _at_capacity(0.91, 294.0, 87.3),
    }
    notes = guard_notes(validation, "llm-d", TuneConfig())
    assert len(notes) == 1 and "2357.6 s" in notes[0] and "87.3 s under llm-d" in notes[0]
    assert guard_notes(validation, "llm-d", TuneConfig(tail_factor=30.0)) == []
