"""Closed-form decode stretches: many pure-decode steps of an unchanged batch at once.

Between batch-changing events (an arrival, a chunk boundary, a completion, a preemption)
every step decodes one token for each running request, and step k's cost depends only on
the batch size and the total context, which grows by the batch size per step. The perf
model sums such a run in closed form (`PerfModel.decode_stretch`). A `DecodePlan` is such
a run, sized when it starts — until the first request finishes or the KV cache cannot
give the next block — and kept *lazy*: a replica asked about a time inside the plan only
works out how many steps have started by then (a quadratic, since step time is linear in
context), and applies them only when something must change (an arrival joins, the plan
ends). Applying k steps touches requests and the block ledger exactly as k single steps.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections.abc import Sequence
from dataclasses import dataclass

from selfserve.engine.request import EngineRequest
from selfserve.perf.model import PerfModel


@dataclass(slots=True)
class DecodePlan:
    """`max_steps` decode steps of `batch_size` requests starting at `start_s`."""

    start_s: float
    batch_size: int
    context_tokens: int  # total context of the batch in the plan's first step
    max_steps: int
    last_start_s: float  # when the plan's last step starts
    end_s: float  # when it ends
    slacks: list[int]  # per running request: decode tokens before its next block
    used_blocks: int  # ledger blocks in use when the plan starts
    kv_limited: bool  # the plan stops because the next block would not fit
    alpha_s: float  # step time = alpha + beta x total context (nan: not affine)
    beta_s: float
    blocks_at_end: int  # blocks the whole plan allocates (new_blocks at max_steps)
    # elapsed(q) = a2*q^2 + a1*q: the plan's time after q steps (nan: not affine)
    a2: float
    a1: float
    # the slacks sorted, when all lie in [0, block_size): then `new_blocks` is a bisection
    sorted_slacks: list[int] | None

    def new_blocks(self, steps: int, block_size: int) -> int:
        """KV blocks the batch allocates over its first `steps` steps (`new_blocks`).

        With every slack s in [0, block_size) and steps = q*block_size + r, a request
        needs q blocks, plus one more when s < r.
        """
        ordered = self.sorted_slacks
        if ordered is None:
            return new_blocks(self.slacks, steps, block_size)
        q, r = divmod(steps, block_size)
        return len(ordered) * q + bisect_left(ordered, r)

    def steps_started_before(self, t_s: float, perf: PerfModel) -> int:
        """How many of the plan's steps start strictly before `t_s`."""
        if t_s > self.last_start_s:
            return self.max_steps
        budget = t_s - self.start_s
        if budget <= 0.0:
            return 0
        a1 = self.a1
        if a1 != a1:  # nan: not affine
            return _search_steps(perf, self.batch_size, self.context_tokens, budget, self.max_steps)
        # elapsed(q) = q*alpha + beta*(q*C + b*q*(q-1)/2) < budget  <=>  q < root
        disc = a1 * a1 + 4.0 * self.a2 * budget
        root = 2.0 * budget / (a1 + math.sqrt(disc)) if a1 > 0.0 else budget / max(a1, 1e-30)
        return min(math.ceil(root), self.max_steps)


def decode_coefficients(perf: PerfModel, batch_size: int) -> tuple[float, float, float, float]:
    """(alpha_s, beta_s, alpha_j, beta_j): one decode step of `batch_size` sequences costs
    alpha + beta x total context in time and in energy; all nan if the perf model's decode
    cost is not affine in the context (then plans use its exact sums)."""
    far = 1 << 30
    near = perf.decode_stretch(batch_size, 0, 1)
    wide = perf.decode_stretch(batch_size, far, 1)
    alpha_s, alpha_j = near.time_s, near.energy_j
    beta_s = (wide.time_s - alpha_s) / far
    beta_j = (wide.energy_j - alpha_j) / far
    probe_context, probe_steps = 4096 * batch_size, 9
    exact = perf.decode_stretch(batch_size, probe_context, probe_steps)
    context_sum = probe_steps * probe_context + batch_size * probe_steps * (probe_steps - 1) // 2
    for alpha, beta, value in ((alpha_s, beta_s, exact.time_s), (alpha_j, beta_j, exact.energy_j)):
        if abs(probe_steps * alpha + beta * context_sum - value) > 1e-9 * max(abs(value), 1e-12):
            return math.nan, math.nan, math.nan, math.nan
    return alpha_s, beta_s, alpha_j, beta_j


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


def sorted_if_small(slacks: list[int], block_size: int) -> list[int] | None:
    """`slacks` sorted if each lies in [0, block_size) (see `DecodePlan.new_blocks`)."""
    ordered = sorted(slacks)
    if ordered and ordered[0] >= 0 and ordered[-1] < block_size:
        return ordered
    return None


def _search_steps(
    perf: PerfModel, batch_size: int, context: int, budget_s: float, max_steps: int
) -> int:
    """Steps j in [1, max_steps] with start (sum of the j-1 before) < budget_s, by bisection."""
    lo, hi = 0, max_steps - 1  # elapsed(lo) < budget; elapsed(hi) >= budget (or hi is last)
    if perf.decode_stretch(batch_size, context, hi).time_s < budget_s:
        return max_steps
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if perf.decode_stretch(batch_size, context, mid).time_s < budget_s:
            lo = mid
        else:
            hi = mid
    return lo + 1
