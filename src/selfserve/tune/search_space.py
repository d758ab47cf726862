"""The space the structural search moves in: candidates, mutations and crossover of ASTs.

A `Candidate` is a scoring expression (lower is better, always: a `direction: max` seed
is negated on the way in, so any two candidates can exchange sub-trees), its constants
inline as numbers, and the tie-break it inherits from its first parent. Mutation and
crossover are pure functions of their inputs and the `random.Random` passed in; every
offspring is re-printed and re-parsed, so it obeys the same whitelist and size limits as
any other proposal (an offspring that breaks them is dropped, never repaired by hand), and
simplified (`expression_simplify`: the same scores in fewer nodes), so the complexity
penalty and de-duplication see what the expression means, not how it was assembled.

For continuous tuning (CMA-ES) `parametrize` turns a candidate's non-zero constants into
named params `c1, c2, …` with values, so the optimizer sees a plain vector.
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from selfserve.policy.expression import DEFAULT_TIE_BREAK, build_expression_policy
from selfserve.policy.expression_simplify import simplify
from selfserve.policy.expression_syntax import (
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
    count_nodes,
    parse_expression,
    to_text,
)

# Terms a mutation may add, with the magnitude of a typical value (so a coefficient drawn
# around 1/scale gives the term a comparable weight to a request count).
TERMS: tuple[tuple[str, float], ...] = (
    ("in_flight_requests", 1.0),
    ("prefill_requests", 1.0),
    ("decode_requests", 1.0),
    ("num_requests_waiting", 1.0),
    ("num_requests_running", 1.0),
    ("queued_prefill_tokens", 1000.0),
    ("running_decode_tokens", 10000.0),
    ("prefix_hit_tokens", 1000.0),
    ("max(total_prompt_tokens - prefix_hit_tokens, 0)", 1000.0),
    ("prefix_hit_tokens / max(total_prompt_tokens, 1)", 0.3),
    ("kv_cache_usage", 0.3),
    ("recent_ttft_s", 0.5),
    ("log1p(queued_prefill_tokens)", 5.0),
    ("log1p(running_decode_tokens)", 8.0),
    ("in_flight_requests - cluster_min_in_flight_requests", 1.0),
    ("queued_prefill_tokens - cluster_min_queued_prefill_tokens", 1000.0),
)
_PARSED_TERMS: tuple[tuple[Expr, float], ...] = tuple(
    (parse_expression(text), scale) for text, scale in TERMS
)
_SWAPS = {"+": "-", "-": "+", "*": "/", "/": "*", "<": ">", ">": "<", "<=": ">=", ">=": "<="}


@dataclass(frozen=True, slots=True)
class Candidate:
    """A scoring expression to minimise, with its origin (for the search log)."""

    tree: Expr
    tie_break: tuple[str, ...] = DEFAULT_TIE_BREAK
    origin: str = "seed"

    @property
    def text(self) -> str:
        return to_text(self.tree)

    @property
    def shape(self) -> str:
        """The text with constants as names: equal for candidates CMA-ES can move between."""
        return to_text(parametrize(self.tree)[0])

    @property
    def size(self) -> int:
        return count_nodes(self.tree)

    def document(self, name: str = "candidate", *, named_params: bool = False) -> dict[str, Any]:
        """A `kind: expression` policy document; with `named_params`, constants become
        params `c1, c2, …` (readable, and what a user edits to retune by hand)."""
        tree, values = parametrize(self.tree) if named_params else (self.tree, {})
        return {
            "kind": "expression",
            "name": name,
            "score": to_text(tree),
            "direction": "min",
            "tie_break": list(self.tie_break),
            "params": values,
        }


def candidate_from_document(doc: Mapping[str, Any], origin: str = "seed") -> Candidate:
    """Inline the document's params and orient it so that lower is better."""
    policy = build_expression_policy(doc)
    tree = inline_params(policy.tree, policy.params)
    if policy.direction == "max":
        tree = Unary("-", tree)
    return Candidate(tree=simplify(tree), tie_break=tuple(policy.tie_break), origin=origin)


def simplified(candidate: Candidate) -> Candidate:
    """The same candidate with its tree simplified (same scores, so the same choices)."""
    return Candidate(simplify(candidate.tree), candidate.tie_break, candidate.origin)


def inline_params(tree: Expr, params: Mapping[str, float]) -> Expr:
    if isinstance(tree, Param):
        return Num(float(params[tree.name]))
    return _rebuild(tree, [inline_params(child, params) for child in children(tree)])


