"""Serving economics: the formulas that turn throughput, price and energy into $/M tokens.

Everything here is a pure function of numbers with units in their names, so each figure a
plan reports can be checked by hand. The cost formula is the one NVIDIA and SemiAnalysis
(InferenceMAX) use: $/M tokens = ($/GPU-h) ÷ (tokens/s/GPU × 3,600) × 10⁶, which is the same
as fleet $/h ÷ (fleet tokens/s × 3,600) × 10⁶.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

SECONDS_PER_HOUR = 3600.0
JOULES_PER_MWH = 3.6e9  # 1 MW·h = 10⁶ W × 3,600 s


def cost_per_million_tokens(usd_per_gpu_hour: float, tokens_per_s_per_gpu: float) -> float:
    """$/M tokens at a price per GPU-hour and a per-GPU token rate (inf when no tokens flow)."""
    if usd_per_gpu_hour < 0:
        raise ValueError(f"usd_per_gpu_hour must be ≥ 0, got {usd_per_gpu_hour}")
    if tokens_per_s_per_gpu <= 0:
        return math.inf
    return usd_per_gpu_hour / (tokens_per_s_per_gpu * SECONDS_PER_HOUR) * 1e6


def fleet_usd_per_hour(num_gpus: int, usd_per_gpu_hour: float) -> float:
    return num_gpus * usd_per_gpu_hour


def joules_per_token(energy_j: float, tokens: float) -> float:
    return energy_j / tokens if tokens > 0 else math.inf


def tokens_per_mwh(tokens: float, energy_j: float) -> float:
    """Tokens per megawatt-hour of energy drawn (the inverse of J/token, rescaled)."""
    return tokens / energy_j * JOULES_PER_MWH if energy_j > 0 else 0.0


@dataclass(frozen=True, slots=True)
class FleetEconomics:
    """Cost and energy of one fleet serving a measured token rate.

    Inputs are what the simulator measured for the fleet over the window; the derived
    properties are the plan's columns.
    """

    num_gpus: int
    usd_per_gpu_hour: float | None  # None: no price on the chosen basis
    output_tokens_per_s: float
    total_tokens_per_s: float  # prompt (incl. media) + output tokens processed per second
    energy_j: float
    output_tokens: float
    total_tokens: float

    @property
    def usd_per_hour(self) -> float | None:
        if self.usd_per_gpu_hour is None:
            return None
        return fleet_usd_per_hour(self.num_gpus, self.usd_per_gpu_hour)

    @property
    def output_tokens_per_s_per_gpu(self) -> float:
        return self.output_tokens_per_s / self.num_gpus if self.num_gpus else 0.0

    @property
    def usd_per_million_output_tokens(self) -> float | None:
        if self.usd_per_gpu_hour is None:
            return None
        return cost_per_million_tokens(self.usd_per_gpu_hour, self.output_tokens_per_s_per_gpu)

    @property
    def usd_per_million_total_tokens(self) -> float | None:
        if self.usd_per_gpu_hour is None or not self.num_gpus:
            return None
        return cost_per_million_tokens(
            self.usd_per_gpu_hour, self.total_tokens_per_s / self.num_gpus
        )

    @property
    def joules_per_output_token(self) -> float:
        return joules_per_token(self.energy_j, self.output_tokens)

    @property
    def output_tokens_per_mwh(self) -> float:
        return tokens_per_mwh(self.output_tokens, self.energy_j)

    @property
    def total_tokens_per_mwh(self) -> float:
        return tokens_per_mwh(self.total_tokens, self.energy_j)
