"""selfserve's request log: one JSON object per line, what the gateway records per request.

The schema (see README "Request log") is a `Request` plus its outcome; it carries token
counts, block and media hashes and timings, never text. `RequestLogWriter` appends records
and rotates the file when it passes `rotate_bytes`: the full file is renamed to
`<stem>.<NNNNN>.jsonl` (gzip-compressed to `.jsonl.gz` by default) and a fresh file starts,
so `<stem>.00001…` are oldest first and `<stem>.jsonl` is the newest. `read_request_log`
reads a file (plain or gzip), or a log's whole rotation set, or a folder of logs, back into
a `Workload`; records without an outcome (e.g. from `selfserve generate`) are plain requests.
"""

from __future__ import annotations

import gzip
import os
import re
import shutil
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

import orjson

from selfserve.workload.errors import TraceFormatError
from selfserve.workload.formats.common import ReadContext, finish, read_bytes
from selfserve.workload.request import EMPTY_TAGS, MEDIA_KINDS, MediaPart, Request, Workload

SCHEMA_VERSION = 1
DEFAULT_ROTATE_BYTES = 256 * 1024 * 1024
OUTCOME_FIELDS = (
    "backend",
    "policy_arm",
    "ttft_s",
    "e2e_s",
    "itl_mean_s",
    "tpot_s",
    "cached_tokens",
    "status",
    "error",
)
_ROTATED = re.compile(r"^(?P<stem>.+)\.(?P<index>\d{5})\.jsonl(\.gz)?$")


@dataclass(frozen=True, slots=True)
class RequestLogRecord:
    """One served request: the traffic (`request`) and what happened to it.

    `status` is "ok" or "error" once served; None for a request not (yet) served, such as
    a synthetic one written by `selfserve generate`.
    """

    request: Request
    backend: str | None = None
    policy_arm: str | None = None
    ttft_s: float | None = None
    e2e_s: float | None = None
    itl_mean_s: float | None = None
    tpot_s: float | None = None
    cached_tokens: int | None = None
    status: str | None = None
    error: str | None = None

    def __post_init__(self) -> None:
        if self.status not in (None, "ok", "error"):
            raise ValueError(f"status must be 'ok', 'error' or None, got {self.status!r}")


def request_to_dict(request: Request) -> dict[str, Any]:
    """The JSON object for a request (fields at their defaults are left out)."""
    out: dict[str, Any] = {
        "v": SCHEMA_VERSION,
        "request_id": request.request_id,
        "arrival_s": request.arrival_s,
        "prompt_tokens": request.prompt_tokens,
        "output_tokens": request.output_tokens,
        "block_size": request.block_size,
    }
    if request.block_hashes:
        out["block_hashes"] = request.block_hashes
    if request.session_id is not None:
        out["session_id"] = request.session_id
        out["turn"] = request.turn
    if request.think_time_s:
        out["think_time_s"] = request.think_time_s
    if request.media:
        out["media"] = [
            {
                "kind": m.kind,
                "tokens": m.tokens,
                "content_hash": m.content_hash,
                "pixels": m.pixels,
                "seconds": m.seconds,
                "frames": m.frames,
            }
            for m in request.media
        ]
    if request.tags:
        out["tags"] = dict(request.tags)
    return out


def record_to_dict(record: RequestLogRecord) -> dict[str, Any]:
    out = request_to_dict(record.request)
    for name in OUTCOME_FIELDS:
        value = getattr(record, name)
        if value is not None:
            out[name] = value
    return out


def encode_record(record: RequestLogRecord | Request) -> bytes:
    """One log line (with its trailing newline)."""
    data = (
        record_to_dict(record) if isinstance(record, RequestLogRecord) else request_to_dict(record)
    )
    return orjson.dumps(data, option=orjson.OPT_APPEND_NEWLINE)


