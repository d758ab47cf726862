"""Bad requests get OpenAI-style errors with the right status, before any backend is used."""

from __future__ import annotations

import aiohttp
import pytest
from gateway_harness import base_url, gateway_over, run
from loopback_engine import LoopbackEngine

from selfserve.gateway.config import GatewayConfigError, parse_gateway_config

CHAT = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}


async def _post(session, url, **kwargs):
    async with session.post(url, **kwargs) as r:
        return r.status, await r.json()


def test_malformed_oversized_and_invalid_requests_get_specific_errors():
    async def body():
        engine = LoopbackEngine()
        async with gateway_over([engine], limits={"max_body_bytes": 2048}) as gw:
            url = base_url(gw) + "/v1/chat/completions"
            async with aiohttp.ClientSession() as s:
                status, err = await _post(
                    s, url, data=b"{not json", headers={"Content-Type": "application/json"}
                )
                assert status == 400 and err["error"]["code"] == "invalid_json"
                status, err = await _post(
                    s, url, json={**CHAT, "messages": [{"role": "user", "content": "y" * 5000}]}
                )
                assert status == 413 and err["error"]["code"] == "request_too_large"
                status, err = await _post(s, url, json={**CHAT, "model": "gpt-9"})
                assert status == 404 and err["error"]["code"] == "model_not_found"
                status, err = await _post(s, url, json={"model": "m"})
                assert status == 400 and err["error"]["param"] == "messages"
                status, err = await _post(s, url, json={**CHAT, "max_tokens": 0})
                assert status == 400 and err["error"]["param"] == "max_tokens"
                status, err = await _post(s, url, json={**CHAT, "temperature": 7})
                assert status == 400 and err["error"]["param"] == "temperature"
                status, err = await _post(s, url, json={**CHAT, "stream": "yes"})
                assert status == 400 and err["error"]["param"] == "stream"
                status, err = await _post(s, base_url(gw) + "/v1/completions", json={"model": "m"})
                assert status == 400 and err["error"]["param"] == "prompt"
                async with s.get(base_url(gw) + "/v1/nothing") as r:
                    assert (
                        r.status == 404
                        and (await r.json())["error"]["type"] == "invalid_request_error"
                    )
            assert engine.seen == 0  # none of these reached the engine

    run(body())


def test_api_keys_are_required_when_configured():
    async def body():
        async with gateway_over([LoopbackEngine()], api_keys=["sk-good"], admin_key="adm") as gw:
            url = base_url(gw) + "/v1/chat/completions"
            async with aiohttp.ClientSession() as s:
                status, err = await _post(s, url, json=CHAT)
                assert status == 401 and err["error"]["code"] == "invalid_api_key"
                status, _ = await _post(
                    s, url, json=CHAT, headers={"Authorization": "Bearer sk-bad"}
                )
                assert status == 401
                status, ok = await _post(
                    s, url, json=CHAT, headers={"Authorization": "Bearer sk-good"}
                )
                assert status == 200 and ok["choices"][0]["message"]["content"]
                # a client key is not an admin key
                status, _ = await _post(
                    s,
                    base_url(gw) + "/admin/policy",
                    json={"policy": "random"},
                    headers={"Authorization": "Bearer sk-good"},
                )
                assert status == 401

    run(body())


def test_engine_4xx_is_passed_through_not_retried():
    async def body():
        engines = [LoopbackEngine(model="m"), LoopbackEngine(model="m")]
        async with gateway_over(engines) as gw:
            # both are configured for "m", but the engines now reject it: a client fault,
            # answered by the first engine and not retried on the second
            engines[0].model = engines[1].model = "renamed"
            async with aiohttp.ClientSession() as s:
                status, err = await _post(s, base_url(gw) + "/v1/chat/completions", json=CHAT)
            assert status == 404 and err["error"]["message"] == "bad model"
            assert engines[0].seen + engines[1].seen == 1

    run(body())


@pytest.mark.parametrize(
    ("doc", "where"),
    [
        ({"backends": []}, "backends"),
        ({"backends": [{"url": "http://a:1", "models": []}]}, "backends[0].models"),
        (
            {
                "backends": [{"url": "http://a:1", "models": ["m"]}],
                "limits": {"max_body_bytes": "lots"},
            },
            "limits.max_body_bytes",
        ),
        (
            {
                "backends": [{"url": "http://a:1", "models": ["m"]}],
                "canary": {"policy": "random", "fraction": 2},
            },
            "canary.fraction",
        ),
        ({"backends": [{"url": "http://a:1", "models": ["m"]}], "helth": {}}, "helth"),
        (
            {
                "backends": [
                    {"name": "a", "url": "http://a:1", "models": ["m"]},
                    {"name": "a", "url": "http://b:1", "models": ["m"]},
                ]
            },
            "backends",
        ),
    ],
)
def test_config_errors_name_the_key(doc, where):
    with pytest.raises(GatewayConfigError) as info:
        parse_gateway_config(doc, source="gw.yaml")
    assert f"gw.yaml: {where}" in str(info.value)


def test_config_sizes_and_paths():
    config = parse_gateway_config(
        {
            "backends": [{"url": "http://h:8000/v1", "models": "m"}],
            "limits": {"max_body_bytes": "1MiB"},
            "log": {"path": "r.jsonl"},
        },
        base_dir="/srv",
    )
    assert config.limits.max_body_bytes == 2**20
    assert config.backends[0].url == "http://h:8000" and config.backends[0].name == "h:8000"
    assert config.log.path == "/srv/r.jsonl"
