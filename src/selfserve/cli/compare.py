"""`selfserve compare`: every routing policy on the same trace and cluster in the simulator.

For each policy it runs the simulator at each rate multiplier (SLO attainment, p99 TTFT,
…) and a capacity search (the largest multiplier that still meets the SLO), in parallel
worker processes, then prints one row per policy ranked by capacity and writes JSON and an
HTML report on request. Each worker loads the trace itself (workloads do not pickle) and
builds a fresh policy per run from its spec, so runs never share soft state.
"""

from __future__ import annotations

import argparse
import functools
import math
import os
import time
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import asdict, dataclass
from typing import Any

from selfserve.cli.common import UserError, console, err_console, progress, write_json

DEFAULT_RATE_SCALES = (0.5, 0.75, 1.0, 1.25, 1.5, 2.0)
DEFAULT_SLO = "ttft=2s,tpot=100ms"

# Table columns: (json key, header, how to format). Values come from SimResult.summary().
COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("capacity", "capacity ×", "{:.2f}"),
    ("attainment", "SLO att.", "{:.1%}"),
    ("goodput_rps", "goodput req/s", "{:.2f}"),
    ("ttft_p50_s", "TTFT p50 s", "{:.3f}"),
    ("ttft_p99_s", "TTFT p99 s", "{:.2f}"),
    ("tpot_mean_s", "TPOT ms", "ms"),
    ("output_tokens_per_s", "out tok/s", "{:,.0f}"),
    ("prefix_hit_rate", "prefix hit", "{:.1%}"),
    ("imbalance", "imbalance", "{:.2f}"),
    ("joules_per_token", "J/token", "{:.3f}"),
    ("cost_per_million_tokens", "$/Mtok", "{:.3f}"),
)


@dataclass(frozen=True, slots=True)
class Job:
    """One unit of work for a worker: a simulation at `rate_scale`, or (None) a capacity search."""

    policy: str
    trace: str
    trace_format: str | None
    cluster: str
    slo: str
    seed: int
    mode: str
    rate_scale: float | None
    capacity_hi: float
    target: float
    max_requests: int | None
    compress: float = 1.0
    tol: float = 0.05


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "compare",
        help="compare routing policies on one trace and cluster in the simulator",
        description=(
            "Simulate every policy on the same traffic: capacity at the SLO, goodput, "
            "TTFT/TPOT, throughput, prefix hit rate, imbalance, energy and cost per policy."
        ),
    )
    parser.add_argument("--trace", required=True, help="trace file/folder or embedded trace name")
    parser.add_argument("--format", dest="trace_format", help="trace format (default: detect)")
    parser.add_argument(
        "--cluster", required=True, help='e.g. "8xh200/llama-3.1-8b" or a cluster YAML'
    )
    parser.add_argument(
        "--policies",
        default="all",
        help="'all' (every builtin anchor) or comma-separated names / policy files",
    )
    parser.add_argument(
        "--rate-scales",
        default=",".join(f"{s:g}" for s in DEFAULT_RATE_SCALES),
        help="rate multipliers to sweep (default %(default)s); 1 is always included",
    )
    parser.add_argument("--slo", default=DEFAULT_SLO, help="SLO (default %(default)s)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--mode", choices=("fast", "step"), default="fast")
    parser.add_argument(
        "--capacity-hi",
        type=float,
        default=8.0,
        help="largest multiplier the capacity search tries",
    )
    parser.add_argument(
        "--tol", type=float, default=0.05, help="relative precision of the capacity search"
    )
    parser.add_argument(
        "--target", type=float, default=0.9, help="SLO attainment that counts as meeting it"
    )
    parser.add_argument(
        "--compress",
        type=float,
        default=1.0,
        help="replay the trace this many times faster as the ×1 baseline (for sparse traces "
        "such as a day of RAG traffic); rate multipliers and capacity are relative to it",
    )
    parser.add_argument("--no-capacity", action="store_true", help="skip the capacity search")
    parser.add_argument(
        "--max-requests", type=int, help="only the first N requests of the trace (quick looks)"
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=min(2, os.cpu_count() or 1),
        help="worker processes (default %(default)s)",
    )
    parser.add_argument("--json", help="write rows, sweeps and capacity curves here")
    parser.add_argument("--html", help="write an HTML report with attainment and p99 TTFT plots")
    parser.set_defaults(func=run)


