"""Each anchor's documented rule on hand-built snapshots: thresholds, tie-breaks, fallbacks."""

from __future__ import annotations

import random
from collections import Counter

import pytest
from policy_helpers import route, snap

from selfserve.policy import list_anchors, make_policy

R = random.Random


# ---- load-only anchors ----------------------------------------------------------------
@pytest.mark.parametrize(
    "policy, replicas, expected",
    [
        (
            "least-loaded",
            [{"in_flight_requests": 3}, {"in_flight_requests": 1}, {"in_flight_requests": 1}],
            1,
        ),
        (
            "least-loaded",
            [
                {"in_flight_requests": 1, "queued_prefill_tokens": 500},
                {"in_flight_requests": 1, "queued_prefill_tokens": 10},
            ],
            1,
        ),
        (
            "litellm-least-busy",
            [{"in_flight_requests": 2}, {"in_flight_requests": 0}, {"in_flight_requests": 0}],
            1,
        ),
        (
            "least-request",
            [{"in_flight_requests": 4}, {"in_flight_requests": 2}, {"in_flight_requests": 3}],
            1,
        ),
        (
            "least-kv",
            [{"kv_cache_usage": 0.5}, {"kv_cache_usage": 0.7}, {"kv_cache_usage": 0.2}],
            2,
        ),
        ("least-kv", [{"kv_cache_usage": 0.1, "is_healthy": False}, {"kv_cache_usage": 0.7}], 1),
        (
            "lmetric",
            [
                {"queued_prefill_tokens": 0, "in_flight_requests": 5},
                {"queued_prefill_tokens": 100, "in_flight_requests": 1},
            ],
            1,
        ),
        # lmetric: 64 uncached x 6 = 384 vs (0 hit -> 64) x 1 = 64... a cached replica with a batch
        (
            "lmetric",
            [{"prefix_hit_tokens": 64, "in_flight_requests": 3}, {"in_flight_requests": 0}],
            0,
        ),
    ],
)
def test_load_rule_picks_documented_replica(policy, replicas, expected):
    assert make_policy(policy).choose(snap(*replicas), R(0)) == expected


def test_round_robin_cycles_over_healthy_replicas():
    policy = make_policy("round-robin")
    s = snap({}, {"is_healthy": False}, {})
    assert [route(policy, s, R(0)) for _ in range(4)] == [0, 2, 0, 2]


def test_least_request_breaks_ties_at_random_and_litellm_takes_the_first():
    s = snap({"in_flight_requests": 1}, {"in_flight_requests": 0}, {"in_flight_requests": 0})
    rng = R(3)
    assert set(make_policy("least-request").choose(s, rng) for _ in range(50)) == {1, 2}
    assert set(make_policy("litellm-least-busy").choose(s, rng) for _ in range(50)) == {1}


def test_power_of_two_prefers_lower_of_two_draws_and_never_the_global_max():
    s = snap({"in_flight_requests": 9}, {"in_flight_requests": 1}, {"in_flight_requests": 5})
    rng = R(0)
    picks = Counter(make_policy("power-of-two").choose(s, rng) for _ in range(300))
    assert picks[0] == 0  # the max loses whichever pair it is drawn in
    assert picks[1] > picks[2] > 0  # 1 wins both pairs it is in; 2 wins only against 0


def test_power_of_two_tie_goes_to_the_first_draw():
    s = snap({}, {})
    rng, mirror = R(5), R(5)
    for _ in range(20):
        a, _b = mirror.sample((0, 1), 2)
        assert make_policy("power-of-two").choose(s, rng) == a


# ---- llm-d ------------------------------------------------------------------------------
def test_llmd_queue_and_kv_scores_weighted_2_2():
    # queue min-max: r0 q=0 -> 1, r1 q=10 -> 0; kv: r0 0.9 -> .1, r1 0.0 -> 1
    # totals: r0 = 2*1 + 2*.1 = 2.2, r1 = 0 + 2 = 2.0 -> r0
    s = snap(
        {"num_requests_waiting": 0, "kv_cache_usage": 0.9},
        {"num_requests_waiting": 10, "kv_cache_usage": 0.0},
    )
    assert make_policy("llm-d").choose(s, R(0)) == 0


