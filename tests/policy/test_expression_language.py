"""The routing expression language: parsing against the whitelist, limits, safe evaluation,
round-trips through the pretty-printer, and the policy's choice and tie-breaks."""

from __future__ import annotations

import math
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from selfserve.policy.expression import (
    EXPRESSION_ANCHORS,
    PolicyDocumentError,
    anchor_document,
    build_expression_policy,
)
from selfserve.policy.expression_eval import SCORE_LIMIT, evaluate_once
from selfserve.policy.expression_syntax import (
    FEATURES,
    MAX_DEPTH,
    MAX_NODES,
    MAX_TEXT_CHARS,
    REPLICA_FEATURES,
    REQUEST_FEATURES,
    Binary,
    Call,
    Cond,
    ExpressionError,
    Feature,
    Num,
    Unary,
    parse_expression,
    to_text,
)
from selfserve.policy.snapshot import ClusterSnapshot, ReplicaView, RequestView


def replica(index: int, **fields) -> ReplicaView:
    return ReplicaView(index=index, name=f"r{index}", **fields)


def snapshot(*replicas: ReplicaView, prompt_tokens: int = 1000) -> ClusterSnapshot:
    return ClusterSnapshot(
        now_s=0.0, request=RequestView("q", 0.0, prompt_tokens), replicas=tuple(replicas)
    )


# ------------------------------------------------------------------ parsing


def test_precedence_follows_arithmetic_rules():
    tree = parse_expression("1 + 2 * in_flight_requests - 3")
    assert tree == Binary(
        "-", Binary("+", Num(1), Binary("*", Num(2), Feature("in_flight_requests"))), Num(3)
    )


def test_conditional_comparison_and_functions_parse():
    tree = parse_expression("if kv_cache_usage > 0.9 then 1e6 else max(in_flight_requests, 2)")
    assert isinstance(tree, Cond)
    assert tree.test == Binary(">", Feature("kv_cache_usage"), Num(0.9))
    assert tree.otherwise == Call("max", (Feature("in_flight_requests"), Num(2)))


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("__import__('os').system('rm -rf /')", "unexpected character"),
        ("open", "unknown name 'open'"),
        ("in_flight_requests.__class__", "unexpected character '.'"),
        ("exec(1)", "unknown name 'exec'"),
        ("1 +", "expected a number"),
        ("(1 + 2", "expected ')'"),
        ("min(1)", "min() takes at least 2"),
        ("log1p(1, 2)", "log1p() takes 1"),
        ("1 < 2 < 3", "cannot be chained"),
        ("1e400", "out of range"),
        ("if 1 then 2", "expected 'else'"),
        ("arrival_s", "unknown name 'arrival_s'"),
        ("now_s * 2", "unknown name 'now_s'"),
        ("2 ** 3", "expected a number"),
        ("in_flight_requests; 1", "unexpected character ';'"),
        ("", "expected a number"),
        ("１", "unexpected character"),
    ],
)
def test_hostile_or_malformed_text_is_rejected_with_position(text, fragment):
    with pytest.raises(ExpressionError) as info:
        parse_expression(text)
    assert fragment in str(info.value)


def test_unknown_name_error_lists_the_valid_features():
    with pytest.raises(ExpressionError) as info:
        parse_expression("queue_len")
    assert "in_flight_requests" in str(info.value) and "prompt_tokens" in str(info.value)


def test_size_limits_reject_long_wide_and_deep_expressions():
    with pytest.raises(ExpressionError, match="characters"):
        parse_expression("1" + " " * MAX_TEXT_CHARS)
    with pytest.raises(ExpressionError, match="nodes"):
        parse_expression(" + ".join(["in_flight_requests"] * (MAX_NODES + 1)))
    with pytest.raises(ExpressionError, match="deep"):
        parse_expression("(" * (MAX_DEPTH + 2) + "1" + ")" * (MAX_DEPTH + 2))
    with pytest.raises(ExpressionError, match="deep"):
        parse_expression("-" * (MAX_DEPTH + 2) + "in_flight_requests")


