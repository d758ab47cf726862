"""Confidence intervals for gains: bootstrap over validation sub-windows.

Requests inside one window are not independent (sessions, bursts), so the resampling unit
is a sub-window of time: the gain of policy A over B is the ratio of their mean capacities
over a resample of sub-windows, and the interval is the percentile interval of that ratio.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Gain:
    ratio: float  # point estimate (from the full-window values)
    low: float
    high: float
    level: float
    windows: int

    def as_dict(self) -> dict[str, float]:
        return {
            "ratio": self.ratio,
            "ci_low": self.low,
            "ci_high": self.high,
            "level": self.level,
            "windows": self.windows,
        }


def bootstrap_ratio(
    numerator: Sequence[float],
    denominator: Sequence[float],
    *,
    point: float | None = None,
    resamples: int = 2000,
    level: float = 0.9,
    seed: int = 0,
) -> Gain:
    """Percentile bootstrap of mean(numerator)/mean(denominator) over paired windows."""
    if len(numerator) != len(denominator):
        raise ValueError("numerator and denominator need one value per sub-window each")
    pairs = [(a, b) for a, b in zip(numerator, denominator, strict=True)]
    count = len(pairs)
    if count == 0:
        nan = float("nan")
        return Gain(point if point is not None else nan, nan, nan, level, 0)

    def ratio(sample: Sequence[tuple[float, float]]) -> float:
        den = sum(b for _, b in sample)
        return sum(a for a, _ in sample) / den if den > 0 else float("nan")

    rng = random.Random(seed)
    ratios = sorted(
        r
        for r in (
            ratio([pairs[rng.randrange(count)] for _ in range(count)]) for _ in range(resamples)
        )
        if r == r
    )
    pooled = ratio(pairs)
    estimate = point if point is not None else pooled
    if not ratios or not pooled == pooled or pooled <= 0:
        nan = float("nan")
        return Gain(estimate, nan, nan, level, count)
    tail = (1.0 - level) / 2.0
    low = ratios[min(len(ratios) - 1, int(tail * len(ratios)))]
    high = ratios[min(len(ratios) - 1, int((1.0 - tail) * len(ratios)))]
    # The spread comes from the sub-windows; it is centred (multiplicatively) on the point
    # estimate, which is measured on the whole window and may differ from the pooled
    # sub-window ratio (capacity of a whole window is not the mean of its pieces).
    shift = estimate / pooled
    return Gain(estimate, low * shift, high * shift, level, count)