def split_policies(text: str) -> list[str]:
    """Comma-separated specs; a `k=v` piece after `name:k=v` belongs to that spec."""
    from selfserve.policy import list_anchors

    if text.strip() == "all":
        return list_anchors()
    specs: list[str] = []
    for piece in (p.strip() for p in text.split(",")):
        if not piece:
            continue
        if specs and "=" in piece and ":" not in piece and ":" in specs[-1]:
            specs[-1] += "," + piece
        else:
            specs.append(piece)
    if not specs:
        raise UserError("--policies: no policy given; use 'all' or names such as round-robin,llm-d")
    return specs


def parse_rate_scales(text: str) -> list[float]:
    try:
        scales = sorted({float(p) for p in text.split(",") if p.strip()} | {1.0})
    except ValueError:
        raise UserError(
            f"--rate-scales: {text!r} is not a comma-separated list of numbers"
        ) from None
    if any(not s > 0 or math.isinf(s) for s in scales):
        raise UserError(
            f"--rate-scales: every multiplier must be a finite number > 0, got {text!r}"
        )
    return scales


def _validate(args: argparse.Namespace, specs: list[str]) -> None:
    from selfserve.policy import PolicyConfigError, make_policy
    from selfserve.sim import SLO, ClusterSpec

    for spec in specs:
        try:
            make_policy(spec)
        except (PolicyConfigError, ValueError) as exc:
            raise UserError(f"--policies: {exc}") from None
    try:
        ClusterSpec.parse(args.cluster)
    except ValueError as exc:
        raise UserError(f"--cluster: {exc}") from None
    try:
        SLO.parse(args.slo)
    except ValueError as exc:
        raise UserError(f"--slo: {exc}") from None
    if args.workers < 1:
        raise UserError(f"--workers must be >= 1, got {args.workers}")
    if args.capacity_hi <= 0:
        raise UserError(f"--capacity-hi must be > 0, got {args.capacity_hi}")
    if not 0 < args.compress < math.inf:
        raise UserError(f"--compress must be a finite number > 0, got {args.compress}")
    if not 0 < args.tol < 1:
        raise UserError(f"--tol must be in (0, 1), got {args.tol}")
    if not 0 < args.target <= 1:
        raise UserError(f"--target must be in (0, 1], got {args.target}")
    if args.max_requests is not None and args.max_requests < 1:
        raise UserError(f"--max-requests must be >= 1, got {args.max_requests}")


@functools.lru_cache(maxsize=2)
def _workload(trace: str, trace_format: str | None, max_requests: int | None):
    """Per worker process: load each trace once (a memo, not decision state)."""
    from selfserve.cli.bench import load_trace
    from selfserve.workload.request import Workload

    workload = load_trace(trace, trace_format)
    if max_requests is not None and len(workload) > max_requests:
        workload = Workload(
            workload.requests[:max_requests],
            name=workload.name,
            source=workload.source,
            block_size=workload.block_size,
        )
    return workload


def run_job(job: Job) -> dict[str, Any]:
    """Run one simulation or capacity search; top level so worker processes can pickle it."""
    from selfserve.sim import SLO, ClusterSpec, capacity, simulate

    workload = _workload(job.trace, job.trace_format, job.max_requests)
    cluster = ClusterSpec.parse(job.cluster)
    slo = SLO.parse(job.slo)
    started = time.perf_counter()
    if job.rate_scale is None:
        c = job.compress
        result = capacity(
            workload, cluster, job.policy, slo, seed=job.seed, lo=c / 64, hi=job.capacity_hi * c,
            tol=job.tol, target=job.target, mode=job.mode,
        )  # fmt: skip
        curve = [(float(m) / c, float(a)) for m, a in _curve_points(result.attainment_curve)]
        return {
            "policy": job.policy,
            "capacity": float(result.multiplier) / c,
            "curve": curve,
            "wall_s": time.perf_counter() - started,
        }
    result = simulate(
        workload,
        cluster,
        job.policy,
        rate_scale=job.rate_scale * job.compress,
        seed=job.seed,
        slo=slo,
        mode=job.mode,
    )
    return {
        "policy": job.policy,
        "rate_scale": job.rate_scale,
        "summary": normalise_summary(result.summary(slo)),
        "wall_s": time.perf_counter() - started,
    }


