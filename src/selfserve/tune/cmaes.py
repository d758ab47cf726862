"""Continuous tuning of one expression's constants with CMA-ES (the `cma` package).

The optimizer works on `log|c|` of each non-zero constant (signs stay as the structure has
them), so one step size fits weights of 1e-4 and 1e3 alike and a weight never silently
flips the meaning of a term; structural search is what flips signs. Scores are maximised
(CMA-ES minimises, so it is told the negated score).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import cma

from selfserve.tune.search_space import Candidate, constants, with_constants

_LOG_LIMIT = 30.0  # |log c| bound: keeps constants within e^±30 and the parser's 1e12 limit


@dataclass(slots=True)
class ConstantTuner:
    """Ask/tell CMA-ES over the constants of `base`."""

    base: Candidate
    seed: int
    popsize: int = 6
    sigma0: float = 0.6
    signs: list[float] = field(default_factory=list)
    _es: cma.CMAEvolutionStrategy | None = None
    _pending: list[list[float]] = field(default_factory=list)

    def __post_init__(self) -> None:
        values = constants(self.base.tree)
        self.signs = [1.0 if v > 0 else -1.0 for v in values]
        if values:
            x0 = [math.log(abs(v)) for v in values]
            self._es = cma.CMAEvolutionStrategy(
                x0,
                self.sigma0,
                {
                    "popsize": max(2, self.popsize),
                    "seed": self.seed % (2**31 - 1) + 1,
                    "verbose": -9,
                    "bounds": [-_LOG_LIMIT, min(_LOG_LIMIT, math.log(1e11))],
                },
            )

    @property
    def is_active(self) -> bool:
        return self._es is not None and not self._es.stop()

    def ask(self) -> list[Candidate]:
        if self._es is None:
            return []
        self._pending = [list(map(float, x)) for x in self._es.ask()]
        return [self._candidate(x) for x in self._pending]

    def tell(self, scores: list[float]) -> None:
        if self._es is None or len(scores) != len(self._pending):
            return
        finite = [s for s in scores if math.isfinite(s)]
        floor = (min(finite) - 1.0) if finite else 0.0
        self._es.tell(self._pending, [-(s if math.isfinite(s) else floor) for s in scores])
        self._pending = []

    def _candidate(self, x: list[float]) -> Candidate:
        values = [float(f"{sign * math.exp(v):.5g}") for sign, v in zip(self.signs, x, strict=True)]
        return Candidate(
            tree=with_constants(self.base.tree, values),
            tie_break=self.base.tie_break,
            origin="cma",
        )
