"""Policy specs and files: names, overrides, profiles, validation messages."""

from __future__ import annotations

import random

import pytest
from policy_helpers import snap

from selfserve.policy import PolicyConfigError, list_anchors, make_policy

PROFILE = """
kind: profile
name: my-mix
description: queue plus prefix
scorers:
  - type: queue
    weight: 2
  - type: prefix-cache
    weight: 3
    params: {lru_capacity_blocks: 1000}
picker: {type: softmax, params: {temperature: 0.5}}
"""


def test_anchor_list_holds_every_required_anchor():
    required = {
        "random", "round-robin", "least-loaded", "least-request", "power-of-two", "least-kv",
        "llm-d", "sglang-cache-aware", "dynamo-kv", "prodstack-prefixaware",
        "prodstack-session", "aibrix-prefix-cache", "ray-prefix-affinity",
        "litellm-least-busy", "litellm-latency", "lmetric",
    }  # fmt: skip
    assert required <= set(list_anchors())


def test_each_make_policy_call_returns_fresh_state():
    a, b = make_policy("round-robin"), make_policy("round-robin")
    s = snap({}, {})
    a.on_route(s, 0)
    assert a.choose(s, random.Random(0)) == 1 and b.choose(s, random.Random(0)) == 0


def test_profile_file_loads_and_scores(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text(PROFILE)
    policy = make_policy(str(path))
    assert policy.name == "my-mix"
    assert [ws.weight for ws in policy.scorers] == [2.0, 3.0]
    assert policy.scorers[1].scorer.lru_capacity_blocks == 1000
    s = snap({"num_requests_waiting": 9}, {"num_requests_waiting": 0})
    picks = [policy.choose(s, random.Random(k)) for k in range(200)]
    assert picks.count(1) > picks.count(0) > 0  # softmax: mostly the short queue


def test_anchor_document_and_colon_overrides_set_parameters():
    doc = {"kind": "anchor", "name": "sglang-cache-aware", "params": {"cache_threshold": 0.5}}
    assert make_policy(doc).cache_threshold == 0.5
    policy = make_policy("sglang-cache-aware:balance_abs_threshold=16,balance_rel_threshold=2")
    assert (policy.balance_abs_threshold, policy.balance_rel_threshold) == (16, 2.0)


@pytest.mark.parametrize(
    "spec, message",
    [
        (
            "no-such-policy",
            "unknown policy 'no-such-policy'; valid: a policy file path or one of random",
        ),
        ({"kind": "nope"}, "policy.kind: got 'nope'; valid: anchor, profile, expression"),
        ({"kind": "anchor", "name": "x"}, "policy.name: got 'x'; valid: random, round-robin"),
        (
            {"kind": "anchor", "name": "llm-d", "params": {"queue_wieght": 1}},
            "policy.params.queue_wieght: unknown parameter; valid: queue_weight",
        ),
        (
            {"kind": "anchor", "name": "llm-d", "params": {"queue_weight": "high"}},
            "policy.params.queue_weight: got 'high' (str); valid: float",
        ),
        (
            {"kind": "anchor", "name": "sglang-cache-aware", "params": {"cache_threshold": 1.5}},
            "policy.params.cache_threshold: got 1.5; valid: a number in [0, 1]",
        ),
        (
            {"kind": "anchor", "name": "llm-d", "extra": 1},
            "policy.extra: unknown key; valid: kind, name, params",
        ),
        ({"kind": "profile", "scorers": []}, "policy.scorers: got []; valid: a non-empty list"),
        (
            {"kind": "profile", "scorers": [{"type": "queue"}]},
            "policy.scorers[0].weight: missing; valid: a number >= 0",
        ),
        (
            {"kind": "profile", "scorers": [{"type": "queue", "weight": -1}]},
            "policy.scorers[0].weight: got -1; valid: a number >= 0",
        ),
        (
            {"kind": "profile", "scorers": [{"type": "qeue", "weight": 1}]},
            "policy.scorers[0].type: got 'qeue'; valid: queue, kv-cache-utilization",
        ),
        (
            {
                "kind": "profile",
                "scorers": [{"type": "load-aware", "weight": 1, "params": {"threshold": 0}}],
            },
            "policy.scorers[0].params.threshold: got 0; valid: an integer > 0",
        ),
        (
            {
                "kind": "profile",
                "scorers": [{"type": "queue", "weight": 1}],
                "picker": {"type": "best"},
            },
            "policy.picker.type: got 'best'; valid: max-score",
        ),
        ("power-of-two:load", "override 'load' is not key=value"),
        (42, "policy spec must be a name, a mapping or a path"),
    ],
)
def test_bad_specs_name_the_key_and_what_is_valid(spec, message):
    with pytest.raises(PolicyConfigError) as info:
        make_policy(spec)
    assert message in str(info.value)


def test_bad_yaml_file_names_the_file(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("kind: [unclosed")
    with pytest.raises(PolicyConfigError, match="bad.yaml: not valid YAML"):
        make_policy(str(path))
    with pytest.raises(PolicyConfigError, match="missing.yaml: policy file not found"):
        make_policy(str(tmp_path / "missing.yaml"))


def test_profile_filters_narrow_candidates_and_never_empty_them():
    doc = {
        "kind": "profile",
        "filters": [{"type": "prefix-affinity", "params": {"threshold": 0.5}}, "fresh-metrics"],
        "scorers": [{"type": "in-flight", "weight": 1}],
        "picker": "first-max",
    }
    policy = make_policy(doc)
    s = snap(
        {"prefix_hit_tokens": 0, "in_flight_requests": 0},
        {"prefix_hit_tokens": 48, "in_flight_requests": 9},
        {"prefix_hit_tokens": 64, "in_flight_requests": 5, "metrics_age_s": 3.0},
        prompt_tokens=64,
    )
    assert policy.choose(s, random.Random(0)) == 1  # r0 fails affinity, r2 is stale
    s = snap(
        {"metrics_age_s": 9.0, "in_flight_requests": 2}, {"metrics_age_s": 9.0}, prompt_tokens=64
    )
    assert policy.choose(s, random.Random(0)) == 1  # every filter would empty the set: skipped


def test_expression_documents_are_delegated_to_the_expression_language():
    policy = make_policy({"kind": "expression", "score": "in_flight_requests"})
    s = snap({"in_flight_requests": 4}, {"in_flight_requests": 1})
    assert policy.choose(s, random.Random(0)) == 1
