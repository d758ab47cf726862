"""`selfserve analyze TRACE`: what a workload looks like to a serving cluster.

Loads any supported trace (format detected from content, `--format` overrides; `embedded:`
names a slice shipped with selfserve), then prints arrivals, token-length percentiles,
prefix reuse with an LRU hit-rate-vs-cache-size curve in blocks and GB of KV for a model,
sessions and modality mix. `--json OUT` writes every figure, `--html OUT` a report with plots.
"""

from __future__ import annotations

import argparse
from dataclasses import asdict
from pathlib import Path
from typing import Any

from rich.table import Table

from selfserve.cli.common import UserError, console, err_console, write_json
from selfserve.workload.analysis import (
    DEFAULT_KV_BYTES_PER_TOKEN,
    WorkloadAnalysis,
    analyze_workload,
)
from selfserve.workload.errors import EmptyTraceError, TraceFormatError, UnknownFormatError
from selfserve.workload.io import FORMATS, load_workload
from selfserve.workload.request import Workload

EMBEDDED_PREFIX = "embedded:"
DEFAULT_MODEL = "llama-3.1-8b"


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "analyze",
        help="summarise a trace: rates, lengths, prefix reuse, LRU curve, sessions, media",
        description=__doc__,
    )
    add_trace_arguments(parser)
    parser.add_argument(
        "--model",
        default=DEFAULT_MODEL,
        help=f"catalog model whose KV bytes/token size the cache curve in GB (default {DEFAULT_MODEL})",
    )
    parser.add_argument(
        "--kv-bytes-per-token",
        type=int,
        default=None,
        help="KV bytes per token; overrides --model "
        f"(default: from the catalog, else {DEFAULT_KV_BYTES_PER_TOKEN} = llama-3.1-8b bf16)",
    )
    parser.add_argument(
        "--cluster",
        help="cluster (e.g. 6xh200/llama-3.1-8b): also bound what prefix-aware routing can "
        "save, with every replica's KV memory pooled (LRU, and Belady's MIN as the limit)",
    )
    parser.add_argument("--json", metavar="OUT", help="write all figures as JSON")
    parser.add_argument("--html", metavar="OUT", help="write an HTML report with plots")
    parser.set_defaults(func=handle)


def add_trace_arguments(parser: argparse.ArgumentParser) -> None:
    """TRACE, --format, --skip-bad and --reader-option, shared with other commands."""
    parser.add_argument(
        "trace",
        metavar="TRACE",
        help="trace file or folder, or embedded:NAME (e.g. embedded:mooncake-conversation-10min)",
    )
    parser.add_argument(
        "--format", choices=FORMATS, default=None, help="trace format (default: detect)"
    )
    parser.add_argument(
        "--skip-bad",
        action="store_true",
        help="skip malformed records (and report how many) instead of stopping at the first",
    )
    parser.add_argument(
        "--reader-option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="reader option, e.g. seed=1, session_rate_per_s=0.1 (kv-cache-tester), "
        "start_s=0, duration_s=3600 (servegen), block_size=16 (ragpulse)",
    )


def parse_reader_options(items: list[str]) -> dict[str, Any]:
    options: dict[str, Any] = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise UserError(f"--reader-option expects KEY=VALUE, got {item!r}")
        value: Any = text
        for cast in (int, float):
            try:
                value = cast(text)
                break
            except ValueError:
                continue
        options[key.strip()] = value
    return options


def load_trace(
    trace: str, fmt: str | None, skip_bad: bool, reader_options: dict[str, Any]
) -> Workload:
    """Load a trace path or `embedded:NAME`, turning trace errors into UserErrors."""
    from selfserve.workload.embedded import EMBEDDED, load_embedded

    try:
        with err_console.status(f"reading {trace} …"):
            if trace.startswith(EMBEDDED_PREFIX):
                name = trace[len(EMBEDDED_PREFIX) :]
                if name not in EMBEDDED:
                    raise UserError(
                        f"no embedded trace {name!r}; available: " + ", ".join(EMBEDDED)
                    )
                return load_embedded(name, skip_bad=skip_bad, **reader_options)
            return load_workload(Path(trace), fmt, skip_bad=skip_bad, **reader_options)
    except FileNotFoundError as exc:
        raise UserError(str(exc)) from None
    except (TraceFormatError, EmptyTraceError, UnknownFormatError) as exc:
        hint = (
            ""
            if skip_bad or not isinstance(exc, TraceFormatError)
            else " (--skip-bad skips such records)"
        )
        raise UserError(f"{exc}{hint}") from None
    except (TypeError, ValueError) as exc:
        raise UserError(f"cannot read {trace}: {exc}") from None


