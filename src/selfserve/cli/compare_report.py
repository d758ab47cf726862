"""The HTML report of `selfserve compare`: the policy table, then SLO attainment and p99
TTFT against the rate multiplier for every policy (one line each). Renders only; the
numbers come from the comparison payload."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from selfserve.report.html import HtmlReport, new_figure


def write_compare_html(path: str | Path, payload: dict[str, Any]) -> Path:
    from selfserve.cli.compare import COLUMNS, format_value

    rows = payload["rows"]
    report = HtmlReport(f"Routing policies on {payload['workload']['name']}")
    report.paragraph(
        f"Trace {payload['trace']} ({payload['workload']['requests']} requests over "
        f"{payload['workload']['span_s']:.0f} s) on cluster {payload['cluster']}, SLO "
        f"{payload['slo']}, seed {payload['seed']}. Metrics at rate ×1; capacity is the "
        "largest rate multiplier whose SLO attainment stays at the target.",
        css_class="note",
    )
    report.table(
        ["policy", *(h for _k, h, _f in COLUMNS)],
        [[r["policy"], *(format_value(r.get(k), f) for k, _h, f in COLUMNS)] for r in rows],
    )
    for metric, label, scale in (
        ("attainment", "SLO attainment", 100.0),
        ("ttft_p99_s", "p99 TTFT (s)", 1.0),
    ):
        report.heading(f"{label} against the rate multiplier")
        fig, ax = new_figure()
        for row in rows:
            points = [
                (p["rate_scale"], p[metric]) for p in row["sweep"] if p.get(metric) is not None
            ]
            if points:
                xs, ys = zip(*points, strict=True)
                ax.plot(xs, [y * scale for y in ys], marker="o", label=row["policy"])
        ax.set_xlabel("rate multiplier")
        ax.set_ylabel(label + (" (%)" if scale == 100.0 else ""))
        if metric == "ttft_p99_s":
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, ncol=2)
        report.figure(fig)
    curves = [r for r in rows if r.get("capacity_curve")]
    if curves:
        report.heading("Capacity search: attainment at each probed multiplier")
        fig, ax = new_figure()
        for row in curves:
            xs, ys = zip(*row["capacity_curve"], strict=True)
            ax.plot(xs, [y * 100 for y in ys], marker=".", linestyle="", label=row["policy"])
        ax.set_xlabel("rate multiplier")
        ax.set_ylabel("SLO attainment (%)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, ncol=2)
        report.figure(fig)
    return report.write(path)
