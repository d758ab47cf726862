"""A policy that declares the snapshot fields it reads gets the very same simulation as
one that reads everything: fast mode skips metric scrapes and scrape-tick stops only when
nothing reads them, and the results stay identical bit for bit."""

from __future__ import annotations

import random

import pytest

from selfserve.policy import make_policy
from selfserve.policy.base import PolicyWrapper
from selfserve.sim import simulate
from selfserve.workload.request import Request, Workload


class _ReadsEverything(PolicyWrapper):
    """Wraps a policy and hides its `replica_fields`: full snapshots, scrapes at every tick."""


def _bursty(n: int = 400, seed: int = 3) -> Workload:
    """Bursts within one 50 ms scrape and gaps across many, so ticks matter."""
    rng = random.Random(seed)
    t, reqs = 0.0, []
    for i in range(n):
        t += rng.choice([0.0, 0.004, 0.03, 0.2, 1.5])
        prompt = rng.randint(100, 5000)
        family = rng.randrange(4)
        blocks = tuple(family * 1000 + b for b in range(prompt // 512))
        reqs.append(Request(f"q{i}", t, prompt, rng.randint(1, 300), blocks, 512))
    return Workload(reqs, name="bursty")


@pytest.mark.parametrize("policy", ["round-robin", "least-loaded", "lmetric", "dynamo-kv"])
def test_declared_fields_give_identical_records_to_reading_everything(policy):
    w = _bursty()
    cluster = "3xh100/llama-3.1-8b:num_gpu_blocks_override=2500"
    declared = simulate(w, cluster, make_policy(policy), seed=2)
    everything = simulate(w, cluster, _ReadsEverything(make_policy(policy)), seed=2)
    assert declared.records == everything.records  # exact floats, routes and counts
    assert declared.replicas == everything.replicas