@pytest.mark.parametrize(
    "kv_r1, expected",
    [
        (0.4, 1),  # r0 = 2*1 + 2*1 + 0 = 4.0; r1 = 2*0 + 2*0.6 + 3*1 = 4.2
        (0.6, 0),  # r1 = 0 + 2*0.4 + 3 = 3.8 < 4.0
    ],
)
def test_llmd_prefix_weight_3_against_queue_and_kv(kv_r1, expected):
    policy = make_policy("llm-d")
    hashes = tuple(range(1, 9))
    policy.on_route(snap({}, {}, block_hashes=hashes, prompt_tokens=128, request_id="a"), 1)
    s = snap(
        {"num_requests_waiting": 0, "kv_cache_usage": 0.0},
        {"num_requests_waiting": 4, "kv_cache_usage": kv_r1},
        block_hashes=hashes,
        prompt_tokens=128,
    )
    assert policy.choose(s, R(0)) == expected


def test_llmd_prefix_walk_stops_at_first_block_no_pod_holds():
    from selfserve.policy.anchors_llmd import ApproxPrefixCacheScorer

    scorer = ApproxPrefixCacheScorer()
    scorer.on_route(snap({}, {}, block_hashes=(1, 2, 3, 4)), 0)
    scorer.on_route(snap({}, {}, block_hashes=(1, 9)), 1)
    # request 1,2,3,5: run = 1,2,3 (5 held by none) -> r0 holds 3 of 4, r1 holds 1 of 4
    s = snap({}, {}, block_hashes=(1, 2, 3, 5))
    assert scorer.score(s, (0, 1)) == [0.75, 0.25]
    # a hash held by no pod ends the walk even if later blocks are held
    s = snap({}, {}, block_hashes=(7, 2, 3, 4))
    assert scorer.score(s, (0, 1)) == [0.0, 0.0]


def test_llmd_prefix_only_hashes_first_4096_tokens():
    from selfserve.policy.anchors_llmd import ApproxPrefixCacheScorer

    scorer = ApproxPrefixCacheScorer(max_prefix_tokens=1024)  # 2 blocks of 512
    scorer.on_route(snap({}, block_hashes=(1, 2), block_size=512), 0)
    s = snap({}, block_hashes=(1, 2, 3, 4), block_size=512)
    assert scorer.score(s, (0,)) == [1.0]


@pytest.mark.parametrize(
    "waiting_r0, expected_routes, why",
    [
        # one scrape for the whole burst: queue min-max is 1.0 for all, kv 1.0 for all, so
        # the holder of the shared first block (+3 x 1/8) takes every request
        (0, [0, 0, 0, 0, 0, 0], "equal scraped metrics: the prefix holder wins the burst"),
        # once a scrape shows r0's queue, queue 2 x (0 vs 1) outweighs prefix 3 x 1/8
        (3, [0, 1, 1, 1, 1, 1], "a visible queue on the holder spreads the burst"),
    ],
)
def test_llmd_burst_sharing_first_block_herds_onto_holder_until_a_scrape_shows_load(
    waiting_r0, expected_routes, why
):
    """llm-d's documented rule, not a bug: load is only what the last scrape saw, while
    the prefix index updates on every decision. Mooncake's conversation trace gives every
    request the same first 512-token block and arrives in bursts (~9 per timestamp); at a
    low rate the replica is idle again at each scrape, so every burst lands on one pod."""
    from selfserve.policy.router import Router
    from selfserve.policy.snapshot import EngineMetrics, ReplicaInfo, RequestView

    router = Router(make_policy("llm-d"), [ReplicaInfo(i, f"r{i}") for i in range(2)])
    rng = R(0)
    routes = []
    for k in range(6):
        # the first request goes to r0 (r1 shows a queue); later ones see the case's scrape
        waiting = (waiting_r0, 0) if k else (0, 1)
        metrics = [EngineMetrics(0, q, 0.0, 0.0) for q in waiting]
        hashes = (7,) + tuple(1000 * k + j for j in range(7))  # shared block 0 only
        req = RequestView(f"q{k}", 0.0, 8 * 512, block_hashes=hashes, block_size=512)
        routes.append(router.route(req, 0.0, metrics, rng))
    assert routes == expected_routes, why


