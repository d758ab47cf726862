"""`selfserve calibrate`: fit the perf model's physical factors to a measured step profile,
or evaluate a calibration against one (predicted vs measured per record, median and p90
absolute error).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.console import Console
from rich.table import Table

from selfserve.catalog import UnknownNameError, get_accelerator, get_model
from selfserve.cli.common import UserError, console, write_json
from selfserve.perf.calibration import Calibration, default_calibration, load_calibration
from selfserve.perf.errors import CalibrationError, ProfileFormatError
from selfserve.perf.evaluate import Evaluation, evaluate
from selfserve.perf.fit import fit_calibration
from selfserve.perf.profile_io import ProfileRecord, read_profile

FITTED = (
    "gemm_efficiency", "gemm_half_tokens", "overlap_exponent", "weight_bw_efficiency",
    "kv_bw_efficiency", "attn_unit_bw_fraction", "attn_causal_efficiency",
    "attn_cached_efficiency", "layer_overhead_s", "idle_power_w", "compute_power_fraction",
    "memory_power_fraction", "kv_power_fraction",
)  # fmt: skip


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "calibrate",
        help="fit (or --evaluate) the perf model on a measured step profile",
        description="Fit the perf model's efficiency factors to a step profile (JSONL), or "
        "with --evaluate print predicted vs measured for every record.",
    )
    parser.add_argument(
        "profile", nargs="?", help="profile JSONL to fit (see shared/calibration/README.md)"
    )
    parser.add_argument(
        "--evaluate",
        metavar="PROFILE",
        help="evaluate a calibration on this profile instead of fitting",
    )
    parser.add_argument("--model", required=True, help="catalog model name, e.g. llama-3.1-8b")
    parser.add_argument("--hardware", required=True, help="catalog accelerator name, e.g. h200")
    parser.add_argument("--out", help="where to write the fitted calibration JSON (fit mode)")
    parser.add_argument(
        "--calibration", help="calibration JSON to evaluate (default: shipped one for the card)"
    )
    parser.add_argument(
        "--json", metavar="OUT", help="write the evaluation (per record + summary) as JSON"
    )
    parser.set_defaults(func=run)


def _load_records(path: str, model_name: str) -> list[ProfileRecord]:
    try:
        records = read_profile(path)
    except ProfileFormatError as exc:
        raise UserError(str(exc)) from None
    others = sorted({r.model for r in records if r.model and r.model.lower() != model_name})
    if others:
        console.print(
            f"[yellow]warning:[/] {path} records are for {', '.join(others)}, evaluated as {model_name}"
        )
    return records


def _print_evaluation(result: Evaluation, title: str) -> None:
    table = Table(title=title)
    for column in (
        "line",
        "record",
        "measured ms",
        "predicted ms",
        "error",
        "measured J",
        "predicted J",
        "J error",
    ):
        table.add_column(column, justify="left" if column == "record" else "right", no_wrap=True)
    for r in result.rows:
        table.add_row(
            str(r.line), r.label, f"{r.measured_ms:.3f}", f"{r.predicted_ms:.3f}", f"{100 * r.error:+.1f}%",
            "-" if r.measured_j is None else f"{r.measured_j:.2f}", f"{r.predicted_j:.2f}",
            "-" if r.energy_error is None else f"{100 * r.energy_error:+.1f}%",
        )  # fmt: skip
    # A per-record table is only useful unwrapped, also when piped to a file.
    Console(width=max(console.width, 130), highlight=False).print(table)
    console.print(
        f"step time |error|: median {100 * result.median_abs_error:.1f}%, p90 {100 * result.p90_abs_error:.1f}%; "
        f"worst {100 * result.worst.error:+.1f}% ({result.worst.label})"
    )
    if result.energy_median_abs_error is not None:
        console.print(
            f"energy |error|: median {100 * result.energy_median_abs_error:.1f}%, "
            f"p90 {100 * (result.energy_p90_abs_error or 0):.1f}%"
        )


def run(args: argparse.Namespace) -> int:
    try:
        model = get_model(args.model)
        hw = get_accelerator(args.hardware)
    except UnknownNameError as exc:
        raise UserError(str(exc)) from None
    if args.evaluate and args.profile:
        raise UserError("give either PROFILE (fit) or --evaluate PROFILE, not both")
    if args.evaluate:
        records = _load_records(args.evaluate, model.name)
        try:
            cal = (
                load_calibration(args.calibration)
                if args.calibration
                else default_calibration(hw.name)
            )
        except CalibrationError as exc:
            raise UserError(str(exc)) from None
        source = (
            args.calibration
            or f"shipped default for {hw.name} (fitted on {cal.hardware}/{cal.model})"
        )
        result = evaluate(records, model, hw, cal)
        _print_evaluation(result, f"{model.name} on {hw.name}: calibration {source}")
        if args.json:
            write_json(
                args.json, {"profile": args.evaluate, "calibration": source, **result.to_dict()}
            )
        return 0
    if not args.profile:
        raise UserError("give a PROFILE to fit (or --evaluate PROFILE)")
    if not args.out:
        raise UserError("fitting needs --out CAL (where to write the calibration JSON)")
    records = _load_records(args.profile, model.name)
    with console.status(f"fitting {len(records)} records …"):
        cal, rms = fit_calibration(records, model, hw, source=Path(args.profile).name)
    cal.save(args.out)
    _print_fitted(cal, rms)
    result = evaluate(records, model, hw, cal)
    _print_evaluation(result, f"{model.name} on {hw.name}: fitted calibration (in-sample)")
    console.print(f"wrote {args.out}")
    if args.json:
        write_json(
            args.json, {"profile": args.profile, "calibration": args.out, **result.to_dict()}
        )
    return 0


def _print_fitted(cal: Calibration, rms: float) -> None:
    table = Table(title=f"fitted factors (rms log error {rms:.3f})")
    table.add_column("factor")
    table.add_column("value", justify="right")
    for name in FITTED:
        table.add_row(name, f"{getattr(cal, name):.4g}")
    console.print(table)
