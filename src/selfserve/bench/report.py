"""Show a bench run: the `vllm bench serve`-style table, and an HTML report with plots.

The table has the same sections as vLLM's (counts and throughput, then TTFT, TPOT, ITL
and E2E in ms) plus goodput at the SLO when one is given. The HTML report adds latency
CDFs (TTFT, TPOT, E2E) and output-token throughput over time in one-second bins.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from rich.table import Table

from selfserve.bench.result import PERCENTILES, BenchResult
from selfserve.report.html import HtmlReport, new_figure

_LATENCY_SECTIONS = (
    ("ttft_s", "Time to First Token", "TTFT"),
    ("tpot_s", "Time per Output Token (excl. 1st token)", "TPOT"),
    ("itl_s", "Inter-token Latency", "ITL"),
    ("e2e_s", "End-to-end Latency", "E2EL"),
)


def summary_rows(summary: dict) -> list[tuple[str, str]]:
    """(label, value) rows in vLLM's order; section titles have an empty value."""
    rows: list[tuple[str, str]] = [
        ("Successful requests", f"{summary['completed']}"),
        ("Failed requests", f"{summary['failed']}"),
    ]
    if summary.get("incomplete"):
        rows.append(("Incomplete (time limit / stopped)", f"{summary['incomplete']}"))
    if summary.get("max_concurrency"):
        rows.append(("Maximum request concurrency", f"{summary['max_concurrency']}"))
    if summary.get("time_scale", 1.0) != 1.0:
        rows.append(("Time scale (latencies in model s)", f"{summary['time_scale']:g}"))
    rows += [
        ("Benchmark duration (s)", f"{summary['duration_s']:.2f}"),
        ("Total input tokens", f"{summary['total_input_tokens']}"),
        ("Total generated tokens", f"{summary['total_output_tokens']}"),
        ("Request throughput (req/s)", f"{summary['request_throughput_rps']:.2f}"),
        ("Output token throughput (tok/s)", f"{summary['output_throughput_tps']:.2f}"),
        ("Total token throughput (tok/s)", f"{summary['total_token_throughput_tps']:.2f}"),
    ]
    if summary.get("prefix_cache_hit_rate") is not None:
        rows.append(("Prefix cache hit rate", f"{summary['prefix_cache_hit_rate']:.1%}"))
    if "goodput_rps" in summary:
        slo = ", ".join(f"{k}<={v * 1000:g}ms" for k, v in summary["slo"].items())
        rows += [
            (f"SLO ({slo})", ""),
            ("SLO attainment", f"{summary['slo_attainment']:.1%}"),
            ("Request goodput (req/s)", f"{summary['goodput_rps']:.2f}"),
            ("Output goodput (tok/s)", f"{summary['goodput_output_tps']:.2f}"),
        ]
    for key, title, short in _LATENCY_SECTIONS:
        stats = summary[key]
        rows.append((title, ""))
        rows.append((f"Mean {short} (ms)", f"{stats['mean'] * 1000:.2f}"))
        rows.append((f"Median {short} (ms)", f"{stats['median'] * 1000:.2f}"))
        for p in PERCENTILES:
            if p != 50:
                rows.append((f"P{p} {short} (ms)", f"{stats[f'p{p}'] * 1000:.2f}"))
    lag = summary["send_lag_s"]
    rows.append(("Client", ""))
    rows.append(("Send lag p99 (ms)", f"{lag['p99'] * 1000:.2f}"))
    return rows


def render_table(summary: dict) -> Table:
    table = Table(title="Serving Benchmark Result", show_header=False, min_width=52)
    table.add_column("metric")
    table.add_column("value", justify="right")
    for label, value in summary_rows(summary):
        if value == "":
            table.add_section()
            table.add_row(f"[bold]{label}[/]", "")
        else:
            table.add_row(label, value)
    return table


def _cdf(ax, values_s: np.ndarray, label: str) -> None:
    if values_s.size == 0:
        return
    ordered = np.sort(values_s) * 1000.0
    ax.plot(ordered, np.arange(1, ordered.size + 1) / ordered.size, label=label)


def write_html(result: BenchResult, summary: dict, path: str | Path) -> Path:
    report = HtmlReport(f"selfserve bench: {result.workload_name or 'workload'} → {result.target}")
    report.paragraph(
        f"model {result.model}; rate scale {result.rate_scale:g}; time scale "
        f"{result.time_scale:g} (latencies in model seconds); "
        f"{summary['completed']} completed, {summary['failed']} failed.",
        "note",
    )
    report.heading("Summary")
    report.table(["metric", "value"], [row for row in summary_rows(summary) if row[1] != ""])
    report.heading("Latency CDFs")
    for values, label in (
        (result.ttft_s(), "TTFT"),
        (result.tpot_s(), "TPOT"),
        (result.e2e_s(), "E2E"),
    ):
        fig, ax = new_figure(7.0, 3.0)
        _cdf(ax, values, label)
        ax.set_xlabel(f"{label} (ms)")
        ax.set_ylabel("fraction of requests")
        ax.grid(alpha=0.3)
        if values.size and values.max() > 0 and np.median(values) > 0:
            if values.max() / max(np.median(values), 1e-12) > 20:
                ax.set_xscale("log")
        report.figure(fig)
    report.heading("Throughput over time")
    times = result.token_times_s()
    fig, ax = new_figure(7.0, 3.0)
    if times.size:
        scale = result.time_scale
        model_times = times * scale
        edges = np.arange(0.0, model_times.max() + 1.0, 1.0)
        counts, _ = np.histogram(model_times, bins=edges)
        ax.plot(edges[:-1], counts, drawstyle="steps-post")
        starts = np.array([o.start_s for o in result.outcomes if o.start_s > 0]) * scale
        sent, _ = np.histogram(starts, bins=edges)
        ax2 = ax.twinx()
        ax2.plot(edges[:-1], sent, color="tab:orange", alpha=0.6, drawstyle="steps-post")
        ax2.set_ylabel("requests sent / s", color="tab:orange")
    ax.set_xlabel("time since start (model s)")
    ax.set_ylabel("output tokens / s")
    ax.grid(alpha=0.3)
    report.figure(fig)
    if summary["errors"]:
        report.heading("Errors")
        report.table(["error", "count"], sorted(summary["errors"].items(), key=lambda kv: -kv[1]))
    return report.write(path)
