"""What a candidate is worth: one policy, one workload, one cluster, one SLO → a score.

Objectives (higher score is better):
- `capacity` (default): the largest arrival-rate multiplier at which SLO attainment over the
  *feasible* requests (those an idle replica would serve in time, see `feasibility`) stays
  ≥ 90% and — when the plan sets them — the long feasible requests keep at least
  `long_floor` attainment and the p99 TTFT of all completed requests stays under
  `p99_limit_s`, and the median TTFT of the requests no replica serves in time stays under
  `hopeless_limit_s` (the tuner sets all three from the best anchor's, so a winner can buy
  capacity neither by giving up on long prompts nor by starving the hopeless ones). Found by a geometric bracket around a starting
  guess, then bisection in log space to a relative tolerance, then linear interpolation of
  the pass margin inside the last bracket (a continuous value, so the optimizer sees small
  improvements). Ties: lower p99 TTFT. Near 90% the attainment curve is flat and not
  monotone at the 1% scale (Azure conversation, least-kv: 0.9001 at x0.873, 0.9017 at
  x0.878, 0.8987 at x0.883), so where the bisection lands depends on where it started;
  exact scoring (`smooth_points`) therefore fits a line through the margins at fixed grid
  rates around the crossing — the same rates for every policy — and reports its root.
- `capacity-all`: the same over all requests, no guard (what earlier versions optimised;
  it rewards giving up on requests that miss the SLO even on an idle replica).
- `goodput`: requests/s meeting the SLO at the recorded rate (multiplier 1).
- `cost`: cost per million output tokens at capacity (negated, so higher is better).

Every number comes from `selfserve.sim.simulate`; the tuner never estimates performance by
other means. `EvalPlan` carries the knobs that make search cheap (a close starting guess,
a coarse tolerance, a cap on simulations, early rejection of clearly worse candidates) and
validation exact (fine tolerance, no rejection).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from selfserve.tune.feasibility import RequestClasses, class_attainment, classify

OBJECTIVES: tuple[str, ...] = ("capacity", "capacity-all", "goodput", "cost")
# Objectives whose attainment counts feasible requests only.
FEASIBLE_OBJECTIVES: frozenset[str] = frozenset({"capacity"})
ATTAINMENT_TARGET = 0.9
# The bracket search walks at most this factor away from the starting guess.
_MAX_BRACKET = 64.0


@dataclass(frozen=True, slots=True)
class EvalPlan:
    objective: str = "capacity"
    start_rate: float = 1.0  # first multiplier tried (a good guess saves simulations)
    rel_tol: float = 0.02  # stop bisecting when hi/lo < 1 + rel_tol
    max_sims: int = 12
    reject_below: float = 0.0  # stop early once capacity is known to be below this rate
    seed: int = 0
    target: float = ATTAINMENT_TARGET
    long_floor: float = 0.0  # a probe passes only if long requests keep this attainment
    p99_limit_s: float = 0.0  # ... and p99 TTFT of all completed requests stays below this
    # ... and the requests no replica serves in time wait a median TTFT below this (the p99
    # does not see them when they are under 1 % of the requests)
    hopeless_limit_s: float = 0.0
    # Exact scoring: after the bisection, probe this many points of the shared rate grid
    # around the crossing and take the root of a least-squares line through their margins
    # (0: the bisection's own estimate). See `smooth_capacity`.
    smooth_points: int = 0

    @property
    def feasible_only(self) -> bool:
        return self.objective in FEASIBLE_OBJECTIVES

    def unguarded(self, **changes: Any) -> EvalPlan:
        """This plan without the candidates' guards (how anchors are measured)."""
        return replace(self, long_floor=0.0, p99_limit_s=0.0, hopeless_limit_s=0.0, **changes)


