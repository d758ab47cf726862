"""Engine metrics from a Prometheus text page: vLLM and SGLang names → `EngineMetrics`.

The gateway scrapes each backend's `/metrics` on an interval and hands the latest
`EngineMetrics` to the `Router`, exactly as the simulator does with its modelled engines.
vLLM exports `vllm:num_requests_running`, `vllm:num_requests_waiting` and
`vllm:kv_cache_usage_perc` (older versions `vllm:gpu_cache_usage_perc`); SGLang exports
`sglang:num_running_reqs`, `sglang:num_queue_reqs` and `sglang:token_usage`. Engines with
several label sets (one per model or engine index) are summed (counts) or maxed (usage).
"""

from __future__ import annotations

from selfserve.policy.snapshot import EngineMetrics

_RUNNING = ("vllm:num_requests_running", "sglang:num_running_reqs")
_WAITING = ("vllm:num_requests_waiting", "sglang:num_queue_reqs")
_KV_USAGE = ("vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc", "sglang:token_usage")


class MetricsParseError(ValueError):
    """The page has none of the engine metrics the gateway understands."""


def parse_engine_metrics(text: str, scraped_at_s: float) -> EngineMetrics:
    """Parse a Prometheus exposition page; raise `MetricsParseError` if no known name is there."""
    running = waiting = 0.0
    kv_usage = 0.0
    found = False
    for line in text.splitlines():
        if not line or line[0] == "#":
            continue
        brace = line.find("{")
        space = line.find(" ")
        if space < 0:
            continue
        name_end = brace if 0 <= brace < space else space
        name = line[:name_end]
        if name not in _RUNNING and name not in _WAITING and name not in _KV_USAGE:
            continue
        # the value follows the closing brace (labels may contain spaces)
        rest = line[line.rfind("}") + 1 :] if brace >= 0 and brace < space else line[space:]
        fields = rest.split()
        if not fields:
            continue
        try:
            value = float(fields[0])
        except ValueError:
            continue
        if value != value:  # NaN
            continue
        found = True
        if name in _RUNNING:
            running += value
        elif name in _WAITING:
            waiting += value
        else:
            kv_usage = max(kv_usage, value)
    if not found:
        raise MetricsParseError(
            "no engine metrics found; expected vLLM (vllm:num_requests_running, ...) "
            "or SGLang (sglang:num_running_reqs, ...) names"
        )
    return EngineMetrics(
        num_requests_running=int(running),
        num_requests_waiting=int(waiting),
        kv_cache_usage=min(max(kv_usage, 0.0), 1.0),
        scraped_at_s=scraped_at_s,
    )
