"""Engine deployment knobs (vLLM's names and defaults) and the errors an engine raises.

`EngineConfig` is the part of a vLLM launch command that shapes scheduling: how many
sequences run at once, the per-step token budget, the KV block size, the share of GPU
memory given to weights + KV, and whether prefix caching and chunked prefill are on.
"""

from __future__ import annotations

from dataclasses import dataclass


class EngineConfigError(ValueError):
    """An `EngineConfig` field is out of its valid range."""


class RequestTooLarge(ValueError):
    """A request this replica can never serve (longer than its context or its KV cache)."""

    def __init__(self, request_id: str, reason: str) -> None:
        super().__init__(f"request {request_id!r} rejected: {reason}")
        self.request_id = request_id
        self.reason = reason


@dataclass(frozen=True, slots=True)
class EngineConfig:
    """vLLM engine arguments that matter to scheduling (same names, same defaults)."""

    max_num_seqs: int = 256
    max_num_batched_tokens: int = 8192
    block_size: int = 16
    gpu_memory_utilization: float = 0.9
    enable_prefix_caching: bool = True
    enable_chunked_prefill: bool = True
    num_gpu_blocks_override: int | None = None  # fix the KV cache size (tests, what-ifs)

    def __reduce__(self) -> tuple:
        """Pickle by the fields: the default for a frozen slotted class sets them with
        `setattr`, which a frozen (and a mypyc-compiled) dataclass refuses, so a cluster
        could not reach a Ray task or a spawned worker process."""
        return (EngineConfig, tuple(getattr(self, name) for name in self.__dataclass_fields__))

    def __post_init__(self) -> None:
        if self.max_num_seqs < 1:
            raise EngineConfigError(f"max_num_seqs must be >= 1, got {self.max_num_seqs}")
        if self.max_num_batched_tokens < 1:
            raise EngineConfigError(
                f"max_num_batched_tokens must be >= 1, got {self.max_num_batched_tokens}"
            )
        if self.block_size < 1:
            raise EngineConfigError(f"block_size must be >= 1, got {self.block_size}")
        if self.num_gpu_blocks_override is not None and self.num_gpu_blocks_override < 1:
            raise EngineConfigError(
                f"num_gpu_blocks_override must be >= 1, got {self.num_gpu_blocks_override}"
            )
        if not 0.0 < self.gpu_memory_utilization <= 1.0:
            raise EngineConfigError(
                f"gpu_memory_utilization must be in (0, 1], got {self.gpu_memory_utilization}"
            )