class RequestLogWriter:
    """Append records to a JSONL log, rotating (and gzipping) full files.

    Not thread-safe: the gateway writes from its event loop. `close()` (or a `with` block)
    flushes; a crash loses at most the OS buffer.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        rotate_bytes: int | None = DEFAULT_ROTATE_BYTES,
        gzip_rotated: bool = True,
    ) -> None:
        self.path = Path(path)
        if rotate_bytes is not None and rotate_bytes <= 0:
            raise ValueError(f"rotate_bytes must be > 0 or None, got {rotate_bytes}")
        self.rotate_bytes = rotate_bytes
        self.gzip_rotated = gzip_rotated
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._handle = open(self.path, "ab", buffering=1 << 20)  # noqa: SIM115
        self._size = self._handle.tell()
        self.records_written = 0
        self.rotations = 0

    def write(self, record: RequestLogRecord | Request) -> None:
        line = encode_record(record)
        self._handle.write(line)
        self._size += len(line)
        self.records_written += 1
        if self.rotate_bytes is not None and self._size >= self.rotate_bytes:
            self.rotate()

    def write_many(self, records: Iterable[RequestLogRecord | Request]) -> None:
        for record in records:
            self.write(record)

    def flush(self) -> None:
        self._handle.flush()

    def rotate(self) -> Path:
        """Close the current file, move it to the next rotation index, start a new one."""
        self._handle.close()
        index = 1 + max((i for i, _ in rotated_files(self.path)), default=0)
        target = self.path.with_name(f"{_stem(self.path)}.{index:05d}.jsonl")
        os.replace(self.path, target)
        if self.gzip_rotated:
            with open(target, "rb") as src, gzip.open(f"{target}.gz", "wb", compresslevel=6) as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
            target.unlink()
            target = Path(f"{target}.gz")
        self._handle = open(self.path, "ab", buffering=1 << 20)  # noqa: SIM115
        self._size = 0
        self.rotations += 1
        return target

    def close(self) -> None:
        if not self._handle.closed:
            self._handle.close()

    def __enter__(self) -> RequestLogWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _stem(path: Path) -> str:
    name = path.name
    for suffix in (".jsonl.gz", ".jsonl", ".gz"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


def rotated_files(path: Path) -> list[tuple[int, Path]]:
    """(index, file) of the rotated siblings of log `path`, oldest first."""
    stem = _stem(path)
    found = []
    if path.parent.is_dir():
        for candidate in path.parent.iterdir():
            match = _ROTATED.match(candidate.name)
            if match and match["stem"] == stem:
                found.append((int(match["index"]), candidate))
    return sorted(found)


def log_files(path: Path, include_rotated: bool = True) -> list[Path]:
    """The files making up a log: a folder's *.jsonl[.gz], or a file and its rotations."""
    if path.is_dir():
        files = sorted(
            p for p in path.iterdir() if p.name.endswith(".jsonl") or p.name.endswith(".jsonl.gz")
        )
        if not files:
            raise TraceFormatError(path, None, None, "a folder holding *.jsonl request logs")
        return files
    files = [p for _, p in rotated_files(path)] if include_rotated else []
    if _ROTATED.match(path.name):  # the user named one rotated piece: read just that
        return [path]
    return files + [path] if path.exists() else files


def iter_log_records(
    path: str | Path, *, skip_bad: bool = False, include_rotated: bool = True
) -> Iterator[RequestLogRecord]:
    """Stream the records of a log (all rotated pieces, oldest first); bad lines raise."""
    for file in log_files(Path(path), include_rotated):
        ctx = ReadContext(file, skip_bad)
        yield from _records_of(file, ctx)


def _records_of(file: Path, ctx: ReadContext) -> Iterator[RequestLogRecord]:
    data_bytes = read_bytes(file)
    lines = data_bytes.splitlines()
    for line_no, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue
        try:
            data = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            if line_no == len(lines) and not data_bytes.endswith(b"\n"):
                # A live log's last record may be half-written; say so, do not fail.
                ctx.notes.append(
                    f"{file}:{line_no}: ignored an incomplete last line (log still being written?)"
                )
                continue
            ctx.bad(ctx.error(line_no, None, f"one JSON object per line ({exc})"))
            continue
        try:
            yield parse_record(data, ctx, line_no)
        except TraceFormatError as exc:
            ctx.bad(exc)


def looks_like(record: object) -> bool:
    return isinstance(record, dict) and "arrival_s" in record and "prompt_tokens" in record


