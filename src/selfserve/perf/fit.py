"""Fit a `Calibration` to a measured profile: physical factors, not a lookup table.

Time factors are fitted by Levenberg-Marquardt on log(predicted / measured) step times,
in an unconstrained parameterisation (logit for fractions of peak, log for positive
values), from a few starting points; the best fit wins. The model evaluated is the same
`PerfModel` the simulator uses, in `layers_only` mode because a layer profile leaves out
the LM head and engine overhead. Energy is then a linear least-squares fit (relative
errors) of joules = idle x t + compute fraction x TDP x FLOPs/peak + memory fraction x
TDP x bytes/peak bandwidth, with the coefficients kept non-negative.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import numpy as np

from selfserve.catalog import Accelerator, ModelSpec
from selfserve.perf.calibration import BOUNDS, Calibration
from selfserve.perf.model import PerfModel
from selfserve.perf.profile_io import ProfileRecord

# Fitted time factors and their transform kind.
TIME_FACTORS: tuple[tuple[str, str], ...] = (
    ("gemm_efficiency", "fraction"),
    ("gemm_half_tokens", "positive"),
    ("overlap_exponent", "above_one"),
    ("weight_bw_efficiency", "fraction"),
    ("kv_bw_efficiency", "fraction"),
    ("attn_unit_bw_fraction", "fraction"),
    ("attn_causal_efficiency", "fraction"),
    ("attn_cached_efficiency", "fraction"),
    ("layer_overhead_s", "positive"),
)


def _to_free(value: float, kind: str) -> float:
    if kind == "fraction":
        v = min(max(value, 1e-6), 1 - 1e-6)
        return math.log(v / (1 - v))
    if kind == "above_one":
        return math.log(max(value - 1.0, 1e-6))
    return math.log(max(value, 1e-12))


def _from_free(x: float, kind: str) -> float:
    x = min(max(x, -40.0), 40.0)
    if kind == "fraction":
        return 1.0 / (1.0 + math.exp(-x))
    if kind == "above_one":
        return 1.0 + math.exp(x)
    return math.exp(x)


def _clamp(name: str, value: float) -> float:
    lo, hi = BOUNDS[name]
    return min(max(value, lo), hi)


def _calibration_from(x: Sequence[float], base: Calibration) -> Calibration:
    values = {
        name: _clamp(name, _from_free(v, kind))
        for (name, kind), v in zip(TIME_FACTORS, x, strict=True)
    }
    return replace(base, **values)


def predict_times(
    records: Sequence[ProfileRecord], model: ModelSpec, hw: Accelerator, cal: Calibration
) -> list[float]:
    perf = PerfModel(model, hw, 1, "bf16", cal, True)
    return [perf.step_time_s(*r.step()) for r in records]


def _residuals(x: Sequence[float], records, model, hw, base, measured_log) -> np.ndarray:
    pred = predict_times(records, model, hw, _calibration_from(x, base))
    return np.log(np.maximum(np.asarray(pred), 1e-12)) - measured_log


def _levenberg_marquardt(
    fun: Callable[[np.ndarray], np.ndarray], x0: np.ndarray, iters: int = 200
) -> np.ndarray:
    x = x0.astype(float).copy()
    r = fun(x)
    cost = float(r @ r)
    lam = 1e-2
    for _ in range(iters):
        jac = np.empty((r.size, x.size))
        for j in range(x.size):
            step = 1e-5 * max(1.0, abs(x[j]))
            xp = x.copy()
            xp[j] += step
            jac[:, j] = (fun(xp) - r) / step
        jtj, jtr = jac.T @ jac, jac.T @ r
        improved = False
        for _ in range(12):
            delta = np.linalg.solve(jtj + lam * np.diag(np.diag(jtj) + 1e-9), -jtr)
            candidate = x + delta
            rc = fun(candidate)
            cc = float(rc @ rc)
            if cc < cost:
                x, r, cost = candidate, rc, cc
                lam = max(lam / 3, 1e-9)
                improved = True
                break
            lam *= 4
        if not improved or float(np.max(np.abs(delta))) < 1e-8:
            break
    return x


@dataclass(frozen=True, slots=True)
class FitResult:
    calibration: Calibration
    rms_log_error: float
    starts: int


def fit_time_factors(
    records: Sequence[ProfileRecord],
    model: ModelSpec,
    hw: Accelerator,
    base: Calibration | None = None,
) -> FitResult:
    """Fit the time factors of `base` (default: `Calibration()`) to the records' ms_median."""
    base = base or Calibration()
    measured_log = np.log(np.asarray([r.time_s for r in records]))

    def fun(x: np.ndarray) -> np.ndarray:
        return _residuals(x, records, model, hw, base, measured_log)

    starts = []
    start_points = (
        {},
        {"attn_unit_bw_fraction": 0.01, "overlap_exponent": 1.5, "gemm_half_tokens": 64.0},
        {
            "attn_unit_bw_fraction": 0.002,
            "overlap_exponent": 4.0,
            "gemm_efficiency": 0.75,
            "layer_overhead_s": 40e-6,
        },
    )
    for overrides in start_points:
        start = replace(base, **overrides)
        x0 = np.array([_to_free(getattr(start, name), kind) for name, kind in TIME_FACTORS])
        x = _levenberg_marquardt(fun, x0)
        r = fun(x)
        starts.append((float(np.sqrt(np.mean(r * r))), x))
    rms, best = min(starts, key=lambda item: item[0])
    return FitResult(_calibration_from(best, base), rms, len(starts))


