"""The filter → score → pick pipeline that profile policies are made of (llm-d's shape).

A `Filter` narrows the candidate replicas, a `Scorer` returns one value per candidate in
[0, 1] (higher is better; the framework, not the scorer, clamps and weights), and a
`Picker` turns the weighted totals into one choice with the RNG passed in. Components that
keep soft state (a prefix index, a session table) update it only in the same three hooks a
`Policy` has; `ProfilePolicy` forwards every hook to every component.

Candidates are replica indexes as a tuple; scores are a list aligned with it. Everything is
plain Python over tuples: the simulator calls `choose` tens of thousands of times a second.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, fields

from selfserve.policy.snapshot import ClusterSnapshot


class PolicyConfigError(ValueError):
    """A policy spec or file is invalid; the message names the key and what is valid."""


class Component:
    """Base of filters, scorers and pickers: parameters are dataclass fields; no-op hooks."""

    type_name = "component"

    def validate(self) -> None:
        """Raise PolicyConfigError naming the parameter when a value is out of range."""
        return None

    def params(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self)}  # type: ignore[arg-type]

    def on_route(self, snapshot: ClusterSnapshot, replica_index: int) -> None:
        return None

    def on_first_token(self, request_id: str, replica_index: int, now_s: float) -> None:
        return None

    def on_complete(self, request_id: str, replica_index: int, now_s: float, ok: bool) -> None:
        return None


class Filter(Component):
    def filter(self, snapshot: ClusterSnapshot, candidates: tuple[int, ...]) -> tuple[int, ...]:
        raise NotImplementedError


class Scorer(Component):
    def score(self, snapshot: ClusterSnapshot, candidates: tuple[int, ...]) -> Sequence[float]:
        raise NotImplementedError


class Picker(Component):
    def pick(self, candidates: tuple[int, ...], totals: Sequence[float], rng: random.Random) -> int:
        raise NotImplementedError


def healthy_candidates(snapshot: ClusterSnapshot) -> tuple[int, ...]:
    """Indexes of healthy replicas; every policy chooses among these only."""
    cands = tuple(r.index for r in snapshot.replicas if r.is_healthy)
    if not cands:
        raise ValueError("no healthy replica in the snapshot")
    return cands


def require(condition: bool, key: str, valid: str, value: object) -> None:
    if not condition:
        raise PolicyConfigError(f"{key}: got {value!r}; valid: {valid}")


@dataclass(slots=True)
class WeightedScorer:
    scorer: Scorer
    weight: float


class ProfilePolicy:
    """A weighted profile: filters (in order), weighted scorers, one picker.

    total[p] = sum_s weight_s * clamp(score_s(p), 0, 1), not normalised by the weight sum
    (llm-d `scheduler_profile.go`). A filter that would leave no candidate is skipped, so
    routing never fails while a healthy replica exists.
    """

    def __init__(
        self,
        name: str,
        scorers: Sequence[WeightedScorer],
        picker: Picker,
        filters: Sequence[Filter] = (),
    ) -> None:
        self.name = name
        self.filters = tuple(filters)
        self.scorers = tuple(scorers)
        self.picker = picker
        self._components: tuple[Component, ...] = (
            *self.filters,
            *(ws.scorer for ws in self.scorers),
            picker,
        )

    def choose(self, snapshot: ClusterSnapshot, rng: random.Random) -> int:
        cands = healthy_candidates(snapshot)
        for f in self.filters:
            kept = f.filter(snapshot, cands)
            if kept:
                cands = kept
        if len(cands) == 1:
            return cands[0]
        totals = [0.0] * len(cands)
        for ws in self.scorers:
            w = ws.weight
            for k, s in enumerate(ws.scorer.score(snapshot, cands)):
                totals[k] += w * (0.0 if s < 0.0 else 1.0 if s > 1.0 else s)
        return self.picker.pick(cands, totals, rng)

    def on_route(self, snapshot: ClusterSnapshot, replica_index: int) -> None:
        for c in self._components:
            c.on_route(snapshot, replica_index)

    def on_first_token(self, request_id: str, replica_index: int, now_s: float) -> None:
        for c in self._components:
            c.on_first_token(request_id, replica_index, now_s)

    def on_complete(self, request_id: str, replica_index: int, now_s: float, ok: bool) -> None:
        for c in self._components:
            c.on_complete(request_id, replica_index, now_s, ok)


def argmin_first(cands: Sequence[int], keys: Sequence[float]) -> int:
    """The candidate with the smallest key; the first one wins ties."""
    best = 0
    best_key = keys[0]
    for k in range(1, len(cands)):
        if keys[k] < best_key:
            best, best_key = k, keys[k]
    return cands[best]


def argmin_random(cands: Sequence[int], keys: Sequence[float], rng: random.Random) -> int:
    """The candidate with the smallest key; ties broken uniformly with `rng`."""
    best_key = min(keys)
    ties = [c for c, k in zip(cands, keys, strict=True) if k == best_key]
    return ties[0] if len(ties) == 1 else ties[rng.randrange(len(ties))]
