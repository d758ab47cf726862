"""Mooncake FAST'25 JSONL traces (Kimi production chat, and the synthetic companion).

One object per line: `timestamp` (ms from trace start), `input_length`, `output_length`,
`hash_ids` (one id per 512-token block, `ceil(input_length / 512)` of them, so the last id
may name a partial block). Equal leading ids mean a shared KV prefix; we chain the ids so
each hash also encodes everything before it, and keep the partial last block because the
published prefix-reuse figures (36.6% of blocks for the conversation trace) count it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import orjson

from selfserve.workload.errors import TraceFormatError
from selfserve.workload.formats.common import (
    ReadContext,
    finish,
    read_bytes,
    require_int,
    require_number,
)
from selfserve.workload.hashing import chain_rows
from selfserve.workload.request import Request, Workload

MOONCAKE_BLOCK_TOKENS = 512
FIELDS = ("timestamp", "input_length", "output_length", "hash_ids")
_INT_ONLY = {int}
_NUMBER = (int, float)


def looks_like(record: object) -> bool:
    return (
        isinstance(record, dict)
        and "input_length" in record
        and "output_length" in record
        and isinstance(record.get("hash_ids"), list)
    )


def _records(data: bytes, ctx: ReadContext):
    """(line number, parsed object) for every non-blank line; bad JSON goes to ctx.bad."""
    raw_lines = data.splitlines()
    numbered = [(n, raw) for n, raw in enumerate(raw_lines, start=1) if raw.strip()]
    try:  # one orjson call over the whole file is ~3x faster than one per line
        parsed = orjson.loads(b"[" + b",".join(raw for _, raw in numbered) + b"]")
    except orjson.JSONDecodeError:
        parsed = None
    if parsed is not None and len(parsed) == len(numbered):
        yield from zip((n for n, _ in numbered), parsed, strict=True)
        return
    for line_no, raw in numbered:
        try:
            yield line_no, orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            ctx.bad(ctx.error(line_no, None, f"one JSON object per line ({exc})"))


def _explain(record: object, line_no: int, ctx: ReadContext, block_size: int) -> TraceFormatError:
    """The precise error for a record that failed the fast-path checks."""
    if not isinstance(record, dict):
        return ctx.error(line_no, None, "a JSON object with " + ", ".join(FIELDS), record)
    try:
        require_number(record, "timestamp", ctx, line_no)
        prompt = require_int(record, "input_length", ctx, line_no)
        require_int(record, "output_length", ctx, line_no)
    except TraceFormatError as exc:
        return exc
    ids = record.get("hash_ids")
    if not isinstance(ids, list) or not all(type(v) is int and v >= 0 for v in ids):
        return ctx.error(line_no, "hash_ids", "a list of non-negative integer ids", ids)
    return ctx.error(
        line_no,
        "hash_ids",
        f"at most ceil(input_length/{block_size}) = {-(-prompt // block_size)} ids",
        len(ids),
    )


def spread_equal_times(times: list[float]) -> list[float]:
    """Spread runs of equal (sorted) times evenly up to the next distinct time.

    The last run spreads over the median gap between distinct times.
    """
    if len(times) < 2:
        return list(times)
    t = np.asarray(times, dtype=np.float64)
    order = np.argsort(t, kind="stable")
    sorted_t = t[order]
    distinct, first, counts = np.unique(sorted_t, return_index=True, return_counts=True)
    gaps = np.diff(distinct)
    width = np.append(gaps, np.median(gaps) if len(gaps) else 0.0)
    rank = np.arange(len(sorted_t)) - np.repeat(first, counts)
    spread = sorted_t + rank * np.repeat(width / counts, counts)
    out = np.empty_like(spread)
    out[order] = spread
    return out.tolist()


def read_mooncake(
    path: str | Path,
    *,
    skip_bad: bool = False,
    name: str | None = None,
    block_size: int = MOONCAKE_BLOCK_TOKENS,
    spread_ties: bool = False,
) -> Workload:
    """Read a Mooncake trace; `block_size` is the tokens per hash id (512 in the release).

    The conversation trace's timestamps are quantised to about 3 s (up to 28 requests share
    one). `spread_ties=True` spreads each group of equal timestamps evenly over the gap to
    the next distinct timestamp (deterministic, order kept) instead of replaying them as
    one synchronised burst.
    """
    path = Path(path)
    ctx = ReadContext(path, skip_bad)
    times: list[float] = []
    inputs: list[int] = []
    outputs: list[int] = []
    id_rows: list[list[int]] = []
    lines: list[int] = []
    for line_no, record in _records(read_bytes(path), ctx):
        timestamp_ms = record.get("timestamp") if type(record) is dict else None
        prompt = record.get("input_length") if timestamp_ms is not None else None
        output = record.get("output_length") if timestamp_ms is not None else None
        ids = record.get("hash_ids") if timestamp_ms is not None else None
        # Fast path inline (this loop runs once per request); the slow path below only
        # runs to say precisely what is wrong.
        if (
            type(prompt) is int
            and type(output) is int
            and type(ids) is list
            and type(timestamp_ms) in _NUMBER
            and prompt >= 0
            and output >= 0
            and timestamp_ms >= 0
            and len(ids) <= -(-prompt // block_size)
            # set(map(type, ...)) and min() run in C; per-element Python checks would
            # cost more than the rest of the parse.
            and (not ids or (set(map(type, ids)) == _INT_ONLY and min(ids) >= 0))
        ):
            times.append(timestamp_ms / 1000.0)
            inputs.append(prompt)
            outputs.append(output)
            id_rows.append(ids)
            lines.append(line_no)
            continue
        ctx.bad(_explain(record, line_no, ctx, block_size))
    if spread_ties:
        times = spread_equal_times(times)
    hashes = chain_rows(id_rows)
    stem = path.stem
    requests = [
        Request(
            request_id=f"{stem}:{line_no}",
            arrival_s=t,
            prompt_tokens=p,
            output_tokens=o,
            block_hashes=h,
            block_size=block_size,
        )
        for line_no, t, p, o, h in zip(lines, times, inputs, outputs, hashes, strict=True)
    ]
    return finish(
        requests, ctx, name=name or f"mooncake/{stem}", source=str(path), block_size=block_size
    )
