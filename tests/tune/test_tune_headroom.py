"""The prefill headroom: no simulated router beats the pooled Belady bound, and the note
states the cut a better router could make."""

from __future__ import annotations

import pytest

from selfserve.sim import SLO, simulate
from selfserve.sim.cluster import ClusterSpec
from selfserve.tune.headroom import prefill_headroom
from selfserve.tune.objective import Evaluation, Probe
from selfserve.workload.embedded import load_embedded
from selfserve.workload.prefix_reuse import cache_headroom

SLO_ = SLO.parse("ttft=2s,tpot=100ms")


@pytest.mark.parametrize("policy", ["round-robin", "lmetric", "sglang-cache-aware", "llm-d"])
def test_no_router_finds_more_cached_than_belady_on_the_pooled_memory(policy):
    workload = load_embedded("mooncake-conversation-10min")
    cluster = "2xh100/llama-3.1-8b:num_gpu_blocks_override=20000"  # 640k KV tokens
    bound = cache_headroom(list(workload.requests), ClusterSpec.parse(cluster).kv_capacity_tokens())
    hit = simulate(workload, cluster, policy, rate_scale=1.0, seed=0, slo=SLO_).summary(SLO_)
    assert 0.0 < hit["prefix_hit_rate"] <= bound.optimal_token_hit_rate
    assert bound.optimal_token_hit_rate < bound.infinite_token_hit_rate  # memory binds here


def _evaluation(hit_rate: float) -> Evaluation:
    probe = Probe(2.0, 0.95, 1.0, {"prefix_hit_rate": hit_rate})
    return Evaluation(2.0, "capacity", 2.0, 1.0, (probe,), True)


def test_note_gives_the_prefill_a_better_router_would_save():
    workload = load_embedded("mooncake-conversation-10min")
    evaluations = {"learned": _evaluation(0.05), "lmetric": _evaluation(0.04)}
    headroom = prefill_headroom(workload, 640_000, evaluations, "validate")
    assert headroom is not None
    lru, limit = headroom.pooled.lru_token_hit_rate, headroom.pooled.optimal_token_hit_rate
    assert headroom.prefill_cut("learned", limit) == pytest.approx(1 - (1 - limit) / 0.95)
    assert headroom.prefill_cut("learned", 0.01) == 0.0  # already better than that
    note = headroom.note("learned", "lmetric")
    assert "learned 5.0%, lmetric 4.0%" in note and f"MIN {100 * limit:.1f}%" in note
    assert f"LRU finds {100 * lru:.1f}%" in note
    assert headroom.to_dict()["hit_rates"] == {"learned": 0.05, "lmetric": 0.04}


def test_no_headroom_without_hashes_or_hit_rates():
    workload = load_embedded("mooncake-conversation-10min")
    plain = Evaluation(2.0, "capacity", 2.0, 1.0, (Probe(2.0, 0.95, 1.0, {}),), True)
    assert prefill_headroom(workload, 640_000, {"x": plain}, "validate") is None
