"""Rendering a plan: the option table (terminal and HTML), the JSON payload, the HTML report.

Only rendering lives here; every number comes from `PlanResult`. The HTML report plots each
option's InferenceMAX curve (output tokens/s per GPU against tokens/s per user) with its
precision and parallelism in the legend, marks the cheapest option that meets the SLO, and
lists the matched-interactivity comparison so no option's best point is set against
another's worst.
"""

from __future__ import annotations

import math
from typing import Any

from selfserve.plan.fleet_plan import PlanResult
from selfserve.plan.planner import OptionPlan
from selfserve.plan.prices import price_label
from selfserve.plan.sweep import curve_points

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


def _money(value: float | None) -> str:
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
        _money(econ.usd_per_hour),
        _money(econ.usd_per_million_output_tokens),
        _money(econ.usd_per_million_total_tokens),
        f"{econ.output_tokens_per_mwh / 1e6:,.2f}M",
        f"{econ.joules_per_output_token:,.2f}",
        f"{m.attainment:.1%}",
        f"{'≥' if capped else ''}{headroom:.2f}×",
        growth_gpus,
        _money(plan.usd_per_hour_at_growth) if growth != 1.0 else "n/a",
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
            f"{_money(econ.usd_per_hour)}/h, {_money(econ.usd_per_million_output_tokens)} per M "
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
                f"{_money(grown.usd_per_hour_at_growth)}/h"
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


_TP_MARKERS = {1: "o", 2: "s", 4: "^", 8: "D"}


def curve_figure(result: PlanResult):
    """The InferenceMAX plot (a matplotlib Figure), or None when no option has a curve."""
    from selfserve.report.html import new_figure

    curves = [(p, curve_points(p.curve)) for p in result.options if p.curve]
    if not curves:
        return None
    fig, ax = new_figure(9.0, 5.0)
    cards = list(dict.fromkeys(plan.option.hardware for plan, _ in curves))
    colors = {card: f"C{i % 10}" for i, card in enumerate(cards)}
    best = result.cheapest
    for plan, points in curves:
        ordered = sorted(points, key=lambda pt: pt.tokens_per_s_per_user)
        is_best = best is not None and plan.option == best.option
        option = plan.option
        label = f"{option.hardware} TP{option.tp} {option.weight_dtype} ×{plan.replicas}"
        ax.plot(
            [pt.tokens_per_s_per_user for pt in ordered],
            [pt.output_tokens_per_s_per_gpu for pt in ordered],
            marker=_TP_MARKERS.get(option.tp, "v"),
            markersize=4,
            color=colors[option.hardware],
            lw=2.6 if is_best else 1.0,
            label=label + (" ★ cheapest" if is_best else ""),
        )
        if is_best and plan.at_rate is not None:
            ax.scatter(
                [plan.at_rate.tokens_per_s_per_user],
                [plan.at_rate.output_tokens_per_s_per_gpu],
                s=260,
                marker="*",
                color=colors[option.hardware],
                edgecolor="black",
                zorder=5,
            )
    tpot_s = _slo_tpot_s(result.slo)
    if tpot_s:
        ax.axvline(1.0 / tpot_s, color="grey", ls="--", lw=1)
    ax.set_xlabel("interactivity: output tokens/s per user (1 / median TPOT)")
    ax.set_ylabel("output tokens/s per GPU")
    ax.set_title(
        f"{result.model}: throughput per GPU vs interactivity, swept over load", fontsize=9
    )
    ax.grid(alpha=0.3)
    ax.legend(fontsize=6, loc="center left", bbox_to_anchor=(1.01, 0.5))
    return fig


def _slo_tpot_s(slo_text: str) -> float | None:
    from selfserve.sim import SLO

    return SLO.parse(slo_text).tpot_s


def write_html(result: PlanResult, path: str) -> None:
    from selfserve.report.html import HtmlReport

    report = HtmlReport(f"selfserve plan: {result.model} on {result.workload_name}")
    for line in summary_lines(result):
        report.paragraph(line)
    report.heading("Options at the recorded rate")
    report.paragraph(
        "Each row is the fewest replicas of one card × tensor-parallel degree × weight precision "
        "whose simulated SLO attainment is ≥ 90%. Costs are fleet $/h ÷ (tokens/s × 3,600) × 10⁶ "
        "at the stated $/GPU-hour; energy is the simulator's power model over the window. "
        "Headroom is the largest arrival-rate multiplier the same fleet still serves.",
        "note",
    )
    report.table(OPTION_HEADERS, [option_row(p, result.growth) for p in result.options])
    fig = curve_figure(result)
    if fig is not None:
        report.heading("InferenceMAX view: throughput per GPU vs interactivity")
        report.figure(fig)
        report.paragraph(
            "Each curve is one fleet (the SLO-sized replica count) under the workload's own "
            "arrivals scaled from 15% of its capacity to past it; colour = card, marker = "
            "TP, the legend gives precision and replicas. The star is the cheapest option at "
            "the recorded rate; the dashed line is the interactivity the TPOT target asks for.",
            "note",
        )
    if result.matched:
        report.heading("Matched interactivity")
        report.paragraph(
            "Throughput per GPU and $/M output tokens at interactivity levels every option's "
            "curve reaches (interpolated on its frontier) — like-for-like, never one system's "
            "best point against another's worst.",
            "note",
        )
        rows = [
            [
                p.label,
                f"{p.tokens_per_s_per_user:.1f}",
                "beyond curve"
                if p.output_tokens_per_s_per_gpu is None
                else f"{p.output_tokens_per_s_per_gpu:,.0f}",
                _money(p.usd_per_million_output_tokens),
            ]
            for p in result.matched
        ]
        report.table(("option", "tok/s/user", "out tok/s/GPU", "$/M out"), rows)
    skipped = [p for p in result.options if not p.fit.fits]
    if skipped:
        report.heading("Options skipped")
        report.table(
            ("option", "needs GB", "has GB", "why"),
            [
                [p.option.label, p.fit.memory_needed_gb, p.fit.memory_available_gb, p.fit.reason]
                for p in skipped
            ],
        )
    report.write(path)
