"""`selfserve tune`: learn a routing heuristic from a trace and prove it on a later window."""

from __future__ import annotations

import argparse
import math
import re
import time
from pathlib import Path

from rich.table import Table

from selfserve.cli.common import UserError, console, err_console, progress, write_json

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|sec|m|min|h)?\s*$")


def parse_duration_s(text: str) -> float:
    """`90s`, `10m`, `1h` or plain seconds."""
    match = _DURATION.match(str(text))
    if not match:
        raise UserError(f"--budget {text!r}: expected a duration such as 90s, 10m or 1h")
    value = float(match.group(1))
    unit = match.group(2) or "s"
    seconds = value * {"s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600}[unit]
    if seconds <= 0:
        raise UserError(f"--budget {text!r}: must be positive")
    return seconds


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "tune",
        help="learn a routing heuristic from a trace; validate it on a later window",
        description=(
            "Search routing heuristics (CMA-ES on constants, mutation/crossover of expressions "
            "seeded with the anchors, optionally an LLM proposer) on the training window of a "
            "trace in the simulator, then validate the winner against every anchor on a later "
            "window. Writes a policy file that `make_policy`, `simulate` and the gateway load."
        ),
    )
    parser.add_argument("--trace", required=True, help="trace file or embedded trace name")
    parser.add_argument("--format", help="trace format when detection is ambiguous")
    parser.add_argument(
        "--compress",
        type=float,
        default=1.0,
        help="replay the trace this many times faster before cutting windows (sparse traces "
        "such as a week of RAG traffic); windows, rates and capacity refer to the compressed "
        "trace (default 1)",
    )
    parser.add_argument("--cluster", required=True, help="e.g. 8xh200/llama-3.1-8b or a YAML file")
    parser.add_argument(
        "--train", default="0:50%", help="training window (default 0:50%%; also 0m:30m)"
    )
    parser.add_argument(
        "--validate", default="50:100%", help="validation window, after training (default 50:100%%)"
    )
    parser.add_argument("--budget", default="10m", help="search time budget (default 10m)")
    parser.add_argument(
        "--slo", default=None, help="e.g. ttft=2s,tpot=100ms (the simulator's default)"
    )
    parser.add_argument(
        "--objective",
        choices=("capacity", "capacity-all", "goodput", "cost"),
        default="capacity",
        help="capacity at the SLO over the requests an idle replica serves in time, guarding "
        "long prompts (default); capacity-all: over all requests, unguarded; goodput at the "
        "recorded rate; cost per 1M tokens at the SLO",
    )
    parser.add_argument(
        "--guard-margin",
        type=float,
        default=0.05,
        help="capacity: long prompts may lose at most this attainment vs the best anchor "
        "(default 0.05)",
    )
    parser.add_argument(
        "--tail-factor",
        type=float,
        default=2.0,
        help="capacity: p99 TTFT, and the median TTFT of the requests no replica serves in "
        "time, may be at most this times the best anchor's (default 2; 0: no limit)",
    )
    parser.add_argument(
        "--confirm-per-round",
        type=int,
        default=2,
        help="re-score at most this many search estimates per round exactly before one becomes "
        "the best (default 2; 0: the best is the best estimate, faster but optimistic)",
    )
    parser.add_argument(
        "--confirm-bar",
        choices=("exact", "estimate"),
        default="exact",
        help="what an estimate must beat to be re-scored: the best's exact score (default) or "
        "the best's own estimate (more candidates, fewer confirmations)",
    )
    parser.add_argument(
        "--ci-anchors",
        type=int,
        default=2,
        help="bootstrap CIs for the best training anchor and the best N anchors on validation "
        "(default 2; others get a point ratio)",
    )
    parser.add_argument("--anchors", default="all", help="anchors to beat: all (default) or a,b,c")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--workers", type=int, default=None, help="local worker processes (default: CPU count)"
    )
    parser.add_argument(
        "--ray", metavar="ADDRESS", help="run evaluations as Ray tasks: an address or 'local'"
    )
    parser.add_argument(
        "--proposer-url", help="OpenAI-compatible base URL of an LLM that proposes expressions"
    )
    parser.add_argument("--proposer-model", help="model name for --proposer-url")
    parser.add_argument(
        "--complexity-penalty",
        type=float,
        default=0.0005,
        help="score x (1 - p x nodes); default 0.0005",
    )
    parser.add_argument(
        "--bootstrap-windows",
        type=int,
        default=6,
        help="validation sub-windows for CIs (default 6)",
    )
    parser.add_argument(
        "--curve-points",
        type=int,
        default=0,
        help="extra grid rates per policy for the attainment plot (bisection probes are always plotted)",
    )
    parser.add_argument(
        "--search-window",
        default="100%",
        help="search on the last N%% of the training window (cheaper); the shortlist and the "
        "best anchor are re-scored on the whole window (default 100%%)",
    )
    parser.add_argument(
        "--cache",
        metavar="FILE",
        help="remember evaluations in FILE and reuse them in later runs on the same trace, "
        "windows, cluster and SLO (anchors are then scored once)",
    )
    parser.add_argument("--out", required=True, help="policy file to write (YAML)")
    parser.add_argument("--json", help="write the full result as JSON")
    parser.add_argument("--html", help="write an HTML report")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from selfserve.cli.bench import load_trace
    from selfserve.sim import SLO, ClusterSpec
    from selfserve.tune.artifact import policy_document, write_policy_file
    from selfserve.tune.tuner import TuneConfig, TuneError, tune
    from selfserve.tune.windows import (
        WindowError,
        check_disjoint,
        fingerprint,
        parse_window,
        window,
    )

    budget_s = parse_duration_s(args.budget)
    try:
        cluster = ClusterSpec.parse(args.cluster)
    except ValueError as exc:
        raise UserError(f"--cluster: {exc}") from exc
    try:
        slo = SLO.parse(args.slo)
    except ValueError as exc:
        raise UserError(f"--slo: {exc}") from exc
    workload = load_trace(args.trace, args.format)
    if args.compress != 1.0:
        if not args.compress > 0:
            raise UserError(f"--compress {args.compress}: must be > 0")
        from selfserve.workload.transforms import scale_rate

        workload = scale_rate(workload, args.compress)
    try:
        train_spec, validate_spec = parse_window(args.train), parse_window(args.validate)
        check_disjoint(train_spec, validate_spec, workload.span_s)
        train = window(workload, train_spec, label="--train")
        validate = window(workload, validate_spec, label="--validate")
    except WindowError as exc:
        raise UserError(str(exc)) from exc
    anchors = (
        ()
        if args.anchors == "all"
        else tuple(a.strip() for a in args.anchors.split(",") if a.strip())
    )
    fraction_text = str(args.search_window).strip().rstrip("%")
    try:
        search_fraction = float(fraction_text) / 100.0
    except ValueError:
        raise UserError(
            f"--search-window {args.search_window!r}: expected a percentage such as 40%"
        ) from None
    if not 0.0 < search_fraction <= 1.0:
        raise UserError(f"--search-window {args.search_window!r}: must be in (0%, 100%]")
    config = TuneConfig(
        budget_s=budget_s,
        seed=args.seed,
        objective=args.objective,
        anchors=anchors,
        workers=args.workers,
        ray=args.ray,
        proposer_url=args.proposer_url,
        proposer_model=args.proposer_model,
        complexity_penalty=args.complexity_penalty,
        bootstrap_windows=args.bootstrap_windows,
        curve_points=args.curve_points,
        search_fraction=search_fraction,
        cache_path=args.cache,
        guard_margin=args.guard_margin,
        tail_factor=args.tail_factor,
        ci_anchors=args.ci_anchors,
        confirm_per_round=args.confirm_per_round,
        confirm_bar=args.confirm_bar,
    )
    console.print(
        f"tuning on {len(train)} requests ({args.train}), validating on {len(validate)} ({args.validate}); "
        f"cluster {cluster.label}, SLO {slo.label}, objective {args.objective}, budget {budget_s:.0f} s"
    )
    started = time.monotonic()
    with progress(transient=True) as bar:
        task = bar.add_task("search", total=budget_s, status="")

        plain = {"phase": "", "best": None, "at": 0.0}

        def log_plainly(event: dict, status: str) -> None:
            # Without a terminal the bar is hidden: log phase changes, new bests and a
            # heartbeat every 30 s, so a long run in CI or under nohup shows progress.
            best = event.get("best_score")
            now = time.monotonic()
            if event["phase"] != plain["phase"] or best != plain["best"] or now - plain["at"] > 30:
                err_console.print(
                    f"[{event['elapsed_s']:7.1f}s] {event['phase']}: {event['message']} · {status}"
                )
                plain.update(phase=event["phase"], best=best, at=now)

        def on_event(event: dict) -> None:
            best = event.get("best_score")
            anchor = event.get("best_anchor_score")
            status = f"{event['evaluations']} evals"
            if best is not None:
                status += f" · best {best:.4g}"
            if anchor is not None:
                status += f" · anchor {event['best_anchor']} {anchor:.4g}"
            phase = event["phase"]
            if not err_console.is_terminal:
                log_plainly(event, status)
            bar.update(
                task,
                description=phase,
                completed=min(budget_s, event["elapsed_s"])
                if phase in ("anchors", "search")
                else budget_s,
                status=status if phase in ("anchors", "search") else event["message"],
            )

        try:
            result = tune(train, validate, cluster, slo, config, progress=on_event)
        except (TuneError, RuntimeError) as exc:
            raise UserError(str(exc)) from exc

    doc = policy_document(
        result,
        trace={
            "name": Path(str(args.trace)).name,
            "path": str(args.trace),
            "fingerprint": fingerprint(workload),
            "requests": len(workload),
            "span_s": round(workload.span_s, 3),
            "compress": args.compress,
        },
        windows={
            "train": _window_record(train_spec, train, workload.span_s, fingerprint),
            "validate": _window_record(validate_spec, validate, workload.span_s, fingerprint),
        },
        cluster=cluster.label,
        slo=slo.label,
    )
    out = write_policy_file(args.out, doc)
    _print_summary(result, doc, out, time.monotonic() - started)
    if args.json:
        write_json(args.json, _json_payload(result, doc))
    if args.html:
        from selfserve.tune.report import write_html

        write_html(result, doc, args.html)
        console.print(f"HTML report: {args.html}")
    return 130 if result.interrupted and not result.validated else 0


