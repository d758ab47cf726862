"""Pruning a winner's `if` branches that its training traffic never takes."""

from __future__ import annotations

import pytest

from selfserve.policy.expression_syntax import parse_expression as parse
from selfserve.sim import SLO, simulate
from selfserve.tune.objective import EvalPlan, evaluate
from selfserve.tune.prune import bracketing_rates, conditions, prune_untaken_branches
from selfserve.tune.search_space import Candidate
from selfserve.tune.windows import window
from selfserve.workload.embedded import load_embedded

CLUSTER = "2xh200/llama-3.1-8b"
SLO_LOOSE = SLO.parse("ttft=10s,tpot=200ms")


@pytest.fixture(scope="module")
def train():
    return window(load_embedded("mooncake-conversation-10min"), "0s:45s")


def _candidate(text: str) -> Candidate:
    return Candidate(parse(text))


def test_a_branch_no_request_takes_is_removed_and_every_route_stays(train):
    # no prompt in the window is a billion tokens long: the `then` branch is dead
    winner = _candidate(
        "in_flight_requests + (if total_prompt_tokens > 1000000000 then 1000 * index else "
        "0.001 * queued_prefill_tokens)"
    )
    pruned = prune_untaken_branches(winner, train, CLUSTER, SLO_LOOSE, (1.0, 2.0))
    assert pruned is not None
    assert pruned.removed_branches == 1 and not conditions(pruned.candidate.tree)
    assert pruned.candidate.text == "in_flight_requests + 0.001 * queued_prefill_tokens"
    assert pruned.nodes_after < pruned.nodes_before
    for rate in (1.0, 2.0):
        before = simulate(train, CLUSTER, winner.document(), rate_scale=rate, slo=SLO_LOOSE)
        after = simulate(
            train, CLUSTER, pruned.candidate.document(), rate_scale=rate, slo=SLO_LOOSE
        )
        assert [r.replica for r in before.records] == [r.replica for r in after.records]


def test_a_branch_both_ways_is_kept(train):
    prompts = sorted(r.prompt_tokens for r in train.requests)
    median = prompts[len(prompts) // 2]
    winner = _candidate(
        f"if total_prompt_tokens > {median} then in_flight_requests else queued_prefill_tokens"
    )
    assert prune_untaken_branches(winner, train, CLUSTER, SLO_LOOSE, (1.0,)) is None
    assert (
        prune_untaken_branches(_candidate("in_flight_requests"), train, CLUSTER, SLO_LOOSE, (1.0,))
        is None
    )


def test_the_rates_checked_are_the_two_that_bracket_the_capacity(train):
    evaluation = evaluate(
        train,
        CLUSTER,
        "least-request",
        SLO_LOOSE,
        EvalPlan(start_rate=1.0, rel_tol=0.05, max_sims=10),
    )
    low, high = bracketing_rates(evaluation)
    assert low <= evaluation.capacity < high
    assert not [p for p in evaluation.probes if low < p.rate < high]
