"""Closed-form decode stretches: many pure-decode steps of an unchanged batch at once.

Between batch-changing events (an arrival, a chunk boundary, a completion, a preemption)
every step decodes one token for each running request, and step k's cost depends only on
the batch size and the total context, which grows by the batch size per step. The perf
model sums such a run in closed form (`PerfModel.decode_stretch`); this module finds how
long the run may be — until the first request finishes, until the KV cache cannot give
the next block, or until the caller's time horizon — and applies it to the requests and
the block ledger exactly as the same number of single steps would.
"""

from __future__ import annotations

from collections.abc import Sequence

from selfserve.engine.request import EngineRequest


def block_slack(req: EngineRequest, block_size: int) -> int:
    """Decode tokens `req` can still add before it needs another KV block."""
    return (req.held_blocks - req.units_end_blocks) * block_size - (
        req.num_computed_tokens - req.units_end_tokens
    )


def new_blocks(slacks: Sequence[int], steps: int, block_size: int) -> int:
    """KV blocks a batch with these slacks allocates over `steps` decode steps."""
    total = 0
    for slack in slacks:
        if steps > slack:
            total += (steps - slack + block_size - 1) // block_size
    return total


def steps_within_kv(
    slacks: Sequence[int], max_steps: int, free_blocks: int, block_size: int
) -> int:
    """Largest k <= max_steps whose decode steps fit in `free_blocks` new blocks."""
    if new_blocks(slacks, max_steps, block_size) <= free_blocks:
        return max_steps
    lo, hi = 0, max_steps  # new_blocks(lo) fits, new_blocks(hi) does not
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if new_blocks(slacks, mid, block_size) <= free_blocks:
            lo = mid
        else:
            hi = mid
    return lo


def steps_starting_before(
    perf, batch_size: int, context_tokens: int, budget_s: float, max_steps: int
) -> int:
    """How many of the next `max_steps` decode steps start within `budget_s`.

    Step j (1-based) starts after the j-1 before it, whose summed time is
    `perf.decode_stretch(batch_size, context_tokens, j - 1)`. The step time grows linearly
    with context, so a quadratic gives the count; exact sums then settle the boundary.
    """
    if budget_s <= 0.0:
        return 0
    if max_steps <= 1 or budget_s == float("inf"):
        return max_steps

    def elapsed(q: int) -> float:
        return perf.decode_stretch(batch_size, context_tokens, q).time_s

    last = max_steps - 1
    if elapsed(last) < budget_s:
        return max_steps
    first_s = perf.decode_step_time_s(batch_size, context_tokens)
    last_s = perf.decode_step_time_s(batch_size, context_tokens + batch_size * last)
    growth_s = (last_s - first_s) / last
    if growth_s > 0.0:
        a1 = first_s - 0.5 * growth_s
        q = int((-a1 + (a1 * a1 + 2.0 * growth_s * budget_s) ** 0.5) / growth_s)
    else:
        q = int(budget_s / first_s) if first_s > 0.0 else last
    q = min(max(q, 0), last - 1)
    while q > 0 and elapsed(q) >= budget_s:
        q -= 1
    while q + 1 < last and elapsed(q + 1) < budget_s:
        q += 1
    return q + 1
