"""What a router can know when it picks a replica: the frozen `ClusterSnapshot`.

The simulator and the live gateway both build this same record and hand it to the same
policy function, which is what makes a policy learned in the twin the policy that serves.

Every per-replica feature says where it comes from:
- *own*: the router's own bookkeeping, updated instantly on route / first token / completion;
- *scraped*: engine metrics (vLLM `/metrics` or SGLang), as of the last scrape, so stale by
  up to the scrape interval (`metrics_age_s` says by how much);
- *static*: the replica's deployment.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class EngineMetrics:
    """One scrape of one engine's metrics (vLLM names in comments)."""

    num_requests_running: int = 0  # vllm:num_requests_running
    num_requests_waiting: int = 0  # vllm:num_requests_waiting
    kv_cache_usage: float = 0.0  # vllm:kv_cache_usage_perc, a fraction in [0, 1]
    scraped_at_s: float = 0.0


@dataclass(frozen=True, slots=True)
class ReplicaInfo:
    """Static description of one replica (static)."""

    index: int
    name: str
    hardware: str = ""
    model: str = ""
    tp: int = 1
    kv_capacity_tokens: int = 0
    max_model_len: int = 0
    block_size: int = 16


@dataclass(frozen=True, slots=True)
class ReplicaView:
    """One replica as the router sees it at the moment of a decision."""

    index: int
    name: str
    # own: instant bookkeeping of the router's dispatches
    in_flight_requests: int = 0  # dispatched, not yet completed
    prefill_requests: int = 0  # dispatched, no first token yet
    queued_prefill_tokens: int = 0  # uncached prompt tokens of requests without a first token
    decode_requests: int = 0  # past their first token, not completed
    running_decode_tokens: int = 0  # estimated context tokens of decoding requests
    prefix_hit_tokens: int = 0  # this request's tokens the router's index expects cached here
    media_hit_tokens: int = 0  # this request's media tokens expected cached here
    recent_ttft_s: float = 0.0  # moving average of observed TTFT (0 before any)
    recent_output_tokens_per_s: float = 0.0  # output tokens/s over the recent window
    recent_requests_per_s: float = 0.0  # dispatches/s over the recent window
    # scraped: engine metrics as of the last scrape
    num_requests_running: int = 0
    num_requests_waiting: int = 0
    kv_cache_usage: float = 0.0
    metrics_age_s: float = 0.0
    # static
    hardware: str = ""
    model: str = ""
    kv_capacity_tokens: int = 0
    max_model_len: int = 0
    is_healthy: bool = True


@dataclass(frozen=True, slots=True)
class RequestView:
    """The request being routed, as features (no text)."""

    request_id: str
    arrival_s: float
    prompt_tokens: int
    media_tokens: int = 0
    expected_output_tokens: int = 0
    block_hashes: tuple[int, ...] = ()
    block_size: int = 16
    media_hashes: tuple[int, ...] = ()
    session_id: str | None = None

    @property
    def total_prompt_tokens(self) -> int:
        return self.prompt_tokens + self.media_tokens


@dataclass(frozen=True, slots=True)
class ClusterSnapshot:
    """Everything a policy may read for one decision. Policies must not mutate it."""

    now_s: float
    request: RequestView
    replicas: tuple[ReplicaView, ...]
