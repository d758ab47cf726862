"""RAGPulse (university RAG Q&A service) traces: requests plus five segment tables.

`0_trace.jsonl` holds requests whose `hash_ids` name *segments* (system-prompt blocks,
retrieved passages, history, web-search blocks, user input); the token length of each id is
in `1_sys_prompt.jsonl` … `5_web_search.jsonl` beside it. We lay the segments out in prompt
order — system prompt, passages, history, web search, user input — and cut the stream into
`block_size`-token blocks; a block's hash chains the previous block's hash with the
(segment id, offset) pieces it covers. Two requests thus share block hashes exactly as far
as their token streams are equal. Tokens beyond the segments (the tables cover 99.7% of
`input_length`) are unique to the request, so their blocks never hit. `timestamp` is a
string of integer seconds; the file has one inversion, so arrivals get sorted.
"""

from __future__ import annotations

from pathlib import Path

import orjson

from selfserve.workload.errors import TraceFormatError
from selfserve.workload.formats.common import ReadContext, finish, read_bytes, require_int
from selfserve.workload.hashing import combine, text_key
from selfserve.workload.request import Request, Workload

TRACE_FILE = "0_trace.jsonl"
# (field in hash_ids, table file, id key in the table) in prompt order.
SEGMENTS: tuple[tuple[str, str, str], ...] = (
    ("sys_prompt", "1_sys_prompt.jsonl", "sys_prompt_id"),
    ("passages_ids", "2_passages.jsonl", "passage_id"),
    ("history", "3_history.jsonl", "history_id"),
    ("web_search", "5_web_search.jsonl", "web_search_id"),
    ("user_input", "4_user_input.jsonl", "user_input_id"),
)
DEFAULT_BLOCK_TOKENS = 64


def looks_like(record: object) -> bool:
    return isinstance(record, dict) and isinstance(record.get("hash_ids"), dict)


def resolve(path: Path) -> Path:
    """The directory holding `0_trace.jsonl` and the segment tables."""
    return path if path.is_dir() else path.parent


def load_segment_lengths(folder: Path, skip_bad: bool = False) -> dict[int, int]:
    """Token length of every segment id (ids are unique across the five tables)."""
    lengths: dict[int, int] = {}
    for _, file_name, id_key in SEGMENTS:
        table = folder / file_name
        if not table.exists():
            raise TraceFormatError(table, None, None, f"the RAGPulse segment table {file_name}")
        ctx = ReadContext(table, skip_bad)
        for line_no, raw in enumerate(read_bytes(table).splitlines(), start=1):
            if not raw.strip():
                continue
            try:
                record = orjson.loads(raw)
                if not isinstance(record, dict):
                    raise ctx.error(line_no, None, f"an object with {id_key}, token_length")
                segment_id = require_int(record, id_key, ctx, line_no)
                lengths[segment_id] = require_int(record, "token_length", ctx, line_no)
            except orjson.JSONDecodeError as exc:
                ctx.bad(ctx.error(line_no, None, f"one JSON object per line ({exc})"))
            except TraceFormatError as exc:
                ctx.bad(exc)
    return lengths


def segment_block_hashes(
    pieces: list[tuple[int, int]], prompt_tokens: int, block_size: int, unique_key: int
) -> tuple[int, ...]:
    """Chained hashes of the full blocks of a stream of (segment id, token length) pieces.

    The stream is cut at `prompt_tokens`; tokens not covered by any piece are unique to
    the request (`unique_key`), so the chain diverges there.
    """
    hashes: list[int] = []
    parent = 0
    block_key = 0  # running hash of the pieces inside the current block
    filled = 0
    total = 0
    for segment_id, length in pieces:
        offset = 0
        while offset < length and total < prompt_tokens:
            take = min(length - offset, block_size - filled, prompt_tokens - total)
            block_key = combine(combine(block_key, segment_id), offset)
            offset += take
            filled += take
            total += take
            if filled == block_size:
                parent = combine(parent, block_key)
                hashes.append(parent)
                block_key = 0
                filled = 0
        if total >= prompt_tokens:
            break
    if total < prompt_tokens:
        # The uncovered tail: first finish the open block, then whole unique blocks.
        block_key = combine(block_key, unique_key)
        remaining = prompt_tokens - total
        while filled + remaining >= block_size:
            remaining -= block_size - filled
            parent = combine(parent, combine(block_key, remaining))
            hashes.append(parent)
            block_key = unique_key
            filled = 0
    return tuple(hashes)


