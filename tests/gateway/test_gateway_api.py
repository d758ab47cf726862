"""The gateway speaks the OpenAI API: the official client works through it, streaming and not."""

from __future__ import annotations

import aiohttp
import openai
from gateway_harness import base_url, gateway_over, run
from loopback_engine import LoopbackEngine


def test_openai_client_streams_every_token_and_reads_whole_responses():
    async def body():
        engines = [LoopbackEngine(tokens=6), LoopbackEngine(tokens=6)]
        async with gateway_over(engines) as gw:
            client = openai.AsyncOpenAI(
                base_url=base_url(gw) + "/v1", api_key="unused", max_retries=0
            )
            stream = await client.chat.completions.create(
                model="m", messages=[{"role": "user", "content": "hello there"}], stream=True
            )
            pieces = [chunk.choices[0].delta.content async for chunk in stream if chunk.choices]
            assert pieces == ["x"] * 6
            whole = await client.chat.completions.create(
                model="m", messages=[{"role": "user", "content": "hi"}], max_tokens=4
            )
            assert whole.choices[0].message.content == "xxxx"
            assert whole.usage.completion_tokens == 4
            text = await client.completions.create(
                model="m", prompt="once upon", max_tokens=3, stream=True
            )
            assert [c.choices[0].text async for c in text if c.choices] == ["x"] * 3
            # round-robin over two engines: both served
            assert engines[0].seen >= 1 and engines[1].seen >= 1
            await client.close()

    run(body())


def test_usage_chunk_reaches_only_clients_that_asked_for_it():
    async def body():
        async with gateway_over([LoopbackEngine(tokens=2)]) as gw:
            client = openai.AsyncOpenAI(
                base_url=base_url(gw) + "/v1", api_key="unused", max_retries=0
            )
            plain = [
                c
                async for c in await client.chat.completions.create(
                    model="m", messages=[{"role": "user", "content": "a"}], stream=True
                )
            ]
            assert all(c.usage is None for c in plain)
            asked = [
                c
                async for c in await client.chat.completions.create(
                    model="m",
                    messages=[{"role": "user", "content": "a"}],
                    stream=True,
                    stream_options={"include_usage": True},
                )
            ]
            assert asked[-1].usage is not None and asked[-1].usage.completion_tokens == 2
            await client.close()

    run(body())


def test_models_health_and_metrics_endpoints():
    async def body():
        async with gateway_over([LoopbackEngine(model="m"), LoopbackEngine(model="other")]) as gw:
            async with aiohttp.ClientSession() as s:
                async with s.get(base_url(gw) + "/v1/models") as r:
                    ids = sorted(m["id"] for m in (await r.json())["data"])
                assert ids == ["m", "other"]
                async with s.post(
                    base_url(gw) + "/v1/chat/completions",
                    json={
                        "model": "other",
                        "messages": [{"role": "user", "content": "q"}],
                        "stream": True,
                    },
                ) as r:
                    await r.read()
                async with s.get(base_url(gw) + "/health") as r:
                    health = await r.json()
                    assert r.status == 200 and health["backends"]["e0"]["healthy"]
                async with s.get(base_url(gw) + "/metrics") as r:
                    text = await r.text()
            assert (
                'selfserve_gateway_requests_total{arm="round-robin@1",backend="e1",endpoint="chat",status="ok"} 1.0'
                in text
            )
            assert (
                'selfserve_gateway_ttft_seconds_count{arm="round-robin@1",backend="e1"} 1.0' in text
            )
            assert 'selfserve_gateway_backend_healthy{backend="e0"} 1.0' in text
            # the model 'other' lives only on e1: the gateway never sent it to e0
            assert (
                'selfserve_gateway_routing_decisions_total{arm="round-robin@1",backend="e1"} 1.0'
                in text
            )
            # scraped engine metrics reached the Router's inputs
            assert gw.pool.metrics[0] is not None and gw.pool.metrics[0].kv_cache_usage == 0.25

    run(body())
