"""Policy arms: the incumbent policy, an optional canary candidate, hot swap and rollback.

The gateway drives ONE `Router` (so its own bookkeeping — in-flight, queued prefill, prefix
index — reflects all traffic) whose policy is an `ArmedPolicy`: before each `route` the
gateway says which arm the request belongs to, and `choose` delegates to that arm's policy.
The event hooks go to every policy that saw the request routed, so each arm's soft state
(prefix tables, session maps) sees the whole cluster, as it would serving alone.

`PolicyArms` owns the lifecycle: validate a spec with `make_policy` before swapping; assign
a request (or a whole session, hashed, for affinity) to the candidate with the configured
fraction; collect live TTFT/TPOT/error figures per arm during the canary; after
`min_samples` candidate requests promote it, or roll it back when a figure is worse than
the incumbent's by more than its margin — every decision is kept with its reason.
"""

from __future__ import annotations

import logging
import random
import statistics
import time
import zlib
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from selfserve.gateway.config import CanaryConfig
from selfserve.policy.base import Policy
from selfserve.policy.snapshot import ClusterSnapshot

log = logging.getLogger("selfserve.gateway")

_MAX_SAMPLES = 20_000


class PolicyValidationError(ValueError):
    """A policy spec sent to the gateway was rejected; the message says why."""


def build_policy(spec: Any) -> Policy:
    """`make_policy(spec)` with every failure turned into `PolicyValidationError`."""
    from selfserve.policy import make_policy

    try:
        policy = make_policy(spec)
    except Exception as exc:  # a policy file can fail in many ways; all are the user's to fix
        raise PolicyValidationError(f"{exc.__class__.__name__}: {exc}") from exc
    if not callable(getattr(policy, "choose", None)):
        raise PolicyValidationError(
            f"make_policy returned {type(policy).__name__}, which has no choose()"
        )
    return policy


@dataclass(slots=True)
class LiveStats:
    """What an arm did while a canary runs: latencies of good requests and error counts."""

    ttft_s: deque = field(default_factory=lambda: deque(maxlen=_MAX_SAMPLES))
    tpot_s: deque = field(default_factory=lambda: deque(maxlen=_MAX_SAMPLES))
    num_ok: int = 0
    num_errors: int = 0

    @property
    def num_samples(self) -> int:
        return self.num_ok + self.num_errors

    @property
    def error_rate(self) -> float:
        return self.num_errors / self.num_samples if self.num_samples else 0.0

    def summary(self) -> dict:
        return {
            "requests": self.num_samples,
            "errors": self.num_errors,
            "error_rate": round(self.error_rate, 4),
            "ttft_p50_s": round(statistics.median(self.ttft_s), 6) if self.ttft_s else None,
            "tpot_p50_s": round(statistics.median(self.tpot_s), 6) if self.tpot_s else None,
        }


@dataclass(slots=True)
class Arm:
    """One policy in service; `label` (name@generation) appears in logs and metrics."""

    label: str
    policy: Policy
    spec: Any
    stats: LiveStats = field(default_factory=LiveStats)


@dataclass(frozen=True, slots=True)
class PolicyEvent:
    at_unix_s: float
    event: str  # "start" | "swap" | "canary-start" | "promote" | "rollback"
    arm: str
    reason: str


class ArmedPolicy:
    """The `Router`'s policy: delegates `choose` to the arm chosen for the current request."""

    name = "gateway-arms"

    def __init__(self, arm: Arm) -> None:
        self.current = arm
        self._seen: dict[str, tuple[Policy, ...]] = {}
        self.active: tuple[Policy, ...] = (arm.policy,)

    def choose(self, snapshot: ClusterSnapshot, rng: random.Random) -> int:
        return self.current.policy.choose(snapshot, rng)

    def on_route(self, snapshot: ClusterSnapshot, replica_index: int) -> None:
        self._seen[snapshot.request.request_id] = self.active
        for policy in self.active:
            policy.on_route(snapshot, replica_index)

    def on_first_token(self, request_id: str, replica_index: int, now_s: float) -> None:
        for policy in self._seen.get(request_id, ()):
            policy.on_first_token(request_id, replica_index, now_s)

    def on_complete(self, request_id: str, replica_index: int, now_s: float, ok: bool) -> None:
        for policy in self._seen.pop(request_id, ()):
            policy.on_complete(request_id, replica_index, now_s, ok)


