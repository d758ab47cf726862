"""The HTML report of a plan: option table, InferenceMAX plot, matched interactivity.

The plot shows each option's curve (output tokens/s per GPU against tokens/s per user)
with its card, TP and precision in the legend and the cheapest option starred; the
matched-interactivity table compares options only at levels each of them reaches, so no
option's best point is set against another's worst.
"""

from __future__ import annotations

from selfserve.plan.fleet_plan import PlanResult
from selfserve.plan.report import OPTION_HEADERS, money, option_row, summary_lines
from selfserve.plan.sweep import curve_points

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
                money(p.usd_per_million_output_tokens),
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
