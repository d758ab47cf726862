"""Typed records an engine hands out: one step's outcome and a metrics reading."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class StepOutput:
    """One engine iteration: when it ran and which requests it moved.

    `token_ids` lists every request that emitted a token in this step (first tokens
    included); tokens become visible at `end_s`.
    """

    start_s: float
    end_s: float
    first_token_ids: tuple[str, ...]
    token_ids: tuple[str, ...]
    finished_ids: tuple[str, ...]
    preempted_ids: tuple[str, ...]
    num_prefill_tokens: int = 0
    num_decode_tokens: int = 0
    energy_j: float = 0.0


@dataclass(frozen=True, slots=True)
class EngineStats:
    """What a vLLM `/metrics` scrape of this replica would show, plus simulator counters."""

    num_running: int
    num_waiting: int
    kv_usage: float  # vllm:kv_cache_usage_perc as a fraction
    prefix_queries_tokens: int  # vllm:prefix_cache_queries_total
    prefix_hits_tokens: int  # vllm:prefix_cache_hits_total
    num_preemptions: int  # vllm:num_preemptions_total
    num_steps: int
    prompt_tokens: int  # vllm:prompt_tokens_total (tokens prefilled, recompute included)
    generation_tokens: int  # vllm:generation_tokens_total
    busy_s: float  # time spent executing steps
    energy_j: float  # energy of executed steps (idle power not included)
    num_free_blocks: int
    num_blocks: int