def test_llmd_equal_totals_tie_break_is_uniform():
    s = snap({}, {}, {})
    rng = R(1)
    assert set(make_policy("llm-d").choose(s, rng) for _ in range(60)) == {0, 1, 2}


# ---- SGLang cache_aware -----------------------------------------------------------------
def _sglang_after(assignments, **params):
    policy = make_policy({"kind": "anchor", "name": "sglang-cache-aware", "params": params})
    for hashes, replica in assignments:
        policy.on_route(
            snap({}, {}, {}, block_hashes=hashes, prompt_tokens=16 * len(hashes)), replica
        )
    return policy


@pytest.mark.parametrize(
    "loads, hashes, prompt, expected, why",
    [
        ([0, 0, 0], (1, 2, 3, 4), 64, 2, "full match goes to the tenant"),
        ([5, 0, 3], (1, 2, 3, 4), 64, 2, "match beats load when balanced"),
        ([0, 0, 0], (1, 8, 8, 8), 64, 0, "rate 16/64 = .25 <= .3: least load, first index"),
        ([2, 1, 3], (1, 2, 8, 9), 64, 2, "rate 32/64 = .5 > .3 -> tenant"),
        ([2, 1, 3], (1, 8), 100, 1, "rate 16/100 = .16: least load"),
        ([70, 0, 100], (1, 2, 3, 4), 64, 1, "imbalanced (100-0 > 64, 100 > 1.5*0): least load"),
        ([70, 40, 100], (1, 2, 3, 4), 64, 2, "100-40=60 <= 64: balanced, tenant"),
        ([130, 130, 195], (1, 2, 3, 4), 64, 2, "diff 65 > 64 but 195 <= 1.5*130: balanced"),
    ],
)
def test_sglang_cache_aware_rule(loads, hashes, prompt, expected, why):
    policy = _sglang_after([((1, 2, 3, 4), 2)])
    s = snap(*({"in_flight_requests": q} for q in loads), block_hashes=hashes, prompt_tokens=prompt)
    assert policy.choose(s, R(0)) == expected, why


def test_sglang_deepest_node_goes_to_most_recent_tenant():
    policy = make_policy("sglang-cache-aware")
    for t, (hashes, replica) in enumerate([((1, 2), 0), ((1, 2, 3), 1), ((1, 2), 2)]):
        policy.on_route(snap({}, {}, {}, block_hashes=hashes, now_s=float(t)), replica)
    s = snap({}, {}, {}, block_hashes=(1, 2, 3), prompt_tokens=48)
    assert policy.choose(s, R(0)) == 1  # only r1 holds block 3
    s = snap({}, {}, {}, block_hashes=(1, 2), prompt_tokens=32)
    assert policy.choose(s, R(0)) == 2  # all hold (1, 2); r2 touched it last


# ---- Dynamo -------------------------------------------------------------------------------
def test_dynamo_cost_credits_overlap_and_counts_active_prefill():
    policy = make_policy("dynamo-kv")
    base = dict(block_hashes=(1, 2, 3, 4), prompt_tokens=64, block_size=16)
    route_to = lambda rid, r: policy.on_route(snap({}, {}, request_id=rid, **base), r)  # noqa: E731
    route_to("a", 0)
    # r0: prefill (64+64)/16 - 4 = 4, decode = 4 active (shared, deduped) -> 8
    # r1: prefill 64/16 = 4, decode = 4 -> 8  ... tie -> smaller index size wins (r1: 0)
    s = snap({}, {}, request_id="b", **base)
    assert policy.costs(s, (0, 1)) == [8.0, 8.0]
    assert policy.choose(s, R(0)) == 1
    policy.on_first_token("a", 0, 1.0)  # prefill done on r0: its cost drops to 0 + 4
    assert policy.costs(s, (0, 1)) == [4.0, 8.0]
    assert policy.choose(s, R(0)) == 0
    policy.on_complete("a", 0, 2.0, True)  # blocks freed, index still remembers
    assert policy.costs(s, (0, 1)) == [4.0, 8.0]