def test_params_are_names_bound_to_numbers_and_cannot_shadow_features():
    tree = parse_expression("w * in_flight_requests", {"w": 2.5})
    scores = evaluate_once(
        tree, [replica(0, in_flight_requests=4)], RequestView("q", 0, 1), {"w": 2.5}
    )
    assert scores == [10.0]
    with pytest.raises(ExpressionError, match="collides"):
        parse_expression("1", {"in_flight_requests": 1.0})
    with pytest.raises(ExpressionError, match="finite"):
        parse_expression("w", {"w": float("nan")})


# ------------------------------------------------------------------ evaluation safety


def test_division_by_zero_and_log_of_negative_do_not_raise():
    request = RequestView("q", 0.0, 0)
    tree = parse_expression("prefix_hit_tokens / total_prompt_tokens + log1p(-5) + 1 / 0")
    assert evaluate_once(tree, [replica(0, prefix_hit_tokens=7)], request) == [0.0]


def test_overflow_is_clamped_never_nan_or_raising():
    request = RequestView("q", 0.0, 10**6)
    big = "prompt_tokens"
    for _ in range(6):  # a balanced product of 64 factors: a 384-digit integer
        big = f"({big}) * ({big})"
    tree = parse_expression(f"{big} * 1.5")
    assert evaluate_once(tree, [replica(0)], request) == [SCORE_LIMIT]
    huge = "(" + " * ".join(["1e12"] * 10) + ")"  # 1e120
    infinite = f"{huge} * {huge} * {huge} * prompt_tokens"  # folds to inf
    nan_tree = parse_expression(f"({infinite}) - ({infinite})")
    # inf - inf is NaN: it must become the worst score, not poison the comparison
    assert evaluate_once(nan_tree, [replica(0)], request) == [SCORE_LIMIT]


def test_cluster_aggregates_normalise_over_candidates():
    tree = parse_expression(
        "(in_flight_requests - cluster_min_in_flight_requests) / "
        "(cluster_max_in_flight_requests - cluster_min_in_flight_requests) + num_replicas"
    )
    replicas = [replica(0, in_flight_requests=2), replica(1, in_flight_requests=6)]
    assert evaluate_once(tree, replicas, RequestView("q", 0, 1)) == [2.0, 3.0]


# ------------------------------------------------------------------ property tests

_SAFE_CONSTANTS = st.sampled_from([0.0, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, -1.0, -2.0, 1024.0])
_LEAF_FEATURES = sorted(REPLICA_FEATURES) + sorted(REQUEST_FEATURES)


def _trees():
    leaves = st.one_of(_SAFE_CONSTANTS.map(Num), st.sampled_from(_LEAF_FEATURES).map(Feature))

    def extend(children):
        ops = st.sampled_from(["+", "-", "*", "/", "<", "<=", ">", ">=", "==", "!=", "and", "or"])
        non_num = children.filter(lambda node: not isinstance(node, Num))
        return st.one_of(
            st.builds(Binary, ops, children, children),
            st.builds(Unary, st.sampled_from(["-", "not"]), non_num),
            st.builds(
                lambda f, a, b: Call(f, (a, b)), st.sampled_from(["min", "max"]), children, children
            ),
            st.builds(lambda f, a: Call(f, (a,)), st.sampled_from(["log1p", "abs"]), children),
            st.builds(Cond, children, children, children),
        )

    return st.recursive(leaves, extend, max_leaves=12)


