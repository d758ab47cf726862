"""Simplification keeps every score (in rational arithmetic, up to the float rounding of
folded constants) and, on exactly representable inputs, every score bit for bit and every
choice."""

from __future__ import annotations

import math
import random
from fractions import Fraction

from hypothesis import given, settings
from hypothesis import strategies as st

from selfserve.policy.expression import ExpressionPolicy
from selfserve.policy.expression_eval import evaluate_once
from selfserve.policy.expression_simplify import is_nonnegative, simplify
from selfserve.policy.expression_syntax import (
    Binary,
    Call,
    Cond,
    Expr,
    Feature,
    Num,
    Unary,
    count_nodes,
    features_used,
    parse_expression,
    to_text,
)
from selfserve.policy.snapshot import ClusterSnapshot, ReplicaView, RequestView

FEATURES = (
    "in_flight_requests",
    "queued_prefill_tokens",
    "prefix_hit_tokens",
    "total_prompt_tokens",
    "num_requests_waiting",
)
CONSTANTS = (0.0, 1.0, -1.0, 2.0, 0.5, 3.0, -0.25)


def _trees(ops: tuple[str, ...], funcs: tuple[str, ...]) -> st.SearchStrategy[Expr]:
    leaves = st.one_of(st.sampled_from(FEATURES).map(Feature), st.sampled_from(CONSTANTS).map(Num))

    def extend(inner: st.SearchStrategy[Expr]) -> st.SearchStrategy[Expr]:
        return st.one_of(
            st.tuples(st.sampled_from(ops), inner, inner).map(lambda t: Binary(*t)),
            st.tuples(st.sampled_from(funcs), st.lists(inner, min_size=1, max_size=3)).map(
                lambda t: (
                    Call(t[0], tuple(t[1]) if t[0] in ("min", "max") else (t[1][0],))
                    if t[0] in ("abs", "log1p") or len(t[1]) >= 2
                    else t[1][0]
                )
            ),
            inner.map(lambda x: Unary("-", x)),
            st.tuples(inner, inner, inner).map(lambda t: Cond(Binary(">", t[0], t[1]), t[1], t[2])),
        )

    return st.recursive(leaves, extend, max_leaves=10)


ALL_OPS = ("+", "-", "*", "/", "<", ">=", "==", "and", "or")
# Without division and log1p, and with small integer features, float arithmetic is exact
# (every value is a dyadic rational far below 2**53), so scores must match bit for bit.
EXACT_OPS = ("+", "-", "*", "<", ">=")


def _exact(node: Expr, env: dict[str, Fraction]) -> Fraction:
    """The language's semantics in rational arithmetic (log1p via float, deterministic).

    A sub-tree without features is folded in floats, as the compiler folds it.
    """
    if not features_used(node):
        return Fraction(evaluate_once(node, [ReplicaView(0, "r")], RequestView("q", 0.0, 0))[0])
    if isinstance(node, Num):
        return Fraction(node.value)
    if isinstance(node, Feature):
        return env[node.name]
    if isinstance(node, Unary):
        value = _exact(node.operand, env)
        return -value if node.op == "-" else Fraction(0 if value else 1)
    if isinstance(node, Binary):
        a, b = _exact(node.left, env), _exact(node.right, env)
        table = {
            "+": lambda: a + b,
            "-": lambda: a - b,
            "*": lambda: a * b,
            "/": lambda: a / b if abs(b) >= Fraction(1, 10**12) else Fraction(0),
            "<": lambda: Fraction(a < b),
            ">=": lambda: Fraction(a >= b),
            ">": lambda: Fraction(a > b),
            "==": lambda: Fraction(a == b),
            "and": lambda: Fraction(bool(a) and bool(b)),
            "or": lambda: Fraction(bool(a) or bool(b)),
        }
        return table[node.op]()
    if isinstance(node, Call):
        values = [_exact(arg, env) for arg in node.args]
        if node.func == "min":
            return min(values)
        if node.func == "max":
            return max(values)
        if node.func == "abs":
            return abs(values[0])
        return Fraction(math.log1p(float(values[0]))) if values[0] > 0 else Fraction(0)
    if isinstance(node, Cond):
        return _exact(node.then if _exact(node.test, env) else node.otherwise, env)
    raise TypeError(node)


envs = st.fixed_dictionaries({name: st.integers(0, 60).map(Fraction) for name in FEATURES})


