"""Rendering a tuning run: the validation table (terminal, JSON, HTML) and the HTML report
with search progress and SLO attainment vs rate for the winner and every anchor."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from selfserve.report.html import HtmlReport, new_figure
from selfserve.tune.tuner import TuneResult

TABLE_HEADERS = (
    "policy",
    "train",
    "validation",
    "all att.",
    "long att.",
    "long p99 s",
    "p99 s",
    "learned ÷",
    "90% CI",
)
# What the class columns mean (printed under the table): at each policy's own validation
# capacity, attainment over every request and over the long feasible prompts.
CLASS_NOTE = (
    "train/validation: the objective's score; att.: SLO attainment of all requests and of "
    "the long prompts, p99: TTFT, all at each policy's own validation capacity; long "
    "prompts = the "
    "longest 10% of the requests an idle replica serves in time (>= {threshold} tokens); "
    "{share:.1%} of validation requests are feasible at all"
)


def validation_rows(result: TuneResult) -> list[dict[str, Any]]:
    """One row per policy (learned first, then anchors by validation score)."""
    names = result.anchors or [n for n in result.train if n != TuneResult.WINNER]
    labels = [TuneResult.WINNER] + sorted(
        names, key=lambda n: -_score(result.validation.get(n) or result.train.get(n))
    )
    rows = []
    for label in labels:
        train = result.train.get(label)
        val = result.validation.get(label)
        gain = result.gains.get(label)
        rows.append(
            {
                "policy": label,
                "train_score": train.score if train else None,
                "validation_score": val.score if val else None,
                "validation_all_attainment": val.all_attainment if val else None,
                "validation_long_attainment": val.long_attainment if val else None,
                "validation_long_p99_ttft_s": val.long_p99_ttft_s if val else None,
                "validation_infeasible_p50_ttft_s": val.infeasible_p50_ttft_s if val else None,
                "validation_p99_ttft_s": val.p99_ttft_s if val else None,
                "gain": gain.ratio if gain else None,
                "gain_ci_low": gain.low if gain else None,
                "gain_ci_high": gain.high if gain else None,
            }
        )
    return rows


def class_note(result: TuneResult) -> str | None:
    """The sentence that explains the class columns, or None without request classes."""
    classes = result.classes.get("validate")
    if classes is None:
        return None
    text = CLASS_NOTE.format(threshold=classes.long_threshold_tokens, share=classes.feasible_share)
    if result.long_floor > 0:
        text += (
            f"; on the training window the winner had to keep long-prompt attainment >= "
            f"{result.long_floor:.1%} (the best anchor's there minus "
            f"{result.config.guard_margin:.0%})"
        )
    if result.p99_limit_s > 0:
        text += (
            f" and p99 TTFT <= {result.p99_limit_s:.1f} s "
            f"({result.config.tail_factor:g}x the best anchor's on training)"
        )
    if result.hopeless_limit_s > 0:
        text += (
            f", and the requests no replica serves in time a median TTFT <= "
            f"{result.hopeless_limit_s:.1f} s ({result.config.tail_factor:g}x the best anchor's)"
        )
    return text + _infeasible_note(result, classes.feasible_share)


def _infeasible_note(result: TuneResult, feasible_share: float) -> str:
    """What the requests no router serves in time pay: the capacity objective does not count
    them, so a winner may gain by making them wait (a long-context lane does)."""
    mine = result.validation.get(TuneResult.WINNER)
    theirs = result.validation.get(result.best_anchor)
    if feasible_share >= 1.0 or mine is None or theirs is None or result.winner_is_anchor:
        return ""
    if not (
        math.isfinite(mine.infeasible_p50_ttft_s) and math.isfinite(theirs.infeasible_p50_ttft_s)
    ):
        return ""
    return (
        f"; the {1.0 - feasible_share:.1%} that no replica serves in time wait a median "
        f"{mine.infeasible_p50_ttft_s:.1f} s for their first token under the learned policy "
        f"vs {theirs.infeasible_p50_ttft_s:.1f} s under {result.best_anchor} (each at its own "
        "capacity; the objective does not count them)"
    )


def _score(evaluation) -> float:
    return (
        evaluation.score
        if evaluation is not None and math.isfinite(evaluation.score)
        else -math.inf
    )


def _cell(value: float | None, fmt: str = "{:.3f}") -> str:
    if value is None or not math.isfinite(value):
        return "–"
    return fmt.format(value)


def table_cells(row: dict[str, Any]) -> list[str]:
    ci = (
        f"[{_cell(row['gain_ci_low'])}, {_cell(row['gain_ci_high'])}]"
        if row["gain_ci_low"] is not None
        else "–"
    )
    return [
        row["policy"],
        _cell(row["train_score"]),
        _cell(row["validation_score"]),
        _cell(row["validation_all_attainment"], "{:.1%}"),
        _cell(row["validation_long_attainment"], "{:.1%}"),
        _cell(row["validation_long_p99_ttft_s"], "{:.2f}"),
        _cell(row["validation_p99_ttft_s"], "{:.2f}"),
        _cell(row["gain"])
        + ("×" if row["gain"] is not None and math.isfinite(row["gain"]) else ""),
        ci,
    ]


def write_html(result: TuneResult, policy_doc: dict[str, Any], path: str | Path) -> Path:
    evidence = policy_doc.get("evidence", {})
    report = HtmlReport(title=f"selfserve tune — {evidence.get('trace', {}).get('name', 'trace')}")
    report.paragraph(
        f"Cluster {evidence.get('cluster')}, SLO {evidence.get('slo')}, objective "
        f"{result.config.objective}; train {evidence.get('windows', {}).get('train', {}).get('spec')}, "
        f"validate {evidence.get('windows', {}).get('validate', {}).get('spec')}; "
        f"{result.evaluations} evaluations in {result.search_s:.0f} s of search "
        f"(budget {result.config.budget_s:.0f} s), seed {result.config.seed}."
    )
    report.heading("Winning heuristic")
    report.preformatted(result.winner_text)
    params = policy_doc.get("params")
    if params:
        report.preformatted("\n".join(f"{k} = {v}" for k, v in params.items()))
    report.heading("Validation (later window, never seen by the search)")
    report.table(TABLE_HEADERS, [table_cells(row) for row in validation_rows(result)])
    note = class_note(result)
    if note:
        report.paragraph(note)
    for note in result.notes:
        report.paragraph(note, css_class="note")

    report.heading("Search progress")
    fig, ax = new_figure()
    if result.history:
        xs = [p.elapsed_s for p in result.history] + [result.search_s]
        ys = [p.best_score for p in result.history] + [result.history[-1].best_score]
        ax.step(xs, ys, where="post", label="best candidate (training)")
    anchor = result.train.get(result.best_anchor)
    if anchor is not None and math.isfinite(anchor.score):
        ax.axhline(
            anchor.score, color="grey", linestyle="--", label=f"best anchor: {result.best_anchor}"
        )
    ax.set_xlabel("search time (s)")
    ax.set_ylabel(f"{result.config.objective} (training window)")
    ax.legend(loc="lower right", fontsize=8)
    report.figure(fig)

    if result.curves:
        report.heading("SLO attainment vs rate multiplier (validation window)")
        fig, ax = new_figure(7.5, 4.2)
        for label, points in sorted(
            result.curves.items(), key=lambda kv: kv[0] != TuneResult.WINNER
        ):
            if not points:
                continue
            rates, attainment = zip(*points, strict=True)
            is_winner = label == TuneResult.WINNER
            ax.plot(
                rates,
                attainment,
                marker="o" if is_winner else ".",
                linewidth=2.5 if is_winner else 1.0,
                label=label,
                zorder=3 if is_winner else 2,
            )
        ax.axhline(0.9, color="grey", linestyle=":", linewidth=1)
        ax.set_xlabel("arrival-rate multiplier")
        ax.set_ylabel("SLO attainment")
        ax.legend(fontsize=7, ncol=2)
        report.figure(fig)
    return report.write(path)
