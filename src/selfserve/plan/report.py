"""Rendering a plan as text: the option rows, the terminal tables and notes, the JSON.

Only rendering lives here; every number comes from `PlanResult`. The HTML report and its
InferenceMAX plot are in `report_html`.
"""

from __future__ import annotations

import math
from typing import Any

from selfserve.plan.fleet_plan import PlanResult
from selfserve.plan.planner import OptionPlan
from selfserve.plan.prices import price_label

OPTION_HEADERS: tuple[str, ...] = (
    "option",
    "replicas",
    "GPUs",
    "$/h",
    "$/M out",
    "$/M total",
    "out tok/MWh",
    "J/out tok",
    "attain",
    "headroom",
    "growth GPUs",
    "growth $/h",
    "price basis",
    "note",
)


def money(value: float | None) -> str:
    if value is None or not math.isfinite(value):
        return "–"
    if value >= 100:
        return f"${value:,.0f}"
    return f"${value:,.2f}" if value >= 0.995 else f"${value:.3f}"


def option_row(plan: OptionPlan, growth: float) -> list[str]:
    """One table row; options without a fleet show their reason in `note`."""
    price = price_label(plan.price) if plan.price else plan.price_reason
    if plan.at_rate is None:
        return [
            plan.option.label,
            "–",
            "–",
            "–",
            "–",
            "–",
            "–",
            "–",
            "–",
            "–",
            "–",
            "–",
            price,
            plan.reason,
        ]
    m = plan.at_rate
    econ = m.economics(plan.price.usd_per_gpu_hour if plan.price else None)
    headroom = plan.headroom.multiplier if plan.headroom else math.nan
    capped = plan.headroom is not None and plan.headroom.capped
    growth_gpus = str(plan.at_growth.num_gpus) if plan.at_growth else "–"
    if growth == 1.0:
        growth_gpus = "n/a"
    return [
        plan.option.label,
        str(m.replicas),
        str(m.num_gpus),
        money(econ.usd_per_hour),
        money(econ.usd_per_million_output_tokens),
        money(econ.usd_per_million_total_tokens),
        f"{econ.output_tokens_per_mwh / 1e6:,.2f}M",
        f"{econ.joules_per_output_token:,.2f}",
        f"{m.attainment:.1%}",
        f"{'≥' if capped else ''}{headroom:.2f}×",
        growth_gpus,
        money(plan.usd_per_hour_at_growth) if growth != 1.0 else "n/a",
        price,
        plan.reason,
    ]


FLEET_COLUMNS: tuple[int, ...] = (0, 1, 2, 8, 9)  # option, replicas, GPUs, attain, headroom
COST_COLUMNS: tuple[int, ...] = (0, 3, 4, 5, 6, 7)  # option, $/h, $/M out/total, tok/MWh, J/tok


def terminal_tables(result: PlanResult) -> list[tuple[str, list[str], list[list[str]]]]:
    """Two narrow (title, headers, rows) tables that fit an 80-column terminal.

    Options that do not fit are left out here (they are listed in the notes).
    """
    fitting = [option_row(p, result.growth) for p in result.options if p.fit.fits]
    fleet_headers = [OPTION_HEADERS[i] for i in FLEET_COLUMNS]
    fleet_rows = [[row[i] for i in FLEET_COLUMNS] for row in fitting]
    if result.growth != 1.0:
        fleet_headers += [f"GPUs ×{result.growth:g}", f"$/h ×{result.growth:g}"]
        fleet_rows = [r + row[10:12] for r, row in zip(fleet_rows, fitting, strict=True)]
    cost_rows = [[row[i] for i in COST_COLUMNS] for row in fitting]
    return [
        ("fleets meeting the SLO (≥ 90% attainment)", fleet_headers, fleet_rows),
        (
            f"cost and energy ({result.price_basis} prices)",
            [OPTION_HEADERS[i] for i in COST_COLUMNS],
            cost_rows,
        ),
    ]


def terminal_notes(result: PlanResult) -> list[str]:
    """Each card's price with basis, date and source, then every option's reason."""
    notes = []
    for card in dict.fromkeys(plan.option.hardware for plan in result.options if plan.fit.fits):
        plan = next(p for p in result.options if p.option.hardware == card)
        if plan.price is not None:
            notes.append(f"{card} price: {price_label(plan.price)} — {plan.price.source}")
        else:
            notes.append(f"{card} price: none — {plan.price_reason}")
    for plan in result.options:
        if plan.reason:
            notes.append(f"{plan.option.label}: {plan.reason}")
    return notes


def summary_lines(result: PlanResult) -> list[str]:
    lines = [
        f"workload {result.workload_name}: {result.window.describe()}; SLO {result.slo} "
        f"(≥ 90% attainment); policy {result.policy}; prices {result.price_basis}",
    ]
    best = result.cheapest
    if best is None or best.at_rate is None:
        lines.append("no priced option meets the SLO at the recorded rate")
    else:
        m = best.at_rate
        econ = m.economics(best.price.usd_per_gpu_hour if best.price else None)
        lines.append(
            f"cheapest meeting the SLO: {m.replicas} × {best.option.label} = {m.num_gpus} GPUs, "
            f"{money(econ.usd_per_hour)}/h, {money(econ.usd_per_million_output_tokens)} per M "
            f"output tokens, {econ.output_tokens_per_mwh / 1e6:,.2f}M output tokens/MWh, "
            f"headroom {best.headroom.multiplier if best.headroom else math.nan:.2f}×"
        )
    if result.growth != 1.0:
        grown = result.cheapest_at_growth
        if grown is None or grown.at_growth is None:
            lines.append(f"no priced option meets the SLO at ×{result.growth:g} growth")
        else:
            lines.append(
                f"cheapest at ×{result.growth:g} growth: {grown.at_growth.replicas} × "
                f"{grown.option.label} = {grown.at_growth.num_gpus} GPUs, "
                f"{money(grown.usd_per_hour_at_growth)}/h"
            )
    return lines


