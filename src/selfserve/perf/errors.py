"""Errors of the perf package: deployments that cannot run, bad calibration or profile files."""

from __future__ import annotations


class DeploymentError(ValueError):
    """A model/hardware/TP/dtype combination that cannot be deployed (the message says why)."""


class ModelDoesNotFitError(DeploymentError):
    """The weights (plus a minimum KV cache) do not fit in the GPUs' memory at this TP."""


class CalibrationError(ValueError):
    """A calibration file that is missing, malformed or has an out-of-range factor."""


class ProfileFormatError(ValueError):
    """A profile JSONL line that cannot be read; names the file, line and field."""

    def __init__(self, path: str, line: int, field: str, expected: str) -> None:
        self.path, self.line, self.field, self.expected = path, line, field, expected
        super().__init__(f"{path}:{line}: field {field!r}: expected {expected}")
