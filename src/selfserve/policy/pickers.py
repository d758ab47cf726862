"""Pickers: turn weighted totals over candidates into one choice, with the RNG passed in."""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass

from selfserve.policy.framework import Picker, require


@dataclass(slots=True)
class MaxScorePicker(Picker):
    """`max-score`: the highest total; ties uniformly at random.

    llm-d `picker/maxscore`: shuffle the candidates, stable-sort by score descending,
    take the first — i.e. a uniform choice among the tied best.
    """

    type_name = "max-score"

    def pick(self, candidates: tuple[int, ...], totals: Sequence[float], rng: random.Random) -> int:
        best = max(totals)
        ties = [c for c, t in zip(candidates, totals, strict=True) if t == best]
        return ties[0] if len(ties) == 1 else ties[rng.randrange(len(ties))]


@dataclass(slots=True)
class FirstMaxPicker(Picker):
    """`first-max`: the highest total; the lowest replica index wins ties (deterministic)."""

    type_name = "first-max"

    def pick(self, candidates: tuple[int, ...], totals: Sequence[float], rng: random.Random) -> int:
        best = 0
        for k in range(1, len(totals)):
            if totals[k] > totals[best]:
                best = k
        return candidates[best]


@dataclass(slots=True)
class SoftmaxPicker(Picker):
    """`softmax`: sample with p ∝ exp((total - max) / temperature); temperature 0 = max-score.

    Parameter `temperature` (float ≥ 0, default 0.1), in units of the total score.
    """

    type_name = "softmax"
    temperature: float = 0.1

    def validate(self) -> None:
        require(self.temperature >= 0, "temperature", "a number >= 0", self.temperature)

    def pick(self, candidates: tuple[int, ...], totals: Sequence[float], rng: random.Random) -> int:
        best = max(totals)
        if self.temperature == 0:
            return MaxScorePicker().pick(candidates, totals, rng)
        weights = [math.exp((t - best) / self.temperature) for t in totals]
        return rng.choices(candidates, weights=weights, k=1)[0]


@dataclass(slots=True)
class RandomPicker(Picker):
    """`random`: uniform over the candidates left by the filters (scores ignored)."""

    type_name = "random"

    def pick(self, candidates: tuple[int, ...], totals: Sequence[float], rng: random.Random) -> int:
        return candidates[rng.randrange(len(candidates))]
