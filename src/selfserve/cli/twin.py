"""`selfserve twin`: serve one engine twin (a vLLM look-alike with modelled timing)."""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
import time

from selfserve.cli.common import UserError, console, write_json


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "twin",
        help="run an HTTP twin of one vLLM replica (OpenAI API, SSE, /metrics) with modelled timing",
        description=(
            "Serve /v1/completions, /v1/chat/completions, /v1/models, /health and /metrics like "
            "a vLLM replica; token timing follows the engine and performance models."
        ),
    )
    parser.add_argument("--model", required=True, help="catalog model, e.g. llama-3.1-8b")
    parser.add_argument("--hardware", required=True, help="catalog accelerator, e.g. h100")
    parser.add_argument("--tp", type=int, default=1, help="tensor-parallel GPUs (default 1)")
    parser.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8000, help="port (0 = any free port)")
    parser.add_argument(
        "--time-scale",
        type=float,
        default=1.0,
        help="run the engine model X times faster than real time (default 1)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed for natural output lengths")
    parser.add_argument("--served-model-name", help="model id clients use (default: --model)")
    parser.add_argument("--max-num-seqs", type=int, default=256)
    parser.add_argument("--max-num-batched-tokens", type=int, default=8192)
    parser.add_argument("--block-size", type=int, default=16)
    parser.add_argument("--gpu-memory-utilization", type=float, default=0.9)
    parser.add_argument(
        "--no-prefix-caching", action="store_true", help="disable the engine's prefix cache"
    )
    parser.add_argument(
        "--max-body-bytes",
        type=int,
        default=64 * 1024 * 1024,
        help="larger request bodies get 413 (default 64 MiB)",
    )
    parser.add_argument(
        "--natural-output-mean",
        type=int,
        default=256,
        help="mean output length of requests without ignore_eos (default 256)",
    )
    parser.add_argument(
        "--ready-file", help="write {url, port, pid} here once listening (for scripts and tests)"
    )
    parser.add_argument("--json", help="on exit, write the twin's lag statistics here")
    parser.set_defaults(func=run)


def _config(args: argparse.Namespace):
    from selfserve.twin.server import TwinConfig

    if args.time_scale <= 0:
        raise UserError(f"--time-scale must be > 0, got {args.time_scale}")
    if args.tp < 1:
        raise UserError(f"--tp must be >= 1, got {args.tp}")
    return TwinConfig(
        model=args.model,
        hardware=args.hardware,
        tp=args.tp,
        time_scale=args.time_scale,
        seed=args.seed,
        served_model_name=args.served_model_name,
        max_num_seqs=args.max_num_seqs,
        max_num_batched_tokens=args.max_num_batched_tokens,
        block_size=args.block_size,
        gpu_memory_utilization=args.gpu_memory_utilization,
        enable_prefix_caching=not args.no_prefix_caching,
        max_body_bytes=args.max_body_bytes,
        natural_output_mean_tokens=args.natural_output_mean,
    )


def run(args: argparse.Namespace) -> int:
    from selfserve.twin.server import start_twin

    config = _config(args)
    holder: dict = {}

    async def main() -> None:
        try:
            twin = await start_twin(config, host=args.host, port=args.port)
        except (KeyError, ValueError, LookupError) as exc:
            raise UserError(f"cannot build the twin: {exc}") from exc
        except OSError as exc:
            raise UserError(f"cannot listen on {args.host}:{args.port}: {exc}") from exc
        holder["twin"] = twin
        console.print(
            f"twin of [bold]{config.model}[/] on {args.tp}x{config.hardware} "
            f"(time scale {config.time_scale:g}) listening on {twin.url}"
        )
        if args.ready_file:
            # Write then rename, so a watcher never reads a half-written file.
            partial = f"{args.ready_file}.partial"
            write_json(partial, {"url": twin.url, "port": twin.port, "pid": os.getpid()})
            os.replace(partial, args.ready_file)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        try:
            await stop.wait()
        finally:
            holder["lag"] = twin.app.runtime.lag.percentiles()
            await twin.stop()

    started_s = time.perf_counter()
    try:
        _run_loop(main())
    except KeyboardInterrupt:
        pass
    lag = holder.get("lag")
    if lag is not None:
        console.print(
            f"twin stopped after {time.perf_counter() - started_s:.0f} s: {lag['steps']} engine "
            f"steps, schedule lag p50 {lag['p50_s'] * 1e3:.2f} ms, p99 {lag['p99_s'] * 1e3:.2f} ms"
        )
        if args.json:
            write_json(args.json, {"lag": lag})
    return 0


def _run_loop(coro) -> None:
    """asyncio.run on uvloop where available (it roughly halves per-token overhead)."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is pinned for non-Windows platforms
        asyncio.run(coro)
        return
    if sys.version_info >= (3, 12):
        asyncio.run(coro, loop_factory=uvloop.new_event_loop)
    else:
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            runner.run(coro)