def test_dynamo_index_entries_expire_after_ttl():
    policy = make_policy("dynamo-kv:ttl_s=10")
    policy.on_route(snap({}, {}, request_id="a", block_hashes=(1, 2), prompt_tokens=32), 0)
    policy.on_complete("a", 0, 1.0, True)
    fresh = snap({}, {}, request_id="b", block_hashes=(1, 2), prompt_tokens=32, now_s=5.0)
    stale = snap({}, {}, request_id="b", block_hashes=(1, 2), prompt_tokens=32, now_s=20.0)
    assert policy.costs(fresh, (0, 1)) == [2.0, 4.0]
    assert policy.costs(stale, (0, 1)) == [4.0, 4.0]


def test_dynamo_temperature_samples_every_replica():
    policy = make_policy("dynamo-kv:temperature=1.0")
    policy.on_route(snap({}, {}, request_id="a", block_hashes=(1, 2), prompt_tokens=32), 0)
    s = snap({}, {}, request_id="b", block_hashes=(5, 6), prompt_tokens=32)
    picks = Counter(policy.choose(s, R(k)) for k in range(200))
    assert picks[1] > picks[0] > 0


# ---- production-stack -------------------------------------------------------------------
def test_prodstack_prefixaware_keeps_intersection_and_picks_among_it():
    policy = make_policy("prodstack-prefixaware")
    policy.on_route(snap({}, {}, {}, block_hashes=(1, 2, 3)), 0)
    policy.on_route(snap({}, {}, {}, block_hashes=(1, 2)), 1)
    s = snap({}, {}, {}, block_hashes=(1, 2, 3))
    assert {policy.choose(s, R(k)) for k in range(30)} == {0}
    s = snap({}, {}, {}, block_hashes=(1, 2, 9))
    assert {policy.choose(s, R(k)) for k in range(30)} == {0, 1}
    s = snap({}, {}, {}, block_hashes=(5,))  # no match: all endpoints
    assert {policy.choose(s, R(k)) for k in range(60)} == {0, 1, 2}


def test_prodstack_session_is_sticky_and_falls_back_to_lowest_qps():
    policy = make_policy("prodstack-session")
    reps = [
        {"recent_requests_per_s": 1.0},
        {"recent_requests_per_s": 0.5},
        {"recent_requests_per_s": 2.0},
    ]
    picks = {policy.choose(snap(*reps, session_id="user-7"), R(k)) for k in range(10)}
    assert len(picks) == 1
    assert policy.choose(snap(*reps), R(0)) == 1
    reps[2] = {"recent_requests_per_s": 0.0}  # no stats yet -> first such endpoint
    assert policy.choose(snap(*reps), R(0)) == 2


def test_prodstack_session_spreads_sessions_over_replicas():
    policy = make_policy("prodstack-session")
    s = [{}] * 4
    owners = Counter(policy.choose(snap(*s, session_id=f"s{k}"), R(0)) for k in range(400))
    assert len(owners) == 4 and min(owners.values()) > 40


# ---- AIBrix -------------------------------------------------------------------------------
def test_aibrix_prefix_match_respects_mean_plus_std_gate():
    policy = make_policy("aibrix-prefix-cache")
    policy.on_route(snap({}, {}, {}, block_hashes=(1, 2, 3, 4)), 0)
    hit = dict(block_hashes=(1, 2, 3, 4))
    # r0 running 3; mean of (3,1,1) = 1.67, std = .94 -> limit 2.6: r0 is over -> fewest running
    s = snap({"in_flight_requests": 3}, {"in_flight_requests": 1}, {"in_flight_requests": 1}, **hit)
    assert {policy.choose(s, R(k)) for k in range(30)} == {1, 2}
    s = snap({"in_flight_requests": 2}, {"in_flight_requests": 1}, {"in_flight_requests": 1}, **hit)
    assert policy.choose(s, R(0)) in (1, 2)  # mean 1.33 + std .47 = 1.8 < 2: fallback
    s = snap({"in_flight_requests": 2}, {"in_flight_requests": 2}, {"in_flight_requests": 1}, **hit)
    assert policy.choose(s, R(0)) == 0  # mean 1.67 std .47 -> limit 2.14 >= 2


