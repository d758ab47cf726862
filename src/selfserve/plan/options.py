"""Deployment options (card × tensor parallelism × weight precision) and whether each fits.

An option fits when the model's weights leave KV-cache room on the replica's GPUs and that
room holds the largest request of the workload (prompt + media + output tokens); otherwise
the planner skips it and states why. When no option fits, `NoFitError` names the model,
every card and TP tried, and memory needed vs available, so the user knows what to add.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

GB = 1e9


class NoFitError(ValueError):
    """The model cannot be served on any card × TP offered."""


@dataclass(frozen=True, slots=True)
class DeploymentOption:
    """One way to build a replica: `tp` GPUs of `hardware` running `model` at `weight_dtype`."""

    hardware: str
    model: str
    tp: int = 1
    weight_dtype: str = "bf16"

    @property
    def label(self) -> str:
        return f"{self.hardware} tp{self.tp} {self.weight_dtype}"

    def cluster_spec(self, replicas: int) -> str:
        """The simulator's shorthand for `replicas` copies of this replica."""
        spec = f"{replicas}x{self.hardware}/{self.model}:tp={self.tp}"
        if self.weight_dtype != "bf16":
            spec += f",dtype={self.weight_dtype}"
        return spec


@dataclass(frozen=True, slots=True)
class FitCheck:
    option: DeploymentOption
    fits: bool
    reason: str  # why it does not fit ("" when it does)
    kv_capacity_tokens: int
    memory_needed_gb: float  # weights + KV of the largest request, per replica
    memory_available_gb: float  # HBM × TP × gpu_memory_utilization

    def describe(self) -> str:
        head = f"{self.option.label}: needs {self.memory_needed_gb:,.0f} GB"
        return f"{head}, has {self.memory_available_gb:,.0f} GB"


def enumerate_options(
    model: str, hardware: Sequence[str], tps: Sequence[int], dtypes: Sequence[str] = ("bf16",)
) -> list[DeploymentOption]:
    """Every card × TP × precision, in the order given (cards outermost)."""
    return [
        DeploymentOption(card.lower(), model, tp, dtype)
        for card in hardware
        for tp in tps
        for dtype in dtypes
    ]


def check_fit(
    option: DeploymentOption,
    largest_request_tokens: int,
    *,
    gpu_memory_utilization: float = 0.9,
) -> FitCheck:
    """Whether `option` can hold the model's weights and the workload's largest request.

    Uses the perf package's deployment rules (the same ones `PerfModel.create` enforces),
    so the plan never simulates a replica the engine model would refuse.
    """
    from selfserve.catalog import get_accelerator, get_model
    from selfserve.perf.deployment import (
        RUNTIME_RESERVE_BYTES,
        WEIGHT_DTYPE_BYTES,
        check_deployment,
        kv_bytes_per_token_per_gpu,
        kv_capacity_tokens,
    )
    from selfserve.perf.errors import DeploymentError

    hw = get_accelerator(option.hardware)
    model = get_model(option.model)
    tp = option.tp
    available_gb = hw.hbm_bytes * tp * gpu_memory_utilization / GB
    dtype_bytes = WEIGHT_DTYPE_BYTES.get(option.weight_dtype, 2.0)
    fixed_gb = (model.weight_bytes(dtype_bytes) + RUNTIME_RESERVE_BYTES * tp) / GB
    request_tokens = min(largest_request_tokens, model.max_model_len)
    try:
        kv_token_gb = kv_bytes_per_token_per_gpu(model, tp) * tp / GB
        needed_gb = fixed_gb + request_tokens * kv_token_gb
        check_deployment(model, hw, tp, option.weight_dtype)
        kv_tokens = kv_capacity_tokens(model, hw, tp, option.weight_dtype, gpu_memory_utilization)
    except DeploymentError as exc:
        # Weights larger than memory, a TP that does not divide the heads or exceeds the
        # scale-up domain, a precision the card lacks: a no-fit with the perf model's reason.
        return FitCheck(option, False, str(exc), 0, fixed_gb, available_gb)
    if kv_tokens <= 0:
        reason = (
            f"weights need {fixed_gb:,.0f} GB of the {available_gb:,.0f} GB usable "
            f"({tp}×{hw.name}): no room for KV cache"
        )
        return FitCheck(option, False, reason, 0, needed_gb, available_gb)
    if kv_tokens < request_tokens:
        reason = (
            f"the largest request ({request_tokens:,} tokens) needs "
            f"{request_tokens * kv_token_gb:,.1f} GB of KV; only "
            f"{kv_tokens * kv_token_gb:,.1f} GB ({kv_tokens:,} tokens) is left after the weights"
        )
        return FitCheck(option, False, reason, kv_tokens, needed_gb, available_gb)
    return FitCheck(option, True, "", kv_tokens, needed_gb, available_gb)


def require_some_fit(model: str, checks: Sequence[FitCheck]) -> list[DeploymentOption]:
    """The options that fit; raises `NoFitError` with the whole picture when none does."""
    fitting = [check.option for check in checks if check.fits]
    if fitting:
        return fitting
    cards = sorted({check.option.hardware for check in checks})
    tps = sorted({check.option.tp for check in checks})
    lines = "\n".join(f"  - {check.describe()} ({check.reason})" for check in checks)
    raise NoFitError(
        f"model {model!r} fits no option offered (cards {', '.join(cards)}; "
        f"TP {', '.join(map(str, tps))}):\n{lines}\n"
        "Offer larger TP (--tp), more memory (--hardware) or smaller weights (--precision fp8)."
    )
