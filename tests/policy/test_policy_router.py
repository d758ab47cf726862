"""The Router's own bookkeeping and how it builds snapshots and calls hooks."""

from __future__ import annotations

import math
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from selfserve.policy import make_policy
from selfserve.policy.router import Router, RoutingError, UnknownRequestError
from selfserve.policy.snapshot import EngineMetrics, ReplicaInfo, RequestView


def _router(policy="round-robin", n=3, **kw) -> Router:
    infos = [ReplicaInfo(i, f"r{i}", kv_capacity_tokens=16 * 100) for i in range(n)]
    return Router(make_policy(policy), infos, **kw)


def _req(rid: str, now: float = 0.0, prompt: int = 100, hashes=(1, 2, 3), out=20, **kw):
    return RequestView(rid, now, prompt, expected_output_tokens=out, block_hashes=hashes, **kw)


class _Recorder:
    """A policy that always picks replica `pick` and records hook calls."""

    name = "recorder"

    def __init__(self, pick: int = 0) -> None:
        self.pick = pick
        self.events: list[tuple] = []
        self.snapshots = []

    def choose(self, snapshot, rng):
        self.snapshots.append(snapshot)
        return self.pick

    def on_route(self, snapshot, replica_index):
        self.events.append(("route", snapshot.request.request_id, replica_index))

    def on_first_token(self, request_id, replica_index, now_s):
        self.events.append(("first", request_id, replica_index, now_s))

    def on_complete(self, request_id, replica_index, now_s, ok):
        self.events.append(("done", request_id, replica_index, ok))


def test_dispatch_counts_prefill_then_decode_then_nothing():
    router = _router(n=2)
    rng = random.Random(0)
    metrics = [None, None]
    r0 = router.route(_req("a", prompt=100, out=20), 0.0, metrics, rng)
    view = router.snapshot(_req("probe", hashes=()), 0.1, metrics).replicas[r0]
    assert (view.in_flight_requests, view.prefill_requests, view.queued_prefill_tokens) == (
        1,
        1,
        100,
    )
    router.on_first_token("a", 0.5)
    view = router.snapshot(_req("probe", hashes=()), 0.6, metrics).replicas[r0]
    assert (view.prefill_requests, view.queued_prefill_tokens) == (0, 0)
    assert (view.decode_requests, view.running_decode_tokens) == (1, 120)
    assert view.recent_ttft_s == pytest.approx(0.5)
    router.on_complete("a", 2.0, output_tokens=20)
    view = router.snapshot(_req("probe", hashes=()), 2.0, metrics).replicas[r0]
    assert (view.in_flight_requests, view.decode_requests, view.running_decode_tokens) == (0, 0, 0)
    assert view.recent_output_tokens_per_s == pytest.approx(20 / router.window_s)
    assert router.num_in_flight == 0


def test_prefix_hits_come_from_own_past_decisions_and_reduce_queued_prefill():
    policy = _Recorder(pick=1)
    router = Router(policy, [ReplicaInfo(i, f"r{i}") for i in range(2)])
    rng = random.Random(0)
    router.route(_req("a", prompt=100, hashes=(1, 2, 3)), 0.0, [None, None], rng)
    router.route(_req("b", prompt=100, hashes=(1, 2, 9)), 1.0, [None, None], rng)
    second = policy.snapshots[1]
    assert [r.prefix_hit_tokens for r in second.replicas] == [0, 32]  # blocks 1, 2 of 16
    view = router.snapshot(_req("probe", hashes=()), 1.0, [None, None]).replicas[1]
    assert view.queued_prefill_tokens == 100 + (100 - 32)


def test_completion_before_first_token_clears_prefill_counts():
    router = _router(n=1)
    router.route(_req("a"), 0.0, [None], random.Random(0))
    router.on_complete("a", 1.0, output_tokens=0, ok=False)
    view = router.snapshot(_req("p", hashes=()), 1.0, [None]).replicas[0]
    assert (view.in_flight_requests, view.prefill_requests, view.queued_prefill_tokens) == (0, 0, 0)