def parametrize(tree: Expr) -> tuple[Expr, dict[str, float]]:
    """Replace every non-zero constant by a param `c1, c2, …` (left to right)."""
    values: dict[str, float] = {}

    def walk(node: Expr) -> Expr:
        if isinstance(node, Num) and node.value != 0.0:
            name = f"c{len(values) + 1}"
            values[name] = float(node.value)
            return Param(name)
        return _rebuild(node, [walk(child) for child in children(node)])

    return walk(tree), values


def constants(tree: Expr) -> list[float]:
    """Non-zero constants in the order `parametrize` numbers them."""
    return list(parametrize(tree)[1].values())


def with_constants(tree: Expr, values: list[float]) -> Expr:
    """`tree` with its non-zero constants replaced, in order, by `values`."""
    template, names = parametrize(tree)
    return inline_params(template, dict(zip(names, values, strict=True)))


def _rebuild(node: Expr, kids: list[Expr]) -> Expr:
    if isinstance(node, Unary):
        return Unary(node.op, kids[0])
    if isinstance(node, Binary):
        return Binary(node.op, kids[0], kids[1])
    if isinstance(node, Call):
        return Call(node.func, tuple(kids))
    if isinstance(node, Cond):
        return Cond(kids[0], kids[1], kids[2])
    return node


def _paths(tree: Expr) -> list[tuple[int, ...]]:
    out: list[tuple[int, ...]] = []
    stack: list[tuple[Expr, tuple[int, ...]]] = [(tree, ())]
    while stack:
        node, path = stack.pop()
        out.append(path)
        for k, child in enumerate(children(node)):
            stack.append((child, (*path, k)))
    return out


def _get(tree: Expr, path: tuple[int, ...]) -> Expr:
    for k in path:
        tree = children(tree)[k]
    return tree


def _replace(tree: Expr, path: tuple[int, ...], new: Expr) -> Expr:
    if not path:
        return new
    kids = list(children(tree))
    kids[path[0]] = _replace(kids[path[0]], path[1:], new)
    return _rebuild(tree, kids)


def _coefficient(rng: random.Random, scale: float) -> float:
    value = 10 ** rng.uniform(-1.5, 1.0) / scale
    return float(f"{value:.3g}")


def _random_term(rng: random.Random) -> Expr:
    term, scale = rng.choice(_PARSED_TERMS)
    return Binary("*", Num(_coefficient(rng, scale)), term)


def lane_term(rng: random.Random) -> Expr:
    """Keep long prompts on the first replicas and everything else off them.

    A long prefill blocks the replica's token budget for seconds (head-of-line blocking of
    every short request queued behind it); a lane confines that damage. Threshold, lane
    width and weight are constants the optimizer then tunes.
    """
    threshold = float(
        f"{rng.choice([8000, 16000, 24000, 32000, 48000]) * rng.uniform(0.8, 1.25):.3g}"
    )
    lanes = rng.choice([0.5, 1.5, 2.5])  # index < lanes: replicas 0.., whole replicas
    weight = float(f"{10 ** rng.uniform(3, 6):.3g}")
    return parse_expression(
        f"{weight} * (if total_prompt_tokens > {threshold} then index > {lanes} else index < {lanes})"
    )


def with_lane(base: Candidate, threshold_tokens: int, lanes: float, weight: float) -> Candidate:
    """`base` plus a lane that keeps prompts over `threshold_tokens` on replicas with
    index < `lanes` and the rest off them (a seed: CMA-ES then tunes all three numbers)."""
    lane = parse_expression(
        f"{weight:g} * (if total_prompt_tokens > {threshold_tokens} then index > {lanes} "
        f"else index < {lanes})"
    )
    return Candidate(simplify(Binary("+", base.tree, lane)), base.tie_break, "seed:lane")


