"""`make bench`: run every benchmarks/bench_*.py and print one table.

Each module defines `run() -> list[dict]` returning rows with keys
`name`, `value`, `unit`, and optionally `target` (text) and `ok` (bool or None).
Pass module names (e.g. `workload`) to run a subset; `--json OUT` writes all rows.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import time
from pathlib import Path

import orjson
from rich.console import Console
from rich.table import Table

HERE = Path(__file__).resolve().parent


def load(path: Path):
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("only", nargs="*", help="benchmark names, e.g. workload sim")
    parser.add_argument("--json", help="write all rows as JSON here")
    args = parser.parse_args()
    console = Console()
    paths = sorted(HERE.glob("bench_*.py"))
    if args.only:
        paths = [p for p in paths if p.stem.removeprefix("bench_") in args.only]
    table = Table(title="selfserve benchmarks")
    for column in ("suite", "benchmark", "value", "unit", "target", "ok"):
        table.add_column(column, justify="right" if column == "value" else "left")
    all_rows: list[dict] = []
    failures = 0
    for path in paths:
        suite = path.stem.removeprefix("bench_")
        console.print(f"[bold]running[/] {suite} …")
        started = time.perf_counter()
        rows = load(path).run()
        console.print(f"  {suite}: {len(rows)} figures in {time.perf_counter() - started:.1f} s")
        for row in rows:
            ok = row.get("ok")
            failures += ok is False
            value = row["value"]
            shown = f"{value:,.3f}" if isinstance(value, float) else str(value)
            mark = {True: "[green]yes[/]", False: "[red]NO[/]", None: ""}[ok]
            table.add_row(
                suite, row["name"], shown, row.get("unit", ""), row.get("target", ""), mark
            )
            all_rows.append({"suite": suite, **row})
    console.print(table)
    console.print(f"{len(all_rows)} figures, {failures} below target")
    if args.json:
        Path(args.json).write_bytes(orjson.dumps(all_rows, option=orjson.OPT_INDENT_2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
