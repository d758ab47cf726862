"""The load-only anchors: random, round-robin, least-loaded, least-request, power-of-two,
least-KV, and LiteLLM's least-busy.

Each reads only load features of the snapshot; none looks at prefixes. Sources are named
per class (paraphrased in `shared/design/routing-anchors.md`).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from selfserve.policy.framework import (
    Component,
    argmin_first,
    argmin_random,
    healthy_candidates,
    require,
)
from selfserve.policy.snapshot import ClusterSnapshot


class AnchorPolicy(Component):
    """A builtin policy: parameters are dataclass fields (overridable in a policy file)."""

    name = "anchor"
    # The dynamic `ReplicaView` fields `choose` and the hooks read; the Router fills only
    # those (`selfserve.policy.views`). None: every field.
    replica_fields: frozenset[str] | None = None

    def choose(self, snapshot: ClusterSnapshot, rng: random.Random) -> int:
        raise NotImplementedError


@dataclass(slots=True)
class RandomPolicy(AnchorPolicy):
    """`random`: uniform over healthy replicas.

    Reads: is_healthy. Sources: SGLang `policies/random.rs`, AIBrix `random` (its fallback),
    LiteLLM `simple-shuffle` without weights.
    """

    name = "random"
    replica_fields = frozenset()

    def choose(self, snapshot: ClusterSnapshot, rng: random.Random) -> int:
        cands = healthy_candidates(snapshot)
        return cands[rng.randrange(len(cands))]


@dataclass(slots=True)
class RoundRobinPolicy(AnchorPolicy):
    """`round-robin`: healthy[counter % len(healthy)], counter += 1 per routed request.

    Reads: is_healthy. Soft state: the counter (advanced in `on_route`). Source: SGLang
    `policies/round_robin.rs` (a counter modulo the number of healthy workers).
    """

    name = "round-robin"
    replica_fields = frozenset()
    _counter: int = 0

    def choose(self, snapshot: ClusterSnapshot, rng: random.Random) -> int:
        cands = healthy_candidates(snapshot)
        return cands[self._counter % len(cands)]

    def on_route(self, snapshot: ClusterSnapshot, replica_index: int) -> None:
        self._counter += 1


@dataclass(slots=True)
class LeastLoadedPolicy(AnchorPolicy):
    """`least-loaded`: fewest in-flight requests (own, instant), then fewest queued prefill
    tokens (own), then the lowest index.

    A plain baseline rather than one product's rule; it is SGLang's `least_load` with a
    token tie-break. Reads: in_flight_requests, queued_prefill_tokens.
    """

    name = "least-loaded"
    replica_fields = frozenset({"in_flight_requests", "queued_prefill_tokens"})

    def choose(self, snapshot: ClusterSnapshot, rng: random.Random) -> int:
        reps = snapshot.replicas
        cands = healthy_candidates(snapshot)
        keys = [(reps[i].in_flight_requests, reps[i].queued_prefill_tokens) for i in cands]
        return argmin_first(cands, keys)  # tuples compare lexicographically


@dataclass(slots=True)
class LeastRequestPolicy(AnchorPolicy):
    """`least-request`: fewest running requests, ties uniformly at random.

    Reads: in_flight_requests (own; AIBrix's "realtime running-request count" is the
    gateway's own count). Source: AIBrix `algorithms/least_request.go`; ties are random
    in all AIBrix least-* routers.
    """

    name = "least-request"
    replica_fields = frozenset({"in_flight_requests"})

    def choose(self, snapshot: ClusterSnapshot, rng: random.Random) -> int:
        reps = snapshot.replicas
        cands = healthy_candidates(snapshot)
        return argmin_random(cands, [reps[i].in_flight_requests for i in cands], rng)


@dataclass(slots=True)
class LiteLLMLeastBusyPolicy(AnchorPolicy):
    """`litellm-least-busy`: fewest in-flight requests; the first minimum wins.

    Reads: in_flight_requests (own: +1 before the call, -1 on success or failure; never
    seen counts 0). Source: LiteLLM `router_strategy/least_busy.py`.
    """

    name = "litellm-least-busy"
    replica_fields = frozenset({"in_flight_requests"})

    def choose(self, snapshot: ClusterSnapshot, rng: random.Random) -> int:
        reps = snapshot.replicas
        cands = healthy_candidates(snapshot)
        return argmin_first(cands, [reps[i].in_flight_requests for i in cands])


@dataclass(slots=True)
class PowerOfTwoPolicy(AnchorPolicy):
    """`power-of-two`: draw 2 distinct healthy replicas; the lower load wins, the first
    draw on a tie.

    Parameter `load` ("in-flight" default | "tokens"): SGLang compares token loads polled
    from workers when it has them (~10 s old), else its own in-flight counts; "tokens"
    uses own queued prefill + running decode tokens instead. Reads: in_flight_requests or
    queued_prefill_tokens + running_decode_tokens. Source: SGLang `policies/power_of_two.rs`.
    """

    name = "power-of-two"
    replica_fields = frozenset(
        {"in_flight_requests", "queued_prefill_tokens", "running_decode_tokens"}
    )
    load: str = "in-flight"

    def validate(self) -> None:
        require(self.load in ("in-flight", "tokens"), "load", '"in-flight" | "tokens"', self.load)

    def choose(self, snapshot: ClusterSnapshot, rng: random.Random) -> int:
        cands = healthy_candidates(snapshot)
        if len(cands) == 1:
            return cands[0]
        a, b = rng.sample(cands, 2)
        ra, rb = snapshot.replicas[a], snapshot.replicas[b]
        if self.load == "tokens":
            la = ra.queued_prefill_tokens + ra.running_decode_tokens
            lb = rb.queued_prefill_tokens + rb.running_decode_tokens
        else:
            la, lb = ra.in_flight_requests, rb.in_flight_requests
        return b if lb < la else a


@dataclass(slots=True)
class LeastKVPolicy(AnchorPolicy):
    """`least-kv`: lowest KV-cache usage, ties uniformly at random.

    Reads: kv_cache_usage (scraped, as of the last scrape). Source: AIBrix
    `least-gpu-cache` / `least-kv-cache` (GPU usage only: there is no CPU tier here).
    """

    name = "least-kv"
    replica_fields = frozenset({"kv_cache_usage"})

    def choose(self, snapshot: ClusterSnapshot, rng: random.Random) -> int:
        reps = snapshot.replicas
        cands = healthy_candidates(snapshot)
        return argmin_random(cands, [reps[i].kv_cache_usage for i in cands], rng)
