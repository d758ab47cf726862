"""Performance model: step time and energy of one replica, calibrated on measured profiles.

`PerfModel.create(model, hardware, tp=1, weight_dtype="bf16", calibration=None)`;
`Calibration`, `load_calibration`, `default_calibration`; `StepCost(time_s, energy_j)`.
"""

from __future__ import annotations

from selfserve.perf.calibration import Calibration, default_calibration, load_calibration
from selfserve.perf.errors import (
    CalibrationError,
    DeploymentError,
    ModelDoesNotFitError,
    ProfileFormatError,
)
from selfserve.perf.model import PerfModel, StepCost

__all__ = [
    "Calibration",
    "CalibrationError",
    "DeploymentError",
    "ModelDoesNotFitError",
    "PerfModel",
    "ProfileFormatError",
    "StepCost",
    "default_calibration",
    "load_calibration",
]
