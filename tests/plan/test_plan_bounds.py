"""Best-case attainment: the idle-replica TTFT bound that stops hopeless searches early."""

from __future__ import annotations

from selfserve.plan.bounds import best_case_attainment, idle_ttft_lower_bounds_s
from selfserve.plan.options import DeploymentOption, check_fit
from selfserve.plan.planner import PlanSettings, evaluate_option
from selfserve.plan.prices import price_for
from selfserve.workload.request import Request, Workload

H100_TP4 = DeploymentOption("h100", "llama-3.1-70b", 4)


def long_prompts(count: int = 10, prompt_tokens: int = 60_000) -> Workload:
    requests = [
        Request(f"r{i}", float(i), prompt_tokens, 50, tuple(range(i * 1000, i * 1000 + 100)), 512)
        for i in range(count)
    ]
    return Workload(requests, name="long", block_size=512)


def test_a_cached_prefix_shortens_the_bound_and_more_gpus_shorten_it_more():
    shared = tuple(range(100))
    first = Request("a", 0.0, 51_200, 10, shared, 512)
    repeat = Request("b", 1.0, 51_200 + 512, 10, (*shared, 999), 512)
    bounds = idle_ttft_lower_bounds_s(Workload([first, repeat]), H100_TP4)
    assert bounds[1] < bounds[0] / 20  # only one new block to prefill the second time
    tp8 = idle_ttft_lower_bounds_s(Workload([first]), DeploymentOption("h100", "llama-3.1-70b", 8))
    assert tp8[0] < bounds[0]


def test_best_case_is_the_fraction_of_requests_an_idle_replica_serves_in_time():
    workload = long_prompts()
    (bound,) = set(idle_ttft_lower_bounds_s(Workload(workload.requests[:1]), H100_TP4))
    assert best_case_attainment(workload, H100_TP4, ttft_s=bound * 1.01) == 1.0
    assert best_case_attainment(workload, H100_TP4, ttft_s=bound * 0.99) == 0.0


def test_an_slo_no_fleet_can_meet_is_reported_without_simulating():
    workload = long_prompts()
    fit = check_fit(H100_TP4, 60_050)
    price, why = price_for("h100", "on-demand")
    plan = evaluate_option(
        workload, fit, price, why, PlanSettings(slo="ttft=0.5s,tpot=100ms", policy="round-robin")
    )
    assert not plan.meets_slo and plan.num_simulations == 0
    assert plan.best_case_attainment == 0.0
    assert "no fleet size meets the SLO" in plan.reason and "0.0%" in plan.reason