def _reference(node, view: ReplicaView, request: RequestView) -> float:
    """A direct tree-walking interpreter: the semantics the compiler must match."""
    ev = lambda n: _reference(n, view, request)  # noqa: E731
    if isinstance(node, Num):
        return node.value
    if isinstance(node, Feature):
        source = view if node.name in REPLICA_FEATURES else request
        return getattr(source, node.name)
    if isinstance(node, Unary):
        value = ev(node.operand)
        return -value if node.op == "-" else (0.0 if value else 1.0)
    if isinstance(node, Call):
        values = [ev(arg) for arg in node.args]
        if node.func == "min":
            return min(values)
        if node.func == "max":
            return max(values)
        if node.func == "abs":
            return abs(values[0])
        return math.log1p(values[0]) if values[0] > 0 else 0.0
    if isinstance(node, Cond):
        return ev(node.then) if ev(node.test) else ev(node.otherwise)
    a, b = ev(node.left), ev(node.right)
    match node.op:
        case "+":
            return a + b
        case "-":
            return a - b
        case "*":
            return a * b
        case "/":
            return 0.0 if abs(b) < 1e-12 else a / b
        case "and":
            return 1.0 if (a and b) else 0.0
        case "or":
            return 1.0 if (a or b) else 0.0
    return (
        1.0
        if {"<": a < b, "<=": a <= b, ">": a > b, ">=": a >= b, "==": a == b, "!=": a != b}[node.op]
        else 0.0
    )


@settings(max_examples=300, deadline=None)
@given(_trees())
def test_pretty_printer_round_trips_through_the_parser(tree):
    assert parse_expression(to_text(tree)) == tree


@settings(max_examples=300, deadline=None)
@given(
    _trees(),
    st.integers(0, 64),
    st.integers(0, 5000),
    st.floats(0, 1),
    st.integers(0, 8000),
)
def test_compiled_closures_match_a_reference_interpreter(tree, in_flight, queued, kv, prompt):
    view = replica(
        1,
        in_flight_requests=in_flight,
        queued_prefill_tokens=queued,
        kv_cache_usage=kv,
        prefix_hit_tokens=queued // 2,
    )
    request = RequestView("q", 0.0, prompt, expected_output_tokens=in_flight * 3)
    try:
        expected = float(_reference(tree, view, request))
    except (ArithmeticError, ValueError):
        expected = SCORE_LIMIT
    if math.isnan(expected):
        expected = SCORE_LIMIT
    expected = max(-SCORE_LIMIT, min(SCORE_LIMIT, expected))
    (got,) = evaluate_once(tree, [view], request)
    assert math.isclose(got, expected, rel_tol=1e-9, abs_tol=1e-9)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=80))
def test_arbitrary_text_either_parses_or_raises_expression_error(text):
    try:
        tree = parse_expression(text)
    except ExpressionError:
        return
    (value,) = evaluate_once(tree, [replica(0)], RequestView("q", 0.0, 10))
    assert math.isfinite(value)


# ------------------------------------------------------------------ the policy


def test_lowest_score_wins_by_default_and_highest_when_declared():
    replicas = (
        replica(0, in_flight_requests=5),
        replica(1, in_flight_requests=1),
        replica(2, in_flight_requests=3),
    )
    rng = random.Random(0)
    low = build_expression_policy({"kind": "expression", "score": "in_flight_requests"})
    high = build_expression_policy({"score": "in_flight_requests", "direction": "max"})
    assert low.choose(snapshot(*replicas), rng) == 1
    assert high.choose(snapshot(*replicas), rng) == 0


def test_tie_breaks_apply_in_declared_order():
    replicas = (
        replica(0, in_flight_requests=4, kv_cache_usage=0.5),
        replica(1, in_flight_requests=2, kv_cache_usage=0.5),
        replica(2, in_flight_requests=2, kv_cache_usage=0.5),
    )
    rng = random.Random(0)
    by_index = build_expression_policy({"score": "kv_cache_usage", "tie_break": ["lowest-index"]})
    assert by_index.choose(snapshot(*replicas), rng) == 0
    by_load = build_expression_policy(
        {"score": "kv_cache_usage", "tie_break": ["least-in-flight", "lowest-index"]}
    )
    assert by_load.choose(snapshot(*replicas), rng) == 1
    randomly = build_expression_policy({"score": "kv_cache_usage", "tie_break": ["random"]})
    picks = {randomly.choose(snapshot(*replicas), random.Random(seed)) for seed in range(40)}
    assert picks == {0, 1, 2}
    again = [randomly.choose(snapshot(*replicas), random.Random(7)) for _ in range(3)]
    assert len(set(again)) == 1  # same RNG state, same choice


