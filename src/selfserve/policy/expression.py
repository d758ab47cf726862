"""Learned routing policies: a scoring expression, a direction, tie-breaks and parameters.

`kind: expression` policy files land here (selfserve.policy's loader delegates to
`build_expression_policy`). The policy scores every healthy replica with a compiled
expression (see `expression_syntax` for the language, `expression_eval` for evaluation),
keeps the best (lowest by default, or highest when `direction: max`), and resolves exact
ties with the declared tie-breaks in order (the last resort is always the lowest index, so
a decision is a deterministic function of the snapshot and the RNG).

Policy document (YAML or dict)::

    kind: expression
    name: learned-mooncake            # optional
    score: "in_flight_requests + w * queued_prefill_tokens"
    direction: min                    # min | max
    tie_break: [least-in-flight, random]
    params: {w: 0.001}                # named constants the score may use (the tuner's knobs)
    evidence: {...}                   # free-form record of why (kept, not interpreted)

`EXPRESSION_ANCHORS` restates several anchor routers in this language; the tuner seeds its
search with them.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from selfserve.policy.base import StatelessPolicy
from selfserve.policy.expression_eval import SCORE_LIMIT, CompiledExpression, compile_expression
from selfserve.policy.expression_syntax import (
    AGGREGATE_KINDS,
    AGGREGATED_FEATURES,
    REPLICA_FEATURES,
    Expr,
    ExpressionError,
    count_nodes,
    features_used,
    parse_expression,
    to_text,
)
from selfserve.policy.snapshot import ClusterSnapshot, ReplicaView

DIRECTIONS: tuple[str, ...] = ("min", "max")
TIE_BREAKS: dict[str, str] = {
    "lowest-index": "the replica with the lowest index",
    "random": "uniformly at random with the RNG passed to choose()",
    "least-in-flight": "the replica with the fewest in-flight requests",
    "least-queued-prefill": "the replica with the fewest queued prefill tokens",
    "most-prefix-hit": "the replica expected to hold most of this request's prefix",
}
DEFAULT_TIE_BREAK: tuple[str, ...] = ("least-in-flight", "random")
DOCUMENT_KEYS: frozenset[str] = frozenset(
    {
        "kind",
        "name",
        "score",
        "expression",
        "direction",
        "tie_break",
        "params",
        "evidence",
        "description",
        "metadata",
        "version",
    }
)
# Relative tolerance under which two scores count as a tie (float noise from weighted sums).
_TIE_RELATIVE = 1e-9

_TIE_FIELDS = {
    "least-in-flight": "in_flight_requests",
    "least-queued-prefill": "queued_prefill_tokens",
    "most-prefix-hit": "prefix_hit_tokens",
}
# `cluster_max_in_flight_requests` -> `in_flight_requests` (`num_replicas` reads `index`)
_REPLICA_FIELD_OF = {
    f"cluster_{kind}_{name}": name for name in AGGREGATED_FEATURES for kind in AGGREGATE_KINDS
} | {"num_replicas": "index"}
_TIE_KEYS = {
    "least-in-flight": lambda r: r.in_flight_requests,
    "least-queued-prefill": lambda r: r.queued_prefill_tokens,
    "most-prefix-hit": lambda r: -r.prefix_hit_tokens,
}


class PolicyDocumentError(ValueError):
    """A bad `kind: expression` policy document: names the key and what is valid."""


@dataclass(slots=True)
class ExpressionPolicy(StatelessPolicy):
    """Type `expression`: argmin (or argmax) over replicas of a scoring expression.

    Reads whichever `ReplicaView`/`RequestView` features the expression names. Parameters:
    `score` (text), `direction` ("min"), `tie_break` (["least-in-flight", "random"]),
    `params` ({}). Not an anchor: it is the form learned heuristics take.
    """

    tree: Expr
    direction: str = "min"
    tie_break: tuple[str, ...] = DEFAULT_TIE_BREAK
    params: dict[str, float] = field(default_factory=dict)
    name: str = "expression"
    compiled: CompiledExpression | None = None

    def __post_init__(self) -> None:
        if self.direction not in DIRECTIONS:
            raise PolicyDocumentError(f"direction: {self.direction!r} is not one of {DIRECTIONS}")
        for rule in self.tie_break:
            if rule not in TIE_BREAKS:
                raise PolicyDocumentError(
                    f"tie_break: {rule!r} is not one of {', '.join(TIE_BREAKS)}"
                )
        worst = SCORE_LIMIT if self.direction == "min" else -SCORE_LIMIT
        self.compiled = compile_expression(self.tree, self.params, worst=worst)

    @property
    def text(self) -> str:
        return to_text(self.tree)

    @property
    def replica_fields(self) -> frozenset[str]:
        """The `ReplicaView` fields the score (directly or through a cluster aggregate) and
        the tie-breaks read: the Router fills only those (`selfserve.policy.views`)."""
        names = {_REPLICA_FIELD_OF.get(f, f) for f in features_used(self.tree)}
        names.update(_TIE_FIELDS[rule] for rule in self.tie_break if rule in _TIE_FIELDS)
        return frozenset(names & REPLICA_FEATURES.keys())

    @property
    def complexity(self) -> int:
        return count_nodes(self.tree)

    def choose(self, snapshot: ClusterSnapshot, rng: random.Random) -> int:
        replicas = snapshot.replicas
        candidates = [r for r in replicas if r.is_healthy] or list(replicas)
        scores = self.compiled.score(candidates, snapshot.request)  # type: ignore[union-attr]
        best = min(scores) if self.direction == "min" else max(scores)
        tolerance = _TIE_RELATIVE * max(1.0, abs(best))
        tied = [c for c, s in zip(candidates, scores, strict=True) if abs(s - best) <= tolerance]
        if len(tied) > 1:
            tied = self._break_ties(tied, rng)
        return _position(replicas, tied[0])

    def _break_ties(self, tied: list[ReplicaView], rng: random.Random) -> list[ReplicaView]:
        for rule in self.tie_break:
            if len(tied) == 1:
                break
            if rule == "random":
                return [tied[rng.randrange(len(tied))]]
            if rule == "lowest-index":
                return [min(tied, key=lambda r: r.index)]
            key = _TIE_KEYS[rule]
            low = min(key(r) for r in tied)
            tied = [r for r in tied if key(r) == low]
        return [min(tied, key=lambda r: r.index)]

    def to_document(self) -> dict[str, Any]:
        return {
            "kind": "expression",
            "name": self.name,
            "score": self.text,
            "direction": self.direction,
            "tie_break": list(self.tie_break),
            "params": dict(self.params),
        }


def _position(replicas: tuple[ReplicaView, ...], chosen: ReplicaView) -> int:
    # `choose` returns a position in snapshot.replicas; `index` usually equals it, but a
    # gateway may hand over a filtered subset, so look the object up.
    for position, replica in enumerate(replicas):
        if replica is chosen:
            return position
    raise AssertionError("chosen replica is not in the snapshot")


def build_expression_policy(doc: Mapping[str, Any]) -> ExpressionPolicy:
    """Build an `ExpressionPolicy` from a `kind: expression` document, validating every key."""
    if not isinstance(doc, Mapping):
        raise PolicyDocumentError(f"policy document must be a mapping, got {type(doc).__name__}")
    unknown = sorted(set(doc) - DOCUMENT_KEYS)
    if unknown:
        raise PolicyDocumentError(
            f"unknown key(s) {', '.join(map(str, unknown))}; valid keys: {', '.join(sorted(DOCUMENT_KEYS))}"
        )
    kind = doc.get("kind", "expression")
    if kind != "expression":
        raise PolicyDocumentError(f"kind: expected 'expression', got {kind!r}")
    text = doc.get("score", doc.get("expression"))
    if text is None:
        raise PolicyDocumentError("score: missing; give the scoring expression as a string")
    if not isinstance(text, str):
        raise PolicyDocumentError(f"score: must be a string, got {type(text).__name__}")
    params = doc.get("params") or {}
    if not isinstance(params, Mapping):
        raise PolicyDocumentError("params: must be a mapping of name -> number")
    direction = doc.get("direction", "min")
    tie_break = doc.get("tie_break", list(DEFAULT_TIE_BREAK))
    if isinstance(tie_break, str):
        tie_break = [tie_break]
    if not isinstance(tie_break, (list, tuple)):
        raise PolicyDocumentError("tie_break: must be a list of rule names")
    try:
        tree = parse_expression(text, params)
    except ExpressionError as exc:
        raise PolicyDocumentError(f"score: {exc}") from None
    name = str(doc.get("name") or "expression")
    return ExpressionPolicy(
        tree=tree,
        direction=str(direction),
        tie_break=tuple(str(rule) for rule in tie_break),
        params={str(k): float(v) for k, v in params.items()},
        name=name,
    )


# Anchors restated in the language (see ../shared/design/routing-anchors.md). They are seeds
# for the search and a check that the language can say what the hand-written routers say;
# the faithful anchors themselves (with their own prefix indexes) live in selfserve.policy.
_LLMD_QUEUE = (
    "(if cluster_max_num_requests_waiting > cluster_min_num_requests_waiting "
    "then (cluster_max_num_requests_waiting - num_requests_waiting) / "
    "(cluster_max_num_requests_waiting - cluster_min_num_requests_waiting) else 1)"
)
EXPRESSION_ANCHORS: dict[str, dict[str, Any]] = {
    # SGLang least_load / LiteLLM least-busy: fewest in-flight requests, first index wins.
    "least-request": {
        "score": "in_flight_requests",
        "direction": "min",
        "tie_break": ["lowest-index"],
    },
    # AIBrix least-kv-cache: lowest scraped KV usage, random among ties.
    "least-kv": {"score": "kv_cache_usage", "direction": "min", "tie_break": ["random"]},
    # llm-d default profile: queue 2 + kv-cache-utilization 2 + prefix-cache 3, max wins.
    "llm-d": {
        "score": f"w_queue * {_LLMD_QUEUE} + w_kv * (1 - kv_cache_usage)"
        " + w_prefix * prefix_hit_tokens / max(total_prompt_tokens, 1)",
        "direction": "max",
        "tie_break": ["random"],
        "params": {"w_queue": 2.0, "w_kv": 2.0, "w_prefix": 3.0},
    },
    # LMetric: new prefill tokens (queued here + this request's uncached part) x batch size.
    "lmetric": {
        "score": "(queued_prefill_tokens + max(total_prompt_tokens - prefix_hit_tokens, 0))"
        " * (in_flight_requests + 1)",
        "direction": "min",
        "tie_break": ["random"],
    },
    # Dynamo KV router (legacy form, block units of 16 tokens): prefill blocks net of the
    # overlap credit plus the decode blocks already active.
    "dynamo": {
        "score": "max(total_prompt_tokens + queued_prefill_tokens - w_overlap * prefix_hit_tokens, 0) / 16"
        " + (running_decode_tokens + total_prompt_tokens) / 16",
        "direction": "min",
        "tie_break": ["random"],
        "params": {"w_overlap": 1.0},
    },
}


def anchor_document(name: str) -> dict[str, Any]:
    """The `kind: expression` document of an anchor restated in the language."""
    if name not in EXPRESSION_ANCHORS:
        raise KeyError(f"no expression anchor {name!r}; known: {', '.join(EXPRESSION_ANCHORS)}")
    return {"kind": "expression", "name": f"expr-{name}", **EXPRESSION_ANCHORS[name]}


__all__ = [
    "EXPRESSION_ANCHORS",
    "ExpressionPolicy",
    "PolicyDocumentError",
    "anchor_document",
    "build_expression_policy",
    "parse_expression",
    "to_text",
]
