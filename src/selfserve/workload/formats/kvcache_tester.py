"""kv-cache-tester (WEKA) agentic coding sessions: one JSON document per Claude Code session.

A session has no global clock: request `t` is seconds since the session start. We draw each
session's start from a seeded arrival process (Poisson by default; `session_rate_per_s`
sets how often a new session starts), then place its requests at start + `t`. Hash ids are
64-token blocks *local to one session*, so we chain them from a per-session seed: equal
hashes never leak across sessions, and inside a session a hash still names a prefix.
Sub-agents (`type: "subagent"`) run their own requests from the sub-agent's `t`, share the
parent's hash namespace, and get their own session id `<session>/<agent_id>`.
"""

from __future__ import annotations

from pathlib import Path
from types import MappingProxyType

import numpy as np
import orjson

from selfserve.workload.arrivals import ArrivalProcess, parse_arrival
from selfserve.workload.errors import TraceFormatError
from selfserve.workload.formats.common import (
    ReadContext,
    finish,
    read_bytes,
    require_int,
    require_number,
)
from selfserve.workload.hashing import chain_extend, text_key
from selfserve.workload.request import Request, Workload

DEFAULT_SESSION_RATE_PER_S = 1.0 / 30.0
_INT_ONLY = {int}


def looks_like(document: object) -> bool:
    return (
        isinstance(document, dict)
        and isinstance(document.get("requests"), list)
        and ("hash_id_scope" in document or "block_size" in document)
    )


def session_files(path: Path) -> list[Path]:
    if path.is_dir():
        files = sorted(
            p for p in path.iterdir() if p.suffix == ".json" or p.name.endswith(".json.gz")
        )
        if not files:
            raise TraceFormatError(path, None, None, "a folder of kv-cache-tester *.json sessions")
        return files
    return [path]


def read_kvcache_tester(
    path: str | Path,
    *,
    skip_bad: bool = False,
    name: str | None = None,
    session_rate_per_s: float = DEFAULT_SESSION_RATE_PER_S,
    session_arrival: ArrivalProcess | str | None = None,
    seed: int = 0,
) -> Workload:
    """Read one session file or a folder of them; session starts come from `seed`.

    `session_arrival` overrides the default Poisson process at `session_rate_per_s` (an
    `ArrivalProcess`, or a spec such as "gamma:cv=3" at that rate). A bad
    request inside a session is skipped under `skip_bad`; a session file that is not valid
    JSON is skipped whole (and counted once).
    """
    path = Path(path)
    files = session_files(path)
    if isinstance(session_arrival, str):
        process = parse_arrival(session_arrival, session_rate_per_s)
    else:
        process = session_arrival or ArrivalProcess(session_rate_per_s, "poisson")
    rng = np.random.default_rng(seed)
    # The first session starts at 0; later ones after the process's gaps.
    starts = np.concatenate(([0.0], process.times_s(rng, len(files) - 1))) if files else []
    ctx = ReadContext(path, skip_bad)
    requests: list[Request] = []
    block_size = 64
    for file, start_s in zip(files, starts, strict=True):
        file_ctx = ReadContext(file, skip_bad)
        try:
            document = orjson.loads(read_bytes(file))
        except orjson.JSONDecodeError as exc:
            file_ctx.bad(file_ctx.error(None, None, f"one JSON session document ({exc})"))
            ctx.skipped += 1
            ctx.examples.extend(file_ctx.examples)
            continue
        if not looks_like(document):
            file_ctx.bad(
                file_ctx.error(None, "requests", "a session object with block_size and requests")
            )
            ctx.skipped += 1
            ctx.examples.extend(file_ctx.examples)
            continue
        block_size = int(document.get("block_size") or 64)
        session = str(document.get("id") or file.stem)
        _read_session(
            document["requests"],
            file_ctx,
            session_id=session,
            hash_seed=text_key(f"kv-cache-tester:{session}"),
            origin_s=float(start_s),
            block_size=block_size,
            out=requests,
            path_prefix="requests",
        )
        ctx.skipped += file_ctx.skipped
        ctx.examples.extend(file_ctx.examples)
    requests.sort(key=lambda r: r.arrival_s)
    return finish(
        requests,
        ctx,
        name=name or f"kv-cache-tester/{path.stem}",
        source=str(path),
        block_size=block_size,
    )


def _read_session(
    items: list,
    ctx: ReadContext,
    *,
    session_id: str,
    hash_seed: int,
    origin_s: float,
    block_size: int,
    out: list[Request],
    path_prefix: str,
    parent_session: str | None = None,
) -> None:
    previous_ids: list[int] = []
    previous_hashes: tuple[int, ...] = ()
    turn = 0
    for index, item in enumerate(items):
        where = f"{path_prefix}[{index}]"
        try:
            if not isinstance(item, dict):
                raise ctx.error(None, where, "a request object", item)
            t = require_number(item, "t", ctx, None)  # type: ignore[arg-type]
            if item.get("type") == "subagent":
                agent = str(item.get("agent_id") or f"agent{index}")
                sub_items = item.get("requests")
                if not isinstance(sub_items, list):
                    raise ctx.error(None, f"{where}.requests", "a list of sub-agent requests")
                _read_session(
                    sub_items,
                    ctx,
                    session_id=f"{session_id}/{agent}",
                    hash_seed=hash_seed,
                    origin_s=origin_s + t,
                    block_size=block_size,
                    out=out,
                    path_prefix=f"{where}.requests",
                    parent_session=session_id,
                )
                continue
            prompt = require_int(item, "in", ctx, None)  # type: ignore[arg-type]
            output = require_int(item, "out", ctx, None)  # type: ignore[arg-type]
            ids = item.get("hash_ids", [])
            if not isinstance(ids, list) or (
                ids and (set(map(type, ids)) != _INT_ONLY or min(ids) < 0)
            ):
                raise ctx.error(None, f"{where}.hash_ids", "a list of non-negative ints", ids)
            think = item.get("think_time", 0.0)
            think_s = float(think) if isinstance(think, int | float) and think >= 0 else 0.0
        except TraceFormatError as exc:
            if exc.field and not exc.field.startswith(path_prefix):
                exc = ctx.error(None, f"{where}.{exc.field}", exc.expected, exc.got)
            ctx.bad(exc)
            continue
        hashes = chain_extend(previous_ids, previous_hashes, ids, hash_seed)
        previous_ids, previous_hashes = ids, hashes
        tags = {"class": "agentic"}
        if isinstance(item.get("model"), str):
            tags["model"] = item["model"]
        if parent_session is not None:
            tags["parent_session"] = parent_session
        out.append(
            Request(
                request_id=f"{session_id}#{turn}",
                arrival_s=origin_s + t,
                prompt_tokens=prompt,
                output_tokens=output,
                block_hashes=hashes,
                block_size=block_size,
                session_id=session_id,
                turn=turn,
                think_time_s=think_s,
                tags=MappingProxyType(tags),
            )
        )
        turn += 1