def test_unhealthy_replicas_are_skipped_unless_none_is_healthy():
    policy = build_expression_policy({"score": "in_flight_requests"})
    sick = (replica(0, in_flight_requests=0, is_healthy=False), replica(1, in_flight_requests=9))
    assert policy.choose(snapshot(*sick), random.Random(0)) == 1
    all_sick = (
        replica(0, in_flight_requests=3, is_healthy=False),
        replica(1, in_flight_requests=1, is_healthy=False),
    )
    assert policy.choose(snapshot(*all_sick), random.Random(0)) == 1


@pytest.mark.parametrize(
    "doc, fragment",
    [
        ({"kind": "expression"}, "score: missing"),
        ({"score": "1", "direction": "up"}, "direction"),
        ({"score": "1", "tie_break": ["coin"]}, "tie_break: 'coin'"),
        ({"score": "1", "weights": {}}, "unknown key(s) weights"),
        ({"score": "foo"}, "score: unknown name 'foo'"),
        ({"score": 3}, "score: must be a string"),
        ({"kind": "profile", "score": "1"}, "kind"),
    ],
)
def test_bad_policy_documents_name_the_key(doc, fragment):
    with pytest.raises(PolicyDocumentError) as info:
        build_expression_policy(doc)
    assert fragment in str(info.value)


def test_policy_document_round_trips():
    policy = build_expression_policy(anchor_document("llm-d"))
    again = build_expression_policy(policy.to_document())
    assert again.tree == policy.tree and again.params == policy.params
    assert again.direction == "max"


def test_anchor_expressions_make_the_documented_choices():
    rng = random.Random(0)
    # least-request: fewest in-flight, first index on ties
    lr = build_expression_policy(anchor_document("least-request"))
    assert (
        lr.choose(
            snapshot(
                replica(0, in_flight_requests=2),
                replica(1, in_flight_requests=1),
                replica(2, in_flight_requests=1),
            ),
            rng,
        )
        == 1
    )
    # llm-d: prefix weight 3 beats queue 2 + kv 2 when the hit is full and the queue gap small
    llmd = build_expression_policy(anchor_document("llm-d"))
    cached = replica(0, num_requests_waiting=1, kv_cache_usage=0.5, prefix_hit_tokens=1000)
    empty = replica(1, num_requests_waiting=0, kv_cache_usage=0.0, prefix_hit_tokens=0)
    # cached: 2*0 + 2*0.5 + 3*1 = 4; empty: 2*1 + 2*1 + 0 = 4 -> tie; make kv a bit lower
    cached = replica(0, num_requests_waiting=1, kv_cache_usage=0.4, prefix_hit_tokens=1000)
    assert llmd.choose(snapshot(cached, empty), rng) == 0
    # lmetric: (queued + uncached) x (in_flight + 1)
    lm = build_expression_policy(anchor_document("lmetric"))
    a = replica(0, queued_prefill_tokens=0, prefix_hit_tokens=0, in_flight_requests=3)  # 1000 * 4
    b = replica(
        1, queued_prefill_tokens=2000, prefix_hit_tokens=900, in_flight_requests=1
    )  # 2100 * 2
    assert lm.choose(snapshot(a, b), rng) == 0
    assert set(EXPRESSION_ANCHORS) >= {"least-request", "least-kv", "llm-d", "lmetric"}


def test_every_feature_name_is_accepted():
    for name in FEATURES:
        tree = parse_expression(name)
        (value,) = evaluate_once(tree, [replica(0)], RequestView("q", 0.0, 5))
        assert math.isfinite(value)
