"""Hand-built snapshots for policy tests."""

from __future__ import annotations

from selfserve.policy.snapshot import ClusterSnapshot, ReplicaView, RequestView


def snap(*replicas: dict, now_s: float = 0.0, **request) -> ClusterSnapshot:
    """A snapshot with one ReplicaView per dict (fields by name) and a request."""
    request.setdefault("request_id", "r")
    request.setdefault("arrival_s", now_s)
    request.setdefault("prompt_tokens", 64)
    views = tuple(ReplicaView(index=i, name=f"r{i}", **fields) for i, fields in enumerate(replicas))
    return ClusterSnapshot(now_s=now_s, request=RequestView(**request), replicas=views)


def route(policy, snapshot: ClusterSnapshot, rng) -> int:
    """choose + on_route, as the Router does."""
    choice = policy.choose(snapshot, rng)
    policy.on_route(snapshot, choice)
    return choice
