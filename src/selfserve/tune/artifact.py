"""The learned policy file: the heuristic, its parameters and the evidence that justified it.

The file is an ordinary policy document (`kind: expression`, or `kind: anchor` when no
candidate beat the best anchor), so `selfserve.policy.make_policy(path)` loads it in the
simulator and in the gateway alike. `evidence` records what a reviewer needs to trust or
reproduce it: the trace's content fingerprint, the train and validation windows, cluster,
SLO, objective, every anchor's training and validation score, the gains with bootstrap
confidence intervals, the search budget, seed and counts.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import yaml

from selfserve import __version__
from selfserve.tune.objective import Evaluation
from selfserve.tune.tuner import TuneResult


def _number(value: float | None, digits: int = 5) -> float | None:
    if value is None or not math.isfinite(value):
        return None
    return float(f"{value:.{digits}g}")


def evaluation_record(evaluation: Evaluation) -> dict[str, Any]:
    record: dict[str, Any] = {
        "score": _number(evaluation.score),
        "capacity": _number(evaluation.capacity),
        "p99_ttft_s": _number(evaluation.p99_ttft_s),
        "all_request_attainment": _number(evaluation.all_attainment),
        "long_prompt_attainment": _number(evaluation.long_attainment),
        "long_prompt_p99_ttft_s": _number(evaluation.long_p99_ttft_s),
        "infeasible_p50_ttft_s": _number(evaluation.infeasible_p50_ttft_s),
        "simulations": len(evaluation.probes),
    }
    if evaluation.error:
        record["error"] = evaluation.error
    return record


def policy_document(
    result: TuneResult,
    *,
    trace: dict[str, Any],
    windows: dict[str, Any],
    cluster: str,
    slo: str,
) -> dict[str, Any]:
    """The policy file's content: `result.winner_doc` plus `evidence`."""
    config = result.config
    anchors = result.anchors or [name for name in result.train if name != TuneResult.WINNER]
    evidence: dict[str, Any] = {
        "created_by": f"selfserve tune {__version__}",
        "trace": trace,
        "windows": windows,
        "cluster": cluster,
        "slo": slo,
        "objective": config.objective,
        "guard": {
            "long_prompt_attainment_floor": _number(result.long_floor),
            "margin": config.guard_margin,
            "p99_ttft_limit_s": _number(result.p99_limit_s),
            "hopeless_p50_ttft_limit_s": _number(result.hopeless_limit_s),
            "tail_factor": config.tail_factor,
            "classes": {
                key: c.summary()
                for key, c in result.classes.items()
                if key in ("train", "validate")
            },
        },
        "search": {
            "budget_s": config.budget_s,
            "search_s": round(result.search_s, 1),
            "finalise_reserve_s": round(result.finalise_reserve_s, 1),
            "validation_s": round(result.validation_s, 1),
            "seed": config.seed,
            "evaluations": result.evaluations,
            "evaluator": result.evaluator,
            "confirmations": result.confirmations,
            "confirm_per_round": config.confirm_per_round,
            "confirm_bar": config.confirm_bar,
            "rejected_candidates": result.rejected,
            "strategies": ["cma-es", "structural"]
            + (["llm-proposer"] if config.proposer_url else []),
            "complexity_penalty_per_node": config.complexity_penalty,
            "interrupted": result.interrupted,
        },
        "best_anchor": result.best_anchor,
        "train": {
            "learned": evaluation_record(result.train[TuneResult.WINNER])
            if TuneResult.WINNER in result.train
            else None,
            "anchors": {
                name: evaluation_record(result.train[name])
                for name in anchors
                if name in result.train
            },
            "search_window_fraction": config.search_fraction,
            "anchors_on_search_window": {
                name: evaluation_record(e) for name, e in result.search_scores.items()
            },
        },
        "validation": {
            "validated": result.validated,
            "learned": evaluation_record(result.validation[TuneResult.WINNER])
            if TuneResult.WINNER in result.validation
            else None,
            "anchors": {
                name: evaluation_record(result.validation[name])
                for name in anchors
                if name in result.validation
            },
        },
        "gains": {
            name: {k: _number(v) if isinstance(v, float) else v for k, v in gain.as_dict().items()}
            for name, gain in result.gains.items()
        },
        "notes": list(result.notes),
    }
    doc = dict(result.winner_doc)
    doc.setdefault("description", _describe(result))
    doc["evidence"] = evidence
    return doc


def _describe(result: TuneResult) -> str:
    if result.winner_is_anchor:
        return f"selfserve tune found nothing better than the anchor {result.best_anchor}"
    gain = result.gains.get(result.best_anchor)
    if gain is None:
        return "learned by selfserve tune"
    return (
        f"learned by selfserve tune: {gain.ratio:.3f}x the best anchor ({result.best_anchor}) "
        f"on validation, {int(gain.level * 100)}% CI [{gain.low:.3f}, {gain.high:.3f}]"
    )


def write_policy_file(path: str | Path, doc: dict[str, Any]) -> Path:
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(yaml.safe_dump(doc, sort_keys=False, width=100, allow_unicode=True))
    return out
