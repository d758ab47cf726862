"""Routing decision speed: `Router.route` (snapshot build + choose + hooks) per anchor on
8 replicas with realistic prefix reuse. The simulator routes every request through this
path, so it must sustain ≥ 10,000 decisions/s for the simple anchors and ≥ 5,000 for the
prefix-indexing ones on one core; ratios to round-robin are measured in the same run."""

from __future__ import annotations

import random
import time

from selfserve.policy import list_anchors, make_policy
from selfserve.policy.router import Router
from selfserve.policy.snapshot import EngineMetrics, ReplicaInfo, RequestView

N_REPLICAS = 8
N_REQUESTS = 4000
PREFIX_ANCHORS = {
    "llm-d", "sglang-cache-aware", "dynamo-kv", "prodstack-prefixaware",
    "aibrix-prefix-cache", "ray-prefix-affinity",
}  # fmt: skip


def _requests() -> list[RequestView]:
    rng = random.Random(0)
    out = []
    for k in range(N_REQUESTS):
        conv = rng.randrange(200)
        depth = 4 + rng.randrange(12)
        hashes = tuple(conv * 1000 + j for j in range(depth))
        out.append(
            RequestView(
                f"q{k}", k * 0.01, 16 * depth + 7, expected_output_tokens=200,
                block_hashes=hashes, session_id=f"s{conv}",
            )
        )  # fmt: skip
    return out


def _decisions_per_s(name: str, requests: list[RequestView]) -> float:
    infos = [ReplicaInfo(i, f"r{i}", kv_capacity_tokens=200_000) for i in range(N_REPLICAS)]
    router = Router(make_policy(name), infos)
    rng = random.Random(1)
    metrics = [EngineMetrics(i % 3, i % 2, 0.1 * i, 0.0) for i in range(N_REPLICAS)]
    pending: list[str] = []
    start = time.perf_counter()
    for req in requests:
        router.route(req, req.arrival_s, metrics, rng)
        pending.append(req.request_id)
        if len(pending) > 64:  # keep ~64 in flight, as a loaded cluster would
            rid = pending.pop(0)
            router.on_first_token(rid, req.arrival_s)
            router.on_complete(rid, req.arrival_s, 200)
    return len(requests) / (time.perf_counter() - start)


def run() -> list[dict]:
    requests = _requests()
    rows = []
    base = _decisions_per_s("round-robin", requests)
    for name in list_anchors():
        rate = base if name == "round-robin" else _decisions_per_s(name, requests)
        target = 5_000 if name in PREFIX_ANCHORS else 10_000
        rows.append(
            {
                "name": f"route {name} ({rate / base:.2f}× round-robin)",
                "value": round(rate),
                "unit": "decisions/s",
                "target": f">= {target:,}",
                "ok": rate >= target,
            }
        )
    return rows
