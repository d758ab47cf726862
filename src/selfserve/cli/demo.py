"""`selfserve demo` (`make demo`): the whole loop on loopback in a few minutes.

Starts time-scaled engine twins and the gateway with an anchor policy, replays the
vendored traffic through it while it records, tunes a heuristic from the recorded log,
canaries it live until the gateway promotes (or rolls back) it, replays again, and prints
a before/after table measured over real HTTP plus an HTML report. Every process it starts
is stopped at the end, also on Ctrl-C.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from rich.table import Table

from selfserve.cli.common import UserError, console, write_json

# (label, how to read it from a bench summary, format, higher is better)
ROWS: tuple[tuple[str, Any, str, bool], ...] = (
    ("throughput (req/s)", lambda s: s["request_throughput_rps"], "{:.2f}", True),
    ("output tokens/s", lambda s: s["output_throughput_tps"], "{:.0f}", True),
    ("TTFT p50 (s)", lambda s: s["ttft_s"]["p50"], "{:.3f}", False),
    ("TTFT p99 (s)", lambda s: s["ttft_s"]["p99"], "{:.3f}", False),
    ("TPOT mean (ms)", lambda s: s["tpot_s"]["mean"] * 1e3, "{:.1f}", False),
    ("SLO attainment", lambda s: s.get("slo_attainment"), "{:.1%}", True),
    ("prefix cache hit rate", lambda s: s.get("prefix_cache_hit_rate"), "{:.1%}", True),
    ("failed requests", lambda s: s["failed"] + s["incomplete"], "{:.0f}", False),
    ("bench send lag p99 (ms, wall)", lambda s: s["send_lag_s"]["p99"] * 1e3, "{:.0f}", False),
    (
        "twin schedule lag p99 (ms, wall)",
        lambda s: None if s.get("twin_lag_p99_s") is None else s["twin_lag_p99_s"] * 1e3,
        "{:.0f}",
        False,
    ),
)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="the closed loop end to end: record, tune, canary, promote, replay",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--out",
        default="out/demo",
        help="folder for the log, policy, JSON and HTML (default out/demo)",
    )
    parser.add_argument(
        "--trace",
        default="mooncake-conversation-10min",
        help="embedded trace name or trace file (default mooncake-conversation-10min)",
    )
    parser.add_argument(
        "--requests",
        type=int,
        default=200,
        help="requests in the before/after window (default 200)",
    )
    parser.add_argument(
        "--canary-requests",
        type=int,
        default=120,
        help="requests that carry the canary (default 120)",
    )
    parser.add_argument("--replicas", type=int, default=3, help="engine twins (default 3)")
    parser.add_argument(
        "--hardware", default="h100", help="catalog accelerator of the twins (default h100)"
    )
    parser.add_argument(
        "--model", default="llama-3.1-8b", help="catalog model of the twins (default llama-3.1-8b)"
    )
    parser.add_argument(
        "--time-scale",
        type=float,
        default=5.0,
        help="twins run this many times faster than real time (default 5)",
    )
    parser.add_argument(
        "--rate-scale",
        type=float,
        default=0.5,
        help="arrival rate multiplier on the trace (default 0.5)",
    )
    parser.add_argument(
        "--anchor",
        default="round-robin",
        help="the policy the gateway starts with (default round-robin)",
    )
    parser.add_argument(
        "--tune-budget",
        type=float,
        default=30.0,
        help="tuner search budget in seconds (default 30)",
    )
    parser.add_argument(
        "--slo",
        default="ttft=2s,tpot=100ms",
        help="SLO for attainment (default ttft=2s,tpot=100ms)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", help="write the full result here (default OUT/demo.json)")
    parser.add_argument("--html", help="write the report here (default OUT/report.html)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.set_defaults(func=run)


def _check(args: argparse.Namespace) -> None:
    for name in ("requests", "canary_requests", "replicas"):
        if getattr(args, name) < 1:
            raise UserError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    for name in ("time_scale", "rate_scale", "tune_budget"):
        if getattr(args, name) <= 0:
            raise UserError(f"--{name.replace('_', '-')} must be > 0, got {getattr(args, name)}")


def _cell(fmt: str, value: Any) -> str:
    return "–" if value is None else fmt.format(value)


def comparison_rows(before: dict, after: dict) -> list[tuple[str, str, str, str]]:
    rows = []
    for label, read, fmt, higher_better in ROWS:
        b, a = read(before), read(after)
        if b is None or a is None:
            change = "–"
        elif b == 0:
            change = "same" if a == 0 else "new"
        else:
            ratio = a / b
            better = (ratio > 1) == higher_better and ratio != 1
            change = f"{ratio:.2f}x" + (" better" if better else (" worse" if ratio != 1 else ""))
        rows.append((label, _cell(fmt, b), _cell(fmt, a), change))
    return rows


def run(args: argparse.Namespace) -> int:
    from selfserve.gateway.closed_loop import ClosedLoop, DemoError, LoopConfig

    _check(args)
    out = Path(args.out)
    config = LoopConfig(
        out_dir=out,
        trace=args.trace,
        model=args.model,
        hardware=args.hardware,
        replicas=args.replicas,
        time_scale=args.time_scale,
        rate_scale=args.rate_scale,
        requests=args.requests,
        canary_requests=args.canary_requests,
        anchor=args.anchor,
        tune_budget_s=args.tune_budget,
        canary_min_samples=max(1, min(30, int(args.canary_requests * 0.5 * 0.6))),
        slo=args.slo,
        seed=args.seed,
    )
    started = time.monotonic()

    def phase(name: str, text: str) -> None:
        console.print(f"[bold cyan]{name:>8}[/] [{time.monotonic() - started:5.0f} s] {text}")

    try:
        result = ClosedLoop(config, phase=phase, progress=not args.no_progress).run()
    except DemoError as exc:
        raise UserError(str(exc)) from exc
    except (KeyError, LookupError) as exc:
        raise UserError(f"cannot run the demo: {exc}") from exc
    rows = comparison_rows(result.before, result.after)
    table = Table(
        title=f"before ({config.anchor}) vs after ({result.final_policy}), measured over HTTP, model time"
    )
    for column in ("metric", "before", "after", "change"):
        table.add_column(column, justify="left" if column == "metric" else "right")
    for row in rows:
        table.add_row(*row)
    console.print(table)
    console.print(
        "[dim]the last two rows say how far the load generator and the twins fell behind for want of CPU; "
        "when they are large the machine, not the policy, set that run's latencies[/]"
    )
    console.print(
        f"[bold]learned heuristic[/] (route to the replica with the {'highest' if result.learned_doc.get('direction') == 'max' else 'lowest'} score):"
    )
    console.print(f"  {result.learned_text}")
    if result.learned_doc.get("params"):
        console.print(
            "  where "
            + ", ".join(
                f"{k} = {v:.4g}" if isinstance(v, float) else f"{k} = {v}"
                for k, v in result.learned_doc["params"].items()
            )
        )
    console.print(f"[bold]canary[/]: {result.canary_outcome}")
    html_path = Path(args.html) if args.html else out / "report.html"
    json_path = Path(args.json) if args.json else out / "demo.json"
    write_report(html_path, config, result, rows)
    payload = {
        "config": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(config).items()},
        "before": result.before,
        "after": result.after,
        "learned_policy": result.learned_doc,
        "canary_outcome": result.canary_outcome,
        "canary_events": result.canary_events,
        "final_policy": result.final_policy,
        "phase_s": result.phase_s,
        "paths": result.paths,
        "comparison": [
            dict(zip(("metric", "before", "after", "change"), r, strict=True)) for r in rows
        ],
    }
    write_json(json_path, payload)
    console.print(
        f"done in {time.monotonic() - started:.0f} s; report {html_path}, JSON {json_path}, request log {result.paths['request_log']}, policy {result.paths['learned_policy']}"
    )
    return 0


def write_report(path: Path, config, result, rows) -> None:
    from selfserve.report.html import HtmlReport

    report = HtmlReport(title="selfserve demo: record, tune, canary, promote, replay")
    report.paragraph(
        f"{config.replicas} engine twins of {config.model} on {config.hardware} running {config.time_scale:g}x faster than real time; "
        f"the first {config.requests} requests of {config.trace} replayed through the selfserve gateway over HTTP. "
        "Latencies are converted back to model time."
    )
    report.heading("Before and after")
    report.table(
        ["metric", f"before ({config.anchor})", f"after ({result.final_policy})", "change"], rows
    )
    report.heading("The learned heuristic")
    report.paragraph(
        "The gateway routes each request to the replica with the "
        + ("highest" if result.learned_doc.get("direction") == "max" else "lowest")
        + " score:"
    )
    report.preformatted(
        result.learned_text
        + (
            "\nparams: " + ", ".join(f"{k} = {v}" for k, v in result.learned_doc["params"].items())
            if result.learned_doc.get("params")
            else ""
        )
    )
    if result.learned_doc.get("description"):
        report.paragraph(str(result.learned_doc["description"]), css_class="note")
    report.heading("Canary")
    report.paragraph(result.canary_outcome)
    report.table(
        ["event", "arm", "reason"],
        [(e["event"], e["arm"], e["reason"]) for e in result.canary_events],
    )
    report.heading("Phases")
    report.table(["phase", "wall seconds"], [(k, round(v, 1)) for k, v in result.phase_s.items()])
    report.paragraph(
        f"Request log: {result.paths.get('request_log')}; policy file: {result.paths.get('learned_policy')}; tuner report: {Path(result.paths.get('learned_policy', '')).with_name('tune.html')}",
        css_class="note",
    )
    report.write(path)
