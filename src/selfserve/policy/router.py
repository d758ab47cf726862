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
from dataclasses import dataclass, field

from selfserve.policy.base import Policy
from selfserve.policy.prefix_index import BlockLRUIndex
from selfserve.policy.snapshot import (
    ClusterSnapshot,
    EngineMetrics,
    ReplicaInfo,
    ReplicaView,
    RequestView,
)
from selfserve.policy.views import FULL_PLAN, ReadPlan
from selfserve.policy.views import replica_view as _replica_view

# llm-d's approx-prefix producer: lruCapacityPerServer when the pod's block count is unknown.
DEFAULT_INDEX_CAPACITY_BLOCKS = 31_250
# production-stack --request-stats-window: the sliding window for per-endpoint QPS.
DEFAULT_WINDOW_S = 60.0
# Media items remembered per replica (LRU) for media_hit_tokens.
MEDIA_INDEX_CAPACITY = 10_000
# LiteLLM latency-based routing averages the last 10 samples.
TTFT_SAMPLES = 10


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
    # Bumped by every event that changes a field above, so a cached view of this replica's
    # own features is known current while it is unchanged.
    version: int = 0

    def prune(self, cutoff_s: float) -> None:
        """Drop dispatches and completions older than `cutoff_s` from the rate windows."""
        dispatches = self.dispatch_times_s
        while dispatches and dispatches[0] < cutoff_s:
            dispatches.popleft()
        done = self.completions
        while done and done[0][0] < cutoff_s:
            self.completed_output_tokens -= done.popleft()[1]


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
    else llm-d's 31,250 entries). A policy that declares `replica_fields` gets snapshots
    carrying those dynamic fields only (see `selfserve.policy.views`); `snapshot()` always
    builds every field. `keep_unread_state=False` (the simulator, which never inspects the
    Router) also skips the prefix and media indexes while the policy reads no own or hit
    feature; `snapshot()` and `prefix_hit_tokens()` then raise `RoutingError`.
    """

    def __init__(
        self,
        policy: Policy,
        replicas: Sequence[ReplicaInfo],
        *,
        window_s: float = DEFAULT_WINDOW_S,
        index_capacity_blocks: int | None = None,
        keep_unread_state: bool = True,
    ) -> None:
        if not replicas:
            raise RoutingError("a Router needs at least one replica")
        if window_s <= 0:
            raise RoutingError(f"window_s must be > 0, got {window_s}")
        self.replicas: tuple[ReplicaInfo, ...] = tuple(replicas)
        self.window_s = window_s
        self._index_capacity_blocks = index_capacity_blocks
        self._books = [_ReplicaBook() for _ in self.replicas]
        self._in_flight: dict[str, _InFlight] = {}
        self._index: BlockLRUIndex | None = None  # sized on the first request's block size
        self._index_block_size = 0
        # media content hashes each replica was sent (its encoder/prefix cache may hold them)
        self._media_seen = [BlockLRUIndex([MEDIA_INDEX_CAPACITY]) for _ in self.replicas]
        self._all_healthy = (True,) * len(self.replicas)
        self.num_routed = 0
        self._keep_unread_state = keep_unread_state
        self._indexes_incomplete = False  # a dispatch skipped the prefix/media indexes
        self.policy = policy

    # ---- public API -------------------------------------------------------------------
    @property
    def policy(self) -> Policy:
        return self._policy

    @policy.setter
    def policy(self, policy: Policy) -> None:
        """Set the policy, read its `replica_fields` and forget views built for another."""
        plan = ReadPlan.of(policy)
        # Without `keep_unread_state`, the indexes feed only hit features and the queued
        # prefill tokens derived from them; a policy reading neither needs no index.
        skips = not self._keep_unread_state and not (plan.own or plan.prefix or plan.media)
        if self._indexes_incomplete and not skips:
            raise RoutingError(
                f"policy {getattr(policy, 'name', policy)!r} reads own or prefix features, "
                "but this Router (keep_unread_state=False) skipped its indexes so far"
            )
        self._policy = policy
        self._plan = plan
        self._static_plan = plan.is_static
        self._skips_indexes = skips
        n = len(self.replicas)
        self._view_keys: list[tuple | None] = [None] * n
        self._views: list[ReplicaView | None] = [None] * n
        self._view_tuple: tuple[ReplicaView, ...] = ()
        self._static_health: tuple[bool, ...] | None = None

    @property
    def reads_engine_metrics(self) -> bool:
        """Whether the policy's snapshots carry scraped metrics (else `metrics` passed to
        `route` is only checked for its length)."""
        return self._plan.scraped or self._plan.age

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
        if self._index is None and not self._skips_indexes:
            self._ensure_index(request.block_size)
        snapshot = self._decision_snapshot(request, now_s, metrics, healthy)
        policy = self._policy
        choice = policy.choose(snapshot, rng)
        if not isinstance(choice, int) or not 0 <= choice < n:
            raise RoutingError(f"policy {policy.name!r} returned {choice!r}; valid: 0..{n - 1}")
        view = snapshot.replicas[choice]
        if not view.is_healthy:
            raise RoutingError(
                f"policy {policy.name!r} chose unhealthy replica {choice} "
                f"({self.replicas[choice].name})"
            )
        plan = self._plan
        if self._skips_indexes:
            self._indexes_incomplete = True
            hit = 0  # nothing reads it (see `keep_unread_state`)
        else:
            hit = view.prefix_hit_tokens if plan.prefix else self._prefix_hit_on(choice, request)
            if request.media_hashes:
                hit += view.media_hit_tokens if plan.media else self._media_hit_on(choice, request)
        self._record_dispatch(request, now_s, choice, hit)
        policy.on_route(snapshot, choice)
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
        book.version += 1
        self._policy.on_first_token(request_id, flight.replica, now_s)

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
        book.version += 1
        self._policy.on_complete(request_id, flight.replica, now_s, ok)

    def replica_of(self, request_id: str) -> int:
        return self._get(request_id).replica

    @property
    def num_in_flight(self) -> int:
        return len(self._in_flight)

    def prefix_hit_tokens(self, request: RequestView) -> list[int]:
        """Tokens of `request` each replica is expected to hold, by the router's own index."""
        self._check_complete("prefix_hit_tokens")
        return self._prefix_hits(request)

    def _prefix_hits(self, request: RequestView) -> list[int]:
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

    def _prefix_hit_on(self, replica: int, request: RequestView) -> int:
        """`prefix_hit_tokens(request)[replica]`, for one replica."""
        index = self._index
        if index is None or not request.block_hashes:
            return 0
        held = index.held[replica]
        n = 0
        for h in request.block_hashes:  # `contiguous_match`, inlined (once per decision)
            if h not in held:
                break
            n += 1
        return min(request.prompt_tokens, n * request.block_size)

    def _media_hit_tokens(self, request: RequestView) -> list[int]:
        """Media tokens expected cached per replica: the request's media tokens times the
        share of its media items already sent there (per-item sizes are not in the view)."""
        if not request.media_hashes or request.media_tokens <= 0:
            return [0] * len(self.replicas)
        return [self._media_hit_on(i, request) for i in range(len(self.replicas))]

    def _media_hit_on(self, replica: int, request: RequestView) -> int:
        n = len(request.media_hashes)
        if not n or request.media_tokens <= 0:
            return 0
        held = self._media_seen[replica].held[0]
        k = sum(1 for h in request.media_hashes if h in held)
        return request.media_tokens * k // n

    def snapshot(
        self,
        request: RequestView,
        now_s: float,
        metrics: Sequence[EngineMetrics | None],
        healthy: Sequence[bool] | None = None,
    ) -> ClusterSnapshot:
        """The frozen view a policy decides on, every field filled (also useful to inspect
        the Router)."""
        self._check_complete("snapshot")
        health = self._all_healthy if healthy is None else tuple(map(bool, healthy))
        views: list = [None] * len(self.replicas)
        self._fill_views(FULL_PLAN, request, now_s, metrics, health, views, None)
        return ClusterSnapshot(now_s=now_s, request=request, replicas=tuple(views))

    # ---- internals --------------------------------------------------------------------
    def _check_complete(self, what: str) -> None:
        if self._indexes_incomplete:
            raise RoutingError(
                f"{what}: this Router keeps only what its policy reads (keep_unread_state="
                "False) and skipped its prefix and media indexes"
            )

    def _decision_snapshot(
        self,
        request: RequestView,
        now_s: float,
        metrics: Sequence[EngineMetrics | None],
        healthy: Sequence[bool] | None,
    ) -> ClusterSnapshot:
        """The snapshot for the policy: the fields its plan reads, views reused while their
        inputs are unchanged."""
        health = self._all_healthy if healthy is None else tuple(map(bool, healthy))
        plan = self._plan
        if self._static_plan:
            if health != self._static_health:
                self._fill_views(plan, request, now_s, metrics, health, self._views, None)
                self._view_tuple = tuple(self._views)
                self._static_health = health
        elif self._fill_views(plan, request, now_s, metrics, health, self._views, self._view_keys):
            self._view_tuple = tuple(self._views)
        return ClusterSnapshot(now_s, request, self._view_tuple)

    def _fill_views(
        self,
        plan: ReadPlan,
        request: RequestView,
        now_s: float,
        metrics: Sequence[EngineMetrics | None],
        health: tuple[bool, ...],
        views: list,
        keys: list | None,
    ) -> bool:
        """Write each replica's view for a decision at `now_s` into `views`: the groups
        `plan` reads hold their current values, the others their defaults. With `keys` (the
        inputs each view was built from), a view whose inputs are unchanged is kept.
        Returns whether any view was (re)built."""
        hits = self._prefix_hits(request) if plan.prefix else None
        media_hits = self._media_hit_tokens(request) if plan.media else None
        own, rates, scraped, age = plan.own, plan.rates, plan.scraped, plan.age
        timed = rates or scraped or age
        window_s = self.window_s
        cutoff_s = now_s - window_s
        infos = self.replicas
        inf = math.inf
        changed = False
        for i, book in enumerate(self._books):
            hit = 0 if hits is None else hits[i]
            media_hit = 0 if media_hits is None else media_hits[i]
            dispatched = completed = 0
            if rates:
                book.prune(cutoff_s)
                dispatched = len(book.dispatch_times_s)
                completed = book.completed_output_tokens
            running = waiting = 0
            kv = age_s = 0.0
            if scraped or age:
                m = metrics[i]
                if m is None:
                    if age:
                        age_s = inf
                else:
                    if scraped:
                        running = m.num_requests_running
                        waiting = m.num_requests_waiting
                        kv = m.kv_cache_usage
                    if age:
                        age_s = now_s - m.scraped_at_s
                        if age_s < 0.0:
                            age_s = 0.0
            if keys is not None:
                if timed:
                    key = (
                        book.version if own else 0,
                        hit,
                        media_hit,
                        dispatched,
                        completed,
                        running,
                        waiting,
                        kv,
                        age_s,
                        health[i],
                    )
                else:  # the rest are constant for this plan
                    key = (book.version if own else 0, hit, media_hit, health[i])
                if key == keys[i]:
                    continue
                keys[i] = key
            changed = True
            info = infos[i]
            samples = book.ttft_samples_s
            # Positional, through the fast constructor. The router tests compare these
            # views field by field, so an order change cannot pass silently.
            views[i] = _replica_view(
                i,
                info.name,
                book.in_flight_requests if own else 0,
                book.prefill_requests if own else 0,
                book.queued_prefill_tokens if own else 0,
                book.decode_requests if own else 0,
                book.running_decode_tokens if own else 0,
                hit,
                media_hit,
                book.ttft_sum_s / len(samples) if own and samples else 0.0,
                completed / window_s,
                dispatched / window_s,
                running,
                waiting,
                kv,
                age_s,
                info.hardware,
                info.model,
                info.kv_capacity_tokens,
                info.max_model_len,
                health[i],
            )
        return changed

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

    def _record_dispatch(
        self, request: RequestView, now_s: float, choice: int, hit_tokens: int
    ) -> None:
        total_prompt = request.total_prompt_tokens
        flight = _InFlight(
            choice,
            now_s,
            max(0, total_prompt - hit_tokens),
            total_prompt + request.expected_output_tokens,
        )
        self._in_flight[request.request_id] = flight
        book = self._books[choice]
        book.in_flight_requests += 1
        book.prefill_requests += 1
        book.queued_prefill_tokens += flight.uncached_prompt_tokens
        # Keep the rate windows bounded whatever the policy reads (a snapshot prunes them
        # again at its own time; pruning earlier entries first changes no value it reads).
        cutoff_s = now_s - self.window_s
        dispatches = book.dispatch_times_s
        if (dispatches and dispatches[0] < cutoff_s) or (
            book.completions and book.completions[0][0] < cutoff_s
        ):
            book.prune(cutoff_s)
        dispatches.append(now_s)
        book.version += 1
        if not self._skips_indexes:
            if self._index is not None and request.block_hashes:
                self._index.insert(choice, request.block_hashes, now_s)
            if request.media_hashes:
                self._media_seen[choice].insert(0, request.media_hashes, now_s)
        self.num_routed += 1
