"""`selfserve generate KIND --out FILE`: stream synthetic traffic to a request log.

Kinds: `chat` (single-turn, optional shared system prompts), `sessions` (multi-turn chat
whose prompts grow turn by turn) and `agentic` (tool loops: long shared tools prefix, many
short-output steps). Any kind can mix in long-context requests (`--long-context-fraction`)
and media (`--images/--audio/--video`). Lengths are lognormal (`--prompt-mean/--prompt-cv`,
…) or fitted to a trace (`--fit TRACE`). Requests are written as they are generated, so a
million of them stream in bounded memory; the output is a selfserve request log (gzip if
FILE ends in .gz) that every command reads.
"""

from __future__ import annotations

import argparse
import itertools
import resource
import sys
import time
from pathlib import Path

from selfserve.cli.common import UserError, console, progress, write_json
from selfserve.workload.arrivals import parse_arrival
from selfserve.workload.lengths import LengthDist, fit_lengths
from selfserve.workload.log import write_request_log
from selfserve.workload.synthetic import (
    DEFAULT_BLOCK_TOKENS,
    SessionShape,
    SystemPrompts,
    chat,
    sessions,
    with_long_context,
)
from selfserve.workload.synthetic_media import MediaMix, with_media

KINDS = ("chat", "sessions", "agentic")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "generate",
        help="stream synthetic traffic (chat, sessions, agentic, long context, media) to a log",
        description=__doc__,
    )
    parser.add_argument("kind", choices=KINDS)
    parser.add_argument("--out", required=True, help="request log to write (.jsonl or .jsonl.gz)")
    size = parser.add_argument_group("how much")
    size.add_argument("--requests", type=int, help="stop after this many requests")
    size.add_argument("--duration", type=float, help="stop at this many seconds of traffic")
    size.add_argument(
        "--rate",
        type=float,
        default=5.0,
        help="requests/s (chat) or new sessions/s (sessions, agentic); default 5",
    )
    size.add_argument(
        "--arrival", default="poisson", help="poisson (default) or gamma:cv=X (bursty)"
    )
    lengths = parser.add_argument_group("lengths")
    lengths.add_argument(
        "--prompt-mean", type=float, default=None, help="mean prompt (or first-turn) tokens"
    )
    lengths.add_argument("--prompt-cv", type=float, default=1.0)
    lengths.add_argument("--output-mean", type=float, default=None, help="mean output tokens")
    lengths.add_argument("--output-cv", type=float, default=0.8)
    lengths.add_argument(
        "--fit", metavar="TRACE", help="fit prompt/output lengths to this trace (lognormal)"
    )
    lengths.add_argument(
        "--system-prompt-tokens", type=int, default=0, help="shared prefix tokens (chat)"
    )
    lengths.add_argument(
        "--system-prompts", type=int, default=1, help="how many distinct shared prefixes"
    )
    lengths.add_argument("--turns-mean", type=float, default=None, help="mean turns per session")
    lengths.add_argument(
        "--think-time", type=float, default=None, help="mean think time between turns, s"
    )
    extra = parser.add_argument_group("long context and media")
    extra.add_argument(
        "--long-context-fraction", type=float, default=0.0, help="share of 128K-1M-token requests"
    )
    extra.add_argument(
        "--long-context-max", type=int, default=1_048_576, help="largest long prompt (tokens)"
    )
    extra.add_argument(
        "--documents", type=int, default=64, help="pool of long documents (0 = all unique)"
    )
    extra.add_argument("--images", type=float, default=0.0, help="fraction of requests with images")
    extra.add_argument("--audio", type=float, default=0.0, help="fraction with an audio clip")
    extra.add_argument("--video", type=float, default=0.0, help="fraction with a video")
    extra.add_argument(
        "--media-repeat", type=float, default=0.3, help="probability a media item repeats"
    )
    extra.add_argument("--model", default=None, help="catalog model whose media-token rules to use")
    parser.add_argument(
        "--block-size", type=int, default=DEFAULT_BLOCK_TOKENS, help="tokens per hashed block"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", metavar="OUT", help="write the summary as JSON")
    parser.set_defaults(func=handle)


def _lengths(args: argparse.Namespace, default_prompt: LengthDist, default_output: LengthDist):
    prompt, output = default_prompt, default_output
    if args.fit:
        from selfserve.cli.analyze import load_trace

        prompt, output = fit_lengths(load_trace(args.fit, None, False, {}))
    if args.prompt_mean is not None:
        prompt = LengthDist.lognormal(args.prompt_mean, args.prompt_cv)
    if args.output_mean is not None:
        output = LengthDist.lognormal(args.output_mean, args.output_cv)
    return prompt, output


def build_stream(args: argparse.Namespace):
    if args.requests is None and args.duration is None:
        raise UserError("give --requests N or --duration S (or both)")
    if args.rate <= 0 or args.block_size <= 0:
        raise UserError("--rate and --block-size must be > 0")
    try:
        process = parse_arrival(args.arrival, args.rate)
        if args.kind == "chat":
            prompt, output = _lengths(
                args, LengthDist.lognormal(1000, 1.0), LengthDist.lognormal(250, 0.8)
            )
            stream = chat(
                rate_per_s=args.rate,
                duration_s=args.duration,
                arrival=process,
                prompt=prompt,
                output=output,
                system=SystemPrompts(args.system_prompt_tokens, args.system_prompts),
                block_size=args.block_size,
                seed=args.seed,
            )
        else:
            shape = SessionShape.agentic() if args.kind == "agentic" else SessionShape()
            prompt, output = _lengths(args, shape.first_prompt, shape.output)
            changes = {"first_prompt": prompt, "output": output}
            if args.turns_mean is not None:
                changes["turns_mean"] = args.turns_mean
            if args.think_time is not None:
                changes["think_time_mean_s"] = args.think_time
            if args.system_prompt_tokens:
                changes["system"] = SystemPrompts(args.system_prompt_tokens, args.system_prompts)
            from dataclasses import replace

            stream = sessions(
                session_rate_per_s=args.rate,
                duration_s=args.duration,
                arrival=process,
                shape=replace(shape, **changes),
                block_size=args.block_size,
                seed=args.seed,
            )
        if args.long_context_fraction:
            stream = with_long_context(
                stream,
                args.long_context_fraction,
                high_tokens=args.long_context_max,
                low_tokens=min(131_072, args.long_context_max),
                num_documents=args.documents or None,
                seed=args.seed,
            )
        if args.images or args.audio or args.video:
            mix = MediaMix(
                image_fraction=args.images,
                audio_fraction=args.audio,
                video_fraction=args.video,
                repeat_prob=args.media_repeat,
            )
            stream = with_media(stream, mix, model=args.model, seed=args.seed)
    except (ValueError, KeyError) as exc:
        raise UserError(str(exc)) from None
    if args.requests is not None:
        stream = itertools.islice(stream, args.requests)
    return stream


def peak_rss_bytes() -> int:
    """Peak resident memory of this process (Linux reports KiB, macOS bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


def handle(args: argparse.Namespace) -> int:
    stream = build_stream(args)
    out = Path(args.out)
    started = time.perf_counter()
    stats = {"requests": 0, "first_s": None, "last_s": 0.0, "prompt_tokens": 0, "output_tokens": 0}

    def counted(items):
        with progress() as bar:
            task = bar.add_task("generating", total=args.requests, status="")
            for request in items:
                stats["requests"] += 1
                if stats["first_s"] is None:
                    stats["first_s"] = request.arrival_s
                stats["last_s"] = request.arrival_s
                stats["prompt_tokens"] += request.prompt_tokens
                stats["output_tokens"] += request.output_tokens
                if stats["requests"] % 10_000 == 0:
                    bar.update(task, completed=stats["requests"])
                yield request

    write_request_log(out, counted(stream), rotate_bytes=None)
    elapsed_s = time.perf_counter() - started
    n = stats["requests"]
    if n == 0:
        raise UserError("the generator produced no request: raise --rate or --duration")
    summary = {
        "kind": args.kind,
        "out": str(out),
        "requests": n,
        "span_s": stats["last_s"] - (stats["first_s"] or 0.0),
        "mean_prompt_tokens": stats["prompt_tokens"] / n,
        "mean_output_tokens": stats["output_tokens"] / n,
        "bytes": out.stat().st_size,
        "elapsed_s": elapsed_s,
        "requests_per_s_generated": n / elapsed_s if elapsed_s > 0 else float("nan"),
        "peak_rss_bytes": peak_rss_bytes(),
        "seed": args.seed,
    }
    console.print(
        f"wrote {n:,} {args.kind} requests spanning {summary['span_s']:,.1f} s to {out} "
        f"({summary['bytes'] / 1e6:,.1f} MB) in {elapsed_s:.1f} s; mean prompt "
        f"{summary['mean_prompt_tokens']:,.0f} / output {summary['mean_output_tokens']:,.0f} tokens; "
        f"peak memory {summary['peak_rss_bytes'] / 2**20:,.0f} MiB"
    )
    if args.json:
        write_json(args.json, summary)
    return 0
