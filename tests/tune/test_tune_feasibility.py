"""The guarded objective: feasible requests, the long-prompt guard, and the anchor fallback."""

from __future__ import annotations

import math
import time
from concurrent.futures import Future, ThreadPoolExecutor

import pytest

from selfserve.sim import SLO, simulate
from selfserve.tune.feasibility import _with_long, class_attainment, classify, hopeless_from
from selfserve.tune.objective import EvalPlan, Probe, _extrapolate, evaluate
from selfserve.tune.tuner import TuneConfig, TuneResult, _completed_by, tune
from selfserve.tune.windows import window
from selfserve.workload.embedded import load_embedded
from selfserve.workload.request import Request, Workload

CLUSTER = "2xh200/llama-3.1-8b"


def _request(k: int, arrival_s: float, prompt_tokens: int) -> Request:
    return Request(f"r{k}", arrival_s, prompt_tokens, 8)


def test_a_prompt_too_long_for_the_slo_on_an_idle_replica_is_infeasible():
    # 2 s TTFT: a 200k-token prefill on one H200 takes far longer; 1k tokens is instant
    workload = Workload([_request(0, 0.0, 1_000), _request(1, 0.0, 120_000)])
    classes = classify(workload, CLUSTER, SLO.parse("ttft=2s,tpot=100ms"))
    assert classes.feasible == (True, False)
    # ... while with a generous SLO both are feasible
    loose = classify(workload, CLUSTER, SLO.parse("ttft=600s,tpot=1s"))
    assert loose.feasible == (True, True)


def test_flags_follow_the_simulators_record_order_for_unsorted_traces():
    workload = Workload([_request(0, 5.0, 120_000), _request(1, 0.0, 1_000)])
    classes = classify(workload, CLUSTER, SLO.parse("ttft=2s,tpot=100ms"))
    records = simulate(workload, CLUSTER, "round-robin").records
    assert [r.request_id for r in records] == ["r1", "r0"]
    assert classes.feasible == (True, False)


def test_long_requests_are_the_longest_tenth_of_the_feasible_ones():
    feasible = [True] * 20 + [False]
    prompts = list(range(100, 2100, 100)) + [10**6]
    classes = _with_long(feasible, prompts, 0.1)
    assert classes.long_count == 2 and classes.long_threshold_tokens == 1900
    assert not classes.long[-1]  # the infeasible giant is not a "long" request


def test_class_attainment_counts_each_class_separately():
    workload = Workload([_request(k, k * 100.0, 500 + k) for k in range(10)])
    slo = SLO.parse("ttft=2s,tpot=100ms")
    records = simulate(workload, CLUSTER, "round-robin", slo=slo).records
    classes = _with_long([True] * 9 + [False], [r.prompt_tokens for r in records], 0.2)
    result = class_attainment(records, slo, classes)
    assert result.all == 1.0 and result.feasible == 1.0 and result.long == 1.0
    # the one request flagged infeasible: its own TTFT is the median of that class
    assert result.infeasible_p50_ttft_s == pytest.approx(records[-1].ttft_s)
    everyone = _with_long([True] * 10, [r.prompt_tokens for r in records], 0.2)
    assert math.isnan(class_attainment(records, slo, everyone).infeasible_p50_ttft_s)
    with pytest.raises(ValueError, match="9 records"):
        class_attainment(records[:9], slo, classes)


def test_the_guard_moves_the_pass_line():
    # attainment fine, long prompts below their floor: the probe fails
    probe = Probe(2.0, 0.95, 1.0, long_attainment=0.3, long_floor=0.5)
    assert not probe.passes() and probe.margin() == pytest.approx(-0.2)
    assert Probe(2.0, 0.95, 1.0, long_attainment=0.6, long_floor=0.5).passes()
    # no long requests (NaN) or no floor: only attainment counts
    assert Probe(2.0, 0.95, 1.0, long_attainment=math.nan, long_floor=0.5).passes()
    assert Probe(2.0, 0.95, 1.0, long_attainment=0.0).passes()
    # a guard failure lowers the extrapolated capacity like an attainment shortfall does
    assert _extrapolate([probe], 0.9) < 2.0
    # starving the hopeless requests fails too: p99 TTFT over its limit
    starving = Probe(2.0, 0.95, 30.0, long_attainment=0.9, long_floor=0.5, p99_limit_s=20.0)
    assert not starving.passes() and starving.margin() == pytest.approx(-0.5)
    assert Probe(2.0, 0.95, 19.0, p99_limit_s=20.0).passes()


