"""Workload transforms: time compression, windows, train/held-out splits, sampling, mixing.

All return new `Workload`s (requests are frozen and shared, never copied needlessly) and
keep arrival order. Windows and splits keep the original arrival times (a replayer starts
at the first arrival), so a held-out window still lines up with the trace it came from.
"""

from __future__ import annotations

import heapq
import random
from dataclasses import replace

import numpy as np

from selfserve.workload.hashing import combine, text_key
from selfserve.workload.request import Request, Workload


def _derived(w: Workload, requests: list[Request], name: str) -> Workload:
    return Workload(
        requests=requests,
        name=name,
        source=w.source,
        block_size=w.block_size,
        warnings=list(w.warnings),
        skipped_records=w.skipped_records,
    )


def scale_rate(w: Workload, factor: float) -> Workload:
    """Arrivals `factor` times faster (factor > 1 compresses time around the first arrival).

    Think times shrink by the same factor, so session pacing stays consistent.
    """
    if not factor > 0:
        raise ValueError(f"rate scale factor must be > 0, got {factor}")
    start = w.start_s
    requests = [
        replace(
            r,
            arrival_s=start + (r.arrival_s - start) / factor,
            think_time_s=r.think_time_s / factor,
        )
        for r in w.requests
    ]
    return _derived(w, requests, f"{w.name}×{factor:g}")


def _check_fraction(name: str, value: float) -> None:
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be within [0, 1], got {value}")


def _at(w: Workload, frac: float) -> float:
    """The time at `frac` of the span; exactly the last arrival at 1.0 (no rounding)."""
    if frac >= 1.0 and w.requests:
        return w.requests[-1].arrival_s
    return w.start_s + frac * w.span_s


def time_window(w: Workload, start_frac: float, end_frac: float) -> Workload:
    """Requests arriving in [start, end) of the span, as fractions ([start, 1.0] closes)."""
    _check_fraction("start_frac", start_frac)
    _check_fraction("end_frac", end_frac)
    if end_frac < start_frac:
        raise ValueError(f"end_frac ({end_frac}) must be >= start_frac ({start_frac})")
    lo = _at(w, start_frac)
    hi = _at(w, end_frac)
    # The last window [x, 1] closes on the final arrival; a zero-width window is empty, so
    # adjacent windows cover each request exactly once.
    closes = end_frac == 1.0 and start_frac < 1.0
    requests = [r for r in w.requests if lo <= r.arrival_s < hi or (closes and r.arrival_s == hi)]
    return _derived(w, requests, f"{w.name}[{start_frac:g}:{end_frac:g}]")


def split_by_time(w: Workload, frac: float = 0.5) -> tuple[Workload, Workload]:
    """(train, held-out): requests before and from `frac` of the span on. Nothing is lost."""
    _check_fraction("frac", frac)
    cut = _at(w, frac)
    index = int(np.searchsorted([r.arrival_s for r in w.requests], cut, side="left"))
    if frac == 1.0:
        index = len(w.requests)
    return (
        _derived(w, w.requests[:index], f"{w.name}[train<{frac:g}]"),
        _derived(w, w.requests[index:], f"{w.name}[test>={frac:g}]"),
    )


def sample(
    w: Workload,
    fraction: float,
    rng: random.Random | np.random.Generator | int | None = None,
    *,
    by_session: bool = False,
) -> Workload:
    """Keep each request with probability `fraction` (whole sessions with `by_session`).

    Sampling whole sessions keeps multi-turn prefix reuse intact; requests without a
    session are sampled one by one either way.
    """
    _check_fraction("fraction", fraction)
    draw = _uniform(rng)
    keep_session: dict[str, bool] = {}
    requests = []
    for r in w.requests:
        if by_session and r.session_id is not None:
            keep = keep_session.get(r.session_id)
            if keep is None:
                keep = keep_session[r.session_id] = draw() < fraction
        else:
            keep = draw() < fraction
        if keep:
            requests.append(r)
    return _derived(w, requests, f"{w.name}~{fraction:g}")


def _uniform(rng: random.Random | np.random.Generator | int | None):
    if isinstance(rng, random.Random):
        return rng.random
    if isinstance(rng, np.random.Generator):
        return rng.random
    return random.Random(rng).random


def mix(
    a: Workload, b: Workload, *, align_starts: bool = True, separate_prefixes: bool = True
) -> Workload:
    """Both workloads interleaved by arrival time.

    `align_starts` shifts each to start at 0 (traces from different days overlap).
    `separate_prefixes` re-keys b's block hashes (a bijection of each hash with a
    namespace) so two unrelated traces never appear to share a prefix just because
    their raw ids coincided; sharing inside b is unchanged. Request ids that would
    collide get b's name as a prefix.
    """
    shift_a = -a.start_s if align_starts else 0.0
    shift_b = -b.start_s if align_starts else 0.0
    ids_a = {r.request_id for r in a.requests}
    namespace = text_key(f"mix:{b.name}")
    hash_cache: dict[int, int] = {}

    def rekey(h: int) -> int:
        out = hash_cache.get(h)
        if out is None:
            out = hash_cache[h] = combine(namespace, h)
        return out

    def moved_b(r: Request) -> Request:
        changes: dict = {"arrival_s": r.arrival_s + shift_b}
        if separate_prefixes and r.block_hashes:
            changes["block_hashes"] = tuple(map(rekey, r.block_hashes))
        if r.request_id in ids_a:
            changes["request_id"] = f"{b.name}/{r.request_id}"
        return replace(r, **changes)

    left = [replace(r, arrival_s=r.arrival_s + shift_a) if shift_a else r for r in a.requests]
    right = [moved_b(r) for r in b.requests]
    merged = list(heapq.merge(left, right, key=lambda r: r.arrival_s))
    return Workload(
        requests=merged,
        name=f"{a.name}+{b.name}",
        source=f"{a.source} + {b.source}",
        block_size=a.block_size,
        warnings=list(a.warnings) + list(b.warnings),
        skipped_records=a.skipped_records + b.skipped_records,
    )
