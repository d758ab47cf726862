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