def read_ragpulse(
    path: str | Path,
    *,
    skip_bad: bool = False,
    name: str | None = None,
    block_size: int = DEFAULT_BLOCK_TOKENS,
) -> Workload:
    """Read a RAGPulse folder (or its `0_trace.jsonl`); blocks are `block_size` tokens."""
    folder = resolve(Path(path))
    trace = folder / TRACE_FILE if Path(path).is_dir() else Path(path)
    lengths = load_segment_lengths(folder, skip_bad)
    ctx = ReadContext(trace, skip_bad)
    requests: list[Request] = []
    turns: dict[str, int] = {}
    for line_no, raw in enumerate(read_bytes(trace).splitlines(), start=1):
        if not raw.strip():
            continue
        try:
            record = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            ctx.bad(ctx.error(line_no, None, f"one JSON object per line ({exc})"))
            continue
        try:
            requests.append(_request(record, line_no, ctx, lengths, block_size, turns))
        except TraceFormatError as exc:
            ctx.bad(exc)
    return finish(
        requests,
        ctx,
        name=name or "ragpulse",
        source=str(folder),
        block_size=block_size,
    )


def _request(
    record: object,
    line_no: int,
    ctx: ReadContext,
    lengths: dict[int, int],
    block_size: int,
    turns: dict[str, int],
) -> Request:
    if not isinstance(record, dict):
        raise ctx.error(line_no, None, "a JSON object", record)
    stamp = record.get("timestamp")
    try:
        arrival_s = float(stamp)  # a string of integer seconds in the release
    except (TypeError, ValueError):
        raise ctx.error(
            line_no, "timestamp", "seconds as a number or numeric string", stamp
        ) from None
    if arrival_s < 0:
        raise ctx.error(line_no, "timestamp", "seconds >= 0", stamp)
    prompt = require_int(record, "input_length", ctx, line_no)
    output = require_int(record, "output_length", ctx, line_no)
    ids = record.get("hash_ids")
    if not isinstance(ids, dict):
        raise ctx.error(line_no, "hash_ids", "an object of segment id lists", ids)
    pieces: list[tuple[int, int]] = []
    for field_name, _, _ in SEGMENTS:
        segment_ids = ids.get(field_name, [])
        if not isinstance(segment_ids, list):
            raise ctx.error(line_no, f"hash_ids.{field_name}", "a list of ids", segment_ids)
        for segment_id in segment_ids:
            length = lengths.get(segment_id) if type(segment_id) is int else None
            if length is None:
                raise ctx.error(
                    line_no,
                    f"hash_ids.{field_name}",
                    "ids listed in the segment tables beside the trace",
                    segment_id,
                )
            pieces.append((segment_id, length))
    session = record.get("session_id")
    session_id = str(session) if session is not None else None
    turn = 0
    if session_id is not None:
        turn = turns.get(session_id, 0)
        turns[session_id] = turn + 1
    hashes = segment_block_hashes(pieces, prompt, block_size, text_key(f"ragpulse:{line_no}"))
    return Request(
        request_id=f"ragpulse:{line_no}",
        arrival_s=arrival_s,
        prompt_tokens=prompt,
        output_tokens=output,
        block_hashes=hashes,
        block_size=block_size,
        session_id=session_id,
        turn=turn,
    )
