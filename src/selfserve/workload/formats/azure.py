"""Azure LLM inference trace CSVs (2023 Splitwise; the 2024 week-long trace shares it).

Header `TIMESTAMP,ContextTokens,GeneratedTokens`; timestamps like
`2023-11-16 18:17:03.9799600` (7 fractional digits, which `datetime` does not parse, so we
split the clock by hand). Arrival times are seconds after the first row. The trace has no
prefix hashes, sessions or modality; `NumImages` (2025 multimodal trace) is kept as a tag.
"""

from __future__ import annotations

import csv
import io
from datetime import date
from pathlib import Path
from types import MappingProxyType

from selfserve.workload.formats.common import ReadContext, finish, read_bytes
from selfserve.workload.request import EMPTY_TAGS, Request, Workload

HEADER = ("TIMESTAMP", "ContextTokens", "GeneratedTokens")


def looks_like(head: bytes) -> bool:
    first = head.split(b"\n", 1)[0].lstrip(b"\xef\xbb\xbf").strip().decode("utf-8", "replace")
    return first.replace(" ", "").startswith(",".join(HEADER))


def parse_timestamp_s(text: str, day_cache: dict[str, int]) -> float:
    """Seconds since 0001-01-01 for `YYYY-MM-DD HH:MM:SS[.fffffff]`; raises ValueError."""
    day_text, _, clock = text.strip().partition(" ")
    if not clock:
        day_text, _, clock = text.strip().partition("T")
    day = day_cache.get(day_text)
    if day is None:
        day = date.fromisoformat(day_text).toordinal()
        day_cache[day_text] = day
    hours, minutes, seconds = clock.split(":")
    value = float(seconds)
    if not (0 <= int(hours) < 24 and 0 <= int(minutes) < 60 and 0 <= value < 61):
        raise ValueError(text)
    return day * 86400.0 + int(hours) * 3600.0 + int(minutes) * 60.0 + value


def read_azure(path: str | Path, *, skip_bad: bool = False, name: str | None = None) -> Workload:
    path = Path(path)
    ctx = ReadContext(path, skip_bad)
    reader = csv.reader(io.StringIO(read_bytes(path).decode("utf-8-sig")))
    header = next(reader, None)
    if header is None:
        return finish([], ctx, name=name or path.stem, source=str(path), block_size=16)
    columns = [c.strip() for c in header]
    missing = [c for c in HEADER if c not in columns]
    if missing:
        raise ctx.error(1, missing[0], "a CSV header with " + ", ".join(HEADER), header)
    i_time, i_in, i_out = (columns.index(c) for c in HEADER)
    i_images = columns.index("NumImages") if "NumImages" in columns else None
    day_cache: dict[str, int] = {}
    rows: list[tuple[int, float, int, int, str | None]] = []
    for line_no, row in enumerate(reader, start=2):
        if not row or not any(cell.strip() for cell in row):
            continue
        if len(row) < len(columns):
            ctx.bad(ctx.error(line_no, None, f"{len(columns)} comma-separated columns", row))
            continue
        try:
            t = parse_timestamp_s(row[i_time], day_cache)
        except ValueError:
            ctx.bad(ctx.error(line_no, "TIMESTAMP", "YYYY-MM-DD HH:MM:SS.fffffff", row[i_time]))
            continue
        counts = []
        for field_name, index in (("ContextTokens", i_in), ("GeneratedTokens", i_out)):
            cell = row[index].strip()
            if not cell.isdigit():
                ctx.bad(ctx.error(line_no, field_name, "a non-negative integer", row[index]))
                break
            counts.append(int(cell))
        if len(counts) < 2:
            continue
        images = row[i_images].strip() if i_images is not None else None
        rows.append((line_no, t, counts[0], counts[1], images))
    start = min((r[1] for r in rows), default=0.0)
    stem = path.stem
    requests = [
        Request(
            request_id=f"{stem}:{line_no}",
            arrival_s=t - start,
            prompt_tokens=prompt,
            output_tokens=output,
            tags=MappingProxyType({"num_images": images}) if images else EMPTY_TAGS,
        )
        for line_no, t, prompt, output, images in rows
    ]
    return finish(requests, ctx, name=name or f"azure/{stem}", source=str(path), block_size=16)