def fit_energy(
    records: Sequence[ProfileRecord], model: ModelSpec, hw: Accelerator, cal: Calibration
) -> Calibration:
    """Fit idle power and the compute / memory / KV power fractions to the records' joules.

    Uses the measured step time for the idle term, so time errors do not leak into the
    power fit. Records without joules are skipped; with fewer than 4, `cal` is returned.
    """
    rows = [r for r in records if r.joules is not None]
    if len(rows) < len(ENERGY_FACTORS):
        return cal
    zero = replace(
        cal, idle_power_w=0.0, hardware=hw.name, **dict.fromkeys(ENERGY_FACTORS[1:], 0.0)
    )
    columns = [[r.time_s for r in rows]]
    for name in ENERGY_FACTORS[1:]:
        unit = PerfModel(model, hw, 1, "bf16", replace(zero, **{name: 1.0}), True)
        columns.append([unit.step_energy_j(*r.step()) for r in rows])
    design = np.array(columns).T
    target = np.array([r.joules for r in rows], dtype=float)
    coef = _nonnegative_least_squares(design / target[:, None], np.ones_like(target))
    values = {name: _clamp(name, float(v)) for name, v in zip(ENERGY_FACTORS, coef, strict=True)}
    return replace(cal, **values)


ENERGY_FACTORS = (
    "idle_power_w",
    "compute_power_fraction",
    "memory_power_fraction",
    "kv_power_fraction",
)


def _nonnegative_least_squares(a: np.ndarray, y: np.ndarray) -> np.ndarray:
    """min |a x - y| with x >= 0, by dropping the most negative coefficient until none is."""
    active = list(range(a.shape[1]))
    coef = np.zeros(a.shape[1])
    while active:
        sol, *_ = np.linalg.lstsq(a[:, active], y, rcond=None)
        if (sol >= 0).all():
            coef[active] = sol
            break
        active.pop(int(np.argmin(sol)))
    return coef


FIT_NOTES = {
    "scope": "fitted on a layer profile (no LM head, no engine overhead); PerfModel adds those terms",
    "attn_unit_bw_fraction": "decode attention without split-KV (one work unit per sequence x KV head), "
    "as in the profile's SDPA kernel; set 0 for FlashDecoding-class kernels (vLLM/SGLang)",
    "layer_overhead_s": "not separable from weight streaming on a single-model CUDA-graph profile",
    "allreduce_bw_efficiency,allreduce_latency_s": "assumed (no TP profile): ring all-reduce at 70% "
    "of one link direction, 8 us per all-reduce",
    "engine_step_overhead_s,engine_seq_overhead_s": "assumed (not in a layer profile): scheduler, "
    "sampling and detokenization CPU time per step and per sequence",
}


def fit_calibration(
    records: Sequence[ProfileRecord], model: ModelSpec, hw: Accelerator, source: str = ""
) -> tuple[Calibration, float]:
    """Time factors then energy; returns the calibration and the rms log time error."""
    base = Calibration(
        hardware=hw.name,
        model=model.name,
        fitted_on=source,
        idle_power_w=hw.idle_w,
        notes=dict(FIT_NOTES),
    )
    result = fit_time_factors(records, model, hw, base)
    cal = fit_energy(records, model, hw, result.calibration)
    return cal.validate(), result.rms_log_error
