"""`selfserve plan`: the cheapest fleet (card × TP × replicas) that meets an SLO on a trace.

Sizes a fleet per deployment option by simulation, prices it on a stated basis, and shows
cost per million tokens, tokens per MW-hour and the InferenceMAX-style curve per option.
"""

from __future__ import annotations

import argparse

from rich.table import Table

from selfserve.cli.common import UserError, console, err_console, progress, write_json

DEFAULT_SLO = "ttft=2s,tpot=100ms"


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "plan",
        help="cheapest fleet meeting an SLO: $/M tokens, tokens/MWh, InferenceMAX curves",
        description=__doc__,
    )
    parser.add_argument(
        "--trace",
        action="append",
        required=True,
        help="trace file or folder (any format selfserve reads) or embedded:NAME; repeat to mix",
    )
    parser.add_argument("--format", help="trace format (default: detected from content)")
    parser.add_argument("--model", required=True, help="catalog model name, e.g. llama-3.1-70b")
    parser.add_argument(
        "--hardware", help="comma-separated catalog cards (default: every card in the catalog)"
    )
    parser.add_argument("--tp", default="1,2,4,8", help="tensor-parallel degrees (default 1,2,4,8)")
    parser.add_argument(
        "--precision",
        default="bf16",
        help="weight precisions to offer, e.g. bf16,fp8 (default bf16)",
    )
    parser.add_argument("--slo", default=DEFAULT_SLO, help=f"SLO targets (default {DEFAULT_SLO})")
    parser.add_argument(
        "--price-basis",
        choices=("on-demand", "tco"),
        default="on-demand",
        help="which catalog price to use (default on-demand)",
    )
    parser.add_argument("--price", help="override $/GPU-hour per card, e.g. gb300=6.0,h100=2.2")
    parser.add_argument(
        "--policy",
        default=None,
        help="routing policy: anchor name or policy file (default lmetric, the anchor that "
        "sized fleets smallest in our runs)",
    )
    parser.add_argument(
        "--growth",
        type=float,
        default=1.0,
        help="also size fleets for this rate multiplier, e.g. 2",
    )
    parser.add_argument(
        "--max-requests",
        type=int,
        default=4000,
        help="simulate the busiest window of this many requests of a longer trace (default 4000)",
    )
    parser.add_argument("--max-replicas", type=int, default=256, help="search cap per option")
    parser.add_argument(
        "--jobs", type=int, default=None, help="parallel processes (default: cores)"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-sweep", action="store_true", help="skip the low-load curve points")
    parser.add_argument("--json", help="write the full plan as JSON here")
    parser.add_argument("--html", help="write the HTML report (curves, tables) here")
    parser.set_defaults(func=handle)


def _split(text: str, what: str) -> list[str]:
    items = [item.strip().lower() for item in text.split(",") if item.strip()]
    if not items:
        raise UserError(f"--{what} is empty")
    return items


def _tps(text: str) -> list[int]:
    try:
        tps = [int(item) for item in _split(text, "tp")]
    except ValueError:
        raise UserError(f"--tp {text!r}: expected comma-separated integers, e.g. 1,2,4,8") from None
    if any(tp < 1 for tp in tps):
        raise UserError(f"--tp {text!r}: degrees must be ≥ 1")
    return tps


def _load(paths: list[str], fmt: str | None):
    """Load every `--trace` (a path or embedded:NAME) and mix them into one workload."""
    from selfserve.cli.analyze import load_trace

    workloads = [load_trace(path, fmt, False, {}) for path in paths]
    workload = workloads[0]
    if len(workloads) > 1:
        try:
            from selfserve.workload.transforms import mix
        except ImportError:
            raise UserError("mixing several --trace needs selfserve.workload.transforms") from None
        for other in workloads[1:]:
            workload = mix(workload, other)
    if not workload.requests:
        raise UserError(f"--trace {', '.join(paths)}: no requests")
    return workload


def _validate(args: argparse.Namespace) -> tuple[list[str], list[int], list[str]]:
    from selfserve.catalog import get_accelerator, get_model, list_accelerators
    from selfserve.sim import SLO

    cards = _split(args.hardware, "hardware") if args.hardware else list_accelerators()
    for card in cards:
        try:
            get_accelerator(card)
        except (KeyError, ValueError) as exc:
            raise UserError(f"--hardware: {exc}") from None
    try:
        get_model(args.model)
    except (KeyError, ValueError) as exc:
        raise UserError(f"--model: {exc}") from None
    try:
        SLO.parse(args.slo)
    except ValueError as exc:
        raise UserError(f"--slo {args.slo!r}: {exc}") from None
    if args.growth <= 0:
        raise UserError(f"--growth {args.growth}: must be > 0")
    if args.max_requests < 1 or args.max_replicas < 1:
        raise UserError("--max-requests and --max-replicas must be ≥ 1")
    return cards, _tps(args.tp), _split(args.precision, "precision")


def handle(args: argparse.Namespace) -> int:
    from selfserve.plan.fleet_plan import DEFAULT_POLICY, plan_fleet
    from selfserve.plan.options import NoFitError
    from selfserve.plan.prices import PriceError, parse_price_overrides
    from selfserve.plan.report import (
        plan_json,
        summary_lines,
        terminal_notes,
        terminal_tables,
    )
    from selfserve.plan.report_html import write_html

    cards, tps, dtypes = _validate(args)
    try:
        overrides = parse_price_overrides(args.price)
    except PriceError as exc:
        raise UserError(str(exc)) from None
    workload = _load(args.trace, args.format)
    with progress() as bar:
        task = bar.add_task("sizing fleets", total=None, status="checking fits")

        def fitted(fits) -> None:
            bar.update(
                task, total=len(fits), status=f"{sum(f.fits for f in fits)} of {len(fits)} fit"
            )

        def done(plan) -> None:
            bar.update(task, advance=1, status=plan.option.label)
            if bar.disable:  # no live bar (a log or a pipe): one line per finished option
                outcome = (
                    f"{plan.replicas} replicas, {plan.at_rate.num_gpus} GPUs"
                    if plan.at_rate
                    else plan.reason
                )
                err_console.print(f"  {plan.option.label}: {outcome}", highlight=False)

        try:
            result = plan_fleet(
                workload,
                args.model,
                hardware=cards,
                tps=tps,
                dtypes=dtypes,
                slo=args.slo,
                policy=args.policy or DEFAULT_POLICY,
                price_basis=args.price_basis,
                price_overrides=overrides,
                growth=args.growth,
                max_requests=args.max_requests,
                max_replicas=args.max_replicas,
                seed=args.seed,
                sweep=not args.no_sweep,
                jobs=args.jobs,
                on_fit=fitted,
                on_done=done,
            )
        except NoFitError as exc:
            raise UserError(str(exc)) from None
    for title, headers, rows in terminal_tables(result):
        table = Table(title=title)
        for header in headers:
            if header == "option":
                table.add_column(header, no_wrap=True)
            else:
                table.add_column(header, justify="right")
        for row in rows:
            table.add_row(*row)
        console.print(table)
    for note in terminal_notes(result):
        console.print(f"  {note}", highlight=False)
    for line in summary_lines(result):
        console.print(line)
    if args.json:
        write_json(args.json, plan_json(result))
        console.print(f"wrote {args.json}")
    if args.html:
        write_html(result, args.html)
        console.print(f"wrote {args.html}")
    return 0
