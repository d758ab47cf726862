"""The search: anchors first, then rounds of CMA-ES, structural mutation/crossover and an
optional LLM proposer, all scored on the training window; then the shortlist is re-scored
exactly and the winner validated, with every anchor, on the later validation window.

Budget covers everything up to the choice of the winner: request classification, anchor
scoring, search and the exact re-scoring of the shortlist (the search stops early by an
estimate of what that re-scoring costs); validation runs after it and is timed separately.
With the default `capacity` objective a candidate's capacity also has to keep the long
feasible requests' attainment within `guard_margin` of the best anchor's and its p99 TTFT
within `tail_factor` times the anchor's (see `objective`), so the search can win neither
by giving up on long prompts nor by starving the requests no replica serves in time. Ctrl-C (KeyboardInterrupt) during the search ends it and keeps the best
so far; during validation it stops validation and the result says what was not validated.
The winner must beat the best anchor on training (penalised for size) by more than the
capacity search's tolerance; otherwise the best anchor itself is the result, so the tuner
never hands back something worse than what it already had (on training: validation can
still rank the anchors differently, and says so).
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, as_completed
from dataclasses import dataclass, field, replace
from typing import Any

from selfserve.policy import list_anchors
from selfserve.policy.expression import EXPRESSION_ANCHORS, anchor_document
from selfserve.sim import ClusterSpec
from selfserve.tune.cmaes import ConstantTuner
from selfserve.tune.feasibility import RequestClasses, classify
from selfserve.tune.headroom import PrefillHeadroom, prefill_headroom
from selfserve.tune.objective import FEASIBLE_OBJECTIVES, OBJECTIVES, EvalPlan, Evaluation
from selfserve.tune.pool import CachedEvaluator, Evaluator, make_evaluator
from selfserve.tune.proposer import LLMProposer
from selfserve.tune.prune import Pruned, bracketing_rates, prune_untaken_branches
from selfserve.tune.search_space import (
    Candidate,
    Population,
    candidate_from_document,
    simplified,
    with_lane,
)
from selfserve.tune.stats import Gain
from selfserve.tune.validation import WINNER, Validation, guard_notes
from selfserve.tune.validation import gains as compute_gains
from selfserve.tune.windows import cut, fingerprint, sub_windows

# A seed no anchor spells out: a linear blend of load, prefill backlog, decode load and
# expected cache hit, for CMA-ES to weigh.
LINEAR_SEED = (
    "in_flight_requests + 0.001 * queued_prefill_tokens + 0.00005 * running_decode_tokens"
    " + 0.001 * max(total_prompt_tokens - prefix_hit_tokens, 0)"
)

# lmetric with the request's own uncached prompt weighted: a replica that holds the prefix
# also spares the prefill of the requests queued behind this one, which lmetric's greedy
# wait estimate does not count. CMA-ES tunes the weight (Mooncake synthetic's winner found
# 2.6 by structural search; docs/tune-results.md).
CACHE_SEED = (
    "(queued_prefill_tokens + 2 * max(total_prompt_tokens - prefix_hit_tokens, 0))"
    " * (in_flight_requests + 1)"
)

# A seed shaped like an estimate of this request's wait: prefill work queued ahead of it
# plus its own uncached prompt, plus a charge for the decode load it will share.
WORK_SEED = (
    "queued_prefill_tokens + max(total_prompt_tokens - prefix_hit_tokens, 0)"
    " + 0.05 * running_decode_tokens"
)


CONFIRM_BARS = ("exact", "estimate")


class TuneError(ValueError):
    """Options the tuner cannot work with (unknown anchor, bad objective, …)."""


@dataclass(frozen=True, slots=True)
class TuneConfig:
    budget_s: float = 600.0
    seed: int = 0
    objective: str = "capacity"
    anchors: tuple[str, ...] = ()  # empty: every registered anchor
    workers: int | None = None
    ray: str | None = None
    proposer_url: str | None = None
    proposer_model: str | None = None
    complexity_penalty: float = 0.0005  # score x (1 - penalty x nodes)
    search_rel_tol: float = 0.03
    search_sims: int = 2  # simulations per candidate during search (capacity estimated)
    final_rel_tol: float = 0.02
    max_sims: int = 10
    bootstrap_windows: int = 6
    curve_points: int = 0  # extra grid rates per policy; the bisection probes are always plotted
    shortlist: int = 3
    cma_popsize: int = 6
    search_fraction: float = 1.0  # search on the last fraction of the training window
    cache_path: str | None = None  # remember evaluations across runs (anchors, validation)
    structural_per_round: int | None = None  # default: one per worker
    guard_margin: float = 0.05  # long requests may lose at most this attainment vs the anchor
    # p99 TTFT, and the median TTFT of the hopeless requests, at most this x the anchor's
    tail_factor: float = 2.0
    ci_anchors: int = 2  # besides the best training anchor, CIs for the best N on validation
    # Exact scores (the bar, the shortlist, validation): grid points of the line fitted
    # through the crossing (objective.smooth_capacity); 0 keeps the bisection's estimate.
    smooth_points: int = 7
    # A candidate whose search estimate (a few simulations) beats the best is re-scored
    # exactly on the search window before it becomes the best: at most this many per round
    # (0: every estimate is taken as it is). Without it the best is the luckiest estimate
    # (winner's curse): on Mooncake conversation x12 the search's best stood 4.8 % above
    # lmetric on 2-simulation estimates and equal to it when scored exactly.
    confirm_per_round: int = 2
    # What a search estimate must beat to be confirmed: "exact", the best's exact score
    # (more confirmations, fewer candidates), or "estimate", the best's own estimate, like
    # with like (more candidates). Mooncake conversation x12, 10-minute budgets, validation:
    # 1.071-1.086x in four runs with "exact", 1.065-1.068x in three with "estimate".
    confirm_bar: str = "exact"

    def check(self) -> None:
        if self.objective not in OBJECTIVES:
            raise TuneError(f"objective {self.objective!r} is not one of {', '.join(OBJECTIVES)}")
        known = set(list_anchors())
        unknown = [a for a in self.anchors if a not in known]
        if unknown:
            raise TuneError(
                f"unknown anchor(s) {', '.join(unknown)}; valid: {', '.join(sorted(known))}"
            )
        if self.budget_s <= 0:
            raise TuneError("budget must be positive")
        if not 0.0 < self.search_fraction <= 1.0:
            raise TuneError(f"search fraction must be in (0, 1], got {self.search_fraction}")
        if self.smooth_points < 0 or self.smooth_points in (1, 2):
            raise TuneError(f"smooth_points must be 0 or at least 3, got {self.smooth_points}")
        if self.confirm_per_round < 0:
            raise TuneError(
                f"confirm_per_round (--confirm-per-round) must be >= 0, got {self.confirm_per_round}"
            )
        if self.confirm_bar not in CONFIRM_BARS:
            raise TuneError(
                f"confirm_bar (--confirm-bar) must be one of {', '.join(CONFIRM_BARS)}, "
                f"got {self.confirm_bar!r}"
            )
        if bool(self.proposer_url) != bool(self.proposer_model):
            raise TuneError("--proposer-url and --proposer-model go together")


@dataclass(slots=True)
class Scored:
    candidate: Candidate
    evaluation: Evaluation
    penalised: float
    confirmed: bool = False  # scored exactly (smoothed capacity), not estimated


@dataclass(slots=True)
class HistoryPoint:
    elapsed_s: float
    evaluations: int
    best_score: float
    best_text: str
    origin: str


@dataclass(slots=True)
class TuneResult:
    winner_doc: dict[str, Any]  # the policy document to write (expression or anchor)
    winner_text: str
    winner_is_anchor: bool
    train: dict[str, Evaluation]  # policy label -> exact training evaluation
    validation: dict[str, Evaluation]
    sub_window_scores: dict[str, list[float]]
    gains: dict[str, Gain]  # anchor -> gain of the winner over it on validation
    curves: dict[str, list[tuple[float, float]]]  # label -> (rate, attainment) on validation
    history: list[HistoryPoint]
    evaluations: int
    rejected: int
    proposer_rejected: list[tuple[str, str]]
    search_s: float
    validation_s: float
    interrupted: bool
    validated: bool
    best_anchor: str
    config: TuneConfig
    anchors: list[str] = field(default_factory=list)
    search_scores: dict[str, Evaluation] = field(default_factory=dict)  # anchors, search window
    notes: list[str] = field(default_factory=list)
    classes: dict[str, RequestClasses] = field(default_factory=dict)  # window key -> classes
    long_floor: float = 0.0  # the guard used in search (0: none)
    p99_limit_s: float = 0.0  # the guard's p99 TTFT limit (0: none)
    hopeless_limit_s: float = 0.0  # the guard's limit on the hopeless requests' median TTFT
    finalise_reserve_s: float = 0.0  # budget kept back for re-scoring the shortlist
    # Prefix hits at capacity on validation vs the pooled-cache limit (None: no hashes).
    headroom: PrefillHeadroom | None = None
    confirmations: int = 0  # of `evaluations`: search estimates re-scored exactly
    evaluator: str = "serial"  # where evaluations ran ("2 local processes", "Ray at local …")

    WINNER = WINNER


ProgressFn = Callable[[dict[str, Any]], None]


def anchors_to_rescore(
    coarse: dict[str, Evaluation], shortlist: int, coarse_rel_tol: float
) -> list[str]:
    """The anchors to score exactly after the coarse pass: the best `shortlist`, and every
    other one whose coarse capacity is within the coarse pass's resolution of the best (they
    cannot be ranked against it yet; anchors are often within a few percent of each other)."""
    ranked = sorted(coarse, key=lambda n: (-coarse[n].score, coarse[n].p99_ttft_s))
    if not ranked:
        return []
    best = coarse[ranked[0]].score
    tied = [n for n in ranked if best > 0 and coarse[n].score * (1.0 + coarse_rel_tol) >= best]
    return ranked[: max(shortlist, len(tied))]


def _penalised(score: float, size: int, penalty: float) -> float:
    if not math.isfinite(score):
        return score
    factor = penalty * size
    return score * (1.0 - factor) if score >= 0 else score * (1.0 + factor)


def _score_text(item: Scored) -> str:
    """A score as the bar sees it: after the complexity penalty, with the raw one beside."""
    if item.penalised == item.evaluation.score:
        return f"{item.evaluation.score:.4g}"
    return f"{item.penalised:.4g} after the complexity penalty, {item.evaluation.score:.4g} raw"


def _rank_key(item: Scored) -> tuple[float, float]:
    return (item.penalised, -item.evaluation.p99_ttft_s)


def best_anchor_of(scores: Mapping[str, Evaluation], rel_tol: float) -> str:
    """The best anchor by the objective, ties broken by lower p99 TTFT. Scores within
    `rel_tol` (the capacity search's resolution) of the highest are a tie: the search cannot
    order them, and of near-equal capacities the one with the shorter tail is the better
    policy to ship (Azure conversation, training: least-kv 0.897, power-of-two 0.888)."""
    top = max(e.score for e in scores.values())
    floor = top / (1.0 + rel_tol) if top > 0 else top * (1.0 + rel_tol)
    tied = [n for n, e in scores.items() if e.score >= floor]
    return min(tied, key=lambda n: (_finite_or_inf(scores[n].p99_ttft_s), -scores[n].score))


def _finite_or_inf(value: float) -> float:
    return value if math.isfinite(value) else math.inf


def tune(
    train,
    validate,
    cluster,
    slo,
    config: TuneConfig,
    *,
    progress: ProgressFn | None = None,
    evaluator: Evaluator | None = None,
) -> TuneResult:
    """Search on `train`, validate on `validate` (both `Workload`s), return the evidence."""
    config.check()
    notify = progress or (lambda event: None)
    rng = random.Random(config.seed)
    anchors = list(config.anchors) or list_anchors()
    pieces = sub_windows(validate, config.bootstrap_windows) if config.bootstrap_windows > 1 else []
    search = train
    if config.search_fraction < 1.0:
        # The part of the training window closest to validation; the shortlist and the bar
        # are still scored on the whole training window.
        search = cut(train, train.span_s * (1.0 - config.search_fraction), train.span_s + 1e-6)
    workloads = {"train": train, "search": search, "validate": validate}
    workloads.update({f"validate#{k}": piece for k, piece in enumerate(pieces)})
    started = time.monotonic()
    notify(_event("classify", "finding the requests an idle replica serves in time", started))
    classes = {key: classify(w, cluster, slo) for key, w in workloads.items()}
    owns_evaluator = evaluator is None
    evaluator = evaluator or make_evaluator(
        workloads, cluster, slo, workers=config.workers, ray=config.ray, classes=classes
    )
    if config.cache_path:
        evaluator = CachedEvaluator(
            evaluator,
            config.cache_path,
            {key: fingerprint(w) for key, w in workloads.items()},
            context=f"{getattr(cluster, 'label', cluster)}|{getattr(slo, 'label', slo)}",
        )
        owns_evaluator = True
    deadline = started + config.budget_s
    state = _SearchState(
        config=config,
        evaluator=evaluator,
        rng=rng,
        notify=notify,
        started=started,
        search_is_train=search is train,
        train_per_search=len(train) / max(1, len(search)),
        hopeless_from_tokens=classes["train"].hopeless_from_tokens,
        num_replicas=ClusterSpec.parse(cluster).num_replicas,
        pruner=lambda candidate, evaluation: prune_untaken_branches(
            candidate, train, cluster, slo, bracketing_rates(evaluation), config.seed
        ),
    )
    interrupted = False
    try:
        try:
            state.run_anchors(anchors)
            state.run_search(deadline - state.finalise_reserve_s())
        except KeyboardInterrupt:
            interrupted = True
            state.notes.append("search interrupted (Ctrl-C): kept the best candidate so far")
        try:
            winner_doc, winner_text, is_anchor = state.finalise(interrupted)
        except KeyboardInterrupt:
            interrupted = True
            winner_doc, winner_text, is_anchor = state.best_so_far_document()
            state.notes.append("final re-scoring interrupted: the winner is the best search score")
        search_s = time.monotonic() - started
        validation_started = time.monotonic()
        validated = False
        validation: dict[str, Evaluation] = {}
        sub_scores: dict[str, list[float]] = {}
        curves: dict[str, list[tuple[float, float]]] = {}
        gains: dict[str, Gain] = {}
        headroom: PrefillHeadroom | None = None
        try:
            validation, sub_scores, curves = Validation(
                evaluator,
                config,
                {**state.anchor_train, **state.train_exact},
                [e.capacity for e in state.anchor_train.values() if e.capacity],
                state.best_anchor,
                state._emit,
            ).run(winner_doc, anchors, len(pieces))
            gains = compute_gains(validation, sub_scores, anchors, config)
            state.notes.extend(guard_notes(validation, state.best_anchor, config))
            validated = True
            state._emit("validate", "bounding the prefix-cache hits any router could reach")
            headroom = prefill_headroom(
                validate, ClusterSpec.parse(cluster).kv_capacity_tokens(), validation, "validation"
            )
        except KeyboardInterrupt:
            interrupted = True
            state.notes.append("validation interrupted (Ctrl-C): no validation evidence")
        validation_s = time.monotonic() - validation_started
    finally:
        if owns_evaluator:
            evaluator.close(cancel=interrupted)
    return TuneResult(
        winner_doc=winner_doc,
        winner_text=winner_text,
        winner_is_anchor=is_anchor,
        train=state.train_exact,
        validation=validation,
        sub_window_scores=sub_scores,
        gains=gains,
        curves=curves,
        history=state.history,
        evaluations=state.evaluations,
        rejected=state.rejected,
        proposer_rejected=state.proposer_rejected,
        search_s=search_s,
        validation_s=validation_s,
        interrupted=interrupted,
        validated=validated,
        best_anchor=state.best_anchor,
        config=config,
        anchors=list(anchors),
        search_scores=dict(state.anchor_train),
        notes=state.notes,
        classes=classes,
        long_floor=state.long_floor,
        p99_limit_s=state.p99_limit_s,
        hopeless_limit_s=state.hopeless_limit_s,
        finalise_reserve_s=state.reserve_s,
        headroom=headroom,
        evaluator=evaluator.description,
        confirmations=state.confirmations,
    )


def _completed_by(futures: dict[Future, Any], deadline: float | None):
    """Futures as they complete; at `deadline` the ones not yet started are cancelled (the
    running ones are still awaited: a worker cannot drop a simulation half-way)."""
    timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
    seen: set[Future] = set()
    try:
        for future in as_completed(futures, timeout=timeout):
            seen.add(future)
            yield future
    except TimeoutError:
        # cancel() succeeds only for futures no worker has picked up
        rest = [f for f in futures if f not in seen and (f.done() or not f.cancel())]
        yield from as_completed(rest)


def _event(phase: str, message: str, started: float) -> dict[str, Any]:
    return {
        "phase": phase,
        "message": message,
        "elapsed_s": time.monotonic() - started,
        "evaluations": 0,
        "best_score": None,
        "best_text": None,
        "best_anchor": "",
        "best_anchor_score": None,
    }


@dataclass(slots=True)
class _SearchState:
    config: TuneConfig
    evaluator: Evaluator
    rng: random.Random
    notify: ProgressFn
    started: float
    population: Population = field(default_factory=Population)
    seen: dict[str, Scored] = field(default_factory=dict)
    anchor_train: dict[str, Evaluation] = field(default_factory=dict)
    train_exact: dict[str, Evaluation] = field(default_factory=dict)
    history: list[HistoryPoint] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    proposer_rejected: list[tuple[str, str]] = field(default_factory=list)
    evaluations: int = 0
    confirmations: int = 0  # evaluations spent confirming search estimates
    rejected: int = 0
    best: Scored | None = None
    # The best's own search estimate (when the best is a confirmed score): the bar a new
    # estimate must clear to be confirmed, measured the same way (see `_is_challenger`).
    best_estimate: Scored | None = None
    best_anchor: str = ""
    reference_rate: float = 1.0
    rounds: int = 0
    search_is_train: bool = True
    train_per_search: float = 1.0  # requests in the training window per search-window request
    hopeless_from_tokens: int = 0  # see feasibility.RequestClasses (training window)
    num_replicas: int = 0
    long_floor: float = 0.0
    p99_limit_s: float = 0.0
    hopeless_limit_s: float = 0.0
    reserve_s: float = 0.0
    # Removes the winner's `if` branches it never takes on the training window (see prune).
    pruner: Callable[[Candidate, Evaluation], Pruned | None] | None = None

    # ---- phase 1: anchors on the training window (the bar to beat) --------------
    def run_anchors(self, anchors: Sequence[str]) -> None:
        """A coarse pass over every anchor, then an exact one for the best few."""
        coarse = EvalPlan(
            objective=self.config.objective,
            start_rate=1.0,
            rel_tol=0.25,  # steps of 2x, then one bisection: enough to rank them
            max_sims=4,
            seed=self.config.seed,
        )
        self._emit("anchors", f"scoring {len(anchors)} anchors on the training window")
        self._run_anchor_jobs({name: coarse for name in anchors})
        usable = {n: e for n, e in self.anchor_train.items() if e.error is None}
        top = anchors_to_rescore(usable, self.config.shortlist, coarse.rel_tol)
        # Measured like every exact score (smoothed): when the search runs on the whole
        # training window this is the bar itself, and a bisection's estimate of it sits up
        # to ~3 % from the smoothed scores of the candidates it is compared with (Mooncake
        # conversation x6: lmetric 2.218 bisected, 2.159 smoothed).
        self._run_anchor_jobs(
            {name: self._exact_plan(usable[name].capacity or 1.0).unguarded() for name in top}
        )
        usable = {n: e for n, e in self.anchor_train.items() if e.error is None}
        if not usable:
            errors = "; ".join(f"{n}: {e.error}" for n, e in self.anchor_train.items())
            raise TuneError(f"no anchor could be simulated on the training window ({errors})")
        self.best_anchor = best_anchor_of(usable, self.config.final_rel_tol)
        best = usable[self.best_anchor]
        self.reference_rate = best.capacity if best.capacity else 1.0
        self._set_guards(best, "anchors")
        # Seed the population: the anchors restated in the language, plus a linear blend.
        seeds = [
            candidate_from_document(anchor_document(n), origin=f"seed:{n}")
            for n in EXPRESSION_ANCHORS
        ]
        seeds.append(candidate_from_document({"score": LINEAR_SEED}, origin="seed:linear"))
        seeds.append(candidate_from_document({"score": WORK_SEED}, origin="seed:work"))
        seeds.append(candidate_from_document({"score": CACHE_SEED}, origin="seed:cache"))
        seeds.extend(self._lane_seeds(seeds))
        self._evaluate_batch(seeds)

    def _lane_seeds(self, seeds: list[Candidate]) -> list[Candidate]:
        """Where long prompts are mostly hopeless (miss the SLO even on an idle replica),
        seed a lane that keeps them on a third of the replicas, away from the requests
        that can still make it; on the lmetric restatement, the cache seed and the linear
        blend."""
        threshold = self.hopeless_from_tokens
        if threshold <= 0 or self.num_replicas < 3:
            return []
        lanes = max(1, self.num_replicas // 3) - 0.5
        bases = {c.origin: c for c in seeds}
        out = []
        for origin, weight in (("seed:lmetric", 1e7), ("seed:cache", 1e7), ("seed:linear", 1e4)):
            if origin in bases:
                out.append(with_lane(bases[origin], threshold, lanes, weight))
        return out

    def _run_anchor_jobs(self, plans: dict[str, EvalPlan]) -> None:
        futures = {
            self.evaluator.submit("search", name, plan): name for name, plan in plans.items()
        }
        for future in as_completed(futures):
            name = futures[future]
            evaluation = future.result()
            self.evaluations += 1
            self.anchor_train[name] = evaluation
            if self.search_is_train:
                self.train_exact[name] = evaluation
            self._emit("anchors", f"{name}: {evaluation.score:.4g}")

    # ---- phase 2: rounds of search until the budget is spent ----------------------
    def run_search(self, deadline: float) -> None:
        proposer = None
        if self.config.proposer_url and self.config.proposer_model:
            proposer = LLMProposer(self.config.proposer_url, self.config.proposer_model)
        tuner: ConstantTuner | None = None
        tuned_shape = ""
        per_round = self.config.structural_per_round or max(1, self.evaluator.workers)
        while time.monotonic() < deadline:
            self.rounds += 1
            batch: list[Candidate] = []
            # Restart CMA-ES only when the best *structure* changes: a better set of constants
            # for the same structure is CMA-ES's own progress, not a reason to start over.
            if self.best is not None and self.best.candidate.shape != tuned_shape:
                tuned_shape = self.best.candidate.shape
                tuner = ConstantTuner(
                    self.best.candidate,
                    seed=self.config.seed + self.rounds,
                    popsize=self.config.cma_popsize,
                )
            cma_batch = tuner.ask() if tuner is not None and tuner.is_active else []
            batch.extend(cma_batch)
            batch.extend(self.population.offspring(self.rng, per_round))
            if proposer is not None and self.rounds % 3 == 1:
                batch.extend(self._ask_proposer(proposer))
            if not batch:
                break
            scored = self._evaluate_batch(batch, deadline=deadline)
            if tuner is not None and cma_batch:
                tuner.tell(
                    [s.evaluation.score if s else -math.inf for s in scored[: len(cma_batch)]]
                )

    def _ask_proposer(self, proposer: LLMProposer) -> list[Candidate]:
        best = [(c.text, s) for s, c in self.population.members[:5]]
        proposal = proposer.propose(best, self.config.objective)
        if proposal.error:
            self.notes.append(f"proposer: {proposal.error}")
        self.proposer_rejected.extend(proposal.rejected)
        self.rejected += len(proposal.rejected)
        return proposal.accepted

    def _search_plan(self) -> EvalPlan:
        if self.config.objective == "goodput":
            return EvalPlan(objective="goodput", seed=self.config.seed)
        rate = (
            self.best.evaluation.capacity
            if self.best and self.best.evaluation.capacity
            else self.reference_rate
        )
        return EvalPlan(
            objective=self.config.objective,
            start_rate=rate,
            rel_tol=self.config.search_rel_tol,
            max_sims=self.config.search_sims,
            reject_below=0.85 * rate,
            seed=self.config.seed,
            long_floor=self.long_floor,
            p99_limit_s=self.p99_limit_s,
            hopeless_limit_s=self.hopeless_limit_s,
        )

    def finalise_reserve_s(self) -> float:
        """Seconds to keep for the exact re-scoring of the shortlist on the training window.

        Estimated from what the best anchor's exact evaluation cost on the search window
        (the shortlist is re-scored with the same plan near the same rates), scaled by the
        training window's size, in waves of one job per worker (the best anchors' re-scores
        first when the search window is a part of the training window).
        """
        best = self.anchor_train.get(self.best_anchor)
        if best is None or best.error is not None:
            return 0.0
        workers = max(1, self.evaluator.workers)
        waves = math.ceil(self.config.shortlist / workers)
        if not self.search_is_train:  # the anchors first: the guards come from them
            waves += math.ceil(self._train_anchor_count() / workers)
        # x1.5: measured on Mooncake, the shortlist costs more than the anchor (higher rates
        # mean more requests in flight per simulated second) and the machine is shared.
        self.reserve_s = 1.5 * waves * best.wall_s * self.train_per_search
        self._emit("search", f"keeping {self.reserve_s:.0f} s for the final re-scoring")
        return self.reserve_s

    def _evaluate_batch(
        self, batch: Sequence[Candidate], deadline: float | None = None
    ) -> list[Scored | None]:
        plan = self._search_plan()
        results: list[Scored | None] = [None] * len(batch)
        challengers: list[Scored] = []
        futures: dict[Future, int] = {}
        for position, candidate in enumerate(batch):
            known = self.seen.get(candidate.text)
            if known is not None:
                results[position] = known
                continue
            futures[self.evaluator.submit("search", candidate.document(), plan)] = position
        for future in _completed_by(futures, deadline):
            position = futures[future]
            candidate = batch[position]
            evaluation = future.result()
            self.evaluations += 1
            if evaluation.error is not None:
                self.rejected += 1
            scored = Scored(
                candidate,
                evaluation,
                _penalised(evaluation.score, candidate.size, self.config.complexity_penalty),
            )
            self.seen[candidate.text] = scored
            results[position] = scored
            if math.isfinite(scored.penalised):
                self.population.offer(scored.penalised, candidate)
                if self._confirms:
                    if self._is_challenger(scored):
                        challengers.append(scored)
                elif self.best is None or _rank_key(scored) > _rank_key(self.best):
                    self._new_best(scored)
            self._emit("search", f"round {self.rounds}")
        if challengers:
            self._confirm(challengers, deadline)
        return results

    @property
    def _confirms(self) -> bool:
        """Estimates are confirmed where they are estimates: a capacity search cut short
        (goodput is measured at the recorded rate, one simulation, already exact)."""
        return self.config.confirm_per_round > 0 and self.config.objective != "goodput"

    def _is_challenger(self, estimate: Scored) -> bool:
        """Whether a search estimate is worth an exact score. With the "exact" bar it beats
        the best's exact score. With the "estimate" bar it beats the best's own estimate,
        like with like: estimates are optimistic (two simulations interpolated across a
        12 % rate step), so against the exact score nearly every near-copy CMA-ES proposes
        looks better and confirming them takes much of the search's time (Mooncake
        conversation x6: 114 of 565 evaluations, each ~12 simulations against an estimate's
        2). A best whose own estimate was lucky must not block every later candidate, so an
        estimate more than the search's resolution above the best's exact score is
        confirmed too. On Mooncake conversation x12 the extra candidates did not pay: the
        "exact" bar validated 1.071-1.086x in four runs, "estimate" 1.065-1.068x in three
        (docs/tune-results.md), so "exact" is the default."""
        if self.best is None:
            return True
        if self.config.confirm_bar == "exact" or self.best_estimate is None:
            return _rank_key(estimate) > _rank_key(self.best)
        ceiling = self.best.penalised * (1.0 + self.config.search_rel_tol)
        return _rank_key(estimate) > _rank_key(self.best_estimate) or estimate.penalised > ceiling

    def _confirm(self, challengers: list[Scored], deadline: float | None) -> None:
        """Re-score the best few challengers exactly on the search window (the same plan as
        the final re-scoring) and let a confirmed score, not a lucky estimate, be the best."""
        top = sorted(challengers, key=_rank_key, reverse=True)[: self.config.confirm_per_round]
        futures = self._submit_exact("search", top, self._exact_plan(self.reference_rate))
        for future in _completed_by(futures, deadline):
            item = futures[future]
            evaluation = future.result()
            self.evaluations += 1
            self.confirmations += 1
            confirmed = Scored(
                item.candidate,
                evaluation,
                _penalised(evaluation.score, item.candidate.size, self.config.complexity_penalty),
                confirmed=True,
            )
            self.seen[item.candidate.text] = confirmed
            if not math.isfinite(confirmed.penalised):
                continue
            self.population.offer(confirmed.penalised, item.candidate, rescore=True)
            if self.best is None or _rank_key(confirmed) > _rank_key(self.best):
                self._new_best(confirmed)
                self.best_estimate = item
            self._emit("search", f"round {self.rounds}: confirmed {evaluation.score:.4g}")

    def _submit_exact(
        self, key: str, items: Sequence[Scored], plan: EvalPlan
    ) -> dict[Future, Scored]:
        """Exact scores of `items` on window `key`, each starting from its own search
        estimate: fewer bracket steps than starting everyone at the anchor's rate."""
        return {
            self.evaluator.submit(
                key,
                s.candidate.document(),
                replace(plan, start_rate=s.evaluation.capacity or plan.start_rate),
            ): s
            for s in items
        }

    def _new_best(self, scored: Scored) -> None:
        self.best = scored
        self.history.append(
            HistoryPoint(
                time.monotonic() - self.started,
                self.evaluations,
                scored.evaluation.score,
                scored.candidate.text,
                scored.candidate.origin,
            )
        )

    def _set_guards(self, anchor: Evaluation, phase: str) -> None:
        """The guards candidates are held to, from the best anchor's figures at its capacity
        on the window they are scored on: long feasible prompts keep its attainment within
        `guard_margin`, and the p99 TTFT stays within `tail_factor` times its own."""
        if self.config.objective not in FEASIBLE_OBJECTIVES:
            return
        if anchor.long_attainment > 0:  # NaN (no long requests) compares False: no guard
            self.long_floor = max(0.0, anchor.long_attainment - self.config.guard_margin)
            self._emit(
                phase,
                f"guard: long prompts must keep >= {self.long_floor:.1%} attainment "
                f"({self.best_anchor} keeps {anchor.long_attainment:.1%})",
            )
        if (
            self.config.tail_factor > 0
            and math.isfinite(anchor.p99_ttft_s)
            and anchor.p99_ttft_s > 0
        ):
            self.p99_limit_s = self.config.tail_factor * anchor.p99_ttft_s
        # The p99 does not see the requests no replica serves in time when they are under
        # 1 % (chat + 1M-token mix: 0.9 %, parked on one replica for a median 39 minutes).
        hopeless = anchor.infeasible_p50_ttft_s
        if self.config.tail_factor > 0 and math.isfinite(hopeless) and hopeless > 0:
            self.hopeless_limit_s = self.config.tail_factor * hopeless

    def _exact_plan(self, start_rate: float) -> EvalPlan:
        """How exact scores are measured (the shortlist, the bar, confirmations)."""
        return EvalPlan(
            objective=self.config.objective,
            start_rate=start_rate,
            rel_tol=self.config.final_rel_tol,
            max_sims=self.config.max_sims,
            seed=self.config.seed,
            long_floor=self.long_floor,
            p99_limit_s=self.p99_limit_s,
            hopeless_limit_s=self.hopeless_limit_s,
            smooth_points=self.config.smooth_points,
        )

    def shortlist(self) -> list[Scored]:
        """The candidates re-scored on the whole training window: confirmed scores before
        estimates, and the best of each structure (`Candidate.shape`) before a second of the
        same one: CMA-ES fills the top of the ranking with near-copies of one structure, and
        a different structure a few percent behind on the search window can lead on the
        whole training window (Mooncake conversation x12: the cache-weighted lmetric, +10 %
        there, was not among the best 3 estimates)."""
        ranked = sorted(
            (s for s in self.seen.values() if math.isfinite(s.penalised)),
            key=lambda s: (s.confirmed, *_rank_key(s)),
            reverse=True,
        )
        firsts: list[Scored] = []
        rest: list[Scored] = []
        shapes: set[str] = set()
        for item in ranked:
            shape = item.candidate.shape
            (rest if shape in shapes else firsts).append(item)
            shapes.add(shape)
        return (firsts + rest)[: self.config.shortlist]

    # ---- phase 3: exact re-scoring of the shortlist on the training window ---------
    def finalise(self, interrupted: bool) -> tuple[dict[str, Any], str, bool]:
        if self.best is None:
            return self._anchor_result()
        ranked = self.shortlist()
        plan = self._exact_plan(self.reference_rate)
        # First in the queue: the bar is the one number every outcome needs. Anchors are
        # measured as they are (no guard): the guard is a bar for candidates. When the
        # search ran on a part of the training window, the best few anchors there are
        # re-scored on all of it and the best on the whole window is the bar: anchors often
        # lie within a few percent of each other, and a part of the window can rank them
        # differently (Azure code, 4-minute search window: the anchor it picked was 7.5%
        # behind least-kv, which leads on both halves of the trace).
        anchor_futures = {
            self.evaluator.submit(
                "train",
                name,
                plan.unguarded(start_rate=self.anchor_train[name].capacity or plan.start_rate),
            ): name
            for name in self._train_anchors()
            if name not in self.train_exact
        }
        if not self.search_is_train:
            # The guards are relative to the bar on the window being scored: measured on the
            # search window they are absolute figures of a busier part of the trace
            # (Mooncake conversation x12: lmetric's long prompts keep 72.9 % there, 78 % on
            # the whole training window), so the shortlist waits for the anchors.
            self._emit("final", "re-scoring the best anchors on the full training window")
            self._collect_train_anchors(anchor_futures)
            anchor_futures = {}
            self._set_guards(self.train_exact[self.best_anchor], "final")
            plan = self._exact_plan(self.reference_rate)
        futures = self._submit_exact("train", ranked, plan)
        self._emit("final", f"re-scoring the best {len(ranked)} on the full training window")
        exact: list[Scored] = []
        for future in as_completed(futures):
            item = futures[future]
            evaluation = future.result()
            self.evaluations += 1
            exact.append(
                Scored(
                    item.candidate,
                    evaluation,
                    _penalised(
                        evaluation.score, item.candidate.size, self.config.complexity_penalty
                    ),
                )
            )
        self._collect_train_anchors(anchor_futures)
        exact = [s for s in exact if s.evaluation.error is None]
        if not exact:
            return self._anchor_result()
        top = max(exact, key=_rank_key)
        # A gain inside the capacity search's own tolerance is noise, not a reason to ship
        # a new heuristic (Mooncake: +0.9% on training came out -1.2% on validation); the
        # bar is the highest anchor score, also when a tie on it went to a shorter tail.
        top_anchor = self._bar_score()
        if self.train_exact[self.best_anchor].score < top_anchor:
            best = self.train_exact[self.best_anchor]
            self.notes.append(
                f"the best anchor {self.best_anchor!r} ({best.score:.4g}, p99 TTFT "
                f"{best.p99_ttft_s:.2f} s) ties a higher score ({top_anchor:.4g}) within the "
                f"{self.config.final_rel_tol:.0%} resolution of the capacity search and has the "
                "shorter tail; the bar is the higher score"
            )
        bar = top_anchor * (1.0 + self.config.final_rel_tol) if top_anchor > 0 else top_anchor
        if top.penalised <= bar:
            self.notes.append(
                f"no candidate beat the best anchor {self.best_anchor!r} on the training window "
                f"by more than the {self.config.final_rel_tol:.0%} resolution of the capacity "
                f"search ({_score_text(top)} vs {top_anchor:.4g}); the result is that anchor"
            )
            return self._anchor_result()
        self.train_exact[TuneResult.WINNER] = top.evaluation
        winner = simplified(top.candidate)  # CMA-ES offspring are not simplified on the way
        pruned = self.pruner(winner, top.evaluation) if self.pruner else None
        if pruned is not None:
            rates = ", ".join(f"x{rate:.3g}" for rate in pruned.rates)
            self.notes.append(
                f"fixed {pruned.removed_branches} condition(s) that never change on "
                f"the training window (an 'if' becomes the branch it takes, a comparison its value; {pruned.nodes_before} -> {pruned.nodes_after} nodes): "
                f"every request is routed as before at the rates bracketing its capacity "
                f"({rates}); traffic unlike the training window could have taken them"
            )
            winner = pruned.candidate
        return winner.document(name="learned", named_params=True), winner.text, False

    def _collect_train_anchors(self, futures: dict[Future, str]) -> None:
        for future, name in futures.items():
            self.train_exact[name] = future.result()
            self.evaluations += 1
        if futures:
            self._pick_best_anchor_on_train()

    def _train_anchors(self) -> list[str]:
        """The anchors re-scored on the whole training window: the best one on the search
        window, plus (when that is only a part of training) the next best up to `shortlist`."""
        exact = {
            n: e
            for n, e in self.anchor_train.items()
            if e.error is None and e.is_exact and n != self.best_anchor
        }
        others = sorted(exact, key=lambda n: (-exact[n].score, exact[n].p99_ttft_s))
        return [self.best_anchor] + others[: self._train_anchor_count() - 1]

    def _train_anchor_count(self) -> int:
        return 1 if self.search_is_train else max(1, self.config.shortlist)

    def _pick_best_anchor_on_train(self) -> None:
        scored = {
            n: self.train_exact[n]
            for n in self._train_anchors()
            if n in self.train_exact and self.train_exact[n].error is None
        }
        if scored:
            best = best_anchor_of(scored, self.config.final_rel_tol)
            if best != self.best_anchor:
                new, old = scored[best], scored[self.best_anchor]
                if new.score > old.score:
                    how = f"({new.score:.4g}) beats {self.best_anchor!r} ({old.score:.4g})"
                else:
                    how = (
                        f"({new.score:.4g}, p99 TTFT {new.p99_ttft_s:.2f} s) ties "
                        f"{self.best_anchor!r} ({old.score:.4g}, {old.p99_ttft_s:.2f} s) within "
                        f"the {self.config.final_rel_tol:.0%} resolution of the capacity search "
                        "with the shorter tail"
                    )
                self.notes.append(
                    f"on the whole training window {best!r} {how}; {self.best_anchor!r} was "
                    "the best anchor on the search window"
                )
                self.best_anchor = best

    def best_so_far_document(self) -> tuple[dict[str, Any], str, bool]:
        if self.best is None or (
            self.best_anchor and self.best.penalised <= self._search_bar_score()
        ):
            return self._anchor_result()
        self.train_exact[TuneResult.WINNER] = self.best.evaluation
        winner = simplified(self.best.candidate)
        return winner.document(name="learned", named_params=True), winner.text, False

    @staticmethod
    def _top_anchor_score(scores: Mapping[str, Evaluation], names) -> float:
        """The highest score of the named anchors that ran (the bar before its margin)."""
        return max(scores[n].score for n in names if n in scores and scores[n].error is None)

    def _search_bar_score(self) -> float:
        """The highest exact anchor score on the search window."""
        exact = [n for n, e in self.anchor_train.items() if e.is_exact]
        return self._top_anchor_score(self.anchor_train, exact + [self.best_anchor])

    def _bar_score(self) -> float:
        """The highest exact anchor score on the whole training window."""
        if self.search_is_train:  # the anchor pass scored them there already
            return self._search_bar_score()
        return self._top_anchor_score(self.train_exact, self._train_anchors())

    def _anchor_result(self) -> tuple[dict[str, Any], str, bool]:
        name = self.best_anchor
        if name in self.anchor_train:
            self.train_exact[TuneResult.WINNER] = (
                self.train_exact.get(name) or self.anchor_train[name]
            )
        return {"kind": "anchor", "name": name}, f"anchor {name}", True

    def _emit(self, phase: str, message: str) -> None:
        best = self.best
        self.notify(
            {
                "phase": phase,
                "message": message,
                "elapsed_s": time.monotonic() - self.started,
                "evaluations": self.evaluations,
                "best_score": best.evaluation.score if best else None,
                "best_text": best.candidate.text if best else None,
                "best_anchor": self.best_anchor,
                "best_anchor_score": self.anchor_train[self.best_anchor].score
                if self.best_anchor
                else None,
            }
        )
