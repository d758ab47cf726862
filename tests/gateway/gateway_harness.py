"""Start loopback engines and a gateway in-process on 127.0.0.1 free ports, stop them after."""

from __future__ import annotations

import asyncio
from contextlib import asynccontextmanager
from typing import Any

from loopback_engine import LoopbackEngine

from selfserve.gateway.app import Gateway
from selfserve.gateway.config import parse_gateway_config


def run(coro, timeout_s: float = 30.0):
    """Run one async test body with a hard bound, so a hang fails instead of blocking."""

    async def bounded():
        return await asyncio.wait_for(coro, timeout_s)

    return asyncio.run(bounded())


async def eventually(predicate, timeout_s: float = 4.0, poll_s: float = 0.01) -> None:
    """Wait until `predicate()` holds; fail the test if it does not within `timeout_s`."""
    for _ in range(max(1, int(timeout_s / poll_s))):
        if predicate():
            return
        await asyncio.sleep(poll_s)
    raise AssertionError(f"condition not reached within {timeout_s:g} s")


@asynccontextmanager
async def gateway_over(engines: list[LoopbackEngine], **overrides: Any):
    for engine in engines:
        await engine.start()
    doc: dict[str, Any] = {
        "listen": {"host": "127.0.0.1", "port": 0},
        "backends": [
            {"name": f"e{i}", "url": e.url, "models": [e.model]} for i, e in enumerate(engines)
        ],
        "policy": "round-robin",
        "health": {"interval_s": 0.2, "timeout_s": 0.5},
        "scrape": {"interval_s": 0.1},
    }
    doc.update(overrides)
    gateway = Gateway(parse_gateway_config(doc))
    await gateway.start()
    try:
        yield gateway
    finally:
        await gateway.stop()
        for engine in engines:
            await engine.stop()


def base_url(gateway: Gateway) -> str:
    return f"http://127.0.0.1:{gateway.port}"
