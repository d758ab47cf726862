"""Policies change live: validated hot swap, canary promotion, automatic rollback."""

from __future__ import annotations

import asyncio

import aiohttp
from gateway_harness import base_url, gateway_over, run
from loopback_engine import LoopbackEngine

CHAT = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": True}
ADMIN = {"Authorization": "Bearer adm"}
# deliberately bad: always the highest-index replica, which the tests make the slow one
ALWAYS_LAST = {"kind": "expression", "name": "always-last", "score": "index", "direction": "max"}


async def _send(session, gw, n: int, concurrency: int = 4) -> list[int]:
    sem = asyncio.Semaphore(concurrency)

    async def one(i: int) -> int:
        async with sem:
            async with session.post(
                base_url(gw) + "/v1/chat/completions", json=CHAT, headers={"x-session-id": f"s{i}"}
            ) as r:
                await r.read()
                return r.status

    return await asyncio.gather(*(one(i) for i in range(n)))


def test_hot_swap_validates_then_replaces_the_policy():
    async def body():
        engines = [LoopbackEngine(), LoopbackEngine()]
        async with gateway_over(engines, admin_key="adm") as gw:
            async with aiohttp.ClientSession() as s:
                async with s.post(
                    base_url(gw) + "/admin/policy",
                    json={"policy": {"kind": "expression", "score": "no_such_feature"}},
                    headers=ADMIN,
                ) as r:
                    assert (
                        r.status == 400
                        and "nothing changed" in (await r.json())["error"]["message"]
                    )
                assert gw.arms.incumbent.label == "round-robin@1"
                async with s.post(
                    base_url(gw) + "/admin/policy", json={"policy": ALWAYS_LAST}, headers=ADMIN
                ) as r:
                    assert r.status == 200 and (await r.json())["arm"] == "always-last@2"
                before = engines[1].seen
                assert await _send(s, gw, 6) == [200] * 6
                assert engines[1].seen - before == 6  # the new policy routes every request
                async with s.get(base_url(gw) + "/admin/policy", headers=ADMIN) as r:
                    events = [e["event"] for e in (await r.json())["events"]]
                assert events == ["start", "swap"]

    run(body())


def test_a_bad_canary_is_rolled_back_automatically_with_its_reason():
    async def body():
        fast, slow = LoopbackEngine(delay_s=0.001), LoopbackEngine(delay_s=0.001, slow_first_s=0.08)
        async with gateway_over(
            [fast, slow],
            admin_key="adm",
            policy={"kind": "expression", "name": "always-first", "score": "index"},
        ) as gw:
            async with aiohttp.ClientSession() as s:
                canary = {
                    "canary": {
                        "policy": ALWAYS_LAST,
                        "fraction": 0.5,
                        "min_samples": 8,
                        "ttft_margin": 0.5,
                    }
                }
                async with s.post(base_url(gw) + "/admin/policy", json=canary, headers=ADMIN) as r:
                    assert r.status == 200
                assert gw.arms.candidate is not None
                for _ in range(20):
                    await _send(s, gw, 8)
                    if gw.arms.candidate is None:
                        break
            assert gw.arms.candidate is None
            assert gw.arms.incumbent.label.startswith("always-first")
            rollback = gw.arms.events[-1]
            assert rollback.event == "rollback" and "median TTFT" in rollback.reason
            assert (
                gw.metrics.registry.get_sample_value(
                    "selfserve_gateway_policy_events_total", {"event": "rollback"}
                )
                == 1
            )

    run(body())


def test_a_good_canary_by_session_is_promoted():
    async def body():
        engines = [LoopbackEngine(), LoopbackEngine()]
        canary = {
            "policy": "least-loaded",
            "fraction": 0.5,
            "unit": "sessions",
            "min_samples": 6,
            "ttft_margin": 5.0,
            "tpot_margin": 5.0,
        }
        async with gateway_over(engines, policy="round-robin", canary=canary) as gw:
            assert gw.arms.candidate is not None
            async with aiohttp.ClientSession() as s:
                for _ in range(20):
                    await _send(s, gw, 10)
                    if gw.arms.candidate is None:
                        break
            assert gw.arms.events[-1].event == "promote"
            assert gw.arms.incumbent.label.startswith("least-loaded")

    run(body())


def test_session_canary_keeps_every_turn_of_a_session_on_one_arm():
    async def body():
        canary = {
            "policy": "least-loaded",
            "fraction": 0.5,
            "unit": "sessions",
            "min_samples": 10_000,
        }
        async with gateway_over([LoopbackEngine()], canary=canary) as gw:
            arms = {
                sid: {gw.arms.pick(f"r{t}", sid).label for t in range(5)}
                for sid in (f"session-{i}" for i in range(40))
            }
            assert all(len(labels) == 1 for labels in arms.values())
            assert len({next(iter(labels)) for labels in arms.values()}) == 2  # both arms in use

    run(body())