def test_aibrix_imbalance_limits_candidates_to_least_running():
    policy = make_policy("aibrix-prefix-cache")
    policy.on_route(snap({}, {}, {}, block_hashes=(1, 2)), 0)
    s = snap(
        {"in_flight_requests": 9},
        {"in_flight_requests": 0},
        {"in_flight_requests": 3},
        block_hashes=(1, 2),
    )
    assert policy.choose(s, R(0)) == 1  # 9 - 0 > 8


def test_aibrix_entries_expire_after_20_idle_minutes():
    policy = make_policy("aibrix-prefix-cache")
    policy.on_route(snap({}, {}, block_hashes=(1, 2)), 0)
    later = snap({}, {}, block_hashes=(1, 2), now_s=1300.0)
    assert {policy.choose(later, R(k)) for k in range(30)} == {0, 1}


# ---- Ray ----------------------------------------------------------------------------------
def test_ray_routes_to_longest_match_then_shortest_queue():
    policy = make_policy("ray-prefix-affinity")
    policy.on_route(snap({}, {}, {}, block_hashes=(1, 2, 3), prompt_tokens=48), 0)
    policy.on_route(snap({}, {}, {}, block_hashes=(1, 2, 3), prompt_tokens=48), 1)
    s = snap(
        {"in_flight_requests": 3},
        {"in_flight_requests": 1},
        {},
        block_hashes=(1, 2, 3),
        prompt_tokens=48,
    )
    assert policy.choose(s, R(0)) == 1


def test_ray_low_match_rate_goes_to_smallest_tenant():
    policy = make_policy("ray-prefix-affinity")
    policy.on_route(snap({}, {}, block_hashes=(1, 2, 3)), 0)
    s = snap({}, {"in_flight_requests": 5}, block_hashes=(9,), prompt_tokens=16)
    assert policy.choose(s, R(0)) == 1  # r1 holds nothing, queue length does not matter


def test_ray_imbalance_falls_back_to_power_of_two():
    policy = make_policy("ray-prefix-affinity")
    policy.on_route(snap({}, {}, block_hashes=(1, 2, 3)), 0)
    s = snap(
        {"in_flight_requests": 20},
        {"in_flight_requests": 2},
        block_hashes=(1, 2, 3),
        prompt_tokens=48,
    )
    assert policy.choose(s, R(0)) == 1


# ---- LiteLLM latency -------------------------------------------------------------------
def test_litellm_latency_prefers_unseen_then_fastest_mean_ttft():
    policy = make_policy("litellm-latency")
    for rid, rep, ttft in [("a", 0, 0.5), ("b", 1, 0.2), ("c", 1, 0.4)]:
        policy.on_route(snap({}, {}, {}, request_id=rid), rep)
        policy.on_first_token(rid, rep, ttft)
    s = snap({}, {}, {})
    assert policy.choose(s, R(0)) == 2  # never seen counts 0
    s = snap({}, {}, {"is_healthy": False})
    assert policy.choose(s, R(0)) == 1  # mean 0.3 < 0.5


# ---- every anchor ---------------------------------------------------------------------
@pytest.mark.parametrize("name", list_anchors())
def test_every_anchor_has_a_docstring_naming_its_rule_and_returns_a_healthy_index(name):
    policy = make_policy(name)
    assert policy.name == name
    assert type(policy).__doc__ and name in type(policy).__doc__
    s = snap({"is_healthy": False}, {}, {"is_healthy": False}, block_hashes=(1, 2), session_id="s")
    for k in range(5):
        assert route(policy, s, R(k)) == 1
