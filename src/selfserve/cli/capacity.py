"""`selfserve capacity`: the largest arrival-rate multiplier of a trace a simulated cluster
serves while SLO attainment stays >= the target (90%), by bracketing and bisection."""

from __future__ import annotations

import argparse

from selfserve.cli.common import UserError, console, progress, write_json
from selfserve.cli.simulate import add_common_options, build_inputs, print_summary


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "capacity",
        help="find the largest rate multiplier a cluster serves within the SLO",
        description=(
            "Bisection on the trace's arrival-rate multiplier until SLO attainment drops "
            "below the target; prints every point tried and the summary at capacity."
        ),
    )
    add_common_options(parser)
    parser.add_argument("--target", type=float, default=0.9, help="attainment target (0.9)")
    parser.add_argument("--tol", type=float, default=0.02, help="relative bracket width (0.02)")
    parser.add_argument("--lo", type=float, default=1 / 64, help="lowest multiplier (1/64)")
    parser.add_argument("--hi", type=float, default=64.0, help="highest multiplier (64)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from rich.table import Table

    from selfserve.sim import capacity

    if not 0 < args.target <= 1:
        raise UserError(f"--target must be in (0, 1], got {args.target}")
    if not 0 < args.lo < args.hi:
        raise UserError(f"need 0 < --lo < --hi, got {args.lo} and {args.hi}")
    if args.tol <= 0:
        raise UserError(f"--tol must be > 0, got {args.tol}")
    workload, cluster, slo = build_inputs(args)
    with progress() as bar:
        task = bar.add_task("capacity search", total=None, status="")

        def on_point(multiplier: float, attainment: float) -> None:
            bar.update(task, advance=1, status=f"×{multiplier:.3g} → {attainment:.1%}")

        result = capacity(
            workload, cluster, args.policy, slo, seed=args.seed, lo=args.lo, hi=args.hi,
            tol=args.tol, target=args.target, mode=args.mode,
            scrape_interval_s=args.scrape_interval, on_point=on_point,
        )  # fmt: skip
    table = Table(title=f"SLO attainment by rate multiplier ({slo.label})")
    table.add_column("multiplier", justify="right")
    table.add_column("attainment", justify="right")
    for multiplier, attainment in result.attainment_curve:
        mark = " ✓" if attainment >= args.target else ""
        table.add_row(f"{multiplier:.4g}", f"{attainment:.1%}{mark}")
    console.print(table)
    if result.summary is not None:
        print_summary(result.summary, title=f"at capacity ×{result.multiplier:.3g}")
    where = "" if result.bracketed else " (pinned at a search bound; widen --lo/--hi)"
    console.print(
        f"[bold]capacity:[/] ×{result.multiplier:.3g} of the trace's rate at "
        f"≥{args.target:.0%} SLO attainment{where}"
    )
    if args.json:
        write_json(args.json, {"trace": args.trace, "cluster": cluster.label, **result.as_dict()})
        console.print(f"wrote {args.json}")
    return 0
