"""Shared CLI plumbing: the console, user-facing errors, JSON output, progress bars."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import orjson
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

console = Console(stderr=False, highlight=False)
err_console = Console(stderr=True, highlight=False)


class UserError(Exception):
    """An error the user can fix (bad input, bad option); printed without a traceback."""


def write_json(path: str | Path, payload: Any) -> None:
    """Write machine-readable results; numpy scalars and dataclasses are handled by orjson."""
    data = orjson.dumps(
        payload,
        option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS,
    )
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_bytes(data)


def progress(transient: bool = True) -> Progress:
    """A progress bar on stderr; quiet when stderr is not a terminal."""
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.fields[status]}"),
        console=err_console,
        transient=transient,
        disable=not sys.stderr.isatty(),
    )