def kv_bytes_for(model: str, override: int | None) -> tuple[int, str]:
    """KV bytes/token and the label to show for it."""
    if override is not None:
        if override <= 0:
            raise UserError(f"--kv-bytes-per-token must be > 0, got {override}")
        return override, f"{override} B/token"
    try:
        from selfserve.catalog import get_model
    except ImportError:  # catalog not installed in this build: use the documented default
        if model == DEFAULT_MODEL:
            return DEFAULT_KV_BYTES_PER_TOKEN, model
        raise UserError(
            f"no model catalog to look up {model!r}; pass --kv-bytes-per-token"
        ) from None
    try:
        spec = get_model(model)
    except (KeyError, ValueError) as exc:
        raise UserError(str(exc)) from None
    value = spec.kv_bytes_per_token
    return int(value() if callable(value) else value), model


def handle(args: argparse.Namespace) -> int:
    kv_bytes, kv_label = kv_bytes_for(args.model, args.kv_bytes_per_token)
    workload = load_trace(
        args.trace, args.format, args.skip_bad, parse_reader_options(args.reader_option)
    )
    with err_console.status(f"analysing {len(workload):,} requests …"):
        analysis = analyze_workload(workload, kv_bytes_per_token=kv_bytes, kv_model=kv_label)
        outcomes = _served_outcomes(args)
    if outcomes:
        analysis.extra["outcomes"] = [asdict(o) for o in outcomes]
    if args.cluster:
        headroom = _cache_headroom(workload, args.cluster)
        if headroom is not None:
            analysis.extra["cache_headroom"] = {"cluster": args.cluster, **headroom.to_dict()}
    print_analysis(analysis)
    write_outputs(analysis, args.json, args.html)
    return 0


def _cache_headroom(workload: Workload, cluster: str):
    """The pooled-cache bound for `cluster`'s total KV memory (None without hashes)."""
    from selfserve.sim.cluster import ClusterSpec, ClusterSpecError
    from selfserve.workload.prefix_reuse import cache_headroom

    try:
        capacity_tokens = ClusterSpec.parse(cluster).kv_capacity_tokens()
    except ClusterSpecError as exc:
        raise UserError(f"--cluster: {exc}") from None
    with err_console.status("bounding prefix-cache hits with the cluster's KV pooled …"):
        return cache_headroom(list(workload.requests), capacity_tokens)


def _served_outcomes(args: argparse.Namespace) -> list:
    """Per-arm outcomes when TRACE is a request log written by the gateway."""
    if args.trace.startswith(EMBEDDED_PREFIX):
        return []
    from selfserve.workload.io import detect_format
    from selfserve.workload.log_outcomes import log_outcomes

    try:
        fmt = args.format or detect_format(args.trace)
    except (UnknownFormatError, FileNotFoundError):
        return []
    return log_outcomes(args.trace, skip_bad=args.skip_bad) if fmt == "selfserve-log" else []