@dataclass(frozen=True, slots=True)
class Probe:
    """One simulation at one rate. `attainment` is the objective's (feasible requests for
    `capacity`); `long_attainment` that of the long feasible requests (NaN if unknown)."""

    rate: float
    attainment: float
    p99_ttft_s: float
    summary: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)
    long_attainment: float = math.nan
    long_floor: float = 0.0
    p99_limit_s: float = 0.0
    hopeless_p50_ttft_s: float = math.nan
    hopeless_limit_s: float = 0.0

    def margin(self, target: float = ATTAINMENT_TARGET) -> float:
        """How far the probe is inside the pass region (>= 0 passes): the least of the
        attainment over the target, the long requests' attainment over their floor, and
        the p99 TTFT's headroom under its limit (as a fraction of the limit)."""
        value = self.attainment - target
        if self.long_floor > 0.0 and self.long_attainment == self.long_attainment:
            value = min(value, self.long_attainment - self.long_floor)
        if self.p99_limit_s > 0.0 and self.p99_ttft_s == self.p99_ttft_s:
            value = min(value, (self.p99_limit_s - self.p99_ttft_s) / self.p99_limit_s)
        if self.hopeless_limit_s > 0.0 and self.hopeless_p50_ttft_s == self.hopeless_p50_ttft_s:
            headroom = self.hopeless_limit_s - self.hopeless_p50_ttft_s
            value = min(value, headroom / self.hopeless_limit_s)
        return value

    def passes(self, target: float = ATTAINMENT_TARGET) -> bool:
        return self.margin(target) >= 0.0


@dataclass(frozen=True, slots=True)
class Evaluation:
    """The outcome of evaluating one policy: `score` (higher is better) and its evidence."""

    score: float
    objective: str
    capacity: float | None
    p99_ttft_s: float
    probes: tuple[Probe, ...]
    is_exact: bool  # False when stopped early (rejected or out of simulations)
    error: str | None = None
    wall_s: float = 0.0
    # At the capacity point (the highest passing probe), per request class; NaN if unknown.
    all_attainment: float = math.nan
    long_attainment: float = math.nan
    long_p99_ttft_s: float = math.nan
    infeasible_p50_ttft_s: float = math.nan

    @property
    def attainment_curve(self) -> list[tuple[float, float]]:
        return sorted((p.rate, p.attainment) for p in self.probes)

    def summary_at_capacity(self) -> Mapping[str, Any]:
        passing = [p for p in self.probes if p.passes()]
        if not passing:
            return {}
        return max(passing, key=lambda p: p.rate).summary


def _metric(summary: Mapping[str, Any], *names: str, default: float = math.nan) -> float:
    for name in names:
        value = summary.get(name)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    return default


def attainment_of(summary: Mapping[str, Any]) -> float:
    return _metric(summary, "attainment", "slo_attainment", default=0.0)


def p99_ttft_of(summary: Mapping[str, Any]) -> float:
    return _metric(summary, "p99_ttft_s", "ttft_p99_s", "p99_ttft")


def goodput_of(summary: Mapping[str, Any]) -> float:
    return _metric(summary, "goodput_requests_per_s", "goodput_rps", "goodput", default=0.0)


def cost_of(summary: Mapping[str, Any]) -> float:
    return _metric(summary, "cost_per_million_tokens", "cost_per_million_output_tokens")


