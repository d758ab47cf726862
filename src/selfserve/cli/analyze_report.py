"""The HTML report of `selfserve analyze`: the summary tables and four plots.

Plots: arrival rate over time, prompt/output length CDFs, LRU hit rate versus cache size (in
blocks, with GB of KV on a second axis) and the modality mix of prompt tokens. Renders a
`WorkloadAnalysis`; computes nothing new.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from selfserve.report.html import HtmlReport, new_figure
from selfserve.workload.analysis import WorkloadAnalysis


def write_analysis_report(a: WorkloadAnalysis, path: str | Path) -> Path:
    report = HtmlReport(title=f"Workload analysis — {a.name}")
    report.paragraph(f"source: {a.source}", "note")
    report.heading("Summary")
    report.table(
        ["figure", "value"],
        [
            ["requests", f"{a.requests:,}"],
            ["span (s)", a.span_s],
            ["mean rate (req/s)", a.mean_rate_per_s],
            ["peak-minute rate (req/s)", a.peak_minute_rate_per_s],
            ["inter-arrival CV", a.interarrival_cv],
            ["skipped malformed records", a.skipped_records],
        ],
    )
    rows = [["prompt", a.prompt_tokens], ["output", a.output_tokens]]
    if a.media_tokens.total:
        rows.append(["media", a.media_tokens])
    report.table(
        ["tokens per request", "mean", "p50", "p90", "p99", "max"],
        [[label, s.mean, s.p50, s.p90, s.p99, s.max] for label, s in rows],
    )
    for warning in a.warnings:
        report.paragraph(f"warning: {warning}", "note")

    report.heading("Arrivals")
    fig, ax = new_figure()
    counts = np.asarray(a.rate_per_bin, dtype=float)
    minutes = np.arange(len(counts)) * a.rate_bin_s / 60.0
    ax.step(minutes, counts / a.rate_bin_s, where="post")
    ax.set_xlabel("minutes since the first request")
    ax.set_ylabel(f"requests/s ({a.rate_bin_s:.0f}-s bins)")
    ax.set_title("arrival rate over time")
    report.figure(fig)

    report.heading("Token lengths")
    fig, ax = new_figure()
    grid = np.linspace(0, 1, len(a.prompt_quantiles))
    ax.plot(np.maximum(a.prompt_quantiles, 1), grid, label="prompt (text) tokens")
    ax.plot(np.maximum(a.output_quantiles, 1), grid, label="output tokens")
    ax.set_xscale("log")
    ax.set_xlabel("tokens")
    ax.set_ylabel("fraction of requests ≤ x")
    ax.set_title("length CDFs")
    ax.legend()
    report.figure(fig)

    report.heading("Prefix reuse")
    p = a.prefix
    if p is None:
        report.paragraph("The trace has no prefix block hashes, so there is no reuse to measure.")
    else:
        report.paragraph(
            f"Infinite cache, arrival order, {p.block_size}-token blocks: "
            f"{100 * p.infinite_block_hit_rate:.1f}% of blocks and "
            f"{100 * p.infinite_token_hit_rate:.1f}% of prompt tokens hit; {p.block_refs:,} "
            f"block references to {p.distinct_blocks:,} distinct blocks (working set "
            f"{a.kv_gb(p.distinct_blocks):,.1f} GB of KV for {a.kv_model})."
        )
        fig, ax = new_figure()
        caps = p.lru.capacity_blocks
        ax.plot(caps, 100 * p.lru.block_hit_rate, marker=".", label="block hit rate")
        ax.plot(caps, 100 * p.lru.token_hit_rate, marker=".", label="token hit rate")
        ax.set_xscale("log")
        ax.set_xlabel(f"LRU cache size ({p.block_size}-token blocks)")
        ax.set_ylabel("hit rate (%)")
        ax.set_title(f"prefix-cache hit rate vs cache size ({a.kv_model})")
        per_block_gb = a.kv_gb(1)
        top = ax.secondary_xaxis(
            "top", functions=(lambda b: b * per_block_gb, lambda g: g / per_block_gb)
        )
        top.set_xlabel("GB of KV")
        ax.legend()
        report.figure(fig)
        report.table(
            ["blocks", "GB KV", "block hit %", "token hit %"],
            [
                [int(c), a.kv_gb(c), 100 * b, 100 * t]
                for c, b, t in zip(caps, p.lru.block_hit_rate, p.lru.token_hit_rate, strict=True)
            ],
        )

    report.heading("Sessions and modality")
    if a.sessions is not None:
        s = a.sessions
        report.paragraph(
            f"{s.sessions:,} sessions; {100 * s.multi_turn_requests_fraction:.1f}% of requests "
            f"are in multi-turn sessions; turns per session p50 {s.turns_p50:.0f}, "
            f"p90 {s.turns_p90:.0f}, max {s.turns_max}."
        )
    else:
        report.paragraph("No session ids in this trace.")
    fig, ax = new_figure(6.0, 3.0)
    text_share = 1.0 - sum(m.token_share for m in a.modality)
    labels = ["text"] + [m.kind for m in a.modality]
    shares = [text_share] + [m.token_share for m in a.modality]
    ax.bar(
        labels,
        [100 * x for x in shares],
        color=["#4c72b0", "#dd8452", "#55a868", "#c44e52"][: len(labels)],
    )
    ax.set_ylabel("% of prompt tokens")
    ax.set_title("modality mix")
    report.figure(fig)
    if a.modality:
        report.table(
            [
                "modality",
                "requests %",
                "parts/request",
                "tokens/request",
                "token share %",
                "repeat %",
            ],
            [
                [
                    m.kind,
                    100 * m.requests_fraction,
                    m.parts_per_request,
                    m.tokens_mean,
                    100 * m.token_share,
                    100 * (1 - m.distinct_fraction),
                ]
                for m in a.modality
            ],
        )
    for key, counts in a.tags.items():
        report.table([key, "requests"], [[k, v] for k, v in counts.items()])
    outcomes = a.extra.get("outcomes")
    if outcomes:
        report.heading("Served (request log outcomes)")
        report.table(
            [
                "arm",
                "requests",
                "error %",
                "TTFT p50 s",
                "TTFT p99 s",
                "TPOT ms",
                "E2E s",
                "cache hit %",
            ],
            [
                [
                    o["arm"],
                    o["requests"],
                    100 * o["error_rate"],
                    o["ttft_p50_s"],
                    o["ttft_p99_s"],
                    1e3 * o["tpot_mean_s"],
                    o["e2e_mean_s"],
                    100 * o["prefix_hit_rate"],
                ]
                for o in outcomes
            ],
        )
    return report.write(path)
