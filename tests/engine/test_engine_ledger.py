"""The block ledger against a per-block reference: the same free count, the same cached
units and the same LRU eviction order under random allocate / register / hit / release
sequences — so packing a unit's state into one entry, queueing the units of one release as
one run (skipping those hit since) and merging private runs change only the cost. Also: a decode plan's bisection count of new blocks equals the
per-request sum, and a replica's `next_change_s` stays current after every call."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from selfserve.engine import (
    BlockLedger,
    EngineConfig,
    EngineReplica,
    EngineRequest,
    RequestTooLarge,
)
from selfserve.engine.stretch import DecodePlan, new_blocks, sorted_if_small
from selfserve.perf import PerfModel

PERF = PerfModel.create("llama-3.1-8b", "h100")


class PerBlockLedger:
    """One label per free block, in queue order: a unit hash or None (private)."""

    def __init__(self, num_blocks: int) -> None:
        self.free: list[int | None] = [None] * num_blocks
        self.blocks: dict[int, int] = {}  # cached unit -> size
        self.refs: dict[int, int] = {}

    def allocate(self, n: int) -> None:
        taken, self.free = self.free[:n], self.free[n:]
        for label in set(taken) - {None}:  # a unit losing any block is evicted
            del self.blocks[label], self.refs[label]
            self.free = [None if x == label else x for x in self.free]

    def acquire(self, unit: int) -> None:
        if self.refs[unit] == 0:
            self.free = [x for x in self.free if x != unit]
        self.refs[unit] += 1

    def release(self, units: list[int], plain: int) -> None:
        self.free += [None] * plain
        for unit in reversed(units):
            self.refs[unit] -= 1
            if self.refs[unit] == 0:
                self.free += [unit] * self.blocks[unit]


operations = st.lists(
    st.tuples(
        st.sampled_from(["new", "new", "hit", "finish"]), st.integers(0, 7), st.integers(1, 16)
    ),
    min_size=8,
    max_size=60,
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=operations, compact_after_stale=st.sampled_from([0, 3, 1 << 16]))
def test_ledger_matches_a_per_block_lru_model(ops, compact_after_stale):
    total = 48  # small, so allocations soon reach freed units and evict them
    ledger, model = BlockLedger(total, compact_after_stale), PerBlockLedger(total)
    holders: list[tuple[list[int], int]] = []  # running requests: (units held, private)
    next_unit = 1000
    for op, pick, size in ops:
        if op == "new":  # a request computes `size` private blocks, names 0-3 runs as units
            if size > ledger.num_free_blocks:
                continue
            ledger.allocate(size)
            model.allocate(size)
            unit_blocks = size // 4
            units = []
            for _ in range(pick % 4 if unit_blocks else 0):
                assert ledger.register(next_unit, unit_blocks)
                model.blocks[next_unit], model.refs[next_unit] = unit_blocks, 1
                units.append(next_unit)
                next_unit += 1
            holders.append((units, size - unit_blocks * len(units)))
        elif op == "hit":  # a request references 1-3 cached units (free or held)
            cached = sorted(model.blocks)
            if not cached:
                continue
            hit = list(dict.fromkeys(cached[(pick + j) % len(cached)] for j in range(size % 3 + 1)))
            free_blocks = sum(model.blocks[u] for u in hit if model.refs[u] == 0)
            if free_blocks > ledger.num_free_blocks:
                continue
            for unit in hit:
                assert ledger.acquire(unit) == model.blocks[unit]
                model.acquire(unit)
            holders.append((hit, 0))
        elif holders:  # a request finishes
            units, plain = holders.pop(pick % len(holders))
            ledger.release(units, plain)
            model.release(units, plain)
        ledger.check()
        assert ledger.num_free_blocks == len(model.free)
        assert ledger.cached_blocks == model.blocks
        assert ledger.cached_refs == model.refs
        queued_units = [k for k, _ in ledger.queue_layout() if k != -1]
        assert queued_units == list(dict.fromkeys(x for x in model.free if x is not None))


def test_freed_private_blocks_join_the_private_run_at_the_queue_tail():
    ledger = BlockLedger(100)
    ledger.allocate(60)
    assert ledger.register(7, 20)
    ledger.release([7], 40)  # 40 private join the head run, then the unit
    ledger.allocate(15)  # cut from the head run
    ledger.release([], 10)  # the tail is a unit: a new private run
    ledger.release([], 5)  # joins it
    assert [blocks for _, blocks in ledger.queue_layout()] == [65, 20, 15]
    assert ledger.num_free_blocks == 100 and ledger.is_cached(7)
    ledger.check()


@settings(max_examples=200, deadline=None)
@given(
    slacks=st.lists(st.integers(0, 15), min_size=1, max_size=40),
    steps=st.integers(0, 5000),
)
def test_plan_counts_new_blocks_by_bisection_as_the_per_request_sum(slacks, steps):
    plan = DecodePlan(
        0.0, len(slacks), 0, 5000, 1.0, 1.0, slacks, 0, False, 1e-3, 1e-7, 0, 0.0, 0.0,
        sorted_if_small(slacks, 16),
    )  # fmt: skip
    assert plan.sorted_slacks is not None
    assert plan.new_blocks(steps, 16) == new_blocks(slacks, steps, 16)


def test_slacks_outside_one_block_fall_back_to_the_sum():
    assert sorted_if_small([3, 16], 16) is None
    assert sorted_if_small([-1, 2], 16) is None


def expected_next_change(replica: EngineReplica) -> float:
    if replica._plan is not None:
        return replica._plan.last_start_s
    return replica.clock_s if not replica.is_idle else float("inf")


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    reqs=st.lists(
        st.tuples(st.floats(0.0, 1.0), st.integers(1, 2000), st.integers(1, 200)),
        min_size=1,
        max_size=15,
    ),
    probes=st.lists(st.floats(0.0, 20.0), max_size=10),
)
def test_next_change_is_current_after_every_call(reqs, probes):
    replica = EngineReplica(PERF, EngineConfig(num_gpu_blocks_override=600, max_num_seqs=4))
    t = 0.0
    times = sorted(probes)
    for i, (gap, prompt, output) in enumerate(reqs):
        t += gap
        while times and times[0] < t:
            probe = times.pop(0)
            replica.advance_to(probe)
            assert replica.next_change_s == expected_next_change(replica)
            replica.kv_usage_at(probe)
            assert replica.next_change_s == expected_next_change(replica)
        replica.advance_to(t)
        assert replica.next_change_s == expected_next_change(replica)
        replica.add(EngineRequest(f"r{i}", prompt, output), t)
        assert replica.next_change_s == expected_next_change(replica)
        if i % 4 == 3:
            replica.abort(f"r{i - 1}")
            assert replica.next_change_s == expected_next_change(replica)
    replica.advance_to(float("inf"))
    assert replica.next_change_s == float("inf") and replica.is_idle


def test_a_huge_hash_block_is_one_unit_and_only_kv_capacity_refuses_it():
    # units are objects, so a unit's size has no packing limit
    req = EngineRequest("huge", 1 << 29, 1, (1, 2), hash_block_tokens=1 << 28)
    req.prepare(16)
    assert list(req.unit_end_blocks) == [1 << 24, 1 << 25]
    replica = EngineReplica(PERF, EngineConfig(num_gpu_blocks_override=600))
    with pytest.raises(RequestTooLarge, match="'huge'.*max_model_len"):
        replica.check_fits(req)
