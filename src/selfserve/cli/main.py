"""The `selfserve` command: one entry point, one module per subcommand.

Each module in `COMMAND_MODULES` defines `register(subparsers)`, which adds its parser and
sets `func(args) -> int` as the handler.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from selfserve import __version__
from selfserve.cli.common import UserError, console

# Order is the order `selfserve --help` lists them.
COMMAND_MODULES: tuple[str, ...] = (
    "selfserve.cli.analyze",
    "selfserve.cli.generate",
    "selfserve.cli.calibrate",
    "selfserve.cli.profile",
    "selfserve.cli.plan",
    "selfserve.cli.simulate",
    "selfserve.cli.capacity",
    "selfserve.cli.serve",
    "selfserve.cli.demo",
    "selfserve.cli.twin",
    "selfserve.cli.bench",
    "selfserve.cli.tune",
    "selfserve.cli.compare",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="selfserve",
        description="Record LLM traffic, replay it in a digital twin, learn better routing, deploy it.",
    )
    parser.add_argument("--version", action="version", version=f"selfserve {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module_name in COMMAND_MODULES:
        importlib.import_module(module_name).register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except UserError as exc:
        console.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
        return 2
    except KeyboardInterrupt:
        console.print("[yellow]interrupted[/]")
        return 130


if __name__ == "__main__":
    sys.exit(main())
