"""The whole plan for one workload and model: options, fits, fleets, costs, curves, winner.

`plan_fleet` is the library entry point behind `selfserve plan`: it picks the simulation
window, enumerates card × TP × precision options, checks each fits, looks up prices on the
chosen basis, evaluates the options in parallel (`planner`), and compares their InferenceMAX
curves at matched interactivity (`sweep`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from selfserve.plan.economics import cost_per_million_tokens
from selfserve.plan.options import FitCheck, check_fit, enumerate_options, require_some_fit
from selfserve.plan.planner import OptionPlan, PlanSettings, cheapest, run_options
from selfserve.plan.prices import price_for
from selfserve.plan.sweep import curve_points, matched_levels, throughput_at_interactivity
from selfserve.plan.window import WindowChoice, busiest_window
from selfserve.workload.request import Workload

# The anchor that sized fleets smallest in our runs: on the Mooncake conversation window it
# reached 96% SLO attainment on 4×B200-TP8 (70B) and 90% on 7×H100 (8B), where the llm-d
# default profile reached 70% and 60% on the same fleets (prefix affinity piles long
# prefills onto few replicas). A learned policy file can be given instead.
DEFAULT_POLICY = "lmetric"


@dataclass(frozen=True, slots=True)
class MatchedPoint:
    """One option at one interactivity level every compared option reaches."""

    label: str
    tokens_per_s_per_user: float
    output_tokens_per_s_per_gpu: float | None  # None: beyond this option's curve
    usd_per_million_output_tokens: float | None


@dataclass(frozen=True, slots=True)
class PlanResult:
    model: str
    workload_name: str
    window: WindowChoice
    slo: str
    policy: str
    price_basis: str
    growth: float
    options: tuple[OptionPlan, ...]
    cheapest: OptionPlan | None
    cheapest_at_growth: OptionPlan | None
    matched: tuple[MatchedPoint, ...]


def largest_request_tokens(workload: Workload) -> int:
    return max(
        (r.total_prompt_tokens + r.output_tokens for r in workload.requests),
        default=0,
    )


def plan_fleet(
    workload: Workload,
    model: str,
    *,
    hardware: Sequence[str],
    tps: Sequence[int],
    slo: str,
    policy: object = DEFAULT_POLICY,
    dtypes: Sequence[str] = ("bf16",),
    price_basis: str = "on-demand",
    price_overrides: Mapping[str, float] | None = None,
    growth: float = 1.0,
    max_requests: int = 4000,
    max_replicas: int = 256,
    seed: int = 0,
    sweep: bool = True,
    jobs: int | None = None,
    on_fit: Callable[[Sequence[FitCheck]], None] | None = None,
    on_done: Callable[[OptionPlan], None] | None = None,
) -> PlanResult:
    """Plan fleets for `workload` on every option; raises `NoFitError` when none fits."""
    window, choice = busiest_window(workload, max_requests)
    largest = largest_request_tokens(window)
    fits = [
        check_fit(option, largest) for option in enumerate_options(model, hardware, tps, dtypes)
    ]
    require_some_fit(model, fits)
    if on_fit:
        on_fit(fits)
    prices = {
        card: price_for(card, price_basis, price_overrides)
        for card in {f.option.hardware for f in fits}
    }
    settings = PlanSettings(
        slo=slo, policy=policy, growth=growth, seed=seed, max_replicas=max_replicas, sweep=sweep
    )
    plans = run_options(window, fits, prices, settings, jobs=jobs, on_done=on_done)
    return PlanResult(
        model=model,
        workload_name=workload.name,
        window=choice,
        slo=slo,
        policy=str(policy),
        price_basis=price_basis,
        growth=growth,
        options=tuple(plans),
        cheapest=cheapest(plans),
        cheapest_at_growth=cheapest(plans, at_growth=True) if growth != 1.0 else None,
        matched=tuple(_matched(plans, slo)),
    )


def _slo_interactivity(slo_text: str) -> float | None:
    """1 / TPOT target, the interactivity the SLO itself asks for (None without one)."""
    from selfserve.sim import SLO

    tpot_s = getattr(SLO.parse(slo_text), "tpot_s", None)
    return 1.0 / tpot_s if tpot_s else None


def _matched(plans: Sequence[OptionPlan], slo: str) -> list[MatchedPoint]:
    with_curves = [p for p in plans if p.curve]
    curves = [curve_points(p.curve) for p in with_curves]
    points: list[MatchedPoint] = []
    for level in matched_levels(curves, _slo_interactivity(slo)):
        for plan, curve in zip(with_curves, curves, strict=True):
            per_gpu = throughput_at_interactivity(curve, level)
            usd = None
            if per_gpu and plan.price is not None:
                usd = cost_per_million_tokens(plan.price.usd_per_gpu_hour, per_gpu)
            points.append(MatchedPoint(plan.option.label, level, per_gpu, usd))
    return points