def _window_record(spec, part, span_s: float, fingerprint) -> dict:
    start_s, end_s = spec.resolve(span_s)
    return {
        "spec": spec.text,
        "start_s": round(start_s, 3),
        "end_s": round(min(end_s, span_s), 3),
        "requests": len(part),
        "fingerprint": fingerprint(part),
    }


def _print_summary(result, doc: dict, out: Path, wall_s: float) -> None:
    from selfserve.tune.report import TABLE_HEADERS, class_note, table_cells, validation_rows

    console.print()
    if result.winner_is_anchor:
        console.print(
            f"[bold]No learned heuristic beat the best anchor; keeping[/] {result.best_anchor}"
        )
    else:
        console.print("[bold]Winning heuristic[/] (lowest score wins):")
        console.print(f"  score = {result.winner_text}")
        console.print(f"  as stored: {doc['score']}  with {doc.get('params')}")
    table = Table(title=f"validation ({result.config.objective}, later window)")
    for header in TABLE_HEADERS:
        table.add_column(header, justify="left" if header == "policy" else "right")
    for row in validation_rows(result):
        table.add_row(*table_cells(row))
    console.print(table)
    note = class_note(result)
    if note:
        console.print(f"[dim]{note}[/]")
    if result.headroom is not None:
        winner = result.winner_doc.get("name") if result.winner_is_anchor else result.WINNER
        console.print(f"[dim]{result.headroom.note(winner, result.best_anchor)}[/]")
    gain = result.gains.get(result.best_anchor)
    if gain is not None and math.isfinite(gain.ratio):
        console.print(
            f"learned vs best training anchor {result.best_anchor}: {gain.ratio:.3f}x "
            f"({int(gain.level * 100)}% CI {gain.low:.3f}-{gain.high:.3f} over {gain.windows} sub-windows)"
        )
    for note in result.notes:
        err_console.print(f"[yellow]note:[/] {note}")
    console.print(
        f"{result.evaluations} evaluations on {result.evaluator} ({result.confirmations} "
        f"confirming search estimates, {result.rejected} rejected); budget "
        f"{result.config.budget_s:.0f} s, used {result.search_s:.0f} s up to the winner "
        f"(anchors, search, {result.finalise_reserve_s:.0f} s kept for the final re-scoring); "
        f"validation {result.validation_s:.0f} s, total {wall_s:.0f} s; policy file: {out}"
    )


