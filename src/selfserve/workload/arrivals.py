"""Arrival processes: when requests (or sessions) start.

Poisson (exponential gaps, CV 1) and Gamma (CV chosen: > 1 is bursty), plus Weibull for
ServeGen's fitted windows. Each takes a `random.Random` (or numpy Generator) owned by the
caller, so a seed reproduces the same times.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

ArrivalKind = Literal["poisson", "gamma", "weibull"]


@dataclass(frozen=True, slots=True)
class ArrivalProcess:
    """A renewal process with mean rate `rate_per_s` and inter-arrival CV `cv`.

    `kind="poisson"` ignores `cv` (it is 1). `gamma` uses shape 1/cv² so the CV is exact;
    `weibull` takes an explicit `shape` (ServeGen gives shape and scale per window).
    """

    rate_per_s: float
    kind: ArrivalKind = "poisson"
    cv: float = 1.0
    shape: float = 0.0

    def __post_init__(self) -> None:
        if not self.rate_per_s > 0:
            raise ValueError(f"arrival rate must be > 0 requests/s, got {self.rate_per_s}")
        if self.kind not in ("poisson", "gamma", "weibull"):
            raise ValueError(f"arrival kind must be poisson, gamma or weibull, got {self.kind!r}")
        if self.kind == "gamma" and not self.cv > 0:
            raise ValueError(f"gamma arrivals need cv > 0, got {self.cv}")
        if self.kind == "weibull" and not self.shape > 0:
            raise ValueError(f"weibull arrivals need shape > 0, got {self.shape}")

    def gaps_s(self, rng: np.random.Generator, count: int) -> np.ndarray:
        """`count` inter-arrival gaps in seconds with mean 1/rate."""
        mean_s = 1.0 / self.rate_per_s
        if self.kind == "poisson":
            return rng.exponential(mean_s, count)
        if self.kind == "gamma":
            shape = 1.0 / (self.cv * self.cv)
            return rng.gamma(shape, mean_s / shape, count)
        from math import gamma as gamma_fn

        scale = mean_s / gamma_fn(1.0 + 1.0 / self.shape)
        return scale * rng.weibull(self.shape, count)

    def times_s(self, rng: np.random.Generator, count: int, start_s: float = 0.0) -> np.ndarray:
        """`count` arrival times: the first gap after `start_s`, then cumulative."""
        return start_s + np.cumsum(self.gaps_s(rng, count))

    def times_until_s(self, rng: np.random.Generator, start_s: float, end_s: float) -> np.ndarray:
        """All arrival times in [start_s, end_s)."""
        out: list[np.ndarray] = []
        t = start_s
        expected = max(16, int((end_s - start_s) * self.rate_per_s * 1.2) + 16)
        while t < end_s:
            times = t + np.cumsum(self.gaps_s(rng, expected))
            out.append(times[times < end_s])
            t = float(times[-1])
        return np.concatenate(out) if out else np.empty(0)


def parse_arrival(spec: str, rate_per_s: float) -> ArrivalProcess:
    """`poisson`, `gamma:cv=3` or `gamma:3` → ArrivalProcess at `rate_per_s`."""
    kind, _, arg = spec.partition(":")
    kind = kind.strip().lower()
    if kind == "poisson":
        return ArrivalProcess(rate_per_s, "poisson")
    if kind == "gamma":
        value = arg.split("=", 1)[-1] if arg else "2"
        try:
            cv = float(value)
        except ValueError:
            raise ValueError(f"gamma arrivals take a CV, e.g. gamma:cv=2, got {spec!r}") from None
        return ArrivalProcess(rate_per_s, "gamma", cv=cv)
    raise ValueError(f"arrival process must be 'poisson' or 'gamma:cv=X', got {spec!r}")