@pytest.fixture(scope="module")
def windows():
    trace = load_embedded("mooncake-conversation-10min")
    return window(trace, "0s:45s"), window(trace, "45s:90s")


def test_a_floor_above_what_the_policy_gives_long_prompts_caps_its_capacity(windows):
    train, _ = windows
    slo = SLO.parse("ttft=10s,tpot=200ms")
    plain = evaluate(train, CLUSTER, "lmetric", slo, EvalPlan(rel_tol=0.05, max_sims=12))
    assert plain.capacity and plain.long_attainment == plain.long_attainment
    floor = min(0.999, plain.long_attainment + 0.05)
    guarded = evaluate(
        train, CLUSTER, "lmetric", slo, EvalPlan(rel_tol=0.05, max_sims=12, long_floor=floor)
    )
    assert guarded.score < plain.score
    assert guarded.long_attainment >= floor


def test_the_tuner_hands_back_the_best_anchor_when_nothing_beats_it(windows):
    train, validate = windows
    config = TuneConfig(
        budget_s=1.0,
        workers=1,
        anchors=("least-request", "lmetric"),
        bootstrap_windows=2,
        shortlist=1,
        max_sims=6,
        complexity_penalty=0.2,  # every expression is penalised far below any anchor
    )
    result = tune(train, validate, CLUSTER, SLO.parse("ttft=10s,tpot=200ms"), config)
    assert result.winner_is_anchor
    assert result.winner_doc == {"kind": "anchor", "name": result.best_anchor}
    assert any("no candidate beat the best anchor" in note for note in result.notes)
    # validated once, as the anchor itself: the learned row is the anchor's row
    assert result.validation[TuneResult.WINNER] is result.validation[result.best_anchor]
    assert result.gains[result.best_anchor].ratio == pytest.approx(1.0)


def test_search_batches_stop_at_the_deadline_without_waiting_for_queued_jobs():
    with ThreadPoolExecutor(max_workers=1) as pool:
        futures: dict[Future, int] = {pool.submit(time.sleep, 0.3): k for k in range(5)}
        started = time.monotonic()
        done = list(_completed_by(futures, started + 0.1))
        elapsed = time.monotonic() - started
    assert len(done) == 1  # the running job finishes; the four queued ones are dropped
    assert elapsed < 0.9
    assert sum(f.cancelled() for f in futures) == 4


def test_the_hopeless_size_is_where_most_longer_prompts_are_infeasible():
    # 100 requests: everything from 9,000 tokens up is infeasible but one; from 8,900 up
    # 10 of 12 are (>= 80%), from 8,800 up 10 of 13 are not
    prompts = list(range(100, 10_100, 100))
    feasible = [p < 9_000 or p == 9_500 for p in prompts]
    assert hopeless_from(feasible, prompts) == 8_900
    # no infeasible group: no lane
    assert hopeless_from([True] * 100, prompts) == 0


def test_a_lane_seed_sends_hopeless_prompts_to_the_first_replicas():
    import random as _random

    from selfserve.policy import make_policy
    from selfserve.policy.expression import anchor_document
    from selfserve.policy.snapshot import ClusterSnapshot, ReplicaView, RequestView
    from selfserve.tune.search_space import candidate_from_document, with_lane

    base = candidate_from_document(anchor_document("lmetric"))
    policy = make_policy(with_lane(base, 30_000, 1.5, 1e7).document())
    idle = tuple(ReplicaView(index=i, name=f"r{i}") for i in range(6))
    long_prompt = ClusterSnapshot(0.0, RequestView("a", 0.0, 40_000), idle)
    short_prompt = ClusterSnapshot(0.0, RequestView("b", 0.0, 2_000), idle)
    assert policy.choose(long_prompt, _random.Random(0)) in (0, 1)
    assert policy.choose(short_prompt, _random.Random(0)) >= 2