def _json_payload(result, doc: dict) -> dict:
    from selfserve.tune.report import validation_rows

    return {
        "policy": doc,
        "winner": result.winner_text,
        "winner_is_anchor": result.winner_is_anchor,
        "best_anchor": result.best_anchor,
        "validation": validation_rows(result),
        "curves": {k: [list(p) for p in v] for k, v in result.curves.items()},
        "sub_window_scores": result.sub_window_scores,
        "history": [
            {
                "elapsed_s": p.elapsed_s,
                "evaluations": p.evaluations,
                "best_score": p.best_score,
                "text": p.best_text,
                "origin": p.origin,
            }
            for p in result.history
        ],
        "evaluations": result.evaluations,
        "confirmations": result.confirmations,
        "rejected": result.rejected,
        "proposer_rejected": [{"text": t, "why": w} for t, w in result.proposer_rejected],
        "search_s": result.search_s,
        "budget_s": result.config.budget_s,
        "finalise_reserve_s": result.finalise_reserve_s,
        "validation_s": result.validation_s,
        "long_floor": result.long_floor,
        "p99_limit_s": result.p99_limit_s,
        "request_classes": {
            key: c.summary() for key, c in result.classes.items() if "#" not in key
        },
        "interrupted": result.interrupted,
        "validated": result.validated,
        "prefill_headroom": result.headroom.to_dict() if result.headroom else None,
        "notes": result.notes,
    }