def test_scraped_metrics_pass_through_with_their_age():
    router = _router(n=2)
    metrics = [EngineMetrics(3, 7, 0.4, scraped_at_s=9.95), None]
    snap = router.snapshot(_req("p"), 10.0, metrics)
    a, b = snap.replicas
    assert (a.num_requests_running, a.num_requests_waiting, a.kv_cache_usage) == (3, 7, 0.4)
    assert a.metrics_age_s == pytest.approx(0.05)
    assert math.isinf(b.metrics_age_s) and b.num_requests_waiting == 0


def test_hooks_are_called_in_order_with_the_chosen_replica():
    policy = _Recorder(pick=2)
    router = Router(policy, [ReplicaInfo(i, f"r{i}") for i in range(3)])
    router.route(_req("a"), 0.0, [None] * 3, random.Random(0))
    router.on_first_token("a", 0.3)
    router.on_complete("a", 1.0, 20, ok=True)
    assert policy.events == [("route", "a", 2), ("first", "a", 2, 0.3), ("done", "a", 2, True)]


def test_request_rate_counts_dispatches_inside_the_window_only():
    router = _router(n=1, window_s=10.0)
    rng = random.Random(0)
    for k in range(5):
        router.route(_req(f"q{k}", now=float(k)), float(k), [None], rng)
    assert router.snapshot(_req("p"), 5.0, [None]).replicas[0].recent_requests_per_s == 0.5
    assert router.snapshot(_req("p"), 12.5, [None]).replicas[0].recent_requests_per_s == 0.2


def test_unhealthy_replicas_are_never_chosen():
    router = _router("least-loaded", n=3)
    rng = random.Random(0)
    picks = {
        router.route(_req(f"q{k}"), 0.0, [None] * 3, rng, healthy=[False, True, False])
        for k in range(10)
    }
    assert picks == {1}


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda r, g: r.route(_req("a"), 0.0, [None], g), "metrics has 1 entries"),
        (lambda r, g: r.route(_req("a"), 0.0, [None] * 2, g, healthy=[False, False]), "no healthy"),
    ],
)
def test_bad_route_calls_raise_routing_error(call, message):
    with pytest.raises(RoutingError, match=message):
        call(_router(n=2), random.Random(0))


def test_policy_answer_out_of_range_is_rejected():
    router = Router(_Recorder(pick=5), [ReplicaInfo(0, "r0")])
    with pytest.raises(RoutingError, match="returned 5"):
        router.route(_req("a"), 0.0, [None], random.Random(0))


def test_events_for_unknown_requests_raise():
    router = _router(n=1)
    with pytest.raises(UnknownRequestError):
        router.on_first_token("nope", 0.0)
    with pytest.raises(UnknownRequestError):
        router.on_complete("nope", 0.0, 1)


def test_index_lru_evicts_oldest_blocks_first():
    policy = _Recorder(pick=0)
    router = Router(policy, [ReplicaInfo(0, "r0")], index_capacity_blocks=3)
    rng = random.Random(0)
    router.route(_req("a", hashes=(1, 2, 3)), 0.0, [None], rng)
    router.route(_req("b", hashes=(7, 8)), 0.0, [None], rng)  # evicts 1 and 2
    assert router.prefix_hit_tokens(_req("p", hashes=(1, 2, 3))) == [0]
    assert router.prefix_hit_tokens(_req("p", hashes=(7, 8))) == [32]


