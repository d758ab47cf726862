"""`selfserve bench`: replay a trace against any OpenAI-compatible endpoint and time it."""

from __future__ import annotations

import argparse
import asyncio
import signal
from pathlib import Path

from selfserve.cli.common import UserError, console, err_console, write_json


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "bench",
        help="replay a workload against an OpenAI-compatible endpoint; TTFT/TPOT/ITL/E2E, goodput",
        description=(
            "Send a trace's requests at their arrival times (prompts rebuilt so prefix sharing "
            "is kept, exact output lengths via max_tokens + ignore_eos) and print a table like "
            "`vllm bench serve`."
        ),
    )
    parser.add_argument(
        "--target",
        required=True,
        help="base URL, e.g. http://127.0.0.1:8000; several comma-separated URLs are used "
        "round-robin by the client",
    )
    parser.add_argument(
        "--trace",
        required=True,
        help="trace file (any format selfserve reads) or an embedded trace name "
        "(e.g. mooncake-conversation-10min or embedded:mooncake-conversation-10min)",
    )
    parser.add_argument("--format", help="trace format when detection is ambiguous")
    parser.add_argument("--model", help="model name to send (default: the target's first model)")
    parser.add_argument(
        "--endpoint",
        choices=("completions", "chat"),
        default="completions",
        help="API for text-only requests (media requests always use chat); default completions",
    )
    parser.add_argument(
        "--rate-scale", type=float, default=1.0, help="arrival-rate multiplier (2 = twice as fast)"
    )
    parser.add_argument(
        "--time-scale",
        type=float,
        default=1.0,
        help="the target runs X times faster than real time (twins with --time-scale X): "
        "arrivals are sped up X more and latencies are reported in model time",
    )
    parser.add_argument("--duration", type=float, help="stop after S seconds (wall)")
    parser.add_argument("--max-requests", type=int, help="send at most N requests")
    parser.add_argument("--max-concurrency", type=int, help="at most N requests in flight")
    parser.add_argument("--slo", help="e.g. ttft=2s,tpot=100ms: adds attainment and goodput")
    parser.add_argument("--json", help="write the summary and per-request outcomes here")
    parser.add_argument("--html", help="write an HTML report (latency CDFs, throughput over time)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(func=run)


def load_trace(spec: str, trace_format: str | None):
    """A path → `load_workload`; otherwise an embedded trace name → `load_embedded`."""
    path = Path(spec)
    if path.exists():
        from selfserve.workload.io import load_workload

        try:
            return load_workload(path, trace_format)
        except ValueError as exc:
            raise UserError(f"{spec}: {exc}") from exc
    try:
        from selfserve.workload.embedded import load_embedded

        return load_embedded(spec.removeprefix("embedded:"))
    except (KeyError, ValueError, FileNotFoundError) as exc:
        raise UserError(
            f"--trace {spec!r} is neither a file nor an embedded trace ({exc})"
        ) from exc


def run(args: argparse.Namespace) -> int:
    from selfserve.bench import BenchTargetError, arun_bench, parse_slo
    from selfserve.bench.report import render_table, write_html
    from selfserve.bench.result import SloFormatError
    from selfserve.cli.twin import _run_loop

    for name in ("rate_scale", "time_scale"):
        if getattr(args, name) <= 0:
            raise UserError(f"--{name.replace('_', '-')} must be > 0, got {getattr(args, name)}")
    for name in ("duration", "max_requests", "max_concurrency"):
        value = getattr(args, name)
        if value is not None and value <= 0:
            raise UserError(f"--{name.replace('_', '-')} must be > 0, got {value}")
    try:
        slo = parse_slo(args.slo)
    except SloFormatError as exc:
        raise UserError(f"--slo: {exc}") from exc
    workload = load_trace(args.trace, args.format)
    if not len(workload):
        raise UserError(f"--trace {args.trace}: no requests")
    holder: dict = {}

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        # First Ctrl-C: stop sending, cancel in-flight requests, report what finished.
        loop.add_signal_handler(signal.SIGINT, stop.set)
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        holder["result"] = await arun_bench(
            [url.strip() for url in args.target.split(",") if url.strip()],
            workload,
            rate_scale=args.rate_scale,
            time_scale=args.time_scale,
            duration_s=args.duration,
            max_requests=args.max_requests,
            max_concurrency=args.max_concurrency,
            model=args.model,
            endpoint=args.endpoint,
            progress=not args.no_progress,
            stop_event=stop,
        )

    try:
        _run_loop(main())
    except BenchTargetError as exc:
        raise UserError(str(exc)) from exc
    result = holder["result"]
    summary = result.summary(slo or None)
    console.print(render_table(summary))
    if result.cancelled:
        err_console.print(
            "[yellow]stopped at the time limit or on request: requests still running were "
            "cancelled and are counted as incomplete, not failed[/]"
        )
    if args.json:
        write_json(
            args.json,
            {
                "summary": summary,
                "requests": [
                    {
                        "request_id": o.request_id,
                        "scheduled_s": o.scheduled_s,
                        "start_s": o.start_s,
                        "ttft_s": None if o.ttft_s is None else o.ttft_s * result.time_scale,
                        "tpot_s": None if o.tpot_s is None else o.tpot_s * result.time_scale,
                        "e2e_s": None if o.e2e_s is None else o.e2e_s * result.time_scale,
                        "prompt_tokens": o.prompt_tokens,
                        "output_tokens": o.output_tokens,
                        "cached_tokens": o.cached_tokens,
                        "status": o.status,
                        "error": o.error,
                    }
                    for o in result.outcomes
                ],
            },
        )
        console.print(f"wrote {args.json}")
    if args.html:
        console.print(f"wrote {write_html(result, summary, args.html)}")
    return 0 if summary["completed"] else 1
