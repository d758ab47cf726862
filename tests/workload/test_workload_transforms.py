"""Transforms keep every request and the order; the LRU curve is monotone in cache size."""

from __future__ import annotations

import random

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from selfserve.workload.embedded import load_embedded
from selfserve.workload.prefix_reuse import prefix_reuse
from selfserve.workload.request import Request, Workload
from selfserve.workload.transforms import mix, sample, scale_rate, split_by_time, time_window

arrivals = st.lists(st.floats(0, 1e5, allow_nan=False), min_size=1, max_size=60).map(sorted)


def workload_of(times: list[float], prefix: str = "r", session_every: int = 0) -> Workload:
    return Workload(
        [
            Request(
                f"{prefix}{i}",
                t,
                100,
                10,
                block_hashes=(1, 1000 + i),
                session_id=f"s{i // session_every}" if session_every else None,
            )
            for i, t in enumerate(times)
        ],
        name=prefix,
    )


def is_sorted(w: Workload) -> bool:
    times = [r.arrival_s for r in w]
    return times == sorted(times)


@given(arrivals, st.floats(0.01, 100))
def test_scale_rate_keeps_requests_and_order_and_divides_the_span(times, factor):
    w = workload_of(times)
    scaled = scale_rate(w, factor)
    assert [r.request_id for r in scaled] == [r.request_id for r in w]
    assert is_sorted(scaled)
    assert scaled.span_s == pytest.approx(w.span_s / factor, rel=1e-9, abs=1e-6)


@given(arrivals, st.floats(0, 1))
def test_split_by_time_partitions_in_order(times, frac):
    w = workload_of(times)
    train, test = split_by_time(w, frac)
    assert [r.request_id for r in train] + [r.request_id for r in test] == [r.request_id for r in w]
    if train.requests and test.requests:
        assert train.requests[-1].arrival_s <= test.requests[0].arrival_s


@given(arrivals, st.floats(0, 1), st.floats(0, 1))
def test_adjacent_time_windows_cover_the_trace_once(times, a, b):
    lo, hi = sorted((a, b))
    w = workload_of(times)
    parts = [time_window(w, 0.0, lo), time_window(w, lo, hi), time_window(w, hi, 1.0)]
    ids = [r.request_id for part in parts for r in part]
    assert sorted(ids) == sorted(r.request_id for r in w)
    assert all(is_sorted(p) for p in parts)


@given(arrivals, arrivals)
def test_mix_keeps_every_request_of_both_in_arrival_order(times_a, times_b):
    a, b = workload_of(times_a, "a"), workload_of(times_b, "b")
    mixed = mix(a, b)
    assert len(mixed) == len(a) + len(b)
    assert is_sorted(mixed)
    assert len({r.request_id for r in mixed}) == len(mixed)


def test_mix_separates_prefix_namespaces_of_unrelated_traces():
    a = workload_of([0.0, 1.0], "x")
    b = workload_of([0.5], "x")  # same ids and same raw hashes
    mixed = mix(a, b)
    from_b = [r for r in mixed if r.request_id.startswith("x/")]
    assert len(from_b) == 1 and from_b[0].block_hashes[0] != a.requests[0].block_hashes[0]
    assert mix(a, b, separate_prefixes=False).requests[1].block_hashes[0] == 1


@given(arrivals, st.floats(0, 1), st.integers(0, 1000))
def test_sample_is_an_ordered_subset_and_whole_sessions_stay_together(times, fraction, seed):
    w = workload_of(times, session_every=3)
    kept = sample(w, fraction, random.Random(seed), by_session=True)
    ids = [r.request_id for r in w]
    positions = [ids.index(r.request_id) for r in kept]
    assert positions == sorted(positions)
    sessions = {r.session_id for r in kept}
    assert sum(1 for r in w if r.session_id in sessions) == len(kept)


def test_sampling_a_real_trace_keeps_about_the_fraction():
    w = load_embedded()
    kept = sample(w, 0.3, np.random.default_rng(0))
    assert abs(len(kept) / len(w) - 0.3) < 0.05


def test_bad_transform_arguments_say_what_is_valid():
    w = workload_of([0.0, 1.0])
    with pytest.raises(ValueError, match="> 0"):
        scale_rate(w, 0)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        time_window(w, -0.1, 0.5)
    with pytest.raises(ValueError, match="end_frac"):
        time_window(w, 0.6, 0.5)


@settings(max_examples=40, deadline=None)
@given(
    st.lists(
        st.lists(st.integers(0, 12), min_size=0, max_size=8),
        min_size=1,
        max_size=40,
    )
)
def test_lru_hit_rate_is_monotone_in_cache_size(rows):
    requests = [
        Request(str(i), float(i), 16 * len(ids), 1, tuple(ids), 16) for i, ids in enumerate(rows)
    ]
    reuse = prefix_reuse(requests, num_points=12)
    if reuse is None:
        return
    assert np.all(np.diff(reuse.lru.block_hit_rate) >= 0)
    assert np.all(np.diff(reuse.lru.token_hit_rate) >= 0)
    assert reuse.lru.block_hit_rate[-1] == pytest.approx(reuse.infinite_block_hit_rate)


@settings(max_examples=50, deadline=None)
@given(
    st.lists(st.integers(0, 60), min_size=1, max_size=200),
    st.lists(st.tuples(st.integers(0, 200), st.integers(0, 70)), min_size=1, max_size=40),
)
def test_prefix_dominance_count_matches_brute_force(values, queries):
    from selfserve.workload.prefix_reuse import _count_prefix_at_least

    v = np.array(values, dtype=np.int64)
    prefix = np.array([min(p, len(values)) for p, _ in queries], dtype=np.int64)
    threshold = np.array([t for _, t in queries], dtype=np.int64)
    expected = [int((v[:p] >= t).sum()) for p, t in zip(prefix, threshold, strict=True)]
    assert _count_prefix_at_least(v, prefix, threshold).tolist() == expected
