"""Behaviour of one engine replica: timing, token counts, KV accounting, prefix caching,
preemption, rejection, media — in step mode and fast mode."""

from __future__ import annotations

import pytest

from selfserve.engine import (
    EngineConfig,
    EngineReplica,
    EngineRequest,
    RequestTooLarge,
    rehash_blocks,
)
from selfserve.perf import PerfModel


@pytest.fixture(scope="module")
def perf() -> PerfModel:
    return PerfModel.create("llama-3.1-8b", "h200")


def run_steps(replica: EngineReplica, start_s: float = 0.0) -> list:
    outputs = []
    now = start_s
    while (out := replica.step(now)) is not None:
        outputs.append(out)
        replica.scheduler.ledger.check()
        now = out.end_s
    return outputs


def test_single_request_ttft_equals_its_prefill_time(perf):
    replica = EngineReplica(perf)
    req = EngineRequest("a", prompt_tokens=3000, output_tokens=5, arrival_s=1.0)
    replica.add(req, 1.0)
    run_steps(replica, 1.0)
    assert req.first_token_s - 1.0 == pytest.approx(perf.prefill_time_s(3000), rel=1e-12)


def test_long_prompt_is_prefilled_in_budget_sized_chunks(perf):
    replica = EngineReplica(perf, EngineConfig(max_num_batched_tokens=4096))
    req = EngineRequest("a", prompt_tokens=10_000, output_tokens=3)
    replica.add(req, 0.0)
    outputs = run_steps(replica)
    assert [o.num_prefill_tokens for o in outputs[:3]] == [4096, 4096, 1808]
    expected = (
        perf.prefill_time_s(4096, 0)
        + perf.prefill_time_s(4096, 4096)
        + perf.prefill_time_s(1808, 8192)
    )
    assert req.first_token_s == pytest.approx(expected, rel=1e-12)
    assert outputs[2].first_token_ids == ("a",)


def test_decode_steps_equal_output_tokens(perf):
    replica = EngineReplica(perf)
    req = EngineRequest("a", prompt_tokens=100, output_tokens=37)
    replica.add(req, 0.0)
    outputs = run_steps(replica)
    assert sum("a" in o.token_ids for o in outputs) == 37
    assert outputs[-1].finished_ids == ("a",)
    assert replica.metrics().generation_tokens == 37


def test_kv_blocks_are_all_free_again_after_the_work_drains(perf):
    replica = EngineReplica(perf, EngineConfig(num_gpu_blocks_override=400))
    for i in range(30):
        replica.add(EngineRequest(f"r{i}", 300 + 37 * i, 20 + i), 0.0)
    run_steps(replica)
    ledger = replica.scheduler.ledger
    assert ledger.num_free_blocks == ledger.num_blocks == 400
    assert not replica.requests


def test_request_longer_than_the_kv_cache_is_rejected_with_a_reason(perf):
    replica = EngineReplica(perf, EngineConfig(num_gpu_blocks_override=100))
    with pytest.raises(RequestTooLarge) as info:
        replica.add(EngineRequest("huge", 5000, 10), 0.0)
    assert "KV blocks" in info.value.reason and "100 blocks" in info.value.reason
    assert replica.is_idle


def test_request_longer_than_max_model_len_is_rejected(perf):
    replica = EngineReplica(perf)
    with pytest.raises(RequestTooLarge, match="max_model_len 131072"):
        replica.add(EngineRequest("long", 131_000, 500), 0.0)


def test_repeated_prefix_is_served_from_cache_and_prefills_faster(perf):
    replica = EngineReplica(perf)
    hashes = (11, 12, 13, 14)  # four 512-token trace blocks
    first = EngineRequest("a", 2100, 2, block_hashes=hashes, hash_block_tokens=512)
    replica.add(first, 0.0)
    run_steps(replica)
    second = EngineRequest("b", 2100, 2, block_hashes=hashes, hash_block_tokens=512)
    replica.add(second, 10.0)
    run_steps(replica, 10.0)
    assert first.num_cached_tokens == 0
    assert second.num_cached_tokens == 2048
    assert second.first_token_s - 10.0 == pytest.approx(perf.prefill_time_s(52, 2048), rel=1e-12)
    stats = replica.metrics()
    assert stats.prefix_hits_tokens == 2048 and stats.prefix_queries_tokens == 4200


def test_fully_cached_prompt_still_recomputes_its_last_block(perf):
    replica = EngineReplica(perf)
    hashes = (1, 2)
    replica.add(EngineRequest("a", 1024, 1, block_hashes=hashes, hash_block_tokens=512), 0.0)
    run_steps(replica)
    again = EngineRequest("b", 1024, 1, block_hashes=hashes, hash_block_tokens=512)
    replica.add(again, 5.0)
    run_steps(replica, 5.0)
    assert again.num_cached_tokens == 512


def test_lru_evicts_the_least_recently_freed_prefix_first(perf):
    # 8 blocks of 16 tokens; each request holds one 64-token (4-block) unit + 1 decode block
    replica = EngineReplica(perf, EngineConfig(num_gpu_blocks_override=8))
    for name, h in (("a", 101), ("b", 202)):
        replica.add(EngineRequest(name, 64, 1, block_hashes=(h,), hash_block_tokens=64), 0.0)
        run_steps(replica)
    # a third prefix needs 4 blocks: the queue head is a's unit (freed first)
    replica.add(EngineRequest("c", 64, 1, block_hashes=(303,), hash_block_tokens=64), 1.0)
    run_steps(replica, 1.0)
    ledger = replica.scheduler.ledger
    assert not ledger.is_cached(101)
    assert ledger.is_cached(202) and ledger.is_cached(303)