def run_probe(
    workload,
    cluster,
    policy_doc,
    slo,
    rate: float,
    seed: int,
    classes: RequestClasses | None = None,
    *,
    feasible_only: bool = False,
    long_floor: float = 0.0,
    p99_limit_s: float = 0.0,
    hopeless_limit_s: float = 0.0,
) -> Probe:
    """Simulate once at `rate`; with `classes`, attainment per request class too."""
    from selfserve.sim import simulate  # imported late: worker processes import on demand

    result = simulate(workload, cluster, policy_doc, rate_scale=rate, seed=seed, slo=slo)
    summary = _plain(result.summary(slo))
    attainment, long, hopeless_p50 = attainment_of(summary), math.nan, math.nan
    if classes is not None:
        per_class = class_attainment(result.records, result.slo, classes)
        summary.update(
            all_attainment=per_class.all,
            feasible_attainment=per_class.feasible,
            long_attainment=per_class.long,
            long_p99_ttft_s=per_class.long_p99_ttft_s,
            infeasible_p50_ttft_s=per_class.infeasible_p50_ttft_s,
        )
        long, hopeless_p50 = per_class.long, per_class.infeasible_p50_ttft_s
        if feasible_only:
            attainment = per_class.feasible
    elif feasible_only:
        raise ValueError("a feasible-only objective needs the workload's request classes")
    return Probe(
        rate,
        attainment,
        p99_ttft_of(summary),
        summary,
        long_attainment=long,
        long_floor=long_floor,
        p99_limit_s=p99_limit_s,
        hopeless_p50_ttft_s=hopeless_p50,
        hopeless_limit_s=hopeless_limit_s,
    )


def _plain(summary: Mapping[str, Any]) -> dict[str, Any]:
    """Keep scalar entries only (what reports need; small to ship between processes)."""
    return {
        k: v
        for k, v in summary.items()
        if isinstance(v, (int, float, str)) and not isinstance(v, bool)
    }


def evaluate(
    workload, cluster, policy_doc, slo, plan: EvalPlan, classes: RequestClasses | None = None
) -> Evaluation:
    """Score one policy document on one workload; never raises for a bad candidate."""
    import time

    started = time.perf_counter()
    try:
        if plan.objective == "goodput":
            probe = run_probe(workload, cluster, policy_doc, slo, 1.0, plan.seed, classes)
            return Evaluation(
                score=goodput_of(probe.summary),
                objective="goodput",
                capacity=None,
                p99_ttft_s=probe.p99_ttft_s,
                probes=(probe,),
                is_exact=True,
                wall_s=time.perf_counter() - started,
            )
        capacity, probes, exact = find_capacity(workload, cluster, policy_doc, slo, plan, classes)
        p99, fields = figures_at_capacity(probes, capacity, exact, plan)
        if plan.objective == "cost":
            at_capacity = _closest_passing(probes, capacity, plan.target)
            cost = cost_of(at_capacity.summary) if at_capacity else math.inf
            score = -cost if math.isfinite(cost) else -1e30
        else:
            score = capacity
        return Evaluation(
            score=score,
            objective=plan.objective,
            capacity=capacity,
            p99_ttft_s=p99,
            probes=tuple(probes),
            is_exact=exact,
            wall_s=time.perf_counter() - started,
            **fields,
        )
    except Exception as exc:  # a candidate that breaks the simulator is a rejected candidate
        return Evaluation(
            score=-math.inf,
            objective=plan.objective,
            capacity=None,
            p99_ttft_s=math.inf,
            probes=(),
            is_exact=False,
            error=f"{type(exc).__name__}: {exc}",
            wall_s=time.perf_counter() - started,
        )


def _class_fields(probe: Probe | None) -> dict[str, float]:
    if probe is None:
        return {}
    return {
        "all_attainment": _metric(probe.summary, "all_attainment", "attainment"),
        "long_attainment": _metric(probe.summary, "long_attainment"),
        "long_p99_ttft_s": _metric(probe.summary, "long_p99_ttft_s"),
        "infeasible_p50_ttft_s": _metric(probe.summary, "infeasible_p50_ttft_s"),
    }


def figures_at_capacity(
    probes: list[Probe], capacity: float, exact: bool, plan: EvalPlan
) -> tuple[float, dict[str, float]]:
    """(p99 TTFT, per-class figures) at the capacity point. Those of the highest passing
    probe, or, where the capacity is smoothed, read at the capacity from lines through the
    smoothing grid's probes like the capacity itself (see `_fitted_at`)."""
    at_capacity = _closest_passing(probes, capacity, plan.target)
    if at_capacity is None:
        return math.inf, {}
    p99, fields = at_capacity.p99_ttft_s, _class_fields(at_capacity)
    if exact and plan.smooth_points > 0:
        grid = probes[-plan.smooth_points :]  # smooth_capacity's probes, in grid order
        p99 = _fitted_at(grid, capacity, lambda p: p.p99_ttft_s, p99, 0.0, math.inf)
        for name, value in fields.items():
            ceiling = 1.0 if name.endswith("attainment") else math.inf
            fields[name] = _fitted_at(
                grid, capacity, lambda p, n=name: _metric(p.summary, n), value, 0.0, ceiling
            )
    return p99, fields