def _measurement_json(m) -> dict[str, Any] | None:
    if m is None:
        return None
    return {
        "replicas": m.replicas,
        "num_gpus": m.num_gpus,
        "rate_scale": m.rate_scale,
        "attainment": m.attainment,
        "num_requests": m.num_requests,
        "num_rejected": m.num_rejected,
        "output_tokens_per_s": m.output_tokens_per_s,
        "total_tokens_per_s": m.total_tokens_per_s,
        "output_tokens_per_s_per_gpu": m.output_tokens_per_s_per_gpu,
        "tokens_per_s_per_user": m.tokens_per_s_per_user
        if math.isfinite(m.tokens_per_s_per_user)
        else None,
        "energy_j": m.energy_j,
        "p50_ttft_s": m.p50_ttft_s,
        "p99_ttft_s": m.p99_ttft_s,
        "median_tpot_s": m.median_tpot_s,
    }


def _costs_by_basis(plan: OptionPlan) -> dict[str, Any]:
    """The same fleet priced on every basis the catalog has a figure for (sizing is
    price-independent, so this needs no new simulation)."""
    from selfserve.plan.prices import PRICE_BASES, price_for

    costs: dict[str, Any] = {}
    if plan.at_rate is None:
        return costs
    for basis in PRICE_BASES:
        price, _ = price_for(plan.option.hardware, basis)
        if price is None:
            continue
        econ = plan.at_rate.economics(price.usd_per_gpu_hour)
        costs[basis] = {
            "usd_per_gpu_hour": price.usd_per_gpu_hour,
            "date": price.date,
            "usd_per_hour": econ.usd_per_hour,
            "usd_per_million_output_tokens": econ.usd_per_million_output_tokens,
            "usd_per_million_total_tokens": econ.usd_per_million_total_tokens,
        }
    return costs


def option_json(plan: OptionPlan) -> dict[str, Any]:
    econ = None
    if plan.at_rate is not None:
        e = plan.at_rate.economics(plan.price.usd_per_gpu_hour if plan.price else None)
        econ = {
            "usd_per_hour": e.usd_per_hour,
            "usd_per_million_output_tokens": e.usd_per_million_output_tokens,
            "usd_per_million_total_tokens": e.usd_per_million_total_tokens,
            "output_tokens_per_mwh": e.output_tokens_per_mwh,
            "total_tokens_per_mwh": e.total_tokens_per_mwh,
            "joules_per_output_token": e.joules_per_output_token,
        }
    price = None
    if plan.price is not None:
        price = {
            "usd_per_gpu_hour": plan.price.usd_per_gpu_hour,
            "basis": plan.price.basis,
            "date": plan.price.date,
            "source": plan.price.source,
        }
    return {
        "hardware": plan.option.hardware,
        "tp": plan.option.tp,
        "weight_dtype": plan.option.weight_dtype,
        "fits": plan.fit.fits,
        "fit_reason": plan.fit.reason,
        "kv_capacity_tokens": plan.fit.kv_capacity_tokens,
        "memory_needed_gb": plan.fit.memory_needed_gb
        if math.isfinite(plan.fit.memory_needed_gb)
        else None,
        "memory_available_gb": plan.fit.memory_available_gb,
        "price": price,
        "price_reason": plan.price_reason,
        "meets_slo": plan.meets_slo,
        "num_simulations": plan.num_simulations,
        "best_case_attainment": plan.best_case_attainment,
        "reason": plan.reason,
        "replica_search": (
            {str(k): v for k, v in sorted(plan.search.evaluations.items())} if plan.search else None
        ),
        "at_rate": _measurement_json(plan.at_rate),
        "economics": econ,
        "headroom_multiplier": plan.headroom.multiplier if plan.headroom else None,
        "headroom_capped": plan.headroom.capped if plan.headroom else None,
        "at_growth": _measurement_json(plan.at_growth),
        "usd_per_hour_at_growth": plan.usd_per_hour_at_growth,
        "costs_by_basis": _costs_by_basis(plan),
        "curve": [_measurement_json(m) for m in plan.curve],
    }


def plan_json(result: PlanResult) -> dict[str, Any]:
    return {
        "model": result.model,
        "workload": result.workload_name,
        "window": result.window.describe(),
        "slo": result.slo,
        "attainment_target": 0.9,
        "policy": result.policy,
        "price_basis": result.price_basis,
        "growth": result.growth,
        "cheapest": result.cheapest.option.label if result.cheapest else None,
        "cheapest_at_growth": (
            result.cheapest_at_growth.option.label if result.cheapest_at_growth else None
        ),
        "options": [option_json(p) for p in result.options],
        "matched_interactivity": [
            {
                "option": p.label,
                "tokens_per_s_per_user": p.tokens_per_s_per_user,
                "output_tokens_per_s_per_gpu": p.output_tokens_per_s_per_gpu,
                "usd_per_million_output_tokens": p.usd_per_million_output_tokens,
            }
            for p in result.matched
        ],
    }
