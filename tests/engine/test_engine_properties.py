"""Property tests over random request mixes: nothing is lost or duplicated, every request
emits exactly its output tokens, KV blocks are conserved at every step, and the fast mode
(closed-form decode stretches) reproduces the step-by-step reference."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from selfserve.engine import EngineConfig, EngineReplica, EngineRequest
from selfserve.perf import PerfModel

PERF = PerfModel.create("llama-3.1-8b", "h100")

request_specs = st.lists(
    st.tuples(
        st.floats(0.0, 2.0),  # arrival gap
        st.integers(1, 3000),  # prompt tokens
        st.integers(1, 300),  # output tokens
        st.lists(st.integers(0, 3), max_size=6),  # prefix ids (small alphabet: sharing)
    ),
    min_size=1,
    max_size=25,
)
configs = st.builds(
    EngineConfig,
    max_num_seqs=st.integers(1, 16),
    max_num_batched_tokens=st.sampled_from([512, 2048, 8192]),
    num_gpu_blocks_override=st.integers(260, 1200),
    enable_prefix_caching=st.booleans(),
    enable_chunked_prefill=st.booleans(),
)


def make_requests(specs) -> list[EngineRequest]:
    out, t = [], 0.0
    for i, (gap, prompt, output, ids) in enumerate(specs):
        t += gap
        n_blocks = min(len(ids), prompt // 64)
        hashes, parent = [], 0
        for x in ids[:n_blocks]:
            parent = parent * 31 + x + 1
            hashes.append(parent)
        out.append(
            EngineRequest(f"r{i}", prompt, output, tuple(hashes), arrival_s=t, hash_block_tokens=64)
        )
    return out


def assert_blocks_conserved(replica: EngineReplica) -> None:
    """Private blocks of running requests + in-use cached units + free == total, and each
    unit's reference count is the number of running requests holding it."""
    ledger = replica.scheduler.ledger
    ledger.check()
    running = replica.scheduler.running
    cached_blocks = ledger.cached_blocks
    refs: dict[int, int] = {}
    for req in running:
        held = [unit.unit_hash for unit in req.held_units]
        for h in held:
            refs[h] = refs.get(h, 0) + 1
        assert req.plain_blocks >= 0
        assert req.held_blocks == req.plain_blocks + sum(cached_blocks[h] for h in held)
    assert refs == {h: n for h, n in ledger.cached_refs.items() if n > 0}
    in_use_units = sum(cached_blocks[h] for h in refs)
    private = sum(req.plain_blocks for req in running)
    assert private + in_use_units + ledger.num_free_blocks == ledger.num_blocks


def drive_step_mode(replica: EngineReplica, reqs: list[EngineRequest]) -> None:
    """Reference loop: arrivals join before a step starting at the same instant."""
    pending = list(reqs)
    now = 0.0
    while pending or not replica.is_idle:
        while pending and pending[0].arrival_s <= now:
            replica.add(pending.pop(0), now)
        out = replica.step(now)
        if out is None:
            now = pending[0].arrival_s
            continue
        assert_blocks_conserved(replica)
        now = out.end_s


def drive_fast_mode(replica: EngineReplica, reqs: list[EngineRequest]) -> None:
    for req in reqs:
        replica.advance_to(req.arrival_s)
        replica.add(req, req.arrival_s)
    replica.advance_to(float("inf"))


def fresh(reqs: list[EngineRequest]) -> list[EngineRequest]:
    return [
        EngineRequest(
            r.request_id,
            r.prompt_tokens,
            r.output_tokens,
            r.block_hashes,
            arrival_s=r.arrival_s,
            hash_block_tokens=r.hash_block_tokens,
        )  # fmt: skip
        for r in reqs
    ]


def fits(config: EngineConfig, req: EngineRequest) -> bool:
    tokens = req.prompt_tokens + req.output_tokens
    if not config.enable_chunked_prefill and tokens - 1 > config.max_num_batched_tokens:
        return False
    return -(-tokens // 16) <= config.num_gpu_blocks_override


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(specs=request_specs, config=configs)
def test_every_request_finishes_once_with_its_output_tokens(specs, config):
    reqs = [r for r in make_requests(specs) if fits(config, r)]
    replica = EngineReplica(PERF, config)
    drive_step_mode(replica, reqs)
    assert all(r.num_emitted_tokens == r.output_tokens for r in reqs)
    assert all(0 <= r.first_token_s <= r.finish_s for r in reqs)
    assert replica.metrics().generation_tokens == sum(r.output_tokens for r in reqs)
    ledger = replica.scheduler.ledger
    assert ledger.num_free_blocks == ledger.num_blocks
    assert not replica.requests


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(specs=request_specs, config=configs)
def test_fast_mode_matches_step_mode_per_request(specs, config):
    reqs = [r for r in make_requests(specs) if fits(config, r)]
    step_reqs, fast_reqs = fresh(reqs), fresh(reqs)
    step_replica = EngineReplica(PERF, config)
    fast_replica = EngineReplica(PERF, config)
    drive_step_mode(step_replica, step_reqs)
    drive_fast_mode(fast_replica, fast_reqs)
    for s, f in zip(step_reqs, fast_reqs, strict=True):
        assert f.first_token_s == pytest.approx(s.first_token_s, rel=1e-9, abs=1e-9)
        assert f.finish_s == pytest.approx(s.finish_s, rel=1e-9, abs=1e-9)
        assert (f.num_cached_tokens, f.num_preemptions) == (s.num_cached_tokens, s.num_preemptions)
    assert fast_replica.metrics().num_steps == step_replica.metrics().num_steps
    assert fast_replica.energy_j == pytest.approx(step_replica.energy_j, rel=1e-9)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    specs=request_specs,
    config=configs,
    probes=st.lists(st.floats(0.0, 40.0), min_size=1, max_size=30),
)
def test_lazy_fast_mode_reports_the_same_metrics_as_step_mode_at_any_time(specs, config, probes):
    """What a scrape sees at time t (running, waiting, KV usage) after every step that
    started before t — also while a decode plan is pending and not yet applied."""
    reqs = [r for r in make_requests(specs) if fits(config, r)]
    probes = sorted(set(probes))
    # step mode: probes before a step starting at the same time, arrivals before steps
    step_replica = EngineReplica(PERF, config)
    pending, todo, seen_step = fresh(reqs), list(probes), []
    while pending or todo or not step_replica.is_idle:
        step_start = float("inf") if step_replica.is_idle else step_replica.clock_s
        next_arrival = pending[0].arrival_s if pending else float("inf")
        next_probe = todo[0] if todo else float("inf")
        if next_probe <= min(next_arrival, step_start) and todo:
            sched = step_replica.scheduler
            seen_step.append((len(sched.running), len(sched.waiting), sched.ledger.usage))
            todo.pop(0)
        elif next_arrival <= step_start and pending:
            req = pending.pop(0)
            step_replica.add(req, req.arrival_s)
        else:
            step_replica.step(step_start)
    # fast mode: merged arrivals and probes, probes first on ties
    fast_replica = EngineReplica(PERF, config)
    events = sorted(
        [(p, 0, None) for p in probes] + [(r.arrival_s, 1, r) for r in fresh(reqs)],
        key=lambda e: (e[0], e[1]),
    )
    seen_fast = []
    for t, kind, req in events:
        fast_replica.advance_to(t)
        if kind == 0:
            sched = fast_replica.scheduler
            seen_fast.append((len(sched.running), len(sched.waiting), fast_replica.kv_usage_at(t)))
        else:
            fast_replica.add(req, t)
    assert seen_fast == seen_step
