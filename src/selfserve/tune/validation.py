"""Validation on the later window: every policy's score, sub-window scores for the
confidence intervals, attainment curves, and the gains of the winner over each anchor.

Everything here runs after the search, on traffic the search never saw. Policies are
measured alike (no guard: the table shows what each does to the long requests at its own
capacity). Sub-windows, which only feed the bootstrap intervals, are simulated for the
winner, the best training anchor and the best `ci_anchors` anchors on validation; the
other anchors get a point ratio. A winner that is an anchor is not simulated twice.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, as_completed, wait
from dataclasses import dataclass, replace
from typing import Any

from selfserve.tune.objective import FEASIBLE_OBJECTIVES, EvalPlan, Evaluation
from selfserve.tune.pool import Evaluator
from selfserve.tune.stats import Gain, bootstrap_ratio

WINNER = "learned"  # the label of the tuned policy in every table


@dataclass(slots=True)
class Validation:
    """One validation pass: `run(winner_doc, anchors, pieces)`."""

    evaluator: Evaluator
    config: Any  # TuneConfig (objective, tolerances, seed, ci_anchors, curve_points)
    known: Mapping[str, Evaluation]  # training evaluations: their capacities start the search
    reference_capacities: Sequence[float]  # anchors' training capacities (fallback start)
    best_anchor: str
    emit: Callable[[str, str], None]

    def run(
        self, winner_doc: dict[str, Any], anchors: Sequence[str], pieces: int
    ) -> tuple[dict[str, Evaluation], dict[str, list[float]], dict[str, list[tuple[float, float]]]]:
        """Every policy on the whole validation window; sub-windows (for the CIs) for the
        winner, the best training anchor and the best `ci_anchors` on validation.

        Everyone is measured alike here: no guard, so the table shows what each policy does
        to the long requests at its own capacity. A winner that is an anchor is not
        simulated twice.
        """
        policies: dict[str, Any] = {name: name for name in anchors}
        alias = winner_doc.get("name") if winner_doc.get("kind") == "anchor" else None
        if alias not in policies:
            alias = None
            policies = {WINNER: winner_doc, **policies}
        reference = max(self.reference_capacities, default=1.0)

        def plans(label: str) -> tuple[EvalPlan, EvalPlan]:
            known = self.known.get(label)
            start = known.capacity if known is not None and known.capacity else reference
            full_plan = EvalPlan(
                objective=self.config.objective,
                start_rate=start,
                rel_tol=self.config.final_rel_tol,
                max_sims=self.config.max_sims,
                seed=self.config.seed,
                smooth_points=self.config.smooth_points,
            )
            return full_plan, replace(full_plan, rel_tol=self.config.search_rel_tol)

        jobs: dict[Future, tuple[str, str]] = {}

        def submit_pieces(label: str) -> None:
            _, piece_plan = plans(label)
            for k in range(pieces):
                key = f"validate#{k}"
                jobs[self.evaluator.submit(key, policies[label], piece_plan)] = (label, key)

        for label, spec in policies.items():
            jobs[self.evaluator.submit("validate", spec, plans(label)[0])] = (label, "validate")
        with_pieces = {alias or WINNER, self.best_anchor} & set(policies)
        for label in with_pieces:
            submit_pieces(label)
        self.emit("validate", f"validating {len(policies)} policies on the later window")
        full: dict[str, Evaluation] = {}
        parts: dict[str, dict[int, float]] = {label: {} for label in policies}
        pending = set(jobs)
        ranked_done = self.config.ci_anchors <= 0
        while pending:
            finished, pending = wait(pending, return_when=FIRST_COMPLETED)
            for future in finished:
                label, key = jobs[future]
                evaluation = future.result()
                if key == "validate":
                    full[label] = evaluation
                else:
                    parts[label][int(key.split("#")[1])] = evaluation.score
            self.emit("validate", f"{len(jobs) - len(pending)}/{len(jobs)} validation jobs")
            if not ranked_done and len(full) == len(policies):
                ranked_done = True
                ranked = sorted(
                    (n for n in anchors if n in full), key=lambda n: -_finite(full[n].score)
                )
                before = set(jobs)
                for label in ranked[: self.config.ci_anchors]:
                    if label not in with_pieces:
                        with_pieces.add(label)
                        submit_pieces(label)
                pending |= set(jobs) - before
        if alias is not None:
            full[WINNER] = full[alias]
            parts[WINNER] = parts[alias]
        curves = self._curves(policies, full)
        sub_scores = {
            label: [values[k] for k in sorted(values)] for label, values in parts.items() if values
        }
        return full, sub_scores, curves

    def _curves(self, policies, full) -> dict[str, list[tuple[float, float]]]:
        """Attainment vs rate on a shared grid around the validated capacities."""
        curves = {label: list(e.attainment_curve) for label, e in full.items()}
        if self.config.curve_points <= 0 or self.config.objective == "goodput":
            return curves
        capacities = [e.capacity for e in full.values() if e.capacity]
        if not capacities:
            return curves
        top = max(capacities)
        points = self.config.curve_points
        grid = [top * (0.5 + 0.8 * k / max(1, points - 1)) for k in range(points)]
        jobs: dict[Future, str] = {}
        for label, spec in policies.items():
            for rate in grid:
                plan = EvalPlan(
                    objective="capacity",
                    start_rate=rate,
                    rel_tol=10.0,
                    max_sims=1,
                    seed=self.config.seed,
                )
                jobs[self.evaluator.submit("validate", spec, plan)] = label
        for future in as_completed(jobs):
            evaluation = future.result()
            curves[jobs[future]].extend((p.rate, p.attainment) for p in evaluation.probes)
        return {label: sorted(set(points_)) for label, points_ in curves.items()}


def gains(validation, sub_scores, anchors, config) -> dict[str, Gain]:
    winner = validation.get(WINNER)
    out: dict[str, Gain] = {}
    if winner is None:
        return out
    for name in anchors:
        base = validation.get(name)
        if base is None:
            continue
        point = _ratio(winner.score, base.score, config.objective)
        mine, theirs = sub_scores.get(WINNER, []), sub_scores.get(name, [])
        if len(mine) != len(theirs):  # no sub-windows for this anchor: a point estimate only
            mine, theirs = [], []
        if config.objective == "cost":  # lower cost is better: the gain is their cost / ours
            mine, theirs = [-x for x in theirs], [-x for x in mine]
        out[name] = bootstrap_ratio(mine, theirs, point=point, seed=config.seed)
    return out


def _finite(value: float) -> float:
    return value if math.isfinite(value) else -math.inf


def _ratio(mine: float, theirs: float, objective: str) -> float:
    if objective == "cost":
        return (-theirs) / (-mine) if mine < 0 else math.nan
    return mine / theirs if theirs > 0 else math.nan


def guard_notes(validation: Mapping[str, Evaluation], best_anchor: str, config) -> list[str]:
    """Where the learned policy, which met the guards on training, breaks them on
    validation against the best training anchor (each at its own validation capacity):
    the guards are measured on training, and a user deciding to deploy should see when
    they did not carry over."""
    winner, anchor = validation.get(WINNER), validation.get(best_anchor)
    if winner is None or anchor is None or config.objective not in FEASIBLE_OBJECTIVES:
        return []
    notes = []
    floor = anchor.long_attainment - config.guard_margin
    if winner.long_attainment < floor:  # False when either is NaN
        notes.append(
            f"on validation the long prompts lose more than the guard allows: "
            f"{winner.long_attainment:.1%} attainment under the learned policy vs "
            f"{anchor.long_attainment:.1%} under {best_anchor} (guard margin "
            f"{config.guard_margin:.0%}; it held on training)"
        )
    limit_s = config.tail_factor * anchor.p99_ttft_s
    if config.tail_factor > 0 and winner.p99_ttft_s > limit_s:
        notes.append(
            f"on validation the learned policy's p99 TTFT is {winner.p99_ttft_s:.1f} s vs "
            f"{anchor.p99_ttft_s:.1f} s under {best_anchor}: more than the tail guard's "
            f"{config.tail_factor:g}x (it held on training)"
        )
    hopeless_s = config.tail_factor * anchor.infeasible_p50_ttft_s
    if config.tail_factor > 0 and winner.infeasible_p50_ttft_s > hopeless_s:  # NaN: False
        notes.append(
            f"on validation the requests no replica serves in time wait a median "
            f"{winner.infeasible_p50_ttft_s:.1f} s under the learned policy vs "
            f"{anchor.infeasible_p50_ttft_s:.1f} s under {best_anchor}: more than the tail "
            f"guard's {config.tail_factor:g}x (it held on training)"
        )
    return notes
