"""Speed of learned (expression) policies, which the simulator calls at every arrival.

Rows: decisions per second of `ExpressionPolicy.choose` on an 8-replica snapshot for the
anchors restated in the language, and the ratio to the hand-written `lmetric` anchor
measured in the same run (a closure tree costs a small constant factor over hand-written Python).
"""

from __future__ import annotations

import random
import time

from selfserve.policy import make_policy
from selfserve.policy.expression import anchor_document, build_expression_policy
from selfserve.policy.snapshot import ClusterSnapshot, ReplicaView, RequestView

TARGET_DECISIONS_PER_S = 10_000


def _snapshot() -> ClusterSnapshot:
    replicas = tuple(
        ReplicaView(
            index=i,
            name=f"r{i}",
            in_flight_requests=3 + i % 4,
            queued_prefill_tokens=900 * (i % 3),
            prefix_hit_tokens=512 * (i % 2),
            running_decode_tokens=20_000 + 1000 * i,
            kv_cache_usage=0.1 * (i % 5),
            num_requests_waiting=i % 3,
        )
        for i in range(8)
    )
    return ClusterSnapshot(now_s=1.0, request=RequestView("q", 1.0, 6000), replicas=replicas)


def _rate(policy, snapshot, seconds: float = 0.5) -> float:
    rng = random.Random(0)
    count, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        for _ in range(200):
            policy.choose(snapshot, rng)
        count += 200
    return count / (time.perf_counter() - started)


def run() -> list[dict]:
    snapshot = _snapshot()
    rows = []
    baseline = _rate(make_policy("lmetric"), snapshot)
    for name in ("least-request", "lmetric", "llm-d", "dynamo"):
        rate = _rate(build_expression_policy(anchor_document(name)), snapshot)
        rows.append(
            {
                "name": f"expression {name}: choose() on 8 replicas",
                "value": round(rate),
                "unit": "decisions/s",
                "target": f">= {TARGET_DECISIONS_PER_S:,}",
                "ok": rate >= TARGET_DECISIONS_PER_S,
            }
        )
        if name == "lmetric":
            rows.append(
                {
                    "name": "expression lmetric / hand-written lmetric speed",
                    "value": round(rate / baseline, 2),
                    "unit": "ratio",
                    "target": ">= 0.25",
                    "ok": rate / baseline >= 0.25,
                }
            )
    return rows