def mutate(parent: Candidate, rng: random.Random) -> Candidate | None:
    """One random edit of `parent`; None when the edit broke the language's limits."""
    tree = parent.tree
    paths = _paths(tree)
    kind = rng.choice(
        ["add", "add", "replace", "wrap", "perturb", "perturb", "delete", "swap", "guard", "lane"]
    )
    if kind == "add":
        sign = "+" if rng.random() < 0.7 else "-"
        new = Binary(sign, tree, _random_term(rng))
    elif kind == "replace":
        path = rng.choice(paths)
        new = _replace(
            tree, path, _random_term(rng) if rng.random() < 0.6 else rng.choice(_PARSED_TERMS)[0]
        )
    elif kind == "wrap":
        path = rng.choice(paths)
        target = _get(tree, path)
        wrapper = rng.choice(["log1p", "scale", "max0"])
        if wrapper == "log1p":
            wrapped: Expr = Call("log1p", (target,))
        elif wrapper == "max0":
            wrapped = Call("max", (target, Num(0.0)))
        else:
            term, scale = rng.choice(_PARSED_TERMS)
            wrapped = Binary(
                "*", target, Binary("+", Num(1.0), Binary("*", Num(_coefficient(rng, scale)), term))
            )
        new = _replace(tree, path, wrapped)
    elif kind == "perturb":
        values = constants(tree)
        if not values:
            return mutate(
                Candidate(Binary("+", tree, _random_term(rng)), parent.tie_break, parent.origin),
                rng,
            )
        k = rng.randrange(len(values))
        values[k] = float(f"{values[k] * math.exp(rng.gauss(0.0, 0.7)):.4g}")
        new = with_constants(tree, values)
    elif kind == "delete":
        inner = [p for p in paths if len(children(_get(tree, p))) >= 2]
        if not inner:
            return None
        path = rng.choice(inner)
        kids = children(_get(tree, path))
        new = _replace(
            tree, path, rng.choice(kids[-2:] if isinstance(_get(tree, path), Cond) else kids)
        )
    elif kind == "swap":
        ops = [p for p in paths if isinstance(_get(tree, p), (Binary, Call))]
        if not ops:
            return None
        path = rng.choice(ops)
        node = _get(tree, path)
        if isinstance(node, Binary) and node.op in _SWAPS:
            new = _replace(tree, path, Binary(_SWAPS[node.op], node.left, node.right))
        elif isinstance(node, Call) and node.func in ("min", "max"):
            new = _replace(tree, path, Call("max" if node.func == "min" else "min", node.args))
        else:
            return None
    elif kind == "lane":
        new = Binary("+", tree, lane_term(rng))
    else:  # guard: push replicas past a threshold of a load signal to the back
        signal, scale = rng.choice(
            [
                ("kv_cache_usage", 1.0),
                ("num_requests_waiting", 10.0),
                ("queued_prefill_tokens", 8000.0),
                ("in_flight_requests", 30.0),
            ]
        )
        threshold = float(f"{scale * rng.uniform(0.5, 1.0):.3g}")
        new = Cond(Binary(">", Feature(signal), Num(threshold)), Binary("+", tree, Num(1e6)), tree)
    return _checked(new, parent.tie_break, f"mutate:{kind}")


def crossover(mother: Candidate, father: Candidate, rng: random.Random) -> Candidate | None:
    """`mother` with one random sub-tree replaced by a random sub-tree of `father`."""
    path = rng.choice(_paths(mother.tree))
    donor = _get(father.tree, rng.choice(_paths(father.tree)))
    if rng.random() < 0.5:
        new = _replace(mother.tree, path, donor)
    else:  # a blend keeps both parents' signals: mother + w * donor-subtree
        new = Binary(
            "+", mother.tree, Binary("*", Num(float(f"{10 ** rng.uniform(-1, 1):.3g}")), donor)
        )
    return _checked(new, mother.tie_break, "crossover")


def _checked(tree: Expr, tie_break: tuple[str, ...], origin: str) -> Candidate | None:
    try:
        reparsed = simplify(parse_expression(to_text(tree)))
    except ExpressionError:
        return None
    if isinstance(reparsed, Num):
        return None  # a constant scores every replica alike: not a heuristic
    return Candidate(tree=reparsed, tie_break=tie_break, origin=origin)


@dataclass(slots=True)
class Population:
    """The best distinct candidates seen so far (by their score, higher is better)."""

    capacity: int = 12
    members: list[tuple[float, Candidate]] = field(default_factory=list)

    def offer(self, score: float, candidate: Candidate, *, rescore: bool = False) -> None:
        """Add `candidate` unless a member has its text; with `rescore`, a member with its
        text takes `score` (an exact score replacing an estimate)."""
        text = candidate.text
        if rescore:
            self.members = [(s, m) for s, m in self.members if m.text != text]
        elif any(member.text == text for _, member in self.members):
            return
        self.members.append((score, candidate))
        self.members.sort(key=lambda item: -item[0])
        del self.members[self.capacity :]

    def pick(self, rng: random.Random) -> Candidate:
        """Tournament of two: the better of two random members."""
        a, b = rng.choice(self.members), rng.choice(self.members)
        return (a if a[0] >= b[0] else b)[1]

    def offspring(self, rng: random.Random, count: int, tries: int = 20) -> list[Candidate]:
        out: list[Candidate] = []
        for _ in range(count * tries):
            if len(out) >= count or not self.members:
                break
            if len(self.members) >= 2 and rng.random() < 0.3:
                child = crossover(self.pick(rng), self.pick(rng), rng)
            else:
                child = mutate(self.pick(rng), rng)
            if child is not None:
                out.append(child)
        return out
