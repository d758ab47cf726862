"""`plan`: for every deployment option, the fewest replicas meeting the SLO, and what it costs.

For each card × TP × precision that fits, the planner (1) finds the fewest replicas whose
simulated SLO attainment is ≥ 90% at the recorded rate, (2) measures that fleet's headroom
(the largest rate multiplier it still serves), which also gives the high-load points of the
InferenceMAX curve, (3) adds low-load points for the rest of the curve, and (4) sizes the
fleet again at the growth factor. Options run in parallel processes; every simulation goes
through `measure.measure_fleet`.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field

from selfserve.catalog.accelerators import Price
from selfserve.plan.bounds import best_case_attainment
from selfserve.plan.measure import FleetMeasurement, measure_fleet
from selfserve.plan.options import DeploymentOption, FitCheck
from selfserve.plan.search import (
    ATTAINMENT_TARGET,
    HeadroomSearch,
    Probe,
    ReplicaSearch,
    max_rate_multiplier,
    min_replicas,
)
from selfserve.plan.sweep import sweep_multipliers
from selfserve.workload.request import Workload


@dataclass(frozen=True, slots=True)
class PlanSettings:
    """Everything an option's evaluation needs besides the option (picklable)."""

    slo: str  # SLO text, parsed in the worker by selfserve.sim.SLO.parse
    policy: object  # a policy spec for selfserve.policy.make_policy
    growth: float = 1.0
    seed: int = 0
    max_replicas: int = 256
    sweep: bool = True
    headroom_tol: float = 0.08


@dataclass(frozen=True, slots=True)
class OptionPlan:
    """The plan for one deployment option; `reason` says why it has no fleet, if so."""

    option: DeploymentOption
    fit: FitCheck
    price: Price | None
    price_reason: str
    search: ReplicaSearch | None = None
    at_rate: FleetMeasurement | None = None  # the chosen fleet at the recorded rate
    headroom: HeadroomSearch | None = None
    growth_search: ReplicaSearch | None = None
    at_growth: FleetMeasurement | None = None
    curve: tuple[FleetMeasurement, ...] = field(default_factory=tuple)
    reason: str = ""
    num_simulations: int = 0
    best_case_attainment: float | None = None  # idle replicas, infinite prefix cache

    @property
    def meets_slo(self) -> bool:
        return self.at_rate is not None

    @property
    def replicas(self) -> int | None:
        return self.search.replicas if self.search else None

    @property
    def usd_per_hour(self) -> float | None:
        if self.at_rate is None or self.price is None:
            return None
        return self.at_rate.num_gpus * self.price.usd_per_gpu_hour

    @property
    def usd_per_hour_at_growth(self) -> float | None:
        if self.at_growth is None or self.price is None:
            return None
        return self.at_growth.num_gpus * self.price.usd_per_gpu_hour


