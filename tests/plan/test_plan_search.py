"""The replica search and the headroom search on known attainment curves."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from selfserve.plan.search import Probe, max_rate_multiplier, min_replicas


def step_curve(needed: int):
    """A fleet of `needed` or more replicas attains 95%; fewer serve proportionally less."""
    calls: list[int] = []

    def probe(n: int) -> Probe:
        calls.append(n)
        attained = 0.95 if n >= needed else 0.95 * n / needed * 0.5
        return Probe(attained, 100.0 * min(n, needed))

    return probe, calls


@pytest.mark.parametrize("needed", [1, 2, 3, 7, 8, 9, 33, 100, 255])
def test_finds_the_fewest_passing_replicas(needed):
    probe, calls = step_curve(needed)
    result = min_replicas(probe, max_replicas=256)
    assert result.replicas == needed
    assert result.attainment == pytest.approx(0.95)
    # exponential then binary: about 2 log2(needed) simulations, never a linear scan.
    assert len(calls) <= 2 * max(1, needed).bit_length() + 1
    assert len(set(calls)) == len(calls)


def test_overloaded_fleets_at_zero_attainment_are_not_mistaken_for_a_plateau():
    # 0% attainment at 1..16 replicas while throughput still doubles; 20 replicas pass.
    def probe(n: int) -> Probe:
        return Probe(0.95 if n >= 20 else 0.0, 10.0 * min(n, 20))

    assert min_replicas(probe).replicas == 20


def test_slo_out_of_reach_of_scale_out_stops_early_with_a_reason():
    # Attainment and throughput stay flat: the misses are requests no fleet can serve in time.
    calls: list[int] = []

    def probe(n: int) -> Probe:
        calls.append(n)
        return Probe(0.6, 500.0)

    result = min_replicas(probe, max_replicas=1024)
    assert result.replicas is None
    assert "60.0%" in result.reason and "does not meet" in result.reason
    assert max(calls) <= 4


def test_cap_reached_says_so():
    result = min_replicas(lambda n: Probe(0.5 * n / 64, 10.0 * n), max_replicas=8)
    assert result.replicas is None
    assert "raise --max-replicas" in result.reason


@given(needed_loose=st.integers(1, 200), extra=st.integers(0, 50))
def test_stricter_slo_never_needs_fewer_replicas(needed_loose, extra):
    """A stricter SLO lowers attainment at every fleet size, so it cannot lower the fleet."""
    loose, _ = step_curve(needed_loose)
    strict, _ = step_curve(needed_loose + extra)
    assert min_replicas(strict).replicas >= min_replicas(loose).replicas


def test_headroom_brackets_the_capacity_multiplier():
    result = max_rate_multiplier(lambda m: 0.95 if m <= 2.7 else 0.5, rel_tol=0.02)
    assert 2.7 * 0.98 <= result.multiplier <= 2.7
    assert not result.capped


def test_headroom_of_a_failing_fleet_is_zero_and_huge_headroom_is_capped():
    assert max_rate_multiplier(lambda m: 0.1).multiplier == 0.0
    capped = max_rate_multiplier(lambda m: 1.0, max_multiplier=4.0)
    assert capped.capped and capped.multiplier == 4.0


def test_offered_demand_lets_the_search_skip_sizes_that_cannot_pass():
    # each replica serves at most 100 tok/s; 4,000 tok/s are offered; 45 replicas pass.
    def probe(n: int) -> Probe:
        return Probe(0.95 if n >= 45 else 0.0, 100.0 * min(n, 45))

    blind = min_replicas(probe)
    informed = min_replicas(probe, demand_output_tokens_per_s=4000.0)
    assert blind.replicas == informed.replicas == 45
    assert informed.num_simulations < blind.num_simulations
    assert 40 in informed.evaluations  # jumped straight to the throughput lower bound