def _fitted_at(
    grid: list[Probe],
    capacity: float,
    value_of: Callable[[Probe], float],
    fallback: float,
    low: float,
    high: float,
) -> float:
    """A per-probe figure (long-prompt attainment, p99 TTFT, ...) read at `capacity` from a
    least-squares line against log rate through the smoothing grid's probes, as the
    capacity itself is. The highest passing probe sits up to a grid step below capacity,
    and these figures move steeply there: lmetric on Mooncake conversation x12 loses ~4
    points of long-prompt attainment per 1.5 % step, so its value at the highest passing
    probe ranged 77.8-82.9 % over six seeds where the fitted one ranged 77.7-78.5 %, and
    the long-prompt floor of a tune run moved with the seed. `fallback` where fewer than
    three probes have a finite value."""
    points = [(math.log(p.rate), value) for p in grid if math.isfinite(value := value_of(p))]
    line = _least_squares(points) if len(points) >= 3 else None
    if line is None:
        return fallback
    mean_x, mean_y, slope = line
    return min(max(mean_y + slope * (math.log(capacity) - mean_x), low), high)


def _closest_passing(
    probes: list[Probe], capacity: float, target: float = ATTAINMENT_TARGET
) -> Probe | None:
    passing = [p for p in probes if p.passes(target) and p.rate <= capacity + 1e-9]
    return max(passing, key=lambda p: p.rate) if passing else None


def find_capacity(
    workload, cluster, policy_doc, slo, plan: EvalPlan, classes: RequestClasses | None = None
) -> tuple[float, list[Probe], bool]:
    """(capacity multiplier, probes, exact?) by bracket + log bisection + interpolation.

    A feasible-only objective without `classes` classifies the workload first (one idle
    replay); the tuner passes them in, computed once per workload.
    """
    if classes is None and plan.feasible_only:
        classes = classify(workload, cluster, slo)

    def simulate_at(rate: float) -> Probe:
        return run_probe(
            workload,
            cluster,
            policy_doc,
            slo,
            rate,
            plan.seed,
            classes,
            feasible_only=plan.feasible_only,
            long_floor=plan.long_floor,
            p99_limit_s=plan.p99_limit_s,
            hopeless_limit_s=plan.hopeless_limit_s,
        )

    return search_capacity(simulate_at, plan)