def write_outputs(analysis: WorkloadAnalysis, json_out: str | None, html_out: str | None) -> None:
    if json_out:
        write_json(json_out, analysis.to_dict())
        console.print(f"wrote {json_out}")
    if html_out:
        from selfserve.cli.analyze_report import write_analysis_report

        with err_console.status("rendering the HTML report …"):
            write_analysis_report(analysis, html_out)
        console.print(f"wrote {html_out}")


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def print_analysis(a: WorkloadAnalysis) -> None:
    console.rule(f"[bold]{a.name}")
    overview = Table(show_header=False, box=None, pad_edge=False)
    overview.add_column(style="bold")
    overview.add_column()
    overview.add_row("requests", f"{a.requests:,}")
    overview.add_row("span", f"{a.span_s:,.1f} s ({a.span_s / 60:,.1f} min)")
    overview.add_row(
        "arrival rate",
        f"mean {a.mean_rate_per_s:.3g} req/s, peak minute {a.peak_minute_rate_per_s:.3g} req/s",
    )
    overview.add_row("burstiness", f"inter-arrival CV {a.interarrival_cv:.2f} (Poisson = 1)")
    console.print(overview)

    lengths = Table(title="tokens per request", title_justify="left")
    for column in ("", "mean", "p50", "p90", "p99", "max"):
        lengths.add_column(column, justify="right" if column else "left")
    rows = [("prompt", a.prompt_tokens), ("output", a.output_tokens)]
    if a.media_tokens.total:
        rows.append(("media", a.media_tokens))
    for label, s in rows:
        lengths.add_row(
            label, f"{s.mean:,.1f}", f"{s.p50:,.0f}", f"{s.p90:,.0f}", f"{s.p99:,.0f}", f"{s.max:,}"
        )
    console.print(lengths)

    p = a.prefix
    if p is None:
        console.print("prefix reuse: the trace has no prefix block hashes")
    else:
        console.print(
            f"[bold]prefix reuse[/] ({p.block_size}-token blocks, infinite cache, arrival order): "
            f"{_pct(p.infinite_block_hit_rate)} of blocks, {_pct(p.infinite_token_hit_rate)} of "
            f"prompt tokens; {_pct(p.requests_with_hit_fraction)} of requests hit ≥1 block"
        )
        console.print(
            f"blocks: {p.block_refs:,} references to {p.distinct_blocks:,} distinct "
            f"(working set {a.kv_gb(p.distinct_blocks):,.1f} GB of KV for {a.kv_model}); "
            f"{_pct(p.shared_block_fraction)} of distinct blocks are shared, "
            f"holding {_pct(p.shared_ref_fraction)} of references"
        )
        curve = Table(
            title=f"LRU prefix cache: hit rate vs size ({a.kv_model})", title_justify="left"
        )
        for column in ("blocks", "GB KV", "block hit", "token hit"):
            curve.add_column(column, justify="right")
        caps = p.lru.capacity_blocks
        # About eight rows, log-spaced like the curve itself, always ending at the working set.
        picks = sorted(set(range(0, len(caps), max(1, len(caps) // 8))) | {len(caps) - 1})
        for i in picks:
            curve.add_row(
                f"{int(caps[i]):,}",
                f"{a.kv_gb(caps[i]):,.2f}",
                _pct(p.lru.block_hit_rate[i]),
                _pct(p.lru.token_hit_rate[i]),
            )
        console.print(curve)
        bound = a.extra.get("cache_headroom")
        if bound:
            console.print(
                f"[bold]prefix-cache headroom[/] on {bound['cluster']} "
                f"({bound['capacity_tokens']:,} KV tokens pooled): LRU hits "
                f"{_pct(bound['lru_token_hit_rate'])} of prompt tokens, Belady's MIN "
                f"{_pct(bound['optimal_token_hit_rate'])} — no router's requests find more "
                f"cached, so every router prefills at least "
                f"{_pct(1 - bound['optimal_token_hit_rate'])} of the prompt tokens"
            )

    if a.sessions is not None:
        s = a.sessions
        console.print(
            f"[bold]sessions[/]: {s.sessions:,}; {_pct(s.multi_turn_requests_fraction)} of "
            f"requests in multi-turn sessions; turns per session p50 {s.turns_p50:.0f}, "
            f"p90 {s.turns_p90:.0f}, max {s.turns_max}"
        )
    else:
        console.print("[bold]sessions[/]: none recorded")
    if a.modality:
        parts = [
            f"{m.kind} in {_pct(m.requests_fraction)} of requests "
            f"({m.parts_per_request:.1f} per request, {m.tokens_mean:,.0f} tokens, "
            f"{_pct(m.token_share)} of prompt tokens, {_pct(1 - m.distinct_fraction)} repeats)"
            for m in a.modality
        ]
        console.print("[bold]modality[/]: text + " + "; ".join(parts))
    else:
        console.print("[bold]modality[/]: text only")
    for key, counts in a.tags.items():
        shown = ", ".join(f"{k} {v:,}" for k, v in list(counts.items())[:5])
        console.print(f"[bold]{key}[/]: {shown}")
    outcomes = a.extra.get("outcomes")
    if outcomes:
        served = Table(title="served (request log outcomes)", title_justify="left")
        for column in (
            "arm",
            "requests",
            "errors",
            "TTFT p50",
            "TTFT p99",
            "TPOT",
            "E2E",
            "cache hit",
        ):
            served.add_column(column, justify="left" if column == "arm" else "right")
        for o in outcomes:
            served.add_row(
                o["arm"],
                f"{o['requests']:,}",
                _pct(o["error_rate"]),
                f"{o['ttft_p50_s']:.3f} s",
                f"{o['ttft_p99_s']:.3f} s",
                f"{1e3 * o['tpot_mean_s']:.1f} ms",
                f"{o['e2e_mean_s']:.2f} s",
                _pct(o["prefix_hit_rate"]),
            )
        console.print(served)
    for warning in a.warnings:
        console.print(f"[yellow]warning:[/] {warning}")
