"""The contract every routing policy keeps, in the simulator and in the gateway alike.

A policy decides with `choose(snapshot, rng)`: a function of the frozen snapshot, its own
soft state (read-only while choosing) and the RNG passed in. Its soft state (prefix indexes,
counters, session tables) changes only through the three event hooks, which the `Router`
calls in the same order in `sim/` and `gateway/`. No I/O, no clocks: time arrives as
`now_s` arguments.
"""

from __future__ import annotations

import random
from typing import Protocol, runtime_checkable

from selfserve.policy.snapshot import ClusterSnapshot


@runtime_checkable
class Policy(Protocol):
    name: str

    def choose(self, snapshot: ClusterSnapshot, rng: random.Random) -> int:
        """Index into `snapshot.replicas` of the replica that gets the request."""
        ...

    def on_route(self, snapshot: ClusterSnapshot, replica_index: int) -> None:
        """The request in `snapshot` was sent to `replica_index` (at `snapshot.now_s`)."""
        ...

    def on_first_token(self, request_id: str, replica_index: int, now_s: float) -> None: ...

    def on_complete(self, request_id: str, replica_index: int, now_s: float, ok: bool) -> None: ...


class StatelessPolicy:
    """Base for policies without soft state: the event hooks do nothing."""

    name = "stateless"

    def choose(self, snapshot: ClusterSnapshot, rng: random.Random) -> int:
        raise NotImplementedError

    def on_route(self, snapshot: ClusterSnapshot, replica_index: int) -> None:
        return None

    def on_first_token(self, request_id: str, replica_index: int, now_s: float) -> None:
        return None

    def on_complete(self, request_id: str, replica_index: int, now_s: float, ok: bool) -> None:
        return None


class PolicyWrapper:
    """A policy that forwards every call to `inner`; subclasses override what they watch or
    change. It declares no `replica_fields`, so the Router hands it full snapshots unless a
    subclass declares them (e.g. as the inner policy's)."""

    def __init__(self, inner: Policy) -> None:
        self.inner = inner
        self.name = inner.name

    def choose(self, snapshot: ClusterSnapshot, rng: random.Random) -> int:
        return self.inner.choose(snapshot, rng)

    def on_route(self, snapshot: ClusterSnapshot, replica_index: int) -> None:
        self.inner.on_route(snapshot, replica_index)

    def on_first_token(self, request_id: str, replica_index: int, now_s: float) -> None:
        self.inner.on_first_token(request_id, replica_index, now_s)

    def on_complete(self, request_id: str, replica_index: int, now_s: float, ok: bool) -> None:
        self.inner.on_complete(request_id, replica_index, now_s, ok)