@settings(max_examples=300, deadline=None)
@given(_trees(ALL_OPS, ("min", "max", "abs", "log1p")), st.lists(envs, min_size=1, max_size=4))
def test_simplified_trees_have_the_same_value(tree, environments):
    simpler = simplify(tree)
    assert count_nodes(simpler) <= count_nodes(tree)
    for env in environments:
        mine, theirs = float(_exact(simpler, env)), float(_exact(tree, env))
        # equal but for the rounding of constants folded or collected in floats
        assert math.isclose(mine, theirs, rel_tol=1e-12, abs_tol=1e-9), (
            to_text(tree),
            to_text(simpler),
        )
    # the printed form parses back to the simplified tree
    assert parse_expression(to_text(simpler)) == simpler or isinstance(simpler, Num)


def _snapshot(rng_values: list[dict[str, int]]) -> ClusterSnapshot:
    request = RequestView("r", 0.0, rng_values[0]["total_prompt_tokens"])
    replicas = tuple(
        ReplicaView(
            index=i,
            name=f"r{i}",
            in_flight_requests=v["in_flight_requests"],
            queued_prefill_tokens=v["queued_prefill_tokens"],
            prefix_hit_tokens=v["prefix_hit_tokens"],
            num_requests_waiting=v["num_requests_waiting"],
        )
        for i, v in enumerate(rng_values)
    )
    return ClusterSnapshot(0.0, request, replicas)


replica_values = st.fixed_dictionaries({name: st.integers(0, 40) for name in FEATURES})


@settings(max_examples=300, deadline=None)
@given(
    _trees(EXACT_OPS, ("min", "max", "abs")),
    st.lists(replica_values, min_size=2, max_size=5),
    st.integers(0, 3),
)
def test_simplified_policies_give_the_same_scores_and_choices(tree, values, seed):
    original = ExpressionPolicy(tree=tree)
    simpler = ExpressionPolicy(tree=simplify(tree))
    snapshot = _snapshot(values)
    assert original.compiled.score(snapshot.replicas, snapshot.request) == simpler.compiled.score(
        snapshot.replicas, snapshot.request
    )
    assert original.choose(snapshot, random.Random(seed)) == simpler.choose(
        snapshot, random.Random(seed)
    )


def _simplified(text: str) -> str:
    return to_text(simplify(parse_expression(text)))


def test_the_printed_demo_winner_reads_as_what_it_means():
    text = "max(total_prompt_tokens - (total_prompt_tokens - prefix_hit_tokens), 0)"
    assert _simplified(text) == "prefix_hit_tokens"


def test_each_rule_on_its_own():
    assert _simplified("in_flight_requests + 0 - 0") == "in_flight_requests"
    assert _simplified("1 * in_flight_requests / 1") == "in_flight_requests"
    assert _simplified("0 * queued_prefill_tokens + kv_cache_usage") == "kv_cache_usage"
    assert _simplified("in_flight_requests - in_flight_requests") == "0"
    assert _simplified("2 * index + 3 * index") == "5 * index"
    assert _simplified("min(index, min(index, 3), 5)") == "min(index, 3)"
    assert _simplified("max(index, max(kv_cache_usage, index))") == "max(index, kv_cache_usage)"
    assert _simplified("if 2 > 1 then index else kv_cache_usage") == "index"
    assert _simplified("if index > 2 then kv_cache_usage else kv_cache_usage") == "kv_cache_usage"
    assert _simplified("-(-index)") == "index"
    assert _simplified("abs(kv_cache_usage) + min(index, -1)") == "kv_cache_usage - 1"
    assert _simplified("3 * 4 + index / 0") == "12"
    # nothing to do: the author's form stays
    lmetric = (
        "(queued_prefill_tokens + max(total_prompt_tokens - prefix_hit_tokens, 0))"
        " * (in_flight_requests + 1)"
    )
    assert _simplified(lmetric) == lmetric
    # a possibly negative argument keeps max(..., 0)
    assert _simplified("max(index - 3, 0)") == "max(index - 3, 0)"


def test_only_provably_nonnegative_expressions_count_as_such():
    assert is_nonnegative(parse_expression("log1p(index) + kv_cache_usage * 2"))
    assert is_nonnegative(parse_expression("max(index - 3, 0)"))
    assert not is_nonnegative(parse_expression("index - 3"))
    assert not is_nonnegative(parse_expression("-index"))
