"""`selfserve simulate`: replay a trace on a simulated cluster under one routing policy and
print the summary (throughput, SLO attainment, goodput, latency, prefix hits, utilization,
energy and cost); `--json OUT` writes the summary and, with `--records`, every request."""

from __future__ import annotations

import argparse

from selfserve.cli.common import UserError, console, progress, write_json

DEFAULT_SLO = "ttft=2s,tpot=100ms"


def add_common_options(parser: argparse.ArgumentParser) -> None:
    """Options shared by `simulate` and `capacity`."""
    parser.add_argument("--trace", required=True, help="trace file/folder or embedded trace name")
    parser.add_argument("--format", dest="trace_format", help="trace format (default: detect)")
    parser.add_argument(
        "--cluster", required=True, help='e.g. "8xh200/llama-3.1-8b" or a cluster YAML file'
    )
    parser.add_argument(
        "--policy", default="round-robin", help="policy name or policy file (default round-robin)"
    )
    parser.add_argument("--slo", default=DEFAULT_SLO, help=f"SLO targets (default {DEFAULT_SLO})")
    parser.add_argument("--seed", type=int, default=0, help="RNG seed (default 0)")
    parser.add_argument(
        "--mode", choices=("fast", "step"), default="fast",
        help="fast (closed-form decode stretches) or step (every engine step; reference)",
    )  # fmt: skip
    parser.add_argument(
        "--scrape-interval", type=float, default=0.05, metavar="S",
        help="seconds between engine-metric scrapes the router sees (default 0.05)",
    )  # fmt: skip
    parser.add_argument("--json", metavar="OUT", help="write the results as JSON here")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "simulate",
        help="replay a trace on a simulated cluster under one routing policy",
        description=(
            "Discrete-event simulation of a cluster of vLLM-style replicas (continuous "
            "batching, chunked prefill, paged KV with prefix caching, preemption) timed by "
            "the calibrated perf model, routed by the same Router the gateway uses."
        ),
    )
    add_common_options(parser)
    parser.add_argument(
        "--rate-scale", type=float, default=1.0, metavar="X",
        help="arrival-rate multiplier (>1 = faster arrivals; default 1)",
    )  # fmt: skip
    parser.add_argument(
        "--records", action="store_true", help="include every request's record in --json"
    )
    parser.set_defaults(func=run)


def build_inputs(args: argparse.Namespace):
    """Load the trace and check cluster, policy and SLO, turning errors into UserError."""
    from selfserve.cli.bench import load_trace
    from selfserve.policy import make_policy
    from selfserve.sim import SLO, ClusterSpec

    try:
        slo = SLO.parse(args.slo)
    except ValueError as exc:
        raise UserError(f"--slo: {exc}") from exc
    try:
        cluster = ClusterSpec.parse(args.cluster)
        cluster.build()  # fail early on unknown hardware/models or a model that does not fit
    except ValueError as exc:
        raise UserError(f"--cluster: {exc}") from exc
    try:
        make_policy(args.policy)
    except (ValueError, KeyError, OSError) as exc:
        raise UserError(f"--policy: {exc}") from exc
    if args.scrape_interval < 0:
        raise UserError(f"--scrape-interval must be >= 0, got {args.scrape_interval}")
    workload = load_trace(args.trace, args.trace_format)
    if not workload.requests:
        raise UserError(f"--trace {args.trace}: no requests")
    return workload, cluster, slo


def run(args: argparse.Namespace) -> int:
    from selfserve.sim import simulate

    if args.rate_scale <= 0:
        raise UserError(f"--rate-scale must be > 0, got {args.rate_scale}")
    workload, cluster, slo = build_inputs(args)
    with progress() as bar:
        task = bar.add_task("simulating", total=len(workload), status=cluster.label)
        result = simulate(
            workload, cluster, args.policy, rate_scale=args.rate_scale, seed=args.seed,
            slo=slo, mode=args.mode, scrape_interval_s=args.scrape_interval,
            progress=lambda done, total: bar.update(task, completed=done),
        )  # fmt: skip
    summary = result.summary(slo)
    print_summary(summary, title=f"{workload.name}: {len(workload)} requests")
    if args.json:
        payload = {"trace": args.trace, "summary": summary}
        if args.records:
            payload["records"] = result.records_as_dicts()
        write_json(args.json, payload)
        console.print(f"wrote {args.json}")
    return 0


def print_summary(summary: dict, title: str) -> None:
    from rich.table import Table

    slo = summary["slo"]
    table = Table(title=f"{title} · {summary['cluster']} · {summary['policy']}", show_header=False)
    table.add_column("metric")
    table.add_column("value", justify="right")
    rows = [
        ("requests (completed / rejected)", f"{summary['completed']:,} / {summary['rejected']:,}"),
        ("duration", f"{summary['duration_s']:,.1f} s"),
        ("throughput", f"{summary['request_throughput']:.2f} req/s · "
         f"{summary['output_throughput']:,.0f} out tok/s"),
        (f"SLO attainment (ttft≤{slo['ttft_s']:g}s, tpot≤{slo['tpot_s'] * 1e3:g}ms)",
         f"{summary['slo_attainment']:.1%}"),
        ("goodput", f"{summary['goodput_rps']:.2f} req/s"),
        ("TTFT p50 / p99", f"{summary['ttft_p50_s']:.3f} / {summary['ttft_p99_s']:.3f} s"),
        ("TPOT mean / p99", f"{summary['tpot_mean_s'] * 1e3:.1f} / {summary['tpot_p99_s'] * 1e3:.1f} ms"),
        ("E2E p50 / p99", f"{summary['e2e_p50_s']:.2f} / {summary['e2e_p99_s']:.2f} s"),
        ("prefix-cache hit rate", f"{summary['prefix_hit_rate']:.1%}"),
        ("preemptions", f"{summary['preemptions']:,}"),
        ("utilization mean (imbalance max/mean)",
         f"{summary['utilization_mean']:.1%} ({summary['load_imbalance']:.2f})"),
        ("energy", f"{summary['energy_j'] / 3.6e6:,.2f} kWh · {summary['joules_per_token']:.3f} J/token"),
        ("tokens per MWh", f"{summary['tokens_per_mwh']:,.0f}"),
        ("cost per million output tokens", f"${summary['cost_per_million_tokens']:.3f}"),
        ("simulated in", f"{summary['wall_s']:.2f} s ({summary['simulated_requests_per_wall_s']:,.0f} req/s)"),
    ]  # fmt: skip
    for name, value in rows:
        table.add_row(name, value)
    console.print(table)
    per = Table(title="per replica")
    for col in ("replica", "requests", "utilization", "prefix hit", "preemptions"):
        per.add_column(col, justify="left" if col == "replica" else "right")
    for rep in summary["replicas"]:
        per.add_row(
            rep["name"], f"{rep['requests']:,}", f"{rep['utilization']:.1%}",
            f"{rep['prefix_hit_rate']:.1%}", f"{rep['preemptions']:,}",
        )  # fmt: skip
    console.print(per)
