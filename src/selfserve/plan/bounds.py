"""Best-case SLO attainment: what no fleet size can beat, computed without simulation.

A request's TTFT is at least the time to prefill its uncached tokens on an idle replica,
and at best every prefix block the trace showed earlier is still cached. If fewer than
90% of requests can meet the TTFT target even then, adding replicas cannot meet the SLO
(a 40K-token prefill of a 70B model on 4 GPUs takes longer than 2 s however many replicas
there are), and the planner says so instead of simulating ever larger fleets to find out.
"""

from __future__ import annotations

from selfserve.plan.options import DeploymentOption
from selfserve.workload.request import Workload


def idle_ttft_lower_bounds_s(
    workload: Workload, option: DeploymentOption, *, max_num_batched_tokens: int = 8192
) -> list[float]:
    """Per request: prefill time of its never-before-seen tokens on an idle replica.

    Cached tokens are the leading blocks already seen anywhere earlier in the trace (an
    infinite cache: no replica can have more), so each bound is optimistic, never too high.
    """
    from selfserve.perf import PerfModel

    perf = PerfModel.create(option.model, option.hardware, option.tp, option.weight_dtype)
    seen: set[int] = set()
    bounds: list[float] = []
    for request in workload.requests:
        leading = 0
        for block_hash in request.block_hashes:
            if block_hash not in seen:
                break
            leading += 1
        seen.update(request.block_hashes)
        prompt = request.total_prompt_tokens
        # vLLM recomputes at least the last prompt token to produce the first output token.
        cached = min(leading * request.block_size, max(prompt - 1, 0))
        seconds = 0.0
        done = cached
        while done < prompt:
            chunk = min(max_num_batched_tokens, prompt - done)
            seconds += perf.step_time_s([(chunk, done)], [])
            done += chunk
        bounds.append(seconds)
    return bounds


def best_case_attainment(
    workload: Workload, option: DeploymentOption, ttft_s: float, **kwargs: int
) -> float:
    """Fraction of requests whose idle-replica TTFT bound meets `ttft_s` (an upper bound on
    the SLO attainment of any fleet of this option)."""
    bounds = idle_ttft_lower_bounds_s(workload, option, **kwargs)
    if not bounds:
        return 1.0
    return sum(1 for bound in bounds if bound <= ttft_s) / len(bounds)
