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
    "train score",
    "validation score",
    "validation p99 TTFT s",
    "learned / policy",
    "90% CI",
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
                "validation_p99_ttft_s": val.p99_ttft_s if val else None,
                "gain": gain.ratio if gain else None,
                "gain_ci_low": gain.low if gain else None,
                "gain_ci_high": gain.high if gain else None,
            }
        )
    return rows


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
