"""Compare a calibrated perf model with a measured profile: per-record and summary errors.

Predictions use `PerfModel` in `layers_only` mode (no LM head, no engine overhead), the
scope a layer profile measures. Errors are |predicted / measured - 1|; the p90 is the
linear-interpolated 90th percentile over records.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass

from selfserve.catalog import Accelerator, ModelSpec
from selfserve.perf.calibration import Calibration
from selfserve.perf.model import PerfModel
from selfserve.perf.profile_io import ProfileRecord


@dataclass(frozen=True, slots=True)
class EvaluationRow:
    label: str
    line: int
    measured_ms: float
    predicted_ms: float
    error: float  # signed, predicted / measured - 1
    measured_j: float | None
    predicted_j: float
    energy_error: float | None


@dataclass(frozen=True, slots=True)
class Evaluation:
    rows: tuple[EvaluationRow, ...]
    median_abs_error: float
    p90_abs_error: float
    worst: EvaluationRow
    energy_median_abs_error: float | None
    energy_p90_abs_error: float | None

    def to_dict(self) -> dict:
        return {
            "median_abs_error": self.median_abs_error,
            "p90_abs_error": self.p90_abs_error,
            "worst": asdict(self.worst),
            "energy_median_abs_error": self.energy_median_abs_error,
            "energy_p90_abs_error": self.energy_p90_abs_error,
            "records": [asdict(r) for r in self.rows],
        }


def percentile(values: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile (numpy's default), q in [0, 100]."""
    ordered = sorted(values)
    if not ordered:
        raise ValueError("percentile of no values")
    pos = (len(ordered) - 1) * q / 100.0
    lo = int(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def evaluate(
    records: Sequence[ProfileRecord], model: ModelSpec, hw: Accelerator, cal: Calibration
) -> Evaluation:
    perf = PerfModel(model, hw, 1, "bf16", cal, True)
    rows = []
    for r in records:
        cost = perf.step_cost(*r.step())
        energy_error = None if r.joules is None else cost.energy_j / r.joules - 1.0
        rows.append(
            EvaluationRow(
                label=r.label(),
                line=r.line,
                measured_ms=r.ms_median,
                predicted_ms=cost.time_s * 1e3,
                error=cost.time_s * 1e3 / r.ms_median - 1.0,
                measured_j=r.joules,
                predicted_j=cost.energy_j,
                energy_error=energy_error,
            )  # fmt: skip
        )
    abs_errors = [abs(r.error) for r in rows]
    energy_errors = [abs(r.energy_error) for r in rows if r.energy_error is not None]
    return Evaluation(
        rows=tuple(rows),
        median_abs_error=statistics.median(abs_errors),
        p90_abs_error=percentile(abs_errors, 90),
        worst=max(rows, key=lambda r: abs(r.error)),
        energy_median_abs_error=statistics.median(energy_errors) if energy_errors else None,
        energy_p90_abs_error=percentile(energy_errors, 90) if energy_errors else None,
    )