def test_kv_exhaustion_preempts_the_newest_request_and_recomputes_it(perf):
    replica = EngineReplica(perf, EngineConfig(num_gpu_blocks_override=20))
    old = EngineRequest("old", 100, 100)
    new = EngineRequest("new", 100, 100)
    replica.add(old, 0.0)
    replica.add(new, 0.0)
    outputs = run_steps(replica)
    preempted = [rid for o in outputs for rid in o.preempted_ids]
    assert preempted and set(preempted) == {"new"}
    assert new.num_preemptions >= 1 and old.num_preemptions == 0
    assert old.num_emitted_tokens == 100 and new.num_emitted_tokens == 100
    assert replica.metrics().num_preemptions == len(preempted)


def test_waiting_requests_beyond_max_num_seqs_wait_their_turn(perf):
    replica = EngineReplica(perf, EngineConfig(max_num_seqs=2))
    reqs = [EngineRequest(f"r{i}", 50, 10) for i in range(4)]
    for r in reqs:
        replica.add(r, 0.0)
    first = replica.step(0.0)
    assert set(first.token_ids) == {"r0", "r1"}
    assert replica.metrics().num_waiting == 2
    run_steps(replica, first.end_s)
    assert reqs[2].first_token_s >= reqs[0].finish_s


def test_abort_frees_the_request_kv(perf):
    replica = EngineReplica(perf, EngineConfig(num_gpu_blocks_override=50))
    replica.add(EngineRequest("a", 200, 50), 0.0)
    replica.step(0.0)
    assert replica.scheduler.ledger.num_free_blocks < 50
    assert replica.abort("a")
    assert replica.scheduler.ledger.num_free_blocks == 50
    assert replica.step(1.0) is None
    assert not replica.abort("a")


def test_early_fusion_media_are_prefill_tokens_and_repeats_hit_the_cache():
    perf = PerfModel.create("chameleon-7b", "h100")
    replica = EngineReplica(perf)
    text = (5, 6)
    first = EngineRequest(
        "a", 1100, 2, block_hashes=text, hash_block_tokens=512, media_tokens=1024,
        media_hashes=(77,), media_part_tokens=(1024,),
    )  # fmt: skip
    replica.add(first, 0.0)
    out = replica.step(0.0)
    assert out.num_prefill_tokens == 2124
    run_steps(replica, out.end_s)
    again = EngineRequest(
        "b", 1100, 2, block_hashes=text, hash_block_tokens=512, media_tokens=1024,
        media_hashes=(77,), media_part_tokens=(1024,),
    )  # fmt: skip
    replica.add(again, 5.0)
    run_steps(replica, 5.0)
    assert again.num_cached_tokens == 1024 + 1024


def test_adapter_model_pays_encoder_time_once_per_media_item():
    perf = PerfModel.create("qwen2.5-omni-7b", "h100")
    assert perf.encoder_time_s(256) > 0
    times = []
    for name, prefix in (("a", (1,)), ("b", (2,))):  # different text, same image
        replica_req = EngineRequest(
            name, 600, 1, block_hashes=prefix, hash_block_tokens=512, media_tokens=256,
            media_hashes=(99,), media_part_tokens=(256,),
        )  # fmt: skip
        times.append(replica_req)
    replica = EngineReplica(perf)
    replica.add(times[0], 0.0)
    first = replica.step(0.0)
    run_steps(replica, first.end_s)
    replica.add(times[1], 10.0)
    second = replica.step(10.0)
    llm_only = perf.prefill_time_s(856)
    assert first.end_s - first.start_s == pytest.approx(llm_only + perf.encoder_time_s(256))
    assert second.end_s - second.start_s == pytest.approx(llm_only)  # encoder cache hit


def test_rehash_maps_trace_blocks_onto_engine_blocks():
    # 64-token trace blocks onto 16-token engine blocks: 4 engine blocks per trace block,
    # the last of the four named by the trace hash itself.
    engine = rehash_blocks((10, 20), 64, 16)
    assert len(engine) == 8
    assert engine[3] == 10 and engine[7] == 20
    assert len(set(engine)) == 8
    # 16-token trace blocks onto 64-token engine blocks: every fourth hash
    assert rehash_blocks(tuple(range(1, 9)), 16, 64) == (4, 8)
    # equal leading trace blocks give equal leading engine blocks
    assert rehash_blocks((10, 21), 64, 16)[:4] == engine[:4]


def test_misaligned_trace_blocks_group_to_whole_engine_blocks():
    from selfserve.engine import hash_units

    assert hash_units((1, 2, 3), 512, 16) == ((1, 2, 3), 512)
    # 48-token trace blocks on 32-token engine blocks: units of lcm = 96 tokens
    assert hash_units((1, 2, 3, 4, 5), 48, 32) == ((2, 4), 96)
    # 8-token trace blocks on 16-token engine blocks: every second hash
    assert hash_units((1, 2, 3, 4), 8, 16) == ((2, 4), 16)


def test_without_chunked_prefill_a_prompt_over_the_token_budget_is_rejected(perf):
    config = EngineConfig(enable_chunked_prefill=False, max_num_batched_tokens=2048)
    replica = EngineReplica(perf, config)
    with pytest.raises(RequestTooLarge, match="chunked prefill disabled"):
        replica.add(EngineRequest("a", 3000, 10), 0.0)
    ok = EngineRequest("b", 1500, 10)
    replica.add(ok, 0.0)
    outputs = run_steps(replica)
    assert outputs[0].num_prefill_tokens == 1500 and ok.num_emitted_tokens == 10
