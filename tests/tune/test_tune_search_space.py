"""Structural search space, CMA-ES over constants, windows and bootstrap intervals."""

from __future__ import annotations

import math
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from selfserve.policy.expression import EXPRESSION_ANCHORS, anchor_document, build_expression_policy
from selfserve.policy.expression_syntax import MAX_NODES, parse_expression
from selfserve.tune.cmaes import ConstantTuner
from selfserve.tune.search_space import (
    Candidate,
    Population,
    candidate_from_document,
    constants,
    crossover,
    mutate,
    parametrize,
    with_constants,
)
from selfserve.tune.stats import bootstrap_ratio
from selfserve.tune.windows import (
    WindowError,
    check_disjoint,
    cut,
    fingerprint,
    parse_window,
    sub_windows,
    window,
)
from selfserve.workload.request import Request, Workload


def seeds() -> list[Candidate]:
    return [candidate_from_document(anchor_document(name)) for name in EXPRESSION_ANCHORS]


def test_max_direction_seed_is_negated_so_lower_is_better():
    llmd = candidate_from_document(anchor_document("llm-d"))
    assert llmd.text.startswith("-(")
    assert "w_queue" not in llmd.text and "2 *" in llmd.text  # params inlined


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 10_000))
def test_offspring_always_obey_the_language_limits(seed):
    rng = random.Random(seed)
    population = Population()
    for candidate in seeds():
        population.offer(rng.random(), candidate)
    for child in population.offspring(rng, 6):
        again = parse_expression(child.text)  # re-parses: whitelisted and within limits
        assert again == child.tree
        assert child.size <= MAX_NODES
        build_expression_policy(child.document())  # and loads as a policy


def test_mutation_and_crossover_change_the_expression():
    rng = random.Random(3)
    parent, other = seeds()[0], seeds()[3]
    children = [mutate(parent, rng) for _ in range(30)] + [
        crossover(parent, other, rng) for _ in range(30)
    ]
    texts = {c.text for c in children if c is not None}
    assert len(texts - {parent.text}) > 10


def test_parametrize_names_constants_and_round_trips():
    tree = parse_expression(
        "2 * in_flight_requests + 0.001 * queued_prefill_tokens + 0 * kv_cache_usage"
    )
    template, values = parametrize(tree)
    assert values == {"c1": 2.0, "c2": 0.001}
    assert constants(tree) == [2.0, 0.001]
    assert with_constants(tree, [3.0, 0.5]) == parse_expression(
        "3 * in_flight_requests + 0.5 * queued_prefill_tokens + 0 * kv_cache_usage"
    )
    doc = Candidate(tree).document(named_params=True)
    assert (
        doc["score"] == "c1 * in_flight_requests + c2 * queued_prefill_tokens + 0 * kv_cache_usage"
    )
    assert build_expression_policy(doc).params == {"c1": 2.0, "c2": 0.001}


def test_cma_es_finds_the_weight_that_maximises_a_known_objective():
    # Objective peaks when c1 = 0.01: the tuner must get there from 1.0 within a few rounds.
    base = Candidate(parse_expression("in_flight_requests + 1 * queued_prefill_tokens"))
    tuner = ConstantTuner(base, seed=1, popsize=8, sigma0=1.0)
    best = 1.0
    for _ in range(40):
        asked = tuner.ask()
        scores = []
        for cand in asked:
            (c2,) = [v for v in constants(cand.tree) if v != 1.0] or [1.0]
            scores.append(-abs(math.log(abs(c2) / 0.01)))
        tuner.tell(scores)
        top = max(zip(scores, asked, strict=True), key=lambda item: item[0])[1]
        best = [v for v in constants(top.tree)][-1]
    assert 0.005 < best < 0.02
    # signs are never flipped by continuous tuning
    assert all(v > 0 for v in constants(top.tree))


def _workload(arrivals: list[float]) -> Workload:
    return Workload(
        requests=[
            Request(f"r{i}", t, 100 + i, 10, block_hashes=(i,)) for i, t in enumerate(arrivals)
        ],
        name="w",
    )


def test_windows_split_on_time_and_rebase_arrivals():
    w = _workload([float(t) for t in range(100, 200)])  # 100 s span starting at 100 s
    first = window(w, "0:50%")
    second = window(w, "50:100%")
    assert len(first) + len(second) == 100
    assert first.requests[0].arrival_s == 0.0 and second.requests[0].arrival_s == 0.0
    assert max(r.prompt_tokens for r in first) < min(r.prompt_tokens for r in second)
    minutes = parse_window("0m:1m").resolve(w.span_s)
    assert minutes == (0.0, 60.0)
    assert len(cut(w, 0, 60)) == 60


@pytest.mark.parametrize("text", ["50", "a:b", "10:5", "0:150%", "0:-1"])
def test_bad_window_specs_say_what_is_valid(text):
    with pytest.raises(WindowError):
        parse_window(text)


def test_validation_must_not_overlap_training():
    with pytest.raises(WindowError, match="later window"):
        check_disjoint(parse_window("0:60%"), parse_window("50:100%"), 100.0)
    check_disjoint(parse_window("0m:30m"), parse_window("30m:59m"), 3540.0)


def test_sub_windows_partition_the_requests():
    w = _workload([t * 0.5 for t in range(240)])
    pieces = sub_windows(w, 6)
    assert len(pieces) == 6 and sum(len(p) for p in pieces) == 240


def test_fingerprint_changes_with_content_not_with_names():
    a = _workload([0.0, 1.0, 2.0])
    b = _workload([0.0, 1.0, 2.5])
    assert fingerprint(a) != fingerprint(b)
    renamed = Workload(requests=list(a.requests), name="other")
    assert fingerprint(a) == fingerprint(renamed)


def test_bootstrap_interval_brackets_a_consistent_gain():
    ours = [1.25, 1.3, 1.2, 1.22, 1.28, 1.24]
    theirs = [1.0] * 6
    gain = bootstrap_ratio(ours, theirs, seed=1)
    assert gain.low <= gain.ratio <= gain.high
    assert 1.2 <= gain.low and gain.high <= 1.3
    noisy = bootstrap_ratio([0.8, 1.3, 0.9, 1.4, 1.0, 1.2], theirs, seed=1)
    assert noisy.low < 1.0 < noisy.high  # not significant


def test_cache_seed_is_lmetric_with_a_weight_cma_es_can_tune():
    from selfserve.policy.expression_simplify import simplify
    from selfserve.tune.tuner import CACHE_SEED

    seed = candidate_from_document({"score": CACHE_SEED})
    assert constants(seed.tree) == [2.0, 1.0]  # the weight on the uncached prompt, then +1
    lmetric = candidate_from_document(anchor_document("lmetric"))
    at_one = Candidate(simplify(with_constants(seed.tree, [1.0, 1.0])))
    assert at_one.text == lmetric.text
