"""`selfserve serve --config gateway.yaml`: run the OpenAI-compatible gateway until stopped.

SIGINT/SIGTERM start a graceful drain (in-flight requests finish, `/health` turns 503),
then the command prints a summary of what it served and exits.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal

from selfserve.cli.common import UserError, console, write_json


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "serve",
        help="run the OpenAI-compatible gateway (routing, canary, request log)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--config", required=True, help="gateway YAML (see deploy/gateway.yaml)")
    parser.add_argument("--host", help="override listen.host")
    parser.add_argument("--port", type=int, help="override listen.port (0 = a free port)")
    parser.add_argument("--policy", help="override the config's policy (name or policy file)")
    parser.add_argument("--log", dest="log_path", help="override log.path (the request log JSONL)")
    parser.add_argument(
        "--port-file", help="write the bound port here once listening (for scripts)"
    )
    parser.add_argument("--json", help="write a JSON summary here on exit")
    parser.add_argument(
        "-v", "--verbose", action="store_true", help="log health changes and policy events at INFO"
    )
    parser.set_defaults(func=run)


def _load(args: argparse.Namespace):
    from dataclasses import replace

    from selfserve.gateway.config import GatewayConfigError, LogConfig, load_gateway_config

    try:
        config = load_gateway_config(args.config)
    except GatewayConfigError as exc:
        raise UserError(str(exc)) from exc
    changes = {}
    if args.host:
        changes["host"] = args.host
    if args.port is not None:
        changes["port"] = args.port
    if args.policy:
        changes["policy"] = args.policy
    if args.log_path:
        changes["log"] = LogConfig(
            path=args.log_path,
            rotate_bytes=config.log.rotate_bytes,
            gzip_rotated=config.log.gzip_rotated,
        )
    return replace(config, **changes) if changes else config


async def _serve(config, port_file: str | None) -> dict:
    from pathlib import Path

    from selfserve.gateway.app import Gateway
    from selfserve.gateway.arms import PolicyValidationError

    try:
        gateway = Gateway(config)
    except PolicyValidationError as exc:
        raise UserError(f"{config.base_dir}: policy {config.policy!r} rejected: {exc}") from exc
    try:
        port = await gateway.start()
    except OSError as exc:
        await gateway.pool.close()
        raise UserError(
            f"cannot listen on {config.host}:{config.port}: {exc.strerror or exc}"
        ) from exc
    console.print(
        f"[bold green]selfserve gateway[/] on http://{config.host}:{port}  backends: {', '.join(b.name for b in config.backends)}  policy: {gateway.arms.incumbent.label}"
        + (f"  canary: {gateway.arms.candidate.label}" if gateway.arms.candidate else "")
    )
    if port_file:
        Path(port_file).write_text(str(port))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    console.print(f"draining {gateway.proxy.num_in_flight} in-flight request(s) …")
    await gateway.stop()
    samples = gateway.metrics.requests.collect()[0].samples
    by_status: dict[str, float] = {}
    for s in samples:
        if s.name.endswith("_total"):
            by_status[s.labels["status"]] = by_status.get(s.labels["status"], 0) + s.value
    return {
        "port": port,
        "requests_by_status": by_status,
        "logged_records": gateway.recorder.num_written,
        "policy": gateway.arms.describe(),
    }


def run(args: argparse.Namespace) -> int:
    config = _load(args)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(message)s",
    )
    try:
        import uvloop

        runner = asyncio.Runner(loop_factory=uvloop.new_event_loop)
    except ImportError:
        runner = asyncio.Runner()
    with runner:
        summary = runner.run(_serve(config, args.port_file))
    total = sum(summary["requests_by_status"].values())
    console.print(
        f"served {total:.0f} request(s): "
        + ", ".join(f"{k}={v:.0f}" for k, v in sorted(summary["requests_by_status"].items()))
        + f"; {summary['logged_records']} logged; final policy {summary['policy']['incumbent']['arm']}"
    )
    if args.json:
        write_json(args.json, summary)
    return 0
