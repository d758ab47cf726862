"""`BlockLRUIndex` keeps exactly the LRU order and timestamps of moving each inserted hash
to the end, evicting the least recently used beyond capacity (its fast path must not
change that)."""

from __future__ import annotations

from collections import OrderedDict

from hypothesis import given, settings
from hypothesis import strategies as st

from selfserve.policy.prefix_index import BlockLRUIndex


def _reference_insert(od: OrderedDict, hashes, now_s: float, cap: int) -> None:
    for h in hashes:
        if h in od:
            od.move_to_end(h)
        od[h] = now_s
    while len(od) > cap:
        od.popitem(last=False)


@settings(max_examples=200, deadline=None)
@given(
    cap=st.integers(1, 30),
    prompts=st.lists(st.lists(st.integers(0, 40), max_size=25), max_size=30),
)
def test_insert_matches_move_to_end_lru_with_or_without_repeated_hashes(cap, prompts):
    index = BlockLRUIndex([cap])
    ref: OrderedDict = OrderedDict()
    for k, hashes in enumerate(prompts):
        index.insert(0, hashes, float(k))
        _reference_insert(ref, hashes, float(k), cap)
        assert list(index.held[0].items()) == list(ref.items())


def test_reinserted_prefix_survives_eviction_and_oldest_blocks_go_first():
    index = BlockLRUIndex([4])
    index.insert(0, (1, 2, 3), 0.0)
    index.insert(0, (1, 2), 1.0)  # touch 1, 2: now 3 is the least recently used
    index.insert(0, (8, 9), 2.0)
    assert list(index.held[0]) == [1, 2, 8, 9]
    assert index.contiguous_match(0, (1, 2, 3)) == 2


def _reference_run_match(index: BlockLRUIndex, hashes, replicas) -> list[int]:
    counts = [0] * index.num_replicas
    for h in hashes:
        holders = [r for r in replicas if h in index.held[r]]
        if not holders:
            break
        for r in holders:
            counts[r] += 1
    return counts


@settings(max_examples=200, deadline=None)
@given(
    held=st.lists(st.sets(st.integers(0, 12), max_size=10), min_size=1, max_size=5),
    hashes=st.lists(st.integers(0, 12), max_size=12),
    data=st.data(),
)
def test_run_match_counts_each_replicas_hashes_along_the_shared_run(held, hashes, data):
    index = BlockLRUIndex([50] * len(held))
    for r, hs in enumerate(held):
        index.insert(r, sorted(hs))
    replicas = data.draw(st.lists(st.sampled_from(range(len(held))), unique=True, min_size=1))
    assert index.run_match(hashes, replicas) == _reference_run_match(index, hashes, replicas)
    expected_run = 0
    for h in hashes:
        if not any(h in index.held[r] for r in replicas):
            break
        expected_run += 1
    assert index.run_length(hashes, replicas) == expected_run


def test_run_stops_at_the_first_hash_no_candidate_holds():
    index = BlockLRUIndex([10, 10])
    index.insert(0, (1, 2, 3))
    index.insert(1, (1, 5, 3))
    assert index.run_match((1, 2, 3, 4), (0, 1)) == [3, 2]  # 3 on replica 1 counts too
    assert index.run_match((1, 5, 2), (0,)) == [1, 0]