def _curve_points(curve: Any) -> list[tuple[float, float]]:
    if isinstance(curve, dict):
        return sorted(curve.items())
    return sorted(
        (p[0], p[1]) if not hasattr(p, "multiplier") else (p.multiplier, p.attainment)
        for p in curve
    )


def normalise_summary(summary: dict[str, Any]) -> dict[str, Any]:
    """The simulator's summary with the column keys this command reports filled in."""
    out = dict(summary)
    for key, *aliases in _SUMMARY_ALIASES:
        if key not in out:
            for alias in aliases:
                if alias in out:
                    out[key] = out[alias]
                    break
    return out


# column key, then names the simulator summary may use for it
_SUMMARY_ALIASES: tuple[tuple[str, ...], ...] = (
    ("attainment", "slo_attainment"),
    ("goodput_rps", "goodput", "goodput_requests_per_s"),
    ("ttft_p50_s", "p50_ttft_s"),
    ("ttft_p99_s", "p99_ttft_s"),
    ("tpot_mean_s", "mean_tpot_s"),
    ("output_tokens_per_s", "output_throughput", "throughput_output_tokens_per_s"),
    ("prefix_hit_rate", "cache_hit_rate"),
    ("imbalance", "load_imbalance", "request_imbalance"),
)


def run(args: argparse.Namespace) -> int:
    specs = split_policies(args.policies)
    scales = parse_rate_scales(args.rate_scales)
    _validate(args, specs)
    # Load once here too: a bad trace fails before any worker starts, and we know its size.
    workload = _workload(args.trace, args.trace_format, args.max_requests)
    jobs = [
        Job(p, args.trace, args.trace_format, args.cluster, args.slo, args.seed, args.mode, s,
            args.capacity_hi, args.target, args.max_requests, args.compress, args.tol)
        for p in specs
        for s in ([*scales] + ([] if args.no_capacity else [None]))
    ]  # fmt: skip
    console.print(
        f"compare: {len(specs)} policies × ({len(scales)} rates"
        f"{'' if args.no_capacity else ' + capacity search'}) on {workload.name} "
        f"({len(workload)} requests, {workload.span_s:.0f} s) · cluster {args.cluster} · "
        f"SLO {args.slo} · {args.workers} workers"
        + (f" · trace compressed ×{args.compress:g}" if args.compress != 1 else "")
    )
    results = _execute(jobs, args.workers)
    table = build_rows(specs, scales, results)
    print_table(table, args)
    payload = {
        "trace": args.trace,
        "workload": {"name": workload.name, "requests": len(workload), "span_s": workload.span_s},
        "cluster": args.cluster,
        "slo": args.slo,
        "seed": args.seed,
        "compress": args.compress,
        "rate_scales": scales,
        "rows": table,
        "runs": results,
        "jobs": [asdict(j) for j in jobs],
    }
    if args.json:
        write_json(args.json, payload)
        console.print(f"wrote {args.json}")
    if args.html:
        from selfserve.cli.compare_report import write_compare_html

        write_compare_html(args.html, payload)
        console.print(f"wrote {args.html}")
    failed = [r for r in results if "error" in r]
    return 1 if failed and len(failed) == len(results) else 0


