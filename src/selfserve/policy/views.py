"""How the `Router` builds `ReplicaView`s cheaply: a positional constructor, and the plan
of which feature groups a policy reads.

A policy may declare `replica_fields`: the dynamic `ReplicaView` fields it reads (in
`choose` and in its hooks). Static fields (index, name, hardware, model, kv_capacity_tokens,
max_model_len) and `is_healthy` are always filled. The Router then computes only the
groups (below) holding a declared field for the snapshots it hands that policy, leaves
every other dynamic field at its dataclass default, and reuses a replica's view while the
inputs of those groups are unchanged. A policy without the attribute (or with `None`) gets every field,
exactly as `Router.snapshot` builds it. The router tests check, per anchor, that the
declared snapshot and the full one lead to the same decisions.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any

from selfserve.policy.snapshot import ReplicaView

STATIC_FIELDS = frozenset(
    {"index", "name", "hardware", "model", "kv_capacity_tokens", "max_model_len", "is_healthy"}
)
# Groups by where a value comes from and when it changes (see ReplicaView's comments).
OWN_FIELDS = frozenset(
    {
        "in_flight_requests",
        "prefill_requests",
        "queued_prefill_tokens",
        "decode_requests",
        "running_decode_tokens",
        "recent_ttft_s",
    }
)  # change on route / first token / completion of the replica's requests
RATE_FIELDS = frozenset({"recent_output_tokens_per_s", "recent_requests_per_s"})  # + time
SCRAPED_FIELDS = frozenset({"num_requests_running", "num_requests_waiting", "kv_cache_usage"})
AGE_FIELDS = frozenset({"metrics_age_s"})  # changes with every decision time
PREFIX_FIELDS = frozenset({"prefix_hit_tokens"})  # per request
MEDIA_FIELDS = frozenset({"media_hit_tokens"})  # per request
DYNAMIC_FIELDS = (
    OWN_FIELDS | RATE_FIELDS | SCRAPED_FIELDS | AGE_FIELDS | PREFIX_FIELDS | MEDIA_FIELDS
)


class ReplicaFieldsError(ValueError):
    """A policy's `replica_fields` names something that is not a `ReplicaView` field."""


@dataclass(frozen=True, slots=True)
class ReadPlan:
    """Which dynamic feature groups a policy's snapshots must carry."""

    own: bool = True
    rates: bool = True
    scraped: bool = True
    age: bool = True
    prefix: bool = True
    media: bool = True

    @property
    def is_static(self) -> bool:
        """True when the policy reads no dynamic field: one cached tuple of views serves."""
        return not (self.own or self.rates or self.scraped or self.age or self.prefix or self.media)

    @classmethod
    def of(cls, policy: Any) -> ReadPlan:
        """The plan for `policy`: from its `replica_fields`, or every group when absent."""
        declared = getattr(policy, "replica_fields", None)
        if declared is None:
            return cls()
        names = frozenset(declared)
        unknown = names - DYNAMIC_FIELDS - STATIC_FIELDS
        if unknown:
            raise ReplicaFieldsError(
                f"policy {getattr(policy, 'name', policy)!r}: replica_fields names "
                f"{sorted(unknown)}; valid: {sorted(DYNAMIC_FIELDS | STATIC_FIELDS)}"
            )
        return cls(
            own=bool(names & OWN_FIELDS),
            rates=bool(names & RATE_FIELDS),
            scraped=bool(names & SCRAPED_FIELDS),
            age=bool(names & AGE_FIELDS),
            prefix=bool(names & PREFIX_FIELDS),
            media=bool(names & MEDIA_FIELDS),
        )


FULL_PLAN = ReadPlan()


def positional_constructor(cls: type) -> Callable[..., Any]:
    """A constructor for the frozen slots dataclass `cls` taking every field positionally.

    It fills the slots through their descriptors, skipping the frozen dataclass
    `__init__`'s per-field `object.__setattr__(self, "name", …)` lookups (~1.7× faster;
    the Router and the simulator build such records per request). The result is an
    ordinary instance, equal to `cls(*same_args)`; no defaults, no `__post_init__`. The
    body is generated, unrolled, as `dataclasses` generates `__init__`.
    """
    names = [f.name for f in fields(cls)]
    if tuple(getattr(cls, "__slots__", ())) != tuple(names) or getattr(cls, "__post_init__", None):
        raise TypeError(f"{cls.__name__}: needs slots in field order and no __post_init__")
    namespace: dict[str, Any] = {"_new": object.__new__, "_cls": cls}
    for name in names:
        namespace[f"_set_{name}"] = getattr(cls, name).__set__
    body = "".join(f"    _set_{name}(obj, {name})\n" for name in names)
    source = f"def make({', '.join(names)}):\n    obj = _new(_cls)\n{body}    return obj\n"
    exec(source, namespace)  # noqa: S102 - generated from field names only
    make = namespace["make"]
    make.__qualname__ = make.__name__ = f"make_{cls.__name__}"
    return make


replica_view = positional_constructor(ReplicaView)
