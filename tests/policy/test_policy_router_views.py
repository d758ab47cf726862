"""Snapshots built from a policy's declared `replica_fields`: every builtin anchor decides
exactly as it does on full snapshots, undeclared fields hold their defaults, and a replica's
view is reused only while its inputs are unchanged."""

from __future__ import annotations

import dataclasses
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from selfserve.policy import list_anchors, make_policy
from selfserve.policy.base import PolicyWrapper
from selfserve.policy.expression import EXPRESSION_ANCHORS, anchor_document
from selfserve.policy.router import Router, RoutingError
from selfserve.policy.snapshot import EngineMetrics, ReplicaInfo, ReplicaView, RequestView
from selfserve.policy.views import (
    DYNAMIC_FIELDS,
    OWN_FIELDS,
    STATIC_FIELDS,
    ReadPlan,
    ReplicaFieldsError,
    positional_constructor,
)

N_REPLICAS = 3


class _AllFields(PolicyWrapper):
    """Hides a policy's `replica_fields`, so the Router hands it full snapshots."""


def _infos() -> list[ReplicaInfo]:
    return [
        ReplicaInfo(i, f"r{i}", hardware="h200", kv_capacity_tokens=16 * 40)
        for i in range(N_REPLICAS)
    ]


# One op: (kind 0 route / 1 first token / 2 complete, dt, conv, prompt, out, media, healthy,
# scrape values)
_op = st.tuples(
    st.integers(0, 2),
    st.sampled_from([0.0, 0.0, 0.01, 0.3, 7.0, 40.0]),
    st.integers(0, 4),
    st.integers(1, 400),
    st.integers(0, 30),
    st.booleans(),
    st.lists(st.booleans(), min_size=N_REPLICAS, max_size=N_REPLICAS),
    st.one_of(st.none(), st.tuples(st.integers(0, 5), st.integers(0, 5), st.floats(0, 1))),
)