def parse_record(data: object, ctx: ReadContext, line_no: int) -> RequestLogRecord:
    if not isinstance(data, dict):
        raise ctx.error(line_no, None, "a JSON object (a request-log record)", data)
    version = data.get("v", SCHEMA_VERSION)
    if version != SCHEMA_VERSION:
        raise ctx.error(line_no, "v", f"schema version {SCHEMA_VERSION}", version)
    request_id = data.get("request_id")
    if not isinstance(request_id, str) or not request_id:
        raise ctx.error(line_no, "request_id", "a non-empty string", request_id)
    arrival = data.get("arrival_s")
    if not isinstance(arrival, int | float) or isinstance(arrival, bool) or arrival < 0:
        raise ctx.error(line_no, "arrival_s", "seconds >= 0", arrival)
    prompt = _int(data, "prompt_tokens", ctx, line_no)
    output = _int(data, "output_tokens", ctx, line_no)
    block_size = _int(data, "block_size", ctx, line_no, default=16, minimum=1)
    hashes = data.get("block_hashes", ())
    if not isinstance(hashes, list | tuple) or (hashes and set(map(type, hashes)) != {int}):
        raise ctx.error(line_no, "block_hashes", "a list of integer hashes", hashes)
    session = data.get("session_id")
    if session is not None and not isinstance(session, str):
        raise ctx.error(line_no, "session_id", "a string or null", session)
    turn = _int(data, "turn", ctx, line_no, default=0)
    think = data.get("think_time_s", 0.0)
    if not isinstance(think, int | float) or think < 0:
        raise ctx.error(line_no, "think_time_s", "seconds >= 0", think)
    media = tuple(_media(m, ctx, line_no, i) for i, m in enumerate(data.get("media") or ()))
    tags = data.get("tags")
    if tags is not None and (
        not isinstance(tags, dict) or not all(isinstance(v, str) for v in tags.values())
    ):
        raise ctx.error(line_no, "tags", "an object of string values", tags)
    request = Request(
        request_id=request_id,
        arrival_s=float(arrival),
        prompt_tokens=prompt,
        output_tokens=output,
        block_hashes=tuple(hashes),
        block_size=block_size,
        session_id=session,
        turn=turn,
        think_time_s=float(think),
        media=media,
        tags=MappingProxyType(tags) if tags else EMPTY_TAGS,
    )
    outcome: dict[str, Any] = {}
    for name in ("backend", "policy_arm", "error"):
        value = data.get(name)
        if value is not None and not isinstance(value, str):
            raise ctx.error(line_no, name, "a string or null", value)
        outcome[name] = value
    for name in ("ttft_s", "e2e_s", "itl_mean_s", "tpot_s"):
        value = data.get(name)
        if value is not None and (not isinstance(value, int | float) or value < 0):
            raise ctx.error(line_no, name, "seconds >= 0 or null", value)
        outcome[name] = None if value is None else float(value)
    cached = data.get("cached_tokens")
    if cached is not None and (type(cached) is not int or cached < 0):
        raise ctx.error(line_no, "cached_tokens", "an integer >= 0 or null", cached)
    status = data.get("status")
    if status not in (None, "ok", "error"):
        raise ctx.error(line_no, "status", '"ok", "error" or null', status)
    return RequestLogRecord(request, cached_tokens=cached, status=status, **outcome)


def _int(
    data: dict,
    key: str,
    ctx: ReadContext,
    line_no: int,
    default: int | None = None,
    minimum: int = 0,
) -> int:
    value = data.get(key, default)
    if type(value) is not int or value < minimum:
        raise ctx.error(line_no, key, f"an integer >= {minimum}", value)
    return value


def _media(data: object, ctx: ReadContext, line_no: int, index: int) -> MediaPart:
    where = f"media[{index}]"
    if not isinstance(data, dict):
        raise ctx.error(line_no, where, "an object with kind, tokens, content_hash", data)
    kind = data.get("kind")
    if kind not in MEDIA_KINDS:
        raise ctx.error(line_no, f"{where}.kind", " or ".join(MEDIA_KINDS), kind)
    tokens = data.get("tokens")
    content_hash = data.get("content_hash")
    if type(tokens) is not int or tokens < 0:
        raise ctx.error(line_no, f"{where}.tokens", "an integer >= 0", tokens)
    if type(content_hash) is not int:
        raise ctx.error(line_no, f"{where}.content_hash", "an integer", content_hash)
    pixels = data.get("pixels", 0)
    seconds = data.get("seconds", 0.0)
    frames = data.get("frames", 0)
    if type(pixels) is not int or type(frames) is not int or not isinstance(seconds, int | float):
        raise ctx.error(line_no, where, "integer pixels/frames and numeric seconds", data)
    return MediaPart(kind, tokens, content_hash, pixels, float(seconds), frames)


def read_request_log(
    path: str | Path,
    *,
    skip_bad: bool = False,
    name: str | None = None,
    include_rotated: bool = True,
) -> Workload:
    """A request log (file, rotation set, or folder) as a Workload (outcomes dropped)."""
    path = Path(path)
    ctx = ReadContext(path, skip_bad)
    requests: list[Request] = []
    for file in log_files(path, include_rotated):
        file_ctx = ReadContext(file, skip_bad)
        requests.extend(record.request for record in _records_of(file, file_ctx))
        ctx.skipped += file_ctx.skipped
        ctx.examples.extend(file_ctx.examples)
        ctx.notes.extend(file_ctx.notes)
    block_sizes = {r.block_size for r in requests if r.block_hashes}
    block_size = block_sizes.pop() if len(block_sizes) == 1 else 16
    return finish(
        requests, ctx, name=name or f"log/{_stem(path)}", source=str(path), block_size=block_size
    )


def write_request_log(
    path: str | Path, items: Iterable[Request | RequestLogRecord], **writer_options: Any
) -> int:
    """Write requests (or records) to a fresh log; returns how many were written."""
    path = Path(path)
    if path.exists():
        path.unlink()
    if path.name.endswith(".gz"):
        count = 0
        with gzip.open(path, "wb", compresslevel=6) as handle:
            for item in items:
                handle.write(encode_record(item))
                count += 1
        return count
    with RequestLogWriter(path, **writer_options) as writer:
        writer.write_many(items)
        return writer.records_written
