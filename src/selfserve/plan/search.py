"""The fewest replicas that meet an SLO: exponential growth, then binary search.

SLO attainment grows with the number of replicas (more capacity, shorter queues), so the
smallest passing fleet is found with O(log N) simulations: double N until the fleet passes,
then bisect between the last failing and the first passing size. Some SLOs cannot be met
by adding replicas at all (a prefill longer than the TTFT target stays longer), so the
search also stops when doubling no longer moves attainment, and says so.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

ATTAINMENT_TARGET = 0.9  # ARCHITECTURE.md: capacity is the load at which ≥ 90% meet the SLO


@dataclass(frozen=True, slots=True)
class Probe:
    """What one simulation of an n-replica fleet says about the SLO."""

    attainment: float
    output_tokens_per_s: float  # served throughput: grows with n while the fleet is overloaded


@dataclass(frozen=True, slots=True)
class ReplicaSearch:
    """Outcome of one search: `replicas` is None when no fleet up to the cap passes."""

    replicas: int | None
    attainment: float | None  # at `replicas` (None when none passed)
    evaluations: dict[int, float] = field(default_factory=dict)  # replicas → attainment
    reason: str = ""  # why no fleet passed

    @property
    def num_simulations(self) -> int:
        return len(self.evaluations)


def min_replicas(
    probe_at: Callable[[int], Probe],
    *,
    target: float = ATTAINMENT_TARGET,
    start: int = 1,
    max_replicas: int = 256,
    plateau_gain: float = 0.005,
    demand_output_tokens_per_s: float | None = None,
) -> ReplicaSearch:
    """Smallest n in [start, max_replicas] whose probe attains ≥ target.

    Attainment is assumed non-decreasing in n (true up to simulation noise; a noisy curve
    still yields a passing fleet whose next-smaller size failed when measured). The SLO is
    declared out of reach of scale-out when two successive doublings each raise attainment
    by less than `plateau_gain` *and* served throughput by less than 2% — an overloaded
    fleet can sit at 0% attainment while its throughput still doubles, so flat attainment
    alone is not enough.

    `demand_output_tokens_per_s` (the workload's offered output rate) lets the search jump:
    an overloaded fleet's served rate is its maximum, so demand ÷ (served rate per replica)
    is a lower bound on the fleet, and the next probe goes straight there instead of
    doubling through sizes that cannot pass.
    """
    if start < 1 or max_replicas < start:
        raise ValueError(f"need 1 ≤ start ≤ max_replicas, got start={start}, max={max_replicas}")
    probes: dict[int, Probe] = {}
    seen: dict[int, float] = {}

    def measure(n: int) -> float:
        if n not in probes:
            probes[n] = probe_at(n)
            seen[n] = float(probes[n].attainment)
        return seen[n]

    last_fail = start - 1
    n = start
    flat_doublings = 0
    while True:
        attained = measure(n)
        if attained >= target:
            break
        previous = probes.get(last_fail)
        if (
            previous is not None
            and attained - previous.attainment < plateau_gain
            and probes[n].output_tokens_per_s < 1.02 * previous.output_tokens_per_s
        ):
            flat_doublings += 1
        else:
            flat_doublings = 0
        last_fail = n
        if flat_doublings >= 2:
            return ReplicaSearch(
                None,
                None,
                dict(seen),
                f"attainment stays at {attained:.1%} from {n // 4} to {n} replicas: "
                "adding replicas does not meet this SLO",
            )
        if n >= max_replicas:
            return ReplicaSearch(
                None,
                None,
                dict(seen),
                f"{max_replicas} replicas reach only {attained:.1%} attainment "
                f"(target {target:.0%}); raise --max-replicas",
            )
        next_n = n * 2
        served_per_replica = probes[n].output_tokens_per_s / n
        if demand_output_tokens_per_s and served_per_replica > 0:
            next_n = max(next_n, math.ceil(demand_output_tokens_per_s / served_per_replica))
        n = min(next_n, max_replicas)
    first_pass = n
    while first_pass - last_fail > 1:
        mid = (first_pass + last_fail) // 2
        if measure(mid) >= target:
            first_pass = mid
        else:
            last_fail = mid
    return ReplicaSearch(first_pass, seen[first_pass], dict(seen))


@dataclass(frozen=True, slots=True)
class HeadroomSearch:
    """The largest rate multiplier a fixed fleet serves within the SLO (≥ `start` passed)."""

    multiplier: float  # lower bound of the bracket: measured to pass
    evaluations: dict[float, float] = field(default_factory=dict)  # multiplier → attainment
    capped: bool = False  # True when even `max_multiplier` passes


def max_rate_multiplier(
    attainment_at: Callable[[float], float],
    *,
    target: float = ATTAINMENT_TARGET,
    start: float = 1.0,
    growth: float = 1.5,
    rel_tol: float = 0.05,
    max_multiplier: float = 16.0,
) -> HeadroomSearch:
    """Capacity as ARCHITECTURE.md defines it, for a fleet known to pass at `start`.

    Grows the multiplier geometrically until attainment drops below target, then bisects
    until the bracket is within `rel_tol` of its lower end.
    """
    seen: dict[float, float] = {}

    def measure(multiplier: float) -> float:
        if multiplier not in seen:
            seen[multiplier] = float(attainment_at(multiplier))
        return seen[multiplier]

    if measure(start) < target:
        return HeadroomSearch(0.0, dict(seen))
    low = start
    high = start * growth
    while measure(high) >= target:
        low = high
        if high >= max_multiplier:
            return HeadroomSearch(low, dict(seen), capped=True)
        high = min(high * growth, max_multiplier)
    while (high - low) / low > rel_tol:
        mid = round((low + high) / 2, 6)
        if measure(mid) >= target:
            low = mid
        else:
            high = mid
    return HeadroomSearch(low, dict(seen))
