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
    ends = req.unit_end_tokens
    if ends:
        prompt_blocks = req.unit_end_blocks[-1]
        prompt_end = ends[-1]
    else:
        prompt_blocks = prompt_end = 0
    return (req.held_blocks - prompt_blocks) * block_size - (req.num_computed_tokens - prompt_end)


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


def steps_starting_before(stretch_time, budget_s: float, max_steps: int) -> int:
    """Number of steps j in [1, max_steps] whose start (sum of the j-1 before) < budget_s.

    `stretch_time(q)` is the summed time of the first q steps (nondecreasing in q).
    """
    if budget_s <= 0.0:
        return 0
    if stretch_time(max_steps - 1) < budget_s:
        return max_steps
    lo, hi = 0, max_steps - 1  # time(lo) < budget, time(hi) >= budget
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if stretch_time(mid) < budget_s:
            lo = mid
        else:
            hi = mid
    return lo + 1