def _replay(policy, ops) -> tuple[list[int], list]:
    """Drive a Router with `ops`; return its choices and a final full snapshot."""
    router = Router(policy, _infos(), window_s=30.0)
    rng = random.Random(7)
    now = 0.0
    metrics: list = [None] * N_REPLICAS
    open_ids: list[str] = []
    choices = []
    for k, (kind, dt, conv, prompt, out, media, healthy, scrape) in enumerate(ops):
        now += dt
        if scrape is not None:
            metrics[k % N_REPLICAS] = EngineMetrics(*scrape, scraped_at_s=now - 0.02)
        if kind == 0 or not open_ids:
            hashes = tuple(conv * 1000 + j for j in range(prompt // 16))
            request = RequestView(
                f"q{k}", now, prompt, media_tokens=8 if media else 0,
                expected_output_tokens=out, block_hashes=hashes,
                media_hashes=(conv,) if media else (), session_id=f"s{conv}",
            )  # fmt: skip
            if not any(healthy):
                healthy = [True] * N_REPLICAS
            choices.append(router.route(request, now, metrics, rng, healthy))
            open_ids.append(request.request_id)
        elif kind == 1:
            router.on_first_token(open_ids[k % len(open_ids)], now)
        else:
            router.on_complete(open_ids.pop(k % len(open_ids)), now, out)
    probe = RequestView("probe", now, 64, block_hashes=(1000, 1001))
    return choices, list(router.snapshot(probe, now, metrics).replicas)


# Expression policies declare what their score and tie-breaks name, aggregates included.
EXPRESSIONS = [anchor_document(name) for name in EXPRESSION_ANCHORS] + [
    {
        "kind": "expression",
        "score": "cluster_max_in_flight_requests - in_flight_requests"
        " + recent_requests_per_s * 0.5 - min(metrics_age_s, 3) + recent_ttft_s",
        "direction": "max",
        "tie_break": ["most-prefix-hit", "least-queued-prefill", "random"],
    },
    {"kind": "expression", "score": "media_hit_tokens + cluster_mean_num_requests_running"},
    {"kind": "expression", "score": "in_flight_requests", "tie_break": ["most-prefix-hit"]},
]


@settings(max_examples=25, deadline=None)
@given(st.lists(_op, min_size=1, max_size=60))
def test_every_anchor_decides_the_same_on_declared_and_full_snapshots(ops):
    for spec in [*list_anchors(), *EXPRESSIONS]:
        declared = make_policy(spec)
        assert getattr(declared, "replica_fields", None) is not None, spec
        assert _replay(declared, ops) == _replay(_AllFields(make_policy(spec)), ops), spec


def test_expression_policy_declares_the_fields_its_score_and_tie_breaks_name():
    policy = make_policy(EXPRESSIONS[-3])
    assert policy.replica_fields == {
        "in_flight_requests", "recent_requests_per_s", "metrics_age_s", "recent_ttft_s",
        "prefix_hit_tokens", "queued_prefill_tokens",
    }  # fmt: skip


def test_views_are_reused_while_inputs_are_unchanged():
    snapshots = []

    class Spy:
        name = "spy"
        replica_fields = frozenset({"in_flight_requests"})

        def choose(self, snapshot, rng):
            snapshots.append(snapshot)
            return 0

        def on_route(self, snapshot, replica_index):
            return None

        def on_first_token(self, request_id, replica_index, now_s):
            return None

        def on_complete(self, request_id, replica_index, now_s, ok):
            return None

    router = Router(Spy(), _infos())
    rng = random.Random(0)
    metrics = [EngineMetrics(3, 4, 0.5, 0.0)] * N_REPLICAS
    for k in range(3):
        router.route(RequestView(f"q{k}", 1.0, 64, block_hashes=(5,)), 1.0, metrics, rng)
    first, second, third = (s.replicas for s in snapshots)
    assert [v.in_flight_requests for v in third] == [2, 0, 0]
    # replica 0 changed (a dispatch) between decisions; replicas 1 and 2 did not
    assert second[0] is not first[0] and second[1] is first[1] and third[2] is first[2]
    # groups with no declared field keep their defaults; static fields are filled
    defaults = ReplicaView(0, "r0")
    for f in DYNAMIC_FIELDS - OWN_FIELDS:
        assert getattr(third[0], f) == getattr(defaults, f), f
    assert (third[1].hardware, third[1].kv_capacity_tokens) == ("h200", 16 * 40)
    full = router.snapshot(RequestView("p", 1.0, 64, block_hashes=(5,)), 1.0, metrics)
    assert full.replicas[0].queued_prefill_tokens == 64 + 48 + 48  # later ones hit block 5
    assert full.replicas[0].num_requests_waiting == 4 and full.replicas[0].metrics_age_s == 1.0


def test_unknown_replica_field_is_rejected_naming_it():
    class Typo:
        name = "typo"
        replica_fields = frozenset({"in_flight"})

    with pytest.raises(ReplicaFieldsError, match="in_flight"):
        ReadPlan.of(Typo())


def test_plan_groups_follow_the_declared_fields():
    assert ReadPlan.of(object()) == ReadPlan()  # nothing declared: everything
    assert ReadPlan.of(make_policy("round-robin")).is_static
    plan = ReadPlan.of(make_policy("lmetric"))
    assert (plan.own, plan.prefix, plan.scraped, plan.rates) == (True, True, False, False)
    assert STATIC_FIELDS.isdisjoint(DYNAMIC_FIELDS)
    assert STATIC_FIELDS | DYNAMIC_FIELDS == {f.name for f in dataclasses.fields(ReplicaView)}


def test_positional_constructor_builds_the_same_frozen_record():
    make = positional_constructor(RequestView)
    args = ("a", 1.5, 10, 2, 3, (1, 2), 16, (9,), "s")
    fast, slow = make(*args), RequestView(*args)
    assert type(fast) is RequestView and fast == slow
    with pytest.raises(dataclasses.FrozenInstanceError):
        fast.prompt_tokens = 1


def test_a_router_that_keeps_only_what_the_policy_reads_refuses_to_be_inspected():
    lean = Router(make_policy("round-robin"), _infos(), keep_unread_state=False)
    full = Router(make_policy("round-robin"), _infos())
    rng_a, rng_b = random.Random(0), random.Random(0)
    probe = RequestView("p", 1.0, 64, block_hashes=(1000,))
    for k in range(2):
        request = RequestView(f"q{k}", 1.0, 64, block_hashes=(1000, 1001))
        assert lean.route(request, 1.0, [None] * 3, rng_a) == full.route(
            request, 1.0, [None] * 3, rng_b
        )
    assert full.prefix_hit_tokens(probe) == [16, 16, 0]
    with pytest.raises(RoutingError, match="keep_unread_state"):
        lean.snapshot(probe, 1.0, [None] * 3)
    with pytest.raises(RoutingError, match="keep_unread_state"):
        lean.prefix_hit_tokens(probe)
    with pytest.raises(RoutingError, match="lmetric"):
        lean.policy = make_policy("lmetric")  # would read hits the Router never indexed
    lean.policy = make_policy("dynamo-kv")  # reads neither: fine


def test_a_lean_router_keeps_its_indexes_for_a_policy_that_reads_them():
    lean = Router(make_policy("lmetric"), _infos(), keep_unread_state=False)
    lean.route(RequestView("a", 0.0, 64, block_hashes=(7, 8)), 0.0, [None] * 3, random.Random(0))
    hits = lean.prefix_hit_tokens(RequestView("p", 0.0, 64, block_hashes=(7, 8)))
    assert sorted(hits) == [0, 0, 32]
