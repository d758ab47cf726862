"""`selfserve profile`: measure a model's layer shapes on this machine's GPU (or CPU) with
random weights and write a step profile that `selfserve calibrate` fits. Needs the `gpu`
extra (torch).
"""

from __future__ import annotations

import argparse

from rich.table import Table

from selfserve.catalog import UnknownNameError, get_model
from selfserve.cli.common import UserError, console, progress, write_json
from selfserve.perf.profile_io import write_profile


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "profile",
        help="measure a model's step times on this GPU (needs torch: pip install 'selfserve[gpu]')",
        description="Run the transformer layers of a catalog model with random weights and write a "
        "profile JSONL (prefill and decode steps) for `selfserve calibrate`.",
    )
    parser.add_argument("--model", required=True, help="catalog model name, e.g. llama-3.1-8b")
    parser.add_argument(
        "--out", help="profile JSONL to write (default: profile-<model>-<device>.jsonl)"
    )
    parser.add_argument(
        "--device", default="cuda", choices=["cuda", "cpu"], help="where to run (default cuda)"
    )
    parser.add_argument(
        "--shapes", default="full", choices=["full", "tiny"],
        help="full: the model's real shapes and the shared profile's grid; tiny: a 2-layer stand-in (smoke test)",
    )  # fmt: skip
    parser.add_argument(
        "--reps", type=int, default=20, help="timed repetitions per record (default 20)"
    )
    parser.add_argument("--json", metavar="OUT", help="write a summary (path, records) as JSON")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from selfserve.perf.profiler import TorchMissingError, run_profile

    try:
        model = get_model(args.model)
    except UnknownNameError as exc:
        raise UserError(str(exc)) from None
    if args.reps < 1:
        raise UserError(f"--reps must be >= 1, got {args.reps}")
    out = (
        args.out
        or f"profile-{model.name}-{args.device}{'-tiny' if args.shapes == 'tiny' else ''}.jsonl"
    )
    records = []
    try:
        generator = run_profile(model, device=args.device, shapes=args.shapes, reps=args.reps)
        with progress() as bar:
            task = bar.add_task(f"profiling {model.name}", total=None, status="")
            for record in generator:
                records.append(record)
                bar.update(task, advance=1, status=record.label())
    except (TorchMissingError, RuntimeError, ValueError) as exc:
        raise UserError(str(exc)) from None
    write_profile(out, records)
    table = Table(
        title=f"{model.name} ({args.shapes} shapes) on {records[0].gpu if records else args.device}"
    )
    for column in ("record", "median ms", "min ms", "joules"):
        table.add_column(column, justify="left" if column == "record" else "right")
    for r in records:
        table.add_row(
            r.label(),
            f"{r.ms_median:.3f}",
            f"{r.ms_min or 0:.3f}",
            "-" if r.joules is None else f"{r.joules:.2f}",
        )
    console.print(table)
    console.print(
        f"wrote {len(records)} records to {out}; fit them with: selfserve calibrate {out} --model {model.name} --hardware <card> --out CAL"
    )
    if args.json:
        write_json(args.json, {"profile": out, "records": [r.to_dict() for r in records]})
    return 0
