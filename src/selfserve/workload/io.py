"""Load any supported trace into a `Workload`, detecting its format from content.

Formats: "mooncake", "azure", "ragpulse", "kv-cache-tester", "servegen", "selfserve-log".
Detection looks at what the path holds — a folder's telltale files, a CSV header, the keys
of the first JSON record — never at the file name alone, and `format=` overrides it.
Reader-specific options (`seed`, `session_rate_per_s`, `duration_s`, `block_size`, …) pass
through `**reader_options`.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from types import MappingProxyType
from typing import Any

import orjson

from selfserve.workload.errors import UnknownFormatError
from selfserve.workload.formats import azure, kvcache_tester, mooncake, ragpulse, servegen
from selfserve.workload.formats.common import gc_paused, head_bytes
from selfserve.workload.log import looks_like as looks_like_log
from selfserve.workload.log import read_request_log
from selfserve.workload.request import Workload

READERS: MappingProxyType[str, Callable[..., Workload]] = MappingProxyType(
    {
        "mooncake": mooncake.read_mooncake,
        "azure": azure.read_azure,
        "ragpulse": ragpulse.read_ragpulse,
        "kv-cache-tester": kvcache_tester.read_kvcache_tester,
        "servegen": servegen.read_servegen,
        "selfserve-log": read_request_log,
    }
)
FORMATS: tuple[str, ...] = tuple(READERS)


def detect_format(path: str | Path) -> str:
    """The format name of `path` (file or folder), from its content."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file or folder")
    if path.is_dir():
        return _detect_folder(path)
    if servegen.looks_like_file(path):
        return "servegen"
    head = head_bytes(path)
    if not head.strip():
        raise UnknownFormatError(f"{path}: the file is empty, so it holds no trace")
    if azure.looks_like(head):
        return "azure"
    first_line = head.lstrip().split(b"\n", 1)[0]
    try:
        record = orjson.loads(first_line)
    except orjson.JSONDecodeError:
        record = None
    if record is not None:
        if mooncake.looks_like(record):
            return "mooncake"
        if ragpulse.looks_like(record):
            return "ragpulse"
        if looks_like_log(record):
            return "selfserve-log"
        if kvcache_tester.looks_like(record):
            return "kv-cache-tester"
    elif head.lstrip().startswith(b"{") and _looks_like_session_document(head):
        return "kv-cache-tester"
    raise UnknownFormatError(
        f"{path}: cannot tell the trace format from its content; pass --format, one of: "
        + ", ".join(FORMATS)
    )


def _looks_like_session_document(head: bytes) -> bool:
    # A pretty-printed session document: its keys show up in the first bytes.
    return b'"requests"' in head and (b'"hash_id_scope"' in head or b'"block_size"' in head)


def _detect_folder(path: Path) -> str:
    if (path / ragpulse.TRACE_FILE).exists():
        return "ragpulse"
    if servegen.looks_like_folder(path):
        return "servegen"
    names = [p.name for p in path.iterdir()]
    if any(n.endswith(".jsonl") or n.endswith(".jsonl.gz") for n in names):
        return "selfserve-log"
    if any(n.endswith(".json") or n.endswith(".json.gz") for n in names):
        return "kv-cache-tester"
    raise UnknownFormatError(
        f"{path}: the folder holds no known trace (RAGPulse 0_trace.jsonl, ServeGen "
        "chunk-*-trace.csv, kv-cache-tester *.json sessions or *.jsonl request logs)"
    )


def load_workload(
    path: str | Path,
    format: str | None = None,  # noqa: A002 - the public name in the contract
    *,
    skip_bad: bool = False,
    name: str | None = None,
    **reader_options: Any,
) -> Workload:
    """Read a trace; `format` None means detect it from content."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file or folder")
    fmt = format or detect_format(path)
    reader = READERS.get(fmt)
    if reader is None:
        raise UnknownFormatError(f"unknown trace format {fmt!r}; valid: " + ", ".join(FORMATS))
    try:
        with gc_paused():
            return reader(path, skip_bad=skip_bad, name=name, **reader_options)
    except TypeError as exc:
        if "unexpected keyword argument" in str(exc):
            raise UnknownFormatError(f"format {fmt!r} does not take that option: {exc}") from None
        raise
