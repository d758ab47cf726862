"""Load generator: replay a workload against any OpenAI-compatible endpoint and time it.

`run_bench(target_url, workload, ...) -> BenchResult` (async: `arun_bench`);
`BenchResult.summary(slo) -> dict`; `render_table(summary)` and `write_html(...)` in
`selfserve.bench.report`.
"""

from selfserve.bench.result import BenchResult, RequestOutcome, parse_slo
from selfserve.bench.runner import BenchTargetError, arun_bench, run_bench

__all__ = [
    "BenchResult",
    "BenchTargetError",
    "RequestOutcome",
    "arun_bench",
    "parse_slo",
    "run_bench",
]