class PolicyArms:
    """Incumbent + optional canary candidate, and the rules that move between them."""

    def __init__(self, spec: Any, *, seed: int = 0) -> None:
        self._generation = 0
        self.incumbent = self._new_arm(spec, build_policy(spec))
        self.candidate: Arm | None = None
        self.canary: CanaryConfig | None = None
        self._canary_started_s = 0.0
        self.router_policy = ArmedPolicy(self.incumbent)
        self.events: list[PolicyEvent] = []
        self._rng = random.Random(seed)
        self._event("start", self.incumbent, "initial policy from the config")

    def _new_arm(self, spec: Any, policy: Policy) -> Arm:
        self._generation += 1
        return Arm(
            label=f"{getattr(policy, 'name', 'policy')}@{self._generation}",
            policy=policy,
            spec=spec,
        )

    def _event(self, event: str, arm: Arm, reason: str) -> PolicyEvent:
        record = PolicyEvent(time.time(), event, arm.label, reason)
        self.events.append(record)
        log.warning("policy %s: %s (%s)", event, arm.label, reason)
        return record

    def _refresh_active(self) -> None:
        arms = [self.incumbent] + ([self.candidate] if self.candidate else [])
        self.router_policy.active = tuple(a.policy for a in arms)

    # ---- changes --------------------------------------------------------------------------
    def swap(self, spec: Any, reason: str = "hot swap") -> PolicyEvent:
        """Validate `spec` and make it the incumbent at once (ends any canary)."""
        arm = self._new_arm(spec, build_policy(spec))
        self.incumbent = arm
        self.candidate = None
        self.canary = None
        self._refresh_active()
        return self._event("swap", arm, reason)

    def start_canary(self, canary: CanaryConfig) -> PolicyEvent:
        """Validate `canary.policy` and start serving it on `canary.fraction` of traffic."""
        arm = self._new_arm(canary.policy, build_policy(canary.policy))
        self.candidate = arm
        self.canary = canary
        self.incumbent.stats = LiveStats()
        self._canary_started_s = time.monotonic()
        self._refresh_active()
        unit = "sessions" if canary.unit == "sessions" else "requests"
        return self._event(
            "canary-start",
            arm,
            f"{canary.fraction:.0%} of {unit}, decide after {canary.min_samples} samples",
        )

    # ---- per request ----------------------------------------------------------------------
    def pick(self, request_id: str, session_id: str | None) -> Arm:
        """The arm for this request; also points the Router's policy at it."""
        arm = self.incumbent
        if self.candidate is not None and self.canary is not None:
            if self.canary.unit == "sessions" and session_id:
                # a stable hash keeps every turn of a session on one arm (prefix affinity)
                bucket = zlib.crc32(session_id.encode()) / 2**32
            else:
                bucket = self._rng.random()
            if bucket < self.canary.fraction:
                arm = self.candidate
        self.router_policy.current = arm
        return arm

    def record(
        self, arm: Arm, *, ok: bool, ttft_s: float | None, tpot_s: float | None
    ) -> PolicyEvent | None:
        """Account one finished request; returns a promote/rollback event when one happens."""
        if self.candidate is None:
            return None
        if arm is not self.candidate and arm is not self.incumbent:
            return None  # routed by an arm that has since been replaced
        stats = arm.stats
        if ok:
            stats.num_ok += 1
            if ttft_s is not None:
                stats.ttft_s.append(ttft_s)
            if tpot_s is not None:
                stats.tpot_s.append(tpot_s)
        else:
            stats.num_errors += 1
        return self._maybe_decide()

    def _maybe_decide(self) -> PolicyEvent | None:
        canary, cand, inc = self.canary, self.candidate, self.incumbent
        assert canary is not None and cand is not None
        timed_out = (
            canary.max_duration_s > 0
            and time.monotonic() - self._canary_started_s >= canary.max_duration_s
        )
        if cand.stats.num_samples < canary.min_samples and not (
            timed_out and cand.stats.num_samples
        ):
            return None
        if inc.stats.num_samples < canary.min_samples and not timed_out:
            return None
        worse = self.compare(cand.stats, inc.stats, canary)
        if worse:
            self.candidate = None
            self.canary = None
            self._refresh_active()
            return self._event("rollback", cand, "; ".join(worse))
        c, i = cand.stats.summary(), inc.stats.summary()
        self.incumbent = cand
        self.candidate = None
        self.canary = None
        self._refresh_active()
        return self._event(
            "promote",
            cand,
            f"after {c['requests']} requests: TTFT p50 {c['ttft_p50_s']} s vs {i['ttft_p50_s']} s, "
            f"TPOT p50 {c['tpot_p50_s']} s vs {i['tpot_p50_s']} s, errors {c['error_rate']:.1%} vs {i['error_rate']:.1%}",
        )

    @staticmethod
    def compare(cand: LiveStats, inc: LiveStats, canary: CanaryConfig) -> list[str]:
        """Reasons the candidate is worse than the incumbent beyond the margins (empty: fine)."""
        reasons = []
        if cand.error_rate > inc.error_rate + canary.error_margin:
            reasons.append(
                f"error rate {cand.error_rate:.1%} > incumbent {inc.error_rate:.1%} + {canary.error_margin:.1%}"
            )
        for name, margin, ok_s, c_samples, i_samples in (
            ("TTFT", canary.ttft_margin, canary.ttft_ok_s, cand.ttft_s, inc.ttft_s),
            ("TPOT", canary.tpot_margin, canary.tpot_ok_s, cand.tpot_s, inc.tpot_s),
        ):
            if not c_samples or not i_samples:
                continue
            c_med, i_med = statistics.median(c_samples), statistics.median(i_samples)
            if ok_s > 0 and c_med <= ok_s:
                continue  # slower but within what the operator calls good enough
            if c_med > i_med * (1.0 + margin):
                reasons.append(
                    f"median {name} {c_med * 1e3:.1f} ms > incumbent {i_med * 1e3:.1f} ms x {1 + margin:.2f}"
                    + (f" and above {ok_s * 1e3:.1f} ms" if ok_s > 0 else "")
                )
        return reasons

    def describe(self) -> dict:
        out = {
            "incumbent": {
                "arm": self.incumbent.label,
                "spec": self.incumbent.spec,
                "live": self.incumbent.stats.summary(),
            },
            "candidate": None,
            "events": [
                {"at_unix_s": e.at_unix_s, "event": e.event, "arm": e.arm, "reason": e.reason}
                for e in self.events[-50:]
            ],
        }
        if self.candidate is not None and self.canary is not None:
            out["candidate"] = {
                "arm": self.candidate.label,
                "spec": self.candidate.spec,
                "fraction": self.canary.fraction,
                "unit": self.canary.unit,
                "min_samples": self.canary.min_samples,
                "live": self.candidate.stats.summary(),
            }
        return out
