"""The `Router`: the one object that turns routing events into snapshots and decisions.

It keeps the router's own bookkeeping — per replica: requests in flight, requests still in
prefill and their uncached prompt tokens, decoding requests and their context tokens,
recent TTFT, output throughput and dispatch rate, and an approximate prefix index built
from its own past decisions (per-replica LRU of block hashes) — merges it with the scraped
`EngineMetrics` handed in by the caller (stale by the scrape interval; the caller decides
how stale), builds the frozen `ClusterSnapshot`, asks `policy.choose`, then calls the
policy's hooks. The simulator and the gateway both drive exactly this class, so a policy
sees the same features in both.
"""

from __future__ import annotations

import math
import random
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field, fields

from selfserve.policy.base import Policy
from selfserve.policy.prefix_index import BlockLRUIndex
from selfserve.policy.snapshot import (
    ClusterSnapshot,
    EngineMetrics,
    ReplicaInfo,
    ReplicaView,
    RequestView,
)

# llm-d's approx-prefix producer: lruCapacityPerServer when the pod's block count is unknown.
DEFAULT_INDEX_CAPACITY_BLOCKS = 31_250
# production-stack --request-stats-window: the sliding window for per-endpoint QPS.
DEFAULT_WINDOW_S = 60.0
# Media items remembered per replica (LRU) for media_hit_tokens.
MEDIA_INDEX_CAPACITY = 10_000
# LiteLLM latency-based routing averages the last 10 samples.
TTFT_SAMPLES = 10


def _positional_view_factory():
    """A `ReplicaView` constructor taking every field positionally (declaration order).

    It fills the slots through their descriptors, skipping the frozen dataclass
    `__init__`'s per-field `object.__setattr__(self, "name", …)` lookups: the Router builds
    one view per replica per decision, and this is ~1.7× faster. The result is an ordinary
    frozen `ReplicaView`, equal to `ReplicaView(*same_args)` (a router test checks).
    """
    new = object.__new__
    set_index = ReplicaView.index.__set__
    set_name = ReplicaView.name.__set__
    set_in_flight_requests = ReplicaView.in_flight_requests.__set__
    set_prefill_requests = ReplicaView.prefill_requests.__set__
    set_queued_prefill_tokens = ReplicaView.queued_prefill_tokens.__set__
    set_decode_requests = ReplicaView.decode_requests.__set__
    set_running_decode_tokens = ReplicaView.running_decode_tokens.__set__
    set_prefix_hit_tokens = ReplicaView.prefix_hit_tokens.__set__
    set_media_hit_tokens = ReplicaView.media_hit_tokens.__set__
    set_recent_ttft_s = ReplicaView.recent_ttft_s.__set__
    set_recent_output_tokens_per_s = ReplicaView.recent_output_tokens_per_s.__set__
    set_recent_requests_per_s = ReplicaView.recent_requests_per_s.__set__
    set_num_requests_running = ReplicaView.num_requests_running.__set__
    set_num_requests_waiting = ReplicaView.num_requests_waiting.__set__
    set_kv_cache_usage = ReplicaView.kv_cache_usage.__set__
    set_metrics_age_s = ReplicaView.metrics_age_s.__set__
    set_hardware = ReplicaView.hardware.__set__
    set_model = ReplicaView.model.__set__
    set_kv_capacity_tokens = ReplicaView.kv_capacity_tokens.__set__
    set_max_model_len = ReplicaView.max_model_len.__set__
    set_is_healthy = ReplicaView.is_healthy.__set__

    def make(
        index,
        name,
        in_flight_requests,
        prefill_requests,
        queued_prefill_tokens,
        decode_requests,
        running_decode_tokens,
        prefix_hit_tokens,
        media_hit_tokens,
        recent_ttft_s,
        recent_output_tokens_per_s,
        recent_requests_per_s,
        num_requests_running,
        num_requests_waiting,
        kv_cache_usage,
        metrics_age_s,
        hardware,
        model,
        kv_capacity_tokens,
        max_model_len,
        is_healthy,
    ) -> ReplicaView:
        view = new(ReplicaView)
        set_index(view, index)
        set_name(view, name)
        set_in_flight_requests(view, in_flight_requests)
        set_prefill_requests(view, prefill_requests)
        set_queued_prefill_tokens(view, queued_prefill_tokens)
        set_decode_requests(view, decode_requests)
        set_running_decode_tokens(view, running_decode_tokens)
        set_prefix_hit_tokens(view, prefix_hit_tokens)
        set_media_hit_tokens(view, media_hit_tokens)
        set_recent_ttft_s(view, recent_ttft_s)
        set_recent_output_tokens_per_s(view, recent_output_tokens_per_s)
        set_recent_requests_per_s(view, recent_requests_per_s)
        set_num_requests_running(view, num_requests_running)
        set_num_requests_waiting(view, num_requests_waiting)
        set_kv_cache_usage(view, kv_cache_usage)
        set_metrics_age_s(view, metrics_age_s)
        set_hardware(view, hardware)
        set_model(view, model)
        set_kv_capacity_tokens(view, kv_capacity_tokens)
        set_max_model_len(view, max_model_len)
        set_is_healthy(view, is_healthy)
        return view

    return make