def test_views_carry_each_feature_under_its_own_name():
    """Guards the positional construction in Router.snapshot against field reordering."""
    import dataclasses

    from selfserve.policy.snapshot import ReplicaView

    info = ReplicaInfo(
        0, "r0", hardware="h200", model="m", kv_capacity_tokens=777, max_model_len=999
    )
    router = Router(_Recorder(0), [info])
    rng = random.Random(0)
    router.route(
        _req("a", prompt=50, hashes=(1,), media_hashes=(5,), media_tokens=10), 0.0, [None], rng
    )
    router.route(_req("b", prompt=70, hashes=(1, 2)), 0.0, [None], rng)
    router.on_first_token("a", 0.4)
    metrics = [
        EngineMetrics(
            num_requests_running=2, num_requests_waiting=3, kv_cache_usage=0.25, scraped_at_s=0.9
        )
    ]
    probe = _req("p", prompt=40, hashes=(1, 2), media_hashes=(5, 6), media_tokens=8)
    got = router.snapshot(probe, 1.0, metrics, healthy=[True]).replicas[0]
    expected = ReplicaView(
        index=0, name="r0", in_flight_requests=2, prefill_requests=1,
        queued_prefill_tokens=70 - 16, decode_requests=1, running_decode_tokens=60 + 20,
        prefix_hit_tokens=32, media_hit_tokens=4, recent_ttft_s=0.4,
        recent_output_tokens_per_s=0.0, recent_requests_per_s=2 / router.window_s,
        num_requests_running=2, num_requests_waiting=3, kv_cache_usage=0.25,
        metrics_age_s=pytest.approx(0.1), hardware="h200", model="m",
        kv_capacity_tokens=777, max_model_len=999, is_healthy=True,
    )  # fmt: skip
    for f in dataclasses.fields(ReplicaView):
        assert getattr(got, f.name) == getattr(expected, f.name), f.name


@settings(max_examples=40, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(1, 2000), st.integers(0, 50), st.integers(0, 5), st.booleans()),
        min_size=1,
        max_size=40,
    ),
    st.sampled_from(["least-loaded", "llm-d", "dynamo-kv", "sglang-cache-aware", "lmetric"]),
)
def test_bookkeeping_returns_to_zero_after_every_request_completes(reqs, policy):
    router = _router(policy, n=3)
    rng = random.Random(0)
    ids = []
    for k, (prompt, out, conv, with_first) in enumerate(reqs):
        hashes = tuple(conv * 100 + j for j in range(prompt // 16))
        router.route(
            _req(f"q{k}", now=k * 0.1, prompt=prompt, hashes=hashes, out=out),
            k * 0.1,
            [None] * 3,
            rng,
        )
        ids.append((f"q{k}", with_first))
        snap = router.snapshot(_req("p", hashes=()), k * 0.1, [None] * 3)
        assert sum(r.in_flight_requests for r in snap.replicas) == len(ids)
        assert all(r.queued_prefill_tokens >= 0 for r in snap.replicas)
    for rid, with_first in ids:
        if with_first:
            router.on_first_token(rid, 10.0)
        router.on_complete(rid, 11.0, output_tokens=1)
    for r in router.snapshot(_req("p", hashes=()), 12.0, [None] * 3).replicas:
        assert (r.in_flight_requests, r.prefill_requests, r.queued_prefill_tokens) == (0, 0, 0)
        assert (r.decode_requests, r.running_decode_tokens) == (0, 0)


def test_fast_view_constructor_builds_the_same_frozen_view_as_the_dataclass():
    import dataclasses

    from selfserve.policy.router import _replica_view
    from selfserve.policy.snapshot import ReplicaView

    names = [f.name for f in dataclasses.fields(ReplicaView)]
    args = [f"v{k}" if k % 3 == 0 else k * 1.5 for k in range(len(names))]
    fast, slow = _replica_view(*args), ReplicaView(*args)
    assert type(fast) is ReplicaView
    assert [getattr(fast, n) for n in names] == [getattr(slow, n) for n in names] == args
    assert fast == slow and hash(fast) == hash(slow)
    with pytest.raises(dataclasses.FrozenInstanceError):
        fast.in_flight_requests = 9
