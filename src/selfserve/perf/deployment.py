"""Deployment checks and per-GPU sizes: TP validity, weight dtype, memory fit, KV capacity.

Kept apart from the step-time arithmetic so the error messages for a deployment that
cannot run (bad TP, unknown dtype, weights that do not fit) live in one place.
"""

from __future__ import annotations

import math

from selfserve.catalog import Accelerator, ModelSpec
from selfserve.perf.errors import DeploymentError, ModelDoesNotFitError

WEIGHT_DTYPE_BYTES: dict[str, float] = {"bf16": 2.0, "fp8": 1.0, "fp4": 0.5}
# Memory vLLM keeps per GPU besides weights and KV: activations of a max-size step, CUDA
# graphs, NCCL buffers. An assumption (vLLM profiles it at start-up; 1-3 GiB is typical).
RUNTIME_RESERVE_BYTES = 2 * 1024**3
KV_DTYPE_BYTES = 2  # bf16 KV cache


def check_deployment(model: ModelSpec, hw: Accelerator, tp: int, weight_dtype: str) -> None:
    """Raise `DeploymentError` naming the problem and the valid choices."""
    if weight_dtype not in WEIGHT_DTYPE_BYTES:
        raise DeploymentError(
            f"unknown weight_dtype {weight_dtype!r}; valid: {', '.join(WEIGHT_DTYPE_BYTES)}"
        )
    if weight_dtype == "fp4" and hw.fp4_flops is None:
        raise DeploymentError(f"{hw.name} has no FP4 tensor path; valid weight_dtype: bf16, fp8")
    if not isinstance(tp, int) or tp < 1 or tp & (tp - 1):
        raise DeploymentError(f"tp must be a power of two >= 1, got {tp!r}")
    if tp > hw.scaleup_domain_gpus:
        raise DeploymentError(
            f"tp={tp} exceeds {hw.name}'s scale-up domain of {hw.scaleup_domain_gpus} GPUs"
        )
    if model.num_heads % tp:
        raise DeploymentError(
            f"tp={tp} does not divide {model.name}'s {model.num_heads} attention heads"
        )
    if model.num_kv_heads % tp and tp % model.num_kv_heads:
        raise DeploymentError(
            f"tp={tp} and {model.name}'s {model.num_kv_heads} KV heads: neither divides the other"
        )
    usable = hw.hbm_bytes * 0.9
    need = weight_bytes_per_gpu(model, tp, weight_dtype) + RUNTIME_RESERVE_BYTES
    if need >= usable:
        fitting = [t for t in (1, 2, 4, 8, 16, 32, 64) if t <= hw.scaleup_domain_gpus and model.num_heads % t == 0
                   and weight_bytes_per_gpu(model, t, weight_dtype) + RUNTIME_RESERVE_BYTES < usable]  # fmt: skip
        hint = (
            f"; smallest tp that fits: {fitting[0]}"
            if fitting
            else "; no tp within one scale-up domain fits"
        )
        raise ModelDoesNotFitError(
            f"{model.name} ({weight_dtype}) needs {need / 1e9:.1f} GB per GPU at tp={tp} "
            f"(weights + {RUNTIME_RESERVE_BYTES / 1e9:.1f} GB runtime) but {hw.name} has "
            f"{usable / 1e9:.1f} GB usable (90% of {hw.hbm_bytes / 1e9:.0f} GB){hint}"
        )


def weight_bytes_per_gpu(model: ModelSpec, tp: int, weight_dtype: str) -> float:
    return model.weight_bytes(WEIGHT_DTYPE_BYTES[weight_dtype]) / tp


def kv_heads_per_gpu(model: ModelSpec, tp: int) -> int:
    """KV heads each GPU holds; below one per GPU they are replicated (vLLM does this)."""
    return max(1, model.num_kv_heads // tp)


def kv_bytes_per_token_per_gpu(model: ModelSpec, tp: int) -> int:
    return 2 * model.num_layers * kv_heads_per_gpu(model, tp) * model.head_dim * KV_DTYPE_BYTES


def kv_capacity_tokens(
    model: ModelSpec, hw: Accelerator, tp: int, weight_dtype: str, gpu_memory_utilization: float
) -> int:
    """Tokens of KV cache a replica holds: HBM x utilization minus weights and runtime."""
    if not 0.0 < gpu_memory_utilization <= 1.0:
        raise ValueError(f"gpu_memory_utilization must be in (0, 1], got {gpu_memory_utilization}")
    free = (
        hw.hbm_bytes * gpu_memory_utilization
        - weight_bytes_per_gpu(model, tp, weight_dtype)
        - RUNTIME_RESERVE_BYTES
    )
    return max(0, math.floor(free / kv_bytes_per_token_per_gpu(model, tp)))