def _execute(jobs: list[Job], workers: int) -> list[dict[str, Any]]:
    results: list[dict[str, Any]] = []
    with progress(transient=False) as bar:
        task = bar.add_task("simulating", total=len(jobs), status="")

        def finished(result: dict[str, Any]) -> None:
            results.append(result)
            bar.update(task, advance=1, status=_status(result))
            if bar.disable:  # no live bar (a log or a pipe): one line per finished run
                err_console.print(f"[{len(results)}/{len(jobs)}] {_status(result)}")

        if workers == 1:
            for job in jobs:
                finished(_guarded(job))
            return results
        with ProcessPoolExecutor(max_workers=workers) as pool:
            pending: dict[Future, Job] = {pool.submit(_guarded, j): j for j in jobs}
            while pending:
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                for fut in done:
                    pending.pop(fut)
                    finished(fut.result())
    return results


def _guarded(job: Job) -> dict[str, Any]:
    """A failing run becomes a row note, not the end of the whole comparison."""
    try:
        return run_job(job)
    except Exception as exc:  # noqa: BLE001 - reported per run in the table and the JSON
        return {
            "policy": job.policy,
            "rate_scale": job.rate_scale,
            "error": f"{type(exc).__name__}: {exc}",
        }


def _status(result: dict[str, Any]) -> str:
    what = "capacity" if result.get("rate_scale") is None else f"×{result['rate_scale']:g}"
    if "error" in result:
        return f"{result['policy']} {what} FAILED"
    if "capacity" in result:
        return f"{result['policy']} capacity ×{result['capacity']:.2f} ({result['wall_s']:.1f} s)"
    att = result["summary"].get("attainment")
    tail = f"attainment {att:.1%}" if att is not None else "done"
    return f"{result['policy']} {what}: {tail} ({result['wall_s']:.1f} s)"


def build_rows(specs: list[str], scales: list[float], results: list[dict[str, Any]]) -> list[dict]:
    """One row per policy: metrics at rate ×1, its capacity, and its sweep."""
    rows = []
    for spec in specs:
        mine = [r for r in results if r["policy"] == spec]
        at_one = next((r for r in mine if r.get("rate_scale") == 1.0 and "summary" in r), None)
        cap = next((r for r in mine if r.get("rate_scale") is None and "capacity" in r), None)
        row: dict[str, Any] = {"policy": spec}
        if at_one is not None:
            for key, _header, _fmt in COLUMNS:
                if key in at_one["summary"]:
                    row[key] = at_one["summary"][key]
        row["capacity"] = cap["capacity"] if cap else None
        row["sweep"] = sorted(
            (
                {
                    "rate_scale": r["rate_scale"],
                    **{k: r["summary"].get(k) for k in ("attainment", "ttft_p99_s", "goodput_rps")},
                }
                for r in mine
                if r.get("rate_scale") is not None and "summary" in r
            ),
            key=lambda d: d["rate_scale"],
        )
        row["capacity_curve"] = cap["curve"] if cap else []
        row["errors"] = [r["error"] for r in mine if "error" in r]
        rows.append(row)
    rows.sort(key=lambda r: (-(r["capacity"] or 0.0), -(r.get("goodput_rps") or 0.0)))
    return rows


def format_value(value: Any, fmt: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if fmt == "ms":
        return f"{value * 1000:.1f}"
    return fmt.format(value)


def print_table(rows: list[dict], args: argparse.Namespace) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"policies at rate ×1 (capacity = largest × meeting SLO {args.slo})")
    table.add_column("policy")
    for _key, header, _fmt in COLUMNS:
        table.add_column(header, justify="right")
    for row in rows:
        cells = [format_value(row.get(key), fmt) for key, _h, fmt in COLUMNS]
        name = row["policy"] + (" (!)" if row["errors"] else "")
        table.add_row(name, *cells)
    # A table this wide is unreadable when cut to 80 columns (pipes, CI logs): widen it.
    out = console if console.is_terminal else Console(width=200, highlight=False)
    out.print(table)
    for row in rows:
        for err in row["errors"]:
            console.print(f"[red]{row['policy']}[/]: {err}")
    ranked = [r for r in rows if r["capacity"]]
    if ranked:
        best = ranked[0]
        console.print(
            f"best: {best['policy']} (capacity ×{best['capacity']:.2f}); "
            f"worst: {ranked[-1]['policy']} (×{ranked[-1]['capacity']:.2f})"
        )
