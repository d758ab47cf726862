"""The cost and energy formulas, checked against hand computations."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from selfserve.plan.economics import (
    FleetEconomics,
    cost_per_million_tokens,
    joules_per_token,
    tokens_per_mwh,
)


def test_cost_formula_matches_nvidia_worked_examples():
    # hardware.md §2: 1.41 $/GPU-h at 90 tok/s/GPU → $4.35/M; 2.65 at 6,000 → $0.123/M.
    assert cost_per_million_tokens(1.41, 90.0) == pytest.approx(4.3518, rel=1e-4)
    assert cost_per_million_tokens(2.65, 6000.0) == pytest.approx(0.12269, rel=1e-4)


def test_cost_formula_against_hand_computation():
    # $3/GPU-h, 1,000 tok/s/GPU: 3.6M tokens per GPU-hour → $3 / 3.6 = $0.8333 per M.
    assert cost_per_million_tokens(3.0, 1000.0) == pytest.approx(3.0 / 3.6)


def test_no_throughput_costs_infinity_and_negative_price_is_rejected():
    assert math.isinf(cost_per_million_tokens(2.0, 0.0))
    with pytest.raises(ValueError, match="usd_per_gpu_hour"):
        cost_per_million_tokens(-1.0, 10.0)


def test_fleet_cost_per_token_equals_per_gpu_formula():
    # 16 GPUs at $4/h serving 8,000 output tok/s: fleet $64/h ÷ 28.8M tok/h = $2.222/M.
    econ = FleetEconomics(
        num_gpus=16,
        usd_per_gpu_hour=4.0,
        output_tokens_per_s=8000.0,
        total_tokens_per_s=80_000.0,
        energy_j=3.6e9,
        output_tokens=2.0e6,
        total_tokens=2.0e7,
    )
    assert econ.usd_per_hour == 64.0
    assert econ.usd_per_million_output_tokens == pytest.approx(64.0 / 28.8)
    assert econ.usd_per_million_total_tokens == pytest.approx(64.0 / 288.0)
    # 1 MWh of energy for 2M output tokens: 1,800 J per token, 2M tokens per MWh.
    assert econ.joules_per_output_token == pytest.approx(1800.0)
    assert econ.output_tokens_per_mwh == pytest.approx(2.0e6)
    assert econ.total_tokens_per_mwh == pytest.approx(2.0e7)


def test_unpriced_fleet_has_no_cost_but_keeps_energy_figures():
    econ = FleetEconomics(8, None, 100.0, 1000.0, 1.0e6, 5000.0, 50_000.0)
    assert econ.usd_per_hour is None
    assert econ.usd_per_million_output_tokens is None
    assert econ.joules_per_output_token == pytest.approx(200.0)


@given(
    price=st.floats(0.01, 100.0),
    rate=st.floats(0.1, 1e5),
    factor=st.floats(1.01, 10.0),
)
def test_cost_falls_as_throughput_rises_and_rises_with_price(price, rate, factor):
    base = cost_per_million_tokens(price, rate)
    assert cost_per_million_tokens(price, rate * factor) < base
    assert cost_per_million_tokens(price * factor, rate) > base


@given(tokens=st.floats(1.0, 1e12), energy=st.floats(1.0, 1e15))
def test_tokens_per_mwh_is_the_rescaled_inverse_of_joules_per_token(tokens, energy):
    assert tokens_per_mwh(tokens, energy) * joules_per_token(energy, tokens) == pytest.approx(3.6e9)