_replica_view = _positional_view_factory()
if tuple(ReplicaView.__slots__) != tuple(f.name for f in fields(ReplicaView)):
    raise ImportError("ReplicaView slots and fields disagree; update _positional_view_factory")


class RoutingError(ValueError):
    """A routing call the Router cannot honour (no healthy replica, bad policy answer, …)."""


class UnknownRequestError(KeyError):
    """An event names a request the Router never routed (or already completed)."""


@dataclass(slots=True)
class _ReplicaBook:
    in_flight_requests: int = 0
    prefill_requests: int = 0
    queued_prefill_tokens: int = 0
    decode_requests: int = 0
    running_decode_tokens: int = 0
    ttft_samples_s: deque = field(default_factory=lambda: deque(maxlen=TTFT_SAMPLES))
    ttft_sum_s: float = 0.0
    dispatch_times_s: deque = field(default_factory=deque)
    completions: deque = field(default_factory=deque)  # (now_s, output_tokens)
    completed_output_tokens: int = 0


@dataclass(slots=True)
class _InFlight:
    replica: int
    dispatched_s: float
    uncached_prompt_tokens: int
    context_tokens: int  # prompt + expected output: the KV it will hold while decoding
    has_first_token: bool = False


class Router:
    """Routes requests with `policy` over `replicas`, keeping the router's own state.

    `window_s` is the sliding window for `recent_requests_per_s` and
    `recent_output_tokens_per_s`; `index_capacity_blocks` bounds each replica's prefix LRU
    (default: the replica's KV capacity in blocks of the request's block size when known,
    else llm-d's 31,250 entries).
    """

    def __init__(
        self,
        policy: Policy,
        replicas: Sequence[ReplicaInfo],
        *,
        window_s: float = DEFAULT_WINDOW_S,
        index_capacity_blocks: int | None = None,
    ) -> None:
        if not replicas:
            raise RoutingError("a Router needs at least one replica")
        if window_s <= 0:
            raise RoutingError(f"window_s must be > 0, got {window_s}")
        self.policy = policy
        self.replicas: tuple[ReplicaInfo, ...] = tuple(replicas)
        self.window_s = window_s
        self._index_capacity_blocks = index_capacity_blocks
        self._books = [_ReplicaBook() for _ in self.replicas]
        self._in_flight: dict[str, _InFlight] = {}
        self._index: BlockLRUIndex | None = None  # sized on the first request's block size
        self._index_block_size = 0
        # media content hashes each replica was sent (its encoder/prefix cache may hold them)
        self._media_seen = [BlockLRUIndex([MEDIA_INDEX_CAPACITY]) for _ in self.replicas]
        self.num_routed = 0

    # ---- public API -------------------------------------------------------------------
    def route(
        self,
        request: RequestView,
        now_s: float,
        metrics: Sequence[EngineMetrics | None],
        rng: random.Random,
        healthy: Sequence[bool] | None = None,
    ) -> int:
        """Pick a replica for `request`, record the dispatch, and return its index."""
        n = len(self.replicas)
        if len(metrics) != n:
            raise RoutingError(f"metrics has {len(metrics)} entries for {n} replicas")
        if healthy is not None and len(healthy) != n:
            raise RoutingError(f"healthy has {len(healthy)} entries for {n} replicas")
        if healthy is not None and not any(healthy):
            raise RoutingError("no healthy replica to route to")
        if request.request_id in self._in_flight:
            raise RoutingError(f"request {request.request_id!r} is already in flight")
        snapshot = self.snapshot(request, now_s, metrics, healthy)
        choice = self.policy.choose(snapshot, rng)
        if not isinstance(choice, int) or not 0 <= choice < n:
            raise RoutingError(
                f"policy {self.policy.name!r} returned {choice!r}; valid: 0..{n - 1}"
            )
        if not snapshot.replicas[choice].is_healthy:
            raise RoutingError(
                f"policy {self.policy.name!r} chose unhealthy replica {choice} "
                f"({self.replicas[choice].name})"
            )
        self._record_dispatch(snapshot, choice)
        self.policy.on_route(snapshot, choice)
        return choice

    def on_first_token(self, request_id: str, now_s: float) -> None:
        flight = self._get(request_id)
        if flight.has_first_token:
            return
        flight.has_first_token = True
        book = self._books[flight.replica]
        book.prefill_requests -= 1
        book.queued_prefill_tokens -= flight.uncached_prompt_tokens
        book.decode_requests += 1
        book.running_decode_tokens += flight.context_tokens
        ttft_s = max(0.0, now_s - flight.dispatched_s)
        samples = book.ttft_samples_s
        if len(samples) == samples.maxlen:
            book.ttft_sum_s -= samples[0]
        samples.append(ttft_s)
        book.ttft_sum_s += ttft_s
        self.policy.on_first_token(request_id, flight.replica, now_s)

    def on_complete(
        self, request_id: str, now_s: float, output_tokens: int, ok: bool = True
    ) -> None:
        flight = self._in_flight.pop(request_id, None)
        if flight is None:
            raise UnknownRequestError(f"request {request_id!r} is not in flight")
        book = self._books[flight.replica]
        book.in_flight_requests -= 1
        if flight.has_first_token:
            book.decode_requests -= 1
            book.running_decode_tokens -= flight.context_tokens
        else:
            book.prefill_requests -= 1
            book.queued_prefill_tokens -= flight.uncached_prompt_tokens
        if output_tokens > 0:
            book.completions.append((now_s, output_tokens))
            book.completed_output_tokens += output_tokens
        self.policy.on_complete(request_id, flight.replica, now_s, ok)

    def replica_of(self, request_id: str) -> int:
        return self._get(request_id).replica

    @property
    def num_in_flight(self) -> int:
        return len(self._in_flight)

    def prefix_hit_tokens(self, request: RequestView) -> list[int]:
        """Tokens of `request` each replica is expected to hold, by the router's own index."""
        index = self._ensure_index(request.block_size)
        if index is None or not request.block_hashes:
            return [0] * len(self.replicas)
        bs = request.block_size
        cap = request.prompt_tokens
        hashes = request.block_hashes
        first = hashes[0]
        out = []
        # Inlined `contiguous_match` per replica: most replicas lack even the first block,
        # which one dict probe settles without a call.
        for held in index.held:
            if first not in held:
                out.append(0)
                continue
            n = 0
            for h in hashes:
                if h not in held:
                    break
                n += 1
            out.append(min(cap, n * bs))
        return out

    def _media_hit_tokens(self, request: RequestView) -> list[int]:
        """Media tokens expected cached per replica: the request's media tokens times the
        share of its media items already sent there (per-item sizes are not in the view)."""
        n = len(request.media_hashes)
        if not n or request.media_tokens <= 0:
            return [0] * len(self.replicas)
        out = []
        for seen in self._media_seen:
            held = seen.held[0]
            k = sum(1 for h in request.media_hashes if h in held)
            out.append(request.media_tokens * k // n)
        return out

    def snapshot(
        self,
        request: RequestView,
        now_s: float,
        metrics: Sequence[EngineMetrics | None],
        healthy: Sequence[bool] | None = None,
    ) -> ClusterSnapshot:
        """The frozen view a policy decides on (also useful to inspect the Router)."""
        hits = self.prefix_hit_tokens(request)
        media_hits = self._media_hit_tokens(request)
        cutoff_s = now_s - self.window_s
        window_s = self.window_s
        views = []
        inf = math.inf
        for i, info in enumerate(self.replicas):
            book = self._books[i]
            dispatches = book.dispatch_times_s
            while dispatches and dispatches[0] < cutoff_s:
                dispatches.popleft()
            done = book.completions
            while done and done[0][0] < cutoff_s:
                book.completed_output_tokens -= done.popleft()[1]
            m = metrics[i]
            if m is None:
                running = waiting = 0
                kv = 0.0
                age_s = inf
            else:
                running, waiting, kv = (
                    m.num_requests_running,
                    m.num_requests_waiting,
                    m.kv_cache_usage,
                )
                age_s = now_s - m.scraped_at_s
                if age_s < 0.0:
                    age_s = 0.0
            samples = book.ttft_samples_s
            # Positional, through the fast constructor: this runs for every replica on
            # every decision. The router tests compare these views field by field, so an
            # order change cannot pass silently.
            views.append(
                _replica_view(
                    i,
                    info.name,
                    book.in_flight_requests,
                    book.prefill_requests,
                    book.queued_prefill_tokens,
                    book.decode_requests,
                    book.running_decode_tokens,
                    hits[i],
                    media_hits[i],
                    book.ttft_sum_s / len(samples) if samples else 0.0,
                    book.completed_output_tokens / window_s,
                    len(dispatches) / window_s,
                    running,
                    waiting,
                    kv,
                    age_s,
                    info.hardware,
                    info.model,
                    info.kv_capacity_tokens,
                    info.max_model_len,
                    True if healthy is None else bool(healthy[i]),
                )
            )
        return ClusterSnapshot(now_s=now_s, request=request, replicas=tuple(views))

    # ---- internals --------------------------------------------------------------------
    def _get(self, request_id: str) -> _InFlight:
        flight = self._in_flight.get(request_id)
        if flight is None:
            raise UnknownRequestError(f"request {request_id!r} is not in flight")
        return flight

    def _ensure_index(self, block_size: int) -> BlockLRUIndex | None:
        if self._index is not None:
            return self._index
        if block_size <= 0:
            return None
        caps = []
        for info in self.replicas:
            if self._index_capacity_blocks is not None:
                caps.append(self._index_capacity_blocks)
            elif info.kv_capacity_tokens > 0:
                caps.append(max(1, info.kv_capacity_tokens // block_size))
            else:
                caps.append(DEFAULT_INDEX_CAPACITY_BLOCKS)
        self._index = BlockLRUIndex(caps)
        self._index_block_size = block_size
        return self._index

    def _record_dispatch(self, snapshot: ClusterSnapshot, choice: int) -> None:
        request = snapshot.request
        total_prompt = request.total_prompt_tokens
        view = snapshot.replicas[choice]
        hit = view.prefix_hit_tokens + view.media_hit_tokens
        flight = _InFlight(
            replica=choice,
            dispatched_s=snapshot.now_s,
            uncached_prompt_tokens=max(0, total_prompt - hit),
            context_tokens=total_prompt + request.expected_output_tokens,
        )
        self._in_flight[request.request_id] = flight
        book = self._books[choice]
        book.in_flight_requests += 1
        book.prefill_requests += 1
        book.queued_prefill_tokens += flight.uncached_prompt_tokens
        book.dispatch_times_s.append(snapshot.now_s)
        if self._index is not None and request.block_hashes:
            self._index.insert(choice, request.block_hashes, snapshot.now_s)
        if request.media_hashes:
            self._media_seen[choice].insert(0, request.media_hashes, snapshot.now_s)
        self.num_routed += 1
