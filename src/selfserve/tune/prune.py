"""Removing the branches a winner never takes on its own training traffic.

Structural search leaves `if A then B else C` nodes whose test never changes on the trace
(Azure code: branches for prompts over 41.6k tokens on a trace whose longest prompt is
~8k), and an algebraic simplifier cannot know that. Here the winner is replayed on the
training window at the rates that bracket its capacity while every `if` test is evaluated
on every replica it scores; a test that took one value throughout is replaced by the branch
it took, and the result is simplified again. The pruned heuristic is then replayed at the
same rates and kept only if it routes every request to the same replica — so its training
evidence is the winner's — and what it would do on traffic unlike the training window is
said in the policy file's note, not hidden.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from selfserve.policy.base import PolicyWrapper
from selfserve.policy.expression import ExpressionPolicy, build_expression_policy
from selfserve.policy.expression_eval import CompiledExpression, compile_expression
from selfserve.policy.expression_simplify import simplify
from selfserve.policy.expression_syntax import COMPARE_OPS, Binary, Cond, Expr, Num, children
from selfserve.policy.snapshot import ClusterSnapshot
from selfserve.tune.objective import Evaluation
from selfserve.tune.search_space import Candidate, _rebuild


class _BranchRecorder(PolicyWrapper):
    """The winner's policy, plus a record of the values each condition (an `if`'s test, a
    comparison) takes on every healthy replica at every decision: a superset of where it is
    reached, so a condition constant here is constant wherever it matters."""

    def __init__(self, inner: ExpressionPolicy, tests: list[CompiledExpression]) -> None:
        super().__init__(inner)
        self.tests = tests
        self.outcomes: list[set[bool]] = [set() for _ in tests]

    @property
    def replica_fields(self) -> frozenset[str]:
        return self.inner.replica_fields

    def choose(self, snapshot: ClusterSnapshot, rng: random.Random) -> int:
        candidates = [r for r in snapshot.replicas if r.is_healthy] or list(snapshot.replicas)
        for seen, test in zip(self.outcomes, self.tests, strict=True):
            if len(seen) < 2:
                seen.update(value != 0.0 for value in test.score(candidates, snapshot.request))
        return self.inner.choose(snapshot, rng)


def conditions(tree: Expr) -> list[Cond | Binary]:
    """Every `if` node and every comparison (worth 1 or 0), in a fixed (pre-)order."""
    found: list[Cond | Binary] = []
    _collect(tree, found, is_test=False)
    return found


def _collect(tree: Expr, found: list[Cond | Binary], is_test: bool) -> None:
    # A comparison that is an `if`'s whole test is covered by the `if` itself.
    if isinstance(tree, Cond) or (
        isinstance(tree, Binary) and tree.op in COMPARE_OPS and not is_test
    ):
        found.append(tree)
    for position, child in enumerate(children(tree)):
        _collect(child, found, is_test=isinstance(tree, Cond) and position == 0)


def _test_of(node: Cond | Binary) -> Expr:
    return node.test if isinstance(node, Cond) else node


def _replace(tree: Expr, taken: dict[int, bool]) -> Expr:
    """`tree` with each `if` whose id is in `taken` replaced by the branch it always took,
    and each such comparison by its constant value."""
    if id(tree) in taken:
        if isinstance(tree, Cond):
            return _replace(tree.then if taken[id(tree)] else tree.otherwise, taken)
        return Num(1.0 if taken[id(tree)] else 0.0)
    return _rebuild(tree, [_replace(child, taken) for child in children(tree)])


def _routes(workload, cluster, policy, slo, rate: float, seed: int) -> list[int]:
    from selfserve.sim import simulate  # late: worker processes import on demand

    result = simulate(workload, cluster, policy, rate_scale=rate, seed=seed, slo=slo)
    return [record.replica for record in result.records]


@dataclass(frozen=True, slots=True)
class Pruned:
    candidate: Candidate
    removed_branches: int  # `if`s replaced by the branch they took, comparisons by their value
    nodes_before: int
    nodes_after: int
    rates: tuple[float, ...]  # the rate multipliers at which every route was checked


def bracketing_rates(evaluation: Evaluation) -> tuple[float, ...]:
    """The highest passing probe rate and the lowest failing one above it."""
    passing = [p.rate for p in evaluation.probes if p.passes()]
    low = max(passing) if passing else None
    failing = [
        p.rate for p in evaluation.probes if not p.passes() and (low is None or p.rate > low)
    ]
    return tuple(r for r in (low, min(failing) if failing else None) if r is not None)


def prune_untaken_branches(
    candidate: Candidate, workload, cluster, slo, rates: tuple[float, ...], seed: int = 0
) -> Pruned | None:
    """`candidate` without the branches it never takes on `workload` at `rates`, or None
    when nothing can be removed or the pruned heuristic would route any request
    differently at any of those rates."""
    nodes = conditions(candidate.tree)
    if not nodes or not rates:
        return None
    policy = build_expression_policy(candidate.document())
    recorder = _BranchRecorder(policy, [compile_expression(_test_of(node)) for node in nodes])
    before = {rate: _routes(workload, cluster, recorder, slo, rate, seed) for rate in rates}
    taken = {
        id(node): next(iter(seen))
        for node, seen in zip(nodes, recorder.outcomes, strict=True)
        if len(seen) == 1
    }
    if not taken:
        return None
    pruned = Candidate(
        simplify(_replace(candidate.tree, taken)), candidate.tie_break, candidate.origin
    )
    policy = build_expression_policy(pruned.document())
    for rate, routes in before.items():
        if _routes(workload, cluster, policy, slo, rate, seed) != routes:
            return None
    return Pruned(pruned, len(taken), candidate.size, pruned.size, tuple(rates))
