"""Deterministic 63-bit hashing for prefix-block chains, media content and namespaces.

Traces publish block ids in different shapes (Mooncake: global ids per 512-token block;
kv-cache-tester: ids local to one session; RAGPulse: ids of variable-length segments). We
turn them all into *chained* hashes, where block i's hash depends on every block before it,
so equal `block_hashes[i]` means an equal first `(i + 1) * block_size` tokens. The mixer is
splitmix64 written out in integer arithmetic, not Python's `hash()`, so values written to a
request log mean the same thing in every process and Python version.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence

import numpy as np

MASK64 = (1 << 64) - 1
MASK63 = (1 << 63) - 1
_GOLDEN = 0x9E3779B97F4A7C15
_M1 = 0xBF58476D1CE4E5B9
_M2 = 0x94D049BB133111EB


def mix64(value: int) -> int:
    """splitmix64 finaliser: a bijective scramble of a 64-bit integer."""
    z = (value + _GOLDEN) & MASK64
    z = ((z ^ (z >> 30)) * _M1) & MASK64
    z = ((z ^ (z >> 27)) * _M2) & MASK64
    return z ^ (z >> 31)


def combine(parent: int, value: int) -> int:
    """Hash of `value` following `parent` in a chain; a non-negative 63-bit int."""
    return mix64((parent * 0x100000001B3) ^ (value & MASK64)) & MASK63


def text_key(text: str) -> int:
    """A stable 63-bit key for a short string (session ids, namespaces); FNV-1a then mix."""
    h = 0xCBF29CE484222325
    for byte in text.encode("utf-8"):
        h = ((h ^ byte) * 0x100000001B3) & MASK64
    return mix64(h) & MASK63


def chain(ids: Iterable[int], seed: int = 0) -> tuple[int, ...]:
    """Chained hashes of a sequence of block ids, starting from `seed` (a namespace)."""
    out: list[int] = []
    parent = seed
    for value in ids:
        parent = combine(parent, value)
        out.append(parent)
    return tuple(out)


def chain_extend(
    previous_ids: Sequence[int], previous_hashes: tuple[int, ...], ids: list[int], seed: int = 0
) -> tuple[int, ...]:
    """Chain `ids`, reusing `previous_hashes` for the leading ids shared with `previous_ids`.

    Agentic sessions resend a growing prompt, so almost every block of request k was already
    chained for request k-1; this turns an O(total blocks) chain into O(new blocks).
    """
    shared = _common_prefix_len(previous_ids, ids)
    if shared == 0:
        return chain(ids, seed)
    parent = previous_hashes[shared - 1]
    tail: list[int] = []
    for value in ids[shared:]:
        parent = combine(parent, value)
        tail.append(parent)
    return previous_hashes[:shared] + tuple(tail)


def _common_prefix_len(a: Sequence[int], b: Sequence[int]) -> int:
    n = min(len(a), len(b))
    if n == 0:
        return 0
    if a[:n] == b[:n]:  # the common case in agentic traces: one list extends the other
        return n
    lo, hi = 0, n  # invariant: a[:lo] == b[:lo] and a[:hi] != b[:hi]
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if a[:mid] == b[:mid]:
            lo = mid
        else:
            hi = mid
    return lo


def chain_rows(rows: list[list[int]], seed: int = 0) -> list[tuple[int, ...]]:
    """Chain many id lists at once, vectorised over block position with numpy.

    Equivalent to `[chain(r, seed) for r in rows]` but a few times faster when there are
    many short rows (Mooncake: 12K requests of ~24 blocks).
    """
    if not rows:
        return []
    lengths = np.fromiter((len(r) for r in rows), dtype=np.int64, count=len(rows))
    total = int(lengths.sum())
    if total == 0:
        return [() for _ in rows]
    flat = np.fromiter(itertools.chain.from_iterable(rows), dtype=np.uint64, count=total)
    offsets = np.zeros(len(rows) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    # Rows sorted longest first: the rows still alive at block position j are a prefix.
    order = np.argsort(-lengths, kind="stable")
    sorted_lengths = lengths[order]
    sorted_starts = offsets[:-1][order]
    result = np.empty(total, dtype=np.uint64)
    parent = np.full(len(rows), seed, dtype=np.uint64)
    with np.errstate(over="ignore"):
        for j in range(int(sorted_lengths[0])):
            live = int(np.searchsorted(-sorted_lengths, -j, side="left"))  # rows with len > j
            idx = sorted_starts[:live] + j
            h = _combine_np(parent[:live], flat[idx])
            result[idx] = h
            parent[:live] = h
    values = result.astype(np.int64).tolist()
    bounds = offsets.tolist()
    return [tuple(values[bounds[i] : bounds[i + 1]]) for i in range(len(rows))]


def _combine_np(parent: np.ndarray, value: np.ndarray) -> np.ndarray:
    z = (parent * np.uint64(0x100000001B3)) ^ value
    z = z + np.uint64(_GOLDEN)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(_M1)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(_M2)
    z = z ^ (z >> np.uint64(31))
    return z & np.uint64(MASK63)
