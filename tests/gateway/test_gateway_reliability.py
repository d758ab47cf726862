"""No accepted request is silently lost: retries before the first byte, explicit errors after.

Each test checks the gateway's own accounting (Prometheus counters and the Router's
in-flight book, which must return to zero) as well as what the client saw.
"""

from __future__ import annotations

import asyncio

import aiohttp
import orjson
from gateway_harness import base_url, eventually, gateway_over, run
from loopback_engine import LoopbackEngine

CHAT = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}


def _count(gw, name: str, **labels) -> float:
    value = gw.metrics.registry.get_sample_value(name, labels)
    return value or 0.0


async def _stream_events(session, url, payload) -> tuple[int, list[bytes]]:
    async with session.post(url, json={**payload, "stream": True}) as r:
        if r.status != 200:
            return r.status, [await r.read()]
        raw = await r.read()
    return r.status, [e for e in raw.split(b"\n\n") if e]


def test_backend_failing_before_first_byte_is_retried_on_another():
    async def body():
        bad, good = LoopbackEngine(fail_before=True), LoopbackEngine(tokens=3)
        # eject_after_failures high: the request path (not the prober) must route around it
        async with gateway_over(
            [bad, good], health={"interval_s": 60, "eject_after_failures": 100}
        ) as gw:
            gw.pool.healthy[0] = True
            async with aiohttp.ClientSession() as s:
                results = [
                    await _stream_events(s, base_url(gw) + "/v1/chat/completions", CHAT)
                    for _ in range(4)
                ]
            assert all(
                status == 200 and events[-1] == b"data: [DONE]" for status, events in results
            )
            assert good.seen == 4 and bad.seen >= 1
            assert _count(gw, "selfserve_gateway_retries_total", backend="e0") == bad.seen
            assert gw.router.num_in_flight == 0

    run(body())


def test_all_backends_failing_is_an_explicit_502():
    async def body():
        engines = [LoopbackEngine(fail_before=True), LoopbackEngine(fail_before=True)]
        async with gateway_over(
            engines, health={"interval_s": 60, "eject_after_failures": 100}
        ) as gw:
            gw.pool.healthy[:] = [True, True]
            async with aiohttp.ClientSession() as s:
                async with s.post(base_url(gw) + "/v1/chat/completions", json=CHAT) as r:
                    status, err = r.status, await r.json()
            assert status == 502 and "last failure" in err["error"]["message"]
            assert engines[0].seen == engines[1].seen == 1  # each tried once, bounded
            assert (
                _count(
                    gw,
                    "selfserve_gateway_requests_total",
                    endpoint="chat",
                    backend="e1",
                    arm="round-robin@1",
                    status="error",
                )
                + _count(
                    gw,
                    "selfserve_gateway_requests_total",
                    endpoint="chat",
                    backend="e0",
                    arm="round-robin@1",
                    status="error",
                )
                == 1
            )
            assert gw.router.num_in_flight == 0

    run(body())


def test_failure_mid_stream_ends_with_an_error_event():
    async def body():
        engine = LoopbackEngine(tokens=10, die_after=3)
        async with gateway_over([engine]) as gw:
            async with aiohttp.ClientSession() as s:
                status, events = await _stream_events(
                    s, base_url(gw) + "/v1/chat/completions", CHAT
                )
            assert status == 200
            tokens = [e for e in events if b'"delta"' in e]
            assert len(tokens) == 3
            error = orjson.loads(events[-2].removeprefix(b"data: "))
            assert (
                error["error"]["code"] == "upstream_error"
                and "mid-stream" in error["error"]["message"]
            )
            assert events[-1] == b"data: [DONE]"
            assert _count(gw, "selfserve_gateway_errors_total", kind="midstream") == 1
            assert gw.router.num_in_flight == 0

    run(body())


def test_client_disconnect_cancels_the_upstream_request():
    async def body():
        engine = LoopbackEngine(tokens=200, delay_s=0.01)
        async with gateway_over([engine]) as gw:
            async with aiohttp.ClientSession() as s:
                async with s.post(
                    base_url(gw) + "/v1/chat/completions", json={**CHAT, "stream": True}
                ) as r:
                    await r.content.readuntil(b"\n\n")  # the first token arrived; hang up
            for _ in range(100):
                if engine.cancelled and gw.proxy.num_in_flight == 0:
                    break
                await asyncio.sleep(0.02)
            assert engine.cancelled == 1 and engine.running == 0
            assert _count(gw, "selfserve_gateway_errors_total", kind="disconnect") == 1
            assert gw.router.num_in_flight == 0

    run(body())


def test_request_timeout_is_a_504():
    async def body():
        engine = LoopbackEngine(tokens=50, delay_s=0.05)
        async with gateway_over(
            [engine], limits={"request_timeout_s": 0.3, "max_retries": 0}
        ) as gw:
            async with aiohttp.ClientSession() as s:
                async with s.post(base_url(gw) + "/v1/chat/completions", json=CHAT) as r:
                    assert r.status == 504 and (await r.json())["error"]["code"] == "timeout"
                status, events = await _stream_events(
                    s, base_url(gw) + "/v1/chat/completions", CHAT
                )
                assert status == 200 and b'"timeout"' in events[-2]
            assert _count(gw, "selfserve_gateway_errors_total", kind="timeout") == 2

    run(body())


def test_graceful_stop_drains_in_flight_requests():
    async def body():
        engine = LoopbackEngine(tokens=20, delay_s=0.02)
        async with gateway_over([engine]) as gw:
            async with aiohttp.ClientSession() as s:
                pending = asyncio.create_task(
                    _stream_events(s, base_url(gw) + "/v1/chat/completions", CHAT)
                )
                while gw.proxy.num_in_flight == 0:
                    await asyncio.sleep(0.005)
                stopping = asyncio.create_task(gw.stop())
                await asyncio.sleep(0.05)
                async with s.get(base_url(gw) + "/health") as r:
                    assert r.status == 503 and (await r.json())["status"] == "draining"
                status, events = await pending
                await stopping
            assert status == 200 and events[-1] == b"data: [DONE]" and len(events) == 21

    run(body())


def test_a_failing_backend_is_ejected_then_readmitted_when_it_recovers():
    async def body():
        flaky, steady = LoopbackEngine(), LoopbackEngine()
        health = {
            "interval_s": 0.05,
            "timeout_s": 0.5,
            "eject_after_failures": 2,
            "readmit_after_successes": 2,
        }
        async with gateway_over([flaky, steady], health=health) as gw:
            flaky.fail_before = True
            await eventually(lambda: gw.pool.healthy[0] is False)
            assert _count(gw, "selfserve_gateway_backend_healthy", backend="e0") == 0
            seen_while_ejected = flaky.seen
            async with aiohttp.ClientSession() as s:
                results = [
                    await _stream_events(s, base_url(gw) + "/v1/chat/completions", CHAT)
                    for _ in range(4)
                ]
            assert all(status == 200 for status, _ in results)
            assert flaky.seen == seen_while_ejected  # nothing routed to the ejected backend
            flaky.fail_before = False
            await eventually(lambda: gw.pool.healthy[0] is True)
            assert _count(gw, "selfserve_gateway_backend_healthy", backend="e0") == 1

    run(body())
