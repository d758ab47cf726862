"""Plumbing every trace reader shares: opening (gzip-aware), bad-record policy, finishing.

A reader parses records and hands each malformed one to `ReadContext.bad`, which raises
unless the user asked to skip bad records (then it counts them). `finish` turns the parsed
requests into a `Workload`: it refuses an empty result, sorts out-of-order arrivals (with a
warning saying how many were out of order) and records how many records were skipped.
"""

from __future__ import annotations

import gc
import gzip
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from selfserve.workload.errors import EmptyTraceError, TraceFormatError
from selfserve.workload.request import Request, Workload

GZIP_MAGIC = b"\x1f\x8b"
_MAX_REPORTED = 3


def read_bytes(path: Path) -> bytes:
    """The file's content, decompressed when it is gzip (detected by magic bytes)."""
    with open(path, "rb") as handle:
        head = handle.read(2)
        handle.seek(0)
        if head == GZIP_MAGIC:
            with gzip.open(handle) as unzipped:
                return unzipped.read()
        return handle.read()


def head_bytes(path: Path, size: int = 65536) -> bytes:
    """The first `size` bytes of the (possibly gzip) file, for format detection."""
    with open(path, "rb") as handle:
        head = handle.read(2)
        handle.seek(0)
        if head == GZIP_MAGIC:
            with gzip.open(handle) as unzipped:
                return unzipped.read(size)
        return handle.read(size)


@contextmanager
def gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector while a reader allocates its records.

    A trace load creates hundreds of thousands of small acyclic objects (ints, tuples,
    dicts), which keeps triggering full collections that find nothing: ~30% of the
    Mooncake load time. Reference counting still frees everything as usual.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


@dataclass(slots=True)
class ReadContext:
    """Where we are reading from and what to do with a bad record."""

    path: Path
    skip_bad: bool = False
    skipped: int = 0
    examples: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # warnings for the Workload

    def bad(self, error: TraceFormatError) -> None:
        if not self.skip_bad:
            raise error
        self.skipped += 1
        if len(self.examples) < _MAX_REPORTED:
            self.examples.append(str(error))

    def error(
        self, line: int | None, field_name: str | None, expected: str, got: object = None
    ) -> TraceFormatError:
        return TraceFormatError(self.path, line, field_name, expected, got)


def require_int(record: dict, key: str, ctx: ReadContext, line: int, minimum: int = 0) -> int:
    value = record.get(key)
    if type(value) is int and value >= minimum:
        return value
    if isinstance(value, float) and value.is_integer() and value >= minimum:
        return int(value)
    raise ctx.error(line, key, f"an integer >= {minimum}", value)


def require_number(
    record: dict, key: str, ctx: ReadContext, line: int, minimum: float = 0.0
) -> float:
    value = record.get(key)
    if isinstance(value, int | float) and not isinstance(value, bool) and value >= minimum:
        return float(value)
    raise ctx.error(line, key, f"a number >= {minimum:g}", value)


def finish(
    requests: list[Request],
    ctx: ReadContext,
    *,
    name: str,
    source: str,
    block_size: int,
    warnings: list[str] | None = None,
) -> Workload:
    """Build the Workload: error if empty, sort arrivals, report skipped records."""
    notes = list(warnings or []) + ctx.notes
    if not requests:
        if ctx.skipped:
            raise EmptyTraceError(
                f"{ctx.path}: no usable request; all {ctx.skipped} records were malformed "
                f"(first: {ctx.examples[0]})"
            )
        raise EmptyTraceError(f"{ctx.path}: the trace is empty (no request records)")
    out_of_order = sum(
        1 for a, b in zip(requests, requests[1:], strict=False) if b.arrival_s < a.arrival_s
    )
    if out_of_order:
        requests.sort(key=_arrival_key)
        notes.append(
            f"{out_of_order} arrival(s) were out of order in {ctx.path.name}; "
            "requests were sorted by arrival time"
        )
    if ctx.skipped:
        notes.append(
            f"skipped {ctx.skipped} malformed record(s) in {ctx.path.name}; first: "
            + " | ".join(ctx.examples)
        )
    return Workload(
        requests=requests,
        name=name,
        source=source,
        block_size=block_size,
        warnings=notes,
        skipped_records=ctx.skipped,
    )


def _arrival_key(request: Request) -> float:
    return request.arrival_s