def evaluate_option(
    workload: Workload,
    fit: FitCheck,
    price: Price | None,
    price_reason: str,
    settings: PlanSettings,
) -> OptionPlan:
    """Size, stress and sweep one option (runs in a worker process)."""
    from selfserve.sim import SLO

    option = fit.option
    if not fit.fits:
        return OptionPlan(option, fit, price, price_reason, reason=f"does not fit: {fit.reason}")
    slo = SLO.parse(settings.slo)
    best_case = best_case_attainment(workload, option, slo.ttft_s)
    if best_case < ATTAINMENT_TARGET:
        reason = (
            f"no fleet size meets the SLO: even on idle replicas with every earlier prefix "
            f"cached, only {best_case:.1%} of requests prefill within TTFT ≤ {slo.ttft_s:g} s"
        )
        return OptionPlan(
            option, fit, price, price_reason, reason=reason, best_case_attainment=best_case
        )
    cache: dict[tuple[int, float], FleetMeasurement] = {}

    def run(replicas: int, rate_scale: float) -> FleetMeasurement:
        key = (replicas, round(rate_scale, 6))
        if key not in cache:
            cache[key] = measure_fleet(
                workload,
                option,
                replicas,
                settings.policy,
                slo,
                rate_scale=rate_scale,
                seed=settings.seed,
            )
        return cache[key]

    def probe(rate_scale: float) -> Callable[[int], Probe]:
        def at(replicas: int) -> Probe:
            m = run(replicas, rate_scale)
            return Probe(m.attainment, m.output_tokens_per_s)

        return at

    demand = offered_output_tokens_per_s(workload)
    search = min_replicas(
        probe(1.0), max_replicas=settings.max_replicas, demand_output_tokens_per_s=demand
    )
    if search.replicas is None:
        return OptionPlan(
            option,
            fit,
            price,
            price_reason,
            search=search,
            reason=search.reason,
            num_simulations=len(cache),
            best_case_attainment=best_case,
        )
    replicas = search.replicas
    headroom = max_rate_multiplier(
        lambda scale: run(replicas, scale).attainment, rel_tol=settings.headroom_tol
    )
    growth_search = None
    at_growth = None
    if settings.growth != 1.0:
        if headroom.multiplier >= settings.growth:
            # Measured headroom already covers the growth: the same fleet is the answer.
            growth_search = ReplicaSearch(replicas, run(replicas, settings.growth).attainment)
        else:
            growth_search = min_replicas(
                probe(settings.growth),
                start=replicas,
                max_replicas=settings.max_replicas,
                demand_output_tokens_per_s=demand * settings.growth,
            )
        if growth_search.replicas is not None:
            at_growth = run(growth_search.replicas, settings.growth)
    if settings.sweep:
        for scale in sweep_multipliers(headroom.multiplier):
            run(replicas, scale)
    curve = tuple(sorted((m for (n, _), m in cache.items() if n == replicas), key=_rate))
    return OptionPlan(
        option,
        fit,
        price,
        price_reason,
        search=search,
        at_rate=run(replicas, 1.0),
        headroom=headroom,
        growth_search=growth_search,
        at_growth=at_growth,
        curve=curve,
        reason=""
        if growth_search is None or growth_search.replicas is not None
        else f"at growth ×{settings.growth:g}: {growth_search.reason}",
        num_simulations=len(cache),
        best_case_attainment=best_case,
    )


def offered_output_tokens_per_s(workload: Workload) -> float:
    """Output tokens the workload asks for per second of its arrival span."""
    span_s = workload.span_s
    tokens = sum(request.output_tokens for request in workload.requests)
    return tokens / span_s if span_s > 0 else 0.0


def _rate(measurement: FleetMeasurement) -> float:
    return measurement.rate_scale


def run_options(
    workload: Workload,
    fits: Sequence[FitCheck],
    prices: dict[str, tuple[Price | None, str]],
    settings: PlanSettings,
    *,
    jobs: int | None = None,
    on_done: Callable[[OptionPlan], None] | None = None,
) -> list[OptionPlan]:
    """Evaluate every option, in parallel processes when `jobs` > 1; input order is kept."""
    jobs = max(1, min(jobs or os.cpu_count() or 1, len(fits)))
    results: dict[int, OptionPlan] = {}
    if jobs == 1:
        for index, fit in enumerate(fits):
            price, reason = prices[fit.option.hardware]
            results[index] = evaluate_option(workload, fit, price, reason, settings)
            if on_done:
                on_done(results[index])
    else:
        with ProcessPoolExecutor(max_workers=jobs) as pool:
            futures = {
                pool.submit(
                    evaluate_option, workload, fit, *prices[fit.option.hardware], settings
                ): index
                for index, fit in enumerate(fits)
            }
            for future in as_completed(futures):
                results[futures[future]] = future.result()
                if on_done:
                    on_done(results[futures[future]])
    return [results[i] for i in range(len(fits))]


def cheapest(plans: Sequence[OptionPlan], *, at_growth: bool = False) -> OptionPlan | None:
    """The priced option with the lowest fleet $/h that meets the SLO (ties: fewer GPUs)."""

    def key(plan: OptionPlan) -> tuple[float, int]:
        usd = plan.usd_per_hour_at_growth if at_growth else plan.usd_per_hour
        measured = plan.at_growth if at_growth else plan.at_rate
        return (usd if usd is not None else math.inf, measured.num_gpus if measured else 0)

    priced = [p for p in plans if (p.usd_per_hour_at_growth if at_growth else p.usd_per_hour)]
    return min(priced, key=key) if priced else None


__all__ = [
    "ATTAINMENT_TARGET",
    "OptionPlan",
    "PlanSettings",
    "cheapest",
    "evaluate_option",
    "run_options",
]
