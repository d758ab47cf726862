"""Errors a trace can cause, named so a user can find and fix the offending line.

Readers raise `TraceFormatError` for a malformed record (which file, which line, which
field, and what would have been valid) and `EmptyTraceError` when nothing usable was read.
Both are `ValueError`s so library callers can catch them generically; the CLI turns them
into `UserError`.
"""

from __future__ import annotations

from pathlib import Path


class TraceFormatError(ValueError):
    """A record that does not match its format: names file, line, field and what was expected."""

    def __init__(
        self,
        file: str | Path,
        line: int | None,
        field: str | None,
        expected: str,
        got: object = None,
    ) -> None:
        self.file = str(file)
        self.line = line
        self.field = field
        self.expected = expected
        self.got = got
        where = self.file if line is None else f"{self.file}:{line}"
        what = f" field {field!r}" if field else ""
        shown = "" if got is None else f", got {_short(got)}"
        super().__init__(f"{where}:{what} expected {expected}{shown}")


class EmptyTraceError(ValueError):
    """The trace held no usable request (empty file, or every line was skipped)."""


class UnknownFormatError(ValueError):
    """The format could not be detected from content, or a `--format` name is not known."""


def _short(value: object, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"
