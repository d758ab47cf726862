"""Compile a parsed routing expression into a tree of Python closures, once.

The simulator scores every replica at every arrival (tens of thousands of evaluations per
second), so evaluation must not walk the AST or look names up in dicts per replica: each
node becomes a closure `f(replica, request, aggregates) -> float` built at compile time,
features become `operator.attrgetter` calls, constant sub-trees are folded, and cluster
aggregates are computed once per decision into a list the closures index.

Safety: division by |x| < 1e-12 gives 0, `log1p` clamps its argument at 0, and the caller
(`CompiledExpression.score`) maps NaN and any arithmetic exception to the worst score, so
evaluation never raises while routing and never yields NaN.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from selfserve.policy.expression_syntax import (
    AGGREGATE_KINDS,
    CLUSTER_FEATURES,
    REPLICA_FEATURES,
    REQUEST_FEATURES,
    Binary,
    Call,
    Cond,
    Expr,
    ExpressionError,
    Feature,
    Num,
    Param,
    Unary,
    children,
)
from selfserve.policy.snapshot import ReplicaView, RequestView

Evaluator = Callable[[ReplicaView, RequestView, list], float]

_DIV_EPSILON = 1e-12
# Scores are clamped into this range so that later arithmetic (tie detection, weighting in
# reports) never meets inf or NaN.
SCORE_LIMIT = 1e30


def _safe_div(a: float, b: float) -> float:
    if -_DIV_EPSILON < b < _DIV_EPSILON:
        return 0.0
    return a / b


def _safe_log1p(x: float) -> float:
    if x <= 0.0:
        return 0.0
    if x == math.inf:
        return math.inf
    return math.log1p(x)


_BINARY: dict[str, Callable[[float, float], float]] = {
    "+": operator.add,
    "-": operator.sub,
    "*": operator.mul,
    "/": _safe_div,
    "<": lambda a, b: 1.0 if a < b else 0.0,
    "<=": lambda a, b: 1.0 if a <= b else 0.0,
    ">": lambda a, b: 1.0 if a > b else 0.0,
    ">=": lambda a, b: 1.0 if a >= b else 0.0,
    "==": lambda a, b: 1.0 if a == b else 0.0,
    "!=": lambda a, b: 1.0 if a != b else 0.0,
    "and": lambda a, b: 1.0 if (a and b) else 0.0,
    "or": lambda a, b: 1.0 if (a or b) else 0.0,
}


def _aggregate_spec(name: str) -> tuple[str, str] | None:
    """`cluster_max_in_flight_requests` -> ("max", "in_flight_requests")."""
    if name == "num_replicas":
        return ("count", "index")
    for kind in AGGREGATE_KINDS:
        prefix = f"cluster_{kind}_"
        if name.startswith(prefix):
            return (kind, name[len(prefix) :])
    return None


@dataclass(slots=True)
class CompiledExpression:
    """A ready-to-run scorer: `score(replicas, request) -> list[float]`."""

    evaluate: Evaluator
    aggregates: tuple[tuple[str, Callable[[ReplicaView], float]], ...]
    worst: float  # the value a failed evaluation gets (worst under the policy's direction)

    def score(self, replicas: Sequence[ReplicaView], request: RequestView) -> list[float]:
        values = self._aggregate_values(replicas)
        evaluate = self.evaluate
        worst = self.worst
        scores: list[float] = []
        append = scores.append
        for replica in replicas:
            try:
                value = evaluate(replica, request, values)
            except (ArithmeticError, ValueError):
                value = worst
            if value != value:  # NaN
                value = worst
            elif value > SCORE_LIMIT:
                value = SCORE_LIMIT
            elif value < -SCORE_LIMIT:
                value = -SCORE_LIMIT
            append(float(value))
        return scores

    def _aggregate_values(self, replicas: Sequence[ReplicaView]) -> list[float]:
        values: list[float] = []
        for kind, getter in self.aggregates:
            if kind == "count":
                values.append(float(len(replicas)))
                continue
            column = [float(getter(replica)) for replica in replicas] or [0.0]
            if kind == "min":
                values.append(min(column))
            elif kind == "max":
                values.append(max(column))
            else:
                values.append(sum(column) / len(column))
        return values


def compile_expression(
    tree: Expr, params: Mapping[str, float] | None = None, *, worst: float = SCORE_LIMIT
) -> CompiledExpression:
    """Build the closure tree for `tree` with `params` bound as constants."""
    params = dict(params or {})
    aggregate_slots: dict[str, int] = {}
    aggregates: list[tuple[str, Callable[[ReplicaView], float]]] = []

    def constant_of(node: Expr) -> float | None:
        if isinstance(node, Num):
            return float(node.value)
        if isinstance(node, Param):
            if node.name not in params:
                raise ExpressionError(f"param {node.name!r} has no value")
            return float(params[node.name])
        return None

    def build(node: Expr) -> tuple[Evaluator, float | None]:
        """(closure, constant value if the sub-tree is constant)."""
        const = constant_of(node)
        if const is not None:
            return (lambda r, q, a, c=const: c), const
        if isinstance(node, Feature):
            name = node.name
            if name in REPLICA_FEATURES:
                getter = operator.attrgetter(name)
                return (lambda r, q, a, g=getter: g(r)), None
            if name in REQUEST_FEATURES:
                getter = operator.attrgetter(name)
                return (lambda r, q, a, g=getter: g(q)), None
            if name in CLUSTER_FEATURES:
                if name not in aggregate_slots:
                    kind, column = _aggregate_spec(name)  # type: ignore[misc]
                    aggregate_slots[name] = len(aggregates)
                    aggregates.append((kind, operator.attrgetter(column)))
                slot = aggregate_slots[name]
                return (lambda r, q, a, s=slot: a[s]), None
            raise ExpressionError(f"unknown feature {name!r}")
        if isinstance(node, Unary):
            inner, inner_const = build(node.operand)
            if node.op == "-":
                if inner_const is not None:
                    return _constant(-inner_const)
                return (lambda r, q, a, f=inner: -f(r, q, a)), None
            if inner_const is not None:
                return _constant(0.0 if inner_const else 1.0)
            return (lambda r, q, a, f=inner: 0.0 if f(r, q, a) else 1.0), None
        if isinstance(node, Binary):
            return _build_binary(node, build)
        if isinstance(node, Call):
            return _build_call(node, build)
        if isinstance(node, Cond):
            test, test_const = build(node.test)
            then, _ = build(node.then)
            otherwise, _ = build(node.otherwise)
            if test_const is not None:
                return (then, None) if test_const else (otherwise, None)
            return (
                lambda r, q, a, t=test, x=then, y=otherwise: (
                    x(r, q, a) if t(r, q, a) else y(r, q, a)
                )
            ), None
        raise ExpressionError(f"not an expression node: {node!r}")

    evaluate, _ = build(tree)
    return CompiledExpression(evaluate=evaluate, aggregates=tuple(aggregates), worst=worst)


def _constant(value: float) -> tuple[Evaluator, float]:
    return (lambda r, q, a, c=value: c), value


def _build_binary(node: Binary, build) -> tuple[Evaluator, float | None]:
    left, left_const = build(node.left)
    right, right_const = build(node.right)
    fn = _BINARY[node.op]
    if left_const is not None and right_const is not None:
        try:
            return _constant(float(fn(left_const, right_const)))
        except (ArithmeticError, ValueError):
            pass  # leave it to run time, where the caller maps the failure to the worst score
    # The common shapes get dedicated closures (one call fewer per node and no dispatch).
    op = node.op
    if op == "+":
        if right_const is not None:
            return (lambda r, q, a, f=left, c=right_const: f(r, q, a) + c), None
        return (lambda r, q, a, f=left, g=right: f(r, q, a) + g(r, q, a)), None
    if op == "-":
        return (lambda r, q, a, f=left, g=right: f(r, q, a) - g(r, q, a)), None
    if op == "*":
        if left_const is not None:
            return (lambda r, q, a, c=left_const, g=right: c * g(r, q, a)), None
        if right_const is not None:
            return (lambda r, q, a, f=left, c=right_const: f(r, q, a) * c), None
        return (lambda r, q, a, f=left, g=right: f(r, q, a) * g(r, q, a)), None
    if op == "/":
        if right_const is not None and abs(right_const) >= _DIV_EPSILON:
            inverse = 1.0 / right_const
            return (lambda r, q, a, f=left, c=inverse: f(r, q, a) * c), None
        return (lambda r, q, a, f=left, g=right: _safe_div(f(r, q, a), g(r, q, a))), None
    if op == "and":
        return (lambda r, q, a, f=left, g=right: 1.0 if (f(r, q, a) and g(r, q, a)) else 0.0), None
    if op == "or":
        return (lambda r, q, a, f=left, g=right: 1.0 if (f(r, q, a) or g(r, q, a)) else 0.0), None
    return (lambda r, q, a, f=left, g=right, h=fn: h(f(r, q, a), g(r, q, a))), None


def _build_call(node: Call, build) -> tuple[Evaluator, float | None]:
    built = [build(arg) for arg in node.args]
    funcs = [f for f, _ in built]
    consts = [c for _, c in built]
    if all(c is not None for c in consts):
        values = [float(c) for c in consts]  # type: ignore[arg-type]
        if node.func == "min":
            return _constant(min(values))
        if node.func == "max":
            return _constant(max(values))
        if node.func == "abs":
            return _constant(abs(values[0]))
        return _constant(_safe_log1p(values[0]))
    if node.func in ("min", "max"):
        pick = min if node.func == "min" else max
        if len(funcs) == 2:
            f, g = funcs
            return (lambda r, q, a, f=f, g=g, p=pick: p(f(r, q, a), g(r, q, a))), None
        fs = tuple(funcs)
        return (lambda r, q, a, fs=fs, p=pick: p([f(r, q, a) for f in fs])), None
    (f,) = funcs
    if node.func == "abs":
        return (lambda r, q, a, f=f: abs(f(r, q, a))), None
    return (lambda r, q, a, f=f: _safe_log1p(f(r, q, a))), None


def evaluate_once(
    tree: Expr,
    replicas: Sequence[ReplicaView],
    request: RequestView,
    params: Mapping[str, float] | None = None,
) -> list[float]:
    """Score `replicas` once (a convenience for tests and explanations; not the hot path)."""
    return compile_expression(tree, params).score(replicas, request)


__all__ = ["CompiledExpression", "compile_expression", "evaluate_once", "SCORE_LIMIT", "children"]
