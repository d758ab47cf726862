"""The fast paths the simulator relies on are exact: decode step by total context, stretches."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from selfserve.perf import PerfModel

MODELS = {
    "dense": PerfModel.create("llama-3.1-8b", "h200"),
    "tp4": PerfModel.create("llama-3.1-70b", "h100", tp=4),
    "moe": PerfModel.create("qwen3-30b-a3b", "b200", weight_dtype="fp8"),
}


@settings(max_examples=60, deadline=None)
@given(
    st.sampled_from(sorted(MODELS)),
    st.lists(st.integers(min_value=0, max_value=200_000), min_size=1, max_size=64),
)
def test_decode_step_time_depends_only_on_batch_size_and_total_context(key, contexts):
    perf = MODELS[key]
    assert perf.decode_step_time_s(len(contexts), sum(contexts)) == pytest.approx(
        perf.step_time_s([], contexts), rel=1e-12
    )
    assert perf.step_cost([], contexts).energy_j == pytest.approx(
        perf.step_energy_j([], contexts), rel=1e-12
    )


@settings(max_examples=60, deadline=None)
@given(
    st.sampled_from(sorted(MODELS)),
    st.integers(min_value=1, max_value=512),
    st.integers(min_value=0, max_value=1_000_000),
    st.integers(min_value=0, max_value=300),
)
def test_decode_stretch_equals_the_sum_of_its_steps(key, batch, context, steps):
    perf = MODELS[key]
    stretch = perf.decode_stretch(batch, context, steps)
    time_s = sum(perf.decode_step_time_s(batch, context + k * batch) for k in range(steps))
    energy_j = sum(
        perf.step_energy_j([], [context + k * batch] + [0] * (batch - 1)) for k in range(steps)
    )
    assert stretch.time_s == pytest.approx(time_s, rel=1e-9, abs=1e-15)
    assert stretch.energy_j == pytest.approx(energy_j, rel=1e-9, abs=1e-12)


def test_empty_steps_cost_nothing():
    perf = MODELS["dense"]
    assert perf.step_time_s([], []) == 0.0
    assert perf.decode_stretch(0, 100, 10).time_s == 0.0
    assert perf.decode_stretch(4, 100, 0).energy_j == 0.0


def test_mixed_step_costs_more_than_either_part_and_less_than_both_apart():
    perf = MODELS["dense"]
    prefill = [(512, 0)]
    decodes = [2048] * 32
    mixed = perf.step_time_s(prefill, decodes)
    assert mixed > max(perf.step_time_s(prefill, []), perf.step_time_s([], decodes))
    assert mixed < perf.step_time_s(prefill, []) + perf.step_time_s(
        [], decodes
    )  # weights read once


@settings(max_examples=60, deadline=None)
@given(
    st.sampled_from(sorted(MODELS)),
    st.lists(st.tuples(st.integers(1, 8192), st.integers(0, 100_000)), min_size=0, max_size=4),
    st.lists(st.integers(min_value=0, max_value=100_000), max_size=64),
)
def test_fast_step_time_agrees_with_step_cost(key, prefill, decodes):
    perf = MODELS[key]
    assert perf.step_time_s(prefill, decodes) == pytest.approx(
        perf.step_cost(prefill, decodes).time_s, rel=1e-12
    )
    assert perf.step_time_s(prefill, decodes) == pytest.approx(
        perf.step_time_s(prefill, decodes), rel=0
    )  # memo is pure
