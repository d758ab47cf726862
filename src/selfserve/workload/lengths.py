"""Token-length distributions for synthetic traffic: lognormal, log-uniform, empirical.

`LengthDist.lognormal(mean, cv)` is the usual model of prompt and output lengths;
`fit_lengths(workload)` fits one to a trace (lognormal by log-moments, or the trace's own
empirical distribution resampled). Samples are integers clipped to [minimum, maximum].
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from selfserve.workload.request import Workload

DistKind = Literal["lognormal", "loguniform", "empirical", "constant"]


@dataclass(frozen=True, slots=True)
class LengthDist:
    kind: DistKind
    a: float = 0.0  # lognormal: mu of log; loguniform: low; constant: value
    b: float = 0.0  # lognormal: sigma of log; loguniform: high
    values: tuple[int, ...] = ()  # empirical sample
    minimum: int = 1
    maximum: int = 10_000_000

    @staticmethod
    def lognormal(
        mean: float, cv: float = 1.0, minimum: int = 1, maximum: int = 10_000_000
    ) -> LengthDist:
        """Lognormal with the given mean and coefficient of variation."""
        if not mean > 0 or not cv >= 0:
            raise ValueError(f"lognormal lengths need mean > 0 and cv >= 0, got {mean}, {cv}")
        sigma2 = np.log1p(cv * cv)
        return LengthDist(
            "lognormal",
            float(np.log(mean) - sigma2 / 2),
            float(np.sqrt(sigma2)),
            (),
            minimum,
            maximum,
        )

    @staticmethod
    def loguniform(low: int, high: int) -> LengthDist:
        if not 0 < low <= high:
            raise ValueError(f"log-uniform lengths need 0 < low <= high, got {low}, {high}")
        return LengthDist("loguniform", float(low), float(high), (), low, high)

    @staticmethod
    def constant(value: int) -> LengthDist:
        return LengthDist("constant", float(value), 0.0, (), value, value)

    @staticmethod
    def empirical(values: np.ndarray | list[int]) -> LengthDist:
        data = tuple(int(v) for v in values)
        if not data:
            raise ValueError("an empirical length distribution needs at least one value")
        return LengthDist("empirical", values=data, minimum=min(data), maximum=max(data))

    @property
    def mean(self) -> float:
        if self.kind == "lognormal":
            return float(np.exp(self.a + self.b * self.b / 2))
        if self.kind == "loguniform":
            return (self.b - self.a) / np.log(self.b / self.a) if self.b > self.a else self.a
        if self.kind == "constant":
            return self.a
        return float(np.mean(self.values))

    def sample(self, rng: np.random.Generator, count: int) -> np.ndarray:
        if self.kind == "lognormal":
            raw = rng.lognormal(self.a, self.b, count)
        elif self.kind == "loguniform":
            raw = np.exp(rng.uniform(np.log(self.a), np.log(self.b), count))
        elif self.kind == "constant":
            raw = np.full(count, self.a)
        else:
            raw = np.asarray(self.values)[rng.integers(0, len(self.values), count)]
        return np.clip(np.rint(raw), self.minimum, self.maximum).astype(np.int64)


def fit_lengths(
    workload: Workload, method: Literal["lognormal", "empirical"] = "lognormal"
) -> tuple[LengthDist, LengthDist]:
    """(prompt, output) length distributions fitted to a trace."""
    prompt = np.array([r.prompt_tokens for r in workload.requests], dtype=np.int64)
    output = np.array([r.output_tokens for r in workload.requests], dtype=np.int64)
    if len(prompt) == 0:
        raise ValueError(f"{workload.name}: cannot fit lengths to an empty workload")
    if method == "empirical":
        return LengthDist.empirical(prompt), LengthDist.empirical(output)
    return _fit_lognormal(prompt), _fit_lognormal(output)


def _fit_lognormal(values: np.ndarray) -> LengthDist:
    positive = np.maximum(values, 1)
    logs = np.log(positive)
    return LengthDist(
        "lognormal",
        float(logs.mean()),
        float(logs.std()),
        (),
        int(positive.min()),
        int(positive.max()),
    )
