"""Which requests any router could serve in time, and which of those are the hard ones.

Capacity at 90% SLO attainment can be gamed: a heuristic that parks the longest prompts on
a few replicas "gives up" on requests that mostly miss the SLO anyway and spends the freed
capacity on the rest (on the Mooncake conversation trace such a lane won 1.42x with a p99
TTFT of 18.6 s). The tuner's default objective therefore counts attainment only over
*feasible* requests — those that meet the SLO when they arrive at an idle replica that
already holds every earlier block of the trace (the best any routing can do) — and guards
the *long* feasible requests (the longest decile of feasible prompts) so that a winner may
not serve them worse than the best anchor does.

Feasibility is measured once per workload with the simulator itself (same perf model,
same scheduler): the requests are replayed one at a time, `IDLE_GAP_S` apart, on a single
replica of each replica group; a request is feasible if it meets the SLO on any group.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from selfserve.workload.request import Workload

# Far longer than any request takes alone (a 1M-token prefill is minutes), so every request
# meets an idle replica.
IDLE_GAP_S = 1e6
LONG_FRACTION = 0.1
HOPELESS_SHARE = 0.8


@dataclass(frozen=True, slots=True)
class RequestClasses:
    """Per-request flags in the simulator's record order (arrival order, stable)."""

    feasible: tuple[bool, ...]
    long: tuple[bool, ...]  # feasible and among the longest `LONG_FRACTION` of feasible prompts
    long_threshold_tokens: int  # the shortest prompt counted as long (0 when none)
    # Prompts at least this long are mostly (>= HOPELESS_SHARE) infeasible; 0 when there is
    # no such group of at least 1% of the requests. The tuner seeds a lane at this size.
    hopeless_from_tokens: int = 0

    @property
    def feasible_count(self) -> int:
        return sum(self.feasible)

    @property
    def long_count(self) -> int:
        return sum(self.long)

    @property
    def feasible_share(self) -> float:
        return self.feasible_count / len(self.feasible) if self.feasible else 0.0

    def summary(self) -> dict:
        """Counts for reports and policy-file evidence."""
        return {
            "requests": len(self.feasible),
            "feasible": self.feasible_count,
            "long": self.long_count,
            "long_threshold_tokens": self.long_threshold_tokens,
        }


def arrival_order(workload: Workload) -> list[int]:
    """Indices of `workload.requests` in the order the simulator records them."""
    return sorted(range(len(workload.requests)), key=lambda k: workload.requests[k].arrival_s)


def classify(
    workload: Workload, cluster, slo, *, long_fraction: float = LONG_FRACTION
) -> RequestClasses:
    """Feasible and long flags for `workload` on `cluster` under `slo`."""
    from selfserve.sim import SLO, ClusterSpec, simulate  # late: worker processes import lazily

    spec = ClusterSpec.parse(cluster)
    slo = SLO.parse(slo)
    order = arrival_order(workload)
    spaced = Workload(
        requests=[
            dataclasses.replace(workload.requests[k], arrival_s=position * IDLE_GAP_S)
            for position, k in enumerate(order)
        ],
        name=f"{workload.name}[idle]",
        block_size=workload.block_size,
    )
    feasible = [False] * len(order)
    for group in spec.groups:
        alone = ClusterSpec((dataclasses.replace(group, count=1),))
        result = simulate(spaced, alone, "round-robin", slo=slo)
        for position, record in enumerate(result.records):
            if record.meets(slo):
                feasible[position] = True
    prompts = [workload.requests[k].total_prompt_tokens for k in order]
    classes = _with_long(feasible, prompts, long_fraction)
    return dataclasses.replace(classes, hopeless_from_tokens=hopeless_from(feasible, prompts))


def hopeless_from(feasible: list[bool], prompts: list[int]) -> int:
    """The smallest prompt size above which >= HOPELESS_SHARE of the requests are infeasible
    (over a group of at least 1% of the requests), or 0."""
    ranked = sorted(zip(prompts, feasible, strict=True), key=lambda pair: -pair[0])
    infeasible, found = 0, 0
    for position, (tokens, ok) in enumerate(ranked, start=1):
        infeasible += not ok
        if infeasible >= HOPELESS_SHARE * position:
            found = tokens if position >= 0.01 * len(ranked) else found
    return found


def _with_long(feasible: list[bool], prompts: list[int], long_fraction: float) -> RequestClasses:
    sizes = sorted((p for p, ok in zip(prompts, feasible, strict=True) if ok), reverse=True)
    count = int(len(sizes) * long_fraction)
    if count == 0:
        return RequestClasses(tuple(feasible), tuple(False for _ in feasible), 0)
    threshold = sizes[count - 1]
    long = tuple(ok and p >= threshold for p, ok in zip(prompts, feasible, strict=True))
    return RequestClasses(tuple(feasible), long, threshold)


@dataclass(frozen=True, slots=True)
class ClassAttainment:
    """SLO attainment of one simulation over all, feasible and long requests."""

    all: float
    feasible: float
    long: float  # NaN when the workload has no long requests
    long_p99_ttft_s: float
    # Median TTFT of the requests no router can serve in time (NaN when there are none): a
    # winner that buys capacity by making them wait much longer shows it here.
    infeasible_p50_ttft_s: float = float("nan")


def class_attainment(records, slo, classes: RequestClasses) -> ClassAttainment:
    """Attainment per class from a `SimResult.records` list (same order as `classes`)."""
    if len(records) != len(classes.feasible):
        raise ValueError(
            f"{len(records)} records but request classes for {len(classes.feasible)} requests"
        )
    met_all = met_feasible = met_long = 0
    long_ttft: list[float] = []
    infeasible_ttft: list[float] = []
    for record, is_feasible, is_long in zip(records, classes.feasible, classes.long, strict=True):
        met = record.meets(slo)
        met_all += met
        if is_feasible:
            met_feasible += met
        else:
            infeasible_ttft.append(record.ttft_s if record.rejected is None else float("inf"))
        if is_long:
            met_long += met
            long_ttft.append(record.ttft_s if record.rejected is None else float("inf"))
    total, feasible, long = len(records), classes.feasible_count, classes.long_count
    return ClassAttainment(
        all=met_all / total if total else 0.0,
        feasible=met_feasible / feasible if feasible else 0.0,
        long=met_long / long if long else float("nan"),
        long_p99_ttft_s=_p99(long_ttft),
        infeasible_p50_ttft_s=_quantile(infeasible_ttft, 0.5),
    )


def _p99(values: list[float]) -> float:
    return _quantile(values, 0.99)


def _quantile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]