def search_capacity(
    simulate_at: Callable[[float], Probe], plan: EvalPlan
) -> tuple[float, list[Probe], bool]:
    """`find_capacity` over any probe function (the simulator, or a curve in tests)."""
    probes: list[Probe] = []

    def probe(rate: float) -> Probe:
        result = simulate_at(rate)
        probes.append(result)
        return result

    target = plan.target
    lo: Probe | None = None
    hi: Probe | None = None
    first = probe(plan.start_rate)
    if first.passes(target):
        lo = first
    else:
        hi = first
    step = 1.0 + max(4 * plan.rel_tol, 0.1)
    # Bracket: walk away from the first probe geometrically until attainment crosses 90%.
    while lo is None or hi is None:
        if len(probes) >= plan.max_sims:
            break
        if lo is None:
            assert hi is not None
            if hi.rate <= plan.reject_below:
                break  # clearly below the bar: no need to know by how much
            if hi.rate <= plan.start_rate / _MAX_BRACKET:
                return 0.0, probes, True  # misses the SLO even nearly idle: no capacity
            nxt = probe(hi.rate / step)
            if nxt.passes(target):
                lo = nxt
            else:
                hi = nxt
        else:
            if lo.rate >= plan.start_rate * _MAX_BRACKET:
                break  # meets the SLO far beyond the guess: report what was shown
            nxt = probe(lo.rate * step)
            if nxt.passes(target):
                lo = nxt
            else:
                hi = nxt
        step = step * step if step < 4 else step
    if lo is None or hi is None:
        return _extrapolate(probes, target), probes, False
    while hi.rate / lo.rate > 1.0 + plan.rel_tol and len(probes) < plan.max_sims:
        mid = probe(math.sqrt(lo.rate * hi.rate))
        if mid.passes(target):
            lo = mid
        else:
            hi = mid
    exact = hi.rate / lo.rate <= 1.0 + plan.rel_tol
    low_margin, high_margin = lo.margin(target), hi.margin(target)
    span = low_margin - high_margin
    fraction = low_margin / span if span > 1e-12 else 0.0
    capacity = lo.rate + (hi.rate - lo.rate) * min(max(fraction, 0.0), 1.0)
    if exact and plan.smooth_points > 0:
        capacity = smooth_capacity(capacity, probe, plan.smooth_points, target)
    return capacity, probes, exact


# The shared rate grid of `smooth_capacity`: multipliers (1 + step)^k for integer k.
SMOOTH_GRID_STEP = 0.015


def smooth_capacity(
    estimate: float,
    probe: Callable[[float], Probe],
    points: int,
    target: float = ATTAINMENT_TARGET,
    step: float = SMOOTH_GRID_STEP,
) -> float:
    """The root of a least-squares line through the pass margins at `points` grid rates
    centred on `estimate` (margin against log rate).

    The grid is global, (1 + step)^k, so two policies with close capacities are probed at
    the same rates, and a bisection that ended one grid step apart moves the window by one
    point instead of moving the answer by the width of the noise. The root is kept inside
    the probed span; a line that does not fall with the rate (noise larger than the trend)
    leaves the estimate as it was.
    """
    log_step = math.log1p(step)
    centre = round(math.log(estimate) / log_step)
    first = centre - (points - 1) // 2
    xs = [(first + i) * log_step for i in range(points)]
    margins = [probe(math.exp(x)).margin(target) for x in xs]
    line = _least_squares(list(zip(xs, margins, strict=True)))
    if line is None or not line[2] < 0.0:
        return estimate
    mean_x, mean_m, slope = line
    root = mean_x - mean_m / slope
    return math.exp(min(max(root, xs[0]), xs[-1]))


def _least_squares(points: list[tuple[float, float]]) -> tuple[float, float, float] | None:
    """(mean x, mean y, slope) of the least-squares line through `points`; None when the
    x values do not vary."""
    mean_x = sum(x for x, _ in points) / len(points)
    mean_y = sum(y for _, y in points) / len(points)
    sxx = sum((x - mean_x) ** 2 for x, _ in points)
    if sxx <= 0.0:
        return None
    return mean_x, mean_y, sum((x - mean_x) * (y - mean_y) for x, y in points) / sxx


def _extrapolate(probes: list[Probe], target: float) -> float:
    """A conservative capacity estimate when the probes never straddled the target.

    All passed: the highest passing rate, with a small bonus (at most 10%) for the margin
    its attainment kept above the target. All failed: the lowest failing rate scaled down by
    the shortfall. Either way the estimate stays within what the probes showed, so a
    search step can never run away on an extrapolated line; and it is monotone in
    attainment, so ranking still favours the candidate that held up better.
    """
    passing = [p for p in probes if p.passes(target)]
    if passing:
        best = max(passing, key=lambda p: p.rate)
        return best.rate * (1.0 + min(0.1, best.margin(target)))
    lowest = min(probes, key=lambda p: p.rate)
    # attainment / target when only attainment fails; the guard's shortfall likewise
    return lowest.rate * max(1.0 + lowest.margin(target) / target, 0.0)
