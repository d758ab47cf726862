"""A small OpenAI-compatible engine on 127.0.0.1 for gateway tests (no twin needed).

It streams `tokens` chunks `delay_s` apart, reports `usage`, exposes `/health`,
`/v1/models` and a vLLM-style `/metrics`, and can be told to fail: `fail_before` answers
500, `die_after` drops the connection after that many chunks, `slow_first_s` delays the
first chunk. It counts requests it saw, the ones cancelled by the client, and the TCP connections
they came on.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

import orjson
from aiohttp import web


@dataclass
class LoopbackEngine:
    model: str = "m"
    tokens: int = 5
    content: str = "x"  # each streamed chunk's text
    delay_s: float = 0.002
    fail_before: bool = False
    die_after: int | None = None
    slow_first_s: float = 0.0
    port: int = 0
    seen: int = 0
    cancelled: int = 0
    running: int = 0
    peers: set = field(default_factory=set)  # (host, port) of each TCP connection it served
    _runner: web.AppRunner | None = None

    async def start(self) -> int:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_post("/v1/completions", self._chat)
        app.router.add_get("/v1/models", self._models)
        app.router.add_get("/health", self._health)
        app.router.add_get("/metrics", self._metrics)
        self._runner = web.AppRunner(app, handler_cancellation=True)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self.port)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]
        return self.port

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def _health(self, request: web.Request) -> web.Response:
        return web.Response(status=500 if self.fail_before else 200, text="ok")

    async def _models(self, request: web.Request) -> web.Response:
        return web.json_response(
            {
                "object": "list",
                "data": [
                    {"id": self.model, "object": "model", "created": 0, "owned_by": "loopback"}
                ],
            }
        )

    async def _metrics(self, request: web.Request) -> web.Response:
        text = (
            "# TYPE vllm:num_requests_running gauge\n"
            f'vllm:num_requests_running{{model_name="{self.model}"}} {self.running}\n'
            f'vllm:num_requests_waiting{{model_name="{self.model}"}} 0\n'
            f'vllm:kv_cache_usage_perc{{model_name="{self.model}"}} 0.25\n'
        )
        return web.Response(text=text)

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.seen += 1
        self.peers.add(request.transport.get_extra_info("peername"))
        if self.fail_before:
            return web.json_response({"error": {"message": "engine down"}}, status=500)
        if body.get("model") != self.model:
            return web.json_response(
                {"error": {"message": "bad model", "type": "invalid_request_error"}}, status=404
            )
        n = int(body.get("max_tokens") or self.tokens)
        chat = request.path.endswith("chat/completions")
        usage = {
            "prompt_tokens": 7,
            "completion_tokens": n,
            "total_tokens": 7 + n,
            "prompt_tokens_details": {"cached_tokens": 3},
        }
        if not body.get("stream"):
            await asyncio.sleep(self.delay_s * n)
            if chat:
                choice = {
                    "index": 0,
                    "message": {"role": "assistant", "content": "x" * n},
                    "finish_reason": "length",
                }
            else:
                choice = {"index": 0, "text": "x" * n, "finish_reason": "length"}
            return web.json_response(
                {
                    "id": "c1",
                    "object": "chat.completion",
                    "created": int(time.time()),
                    "model": self.model,
                    "choices": [choice],
                    "usage": usage,
                }
            )
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        self.running += 1
        try:
            if self.slow_first_s:
                await asyncio.sleep(self.slow_first_s)
            for i in range(n):
                if self.die_after is not None and i >= self.die_after:
                    request.transport.close()
                    return resp
                if chat:
                    choice = {"index": 0, "delta": {"content": self.content}, "finish_reason": None}
                else:
                    choice = {"index": 0, "text": self.content, "finish_reason": None}
                chunk = {
                    "id": "c1",
                    "object": "chat.completion.chunk",
                    "created": 0,
                    "model": self.model,
                    "choices": [choice],
                }
                await resp.write(b"data: " + orjson.dumps(chunk) + b"\n\n")
                await asyncio.sleep(self.delay_s)
            if (body.get("stream_options") or {}).get("include_usage"):
                await resp.write(
                    b"data: " + orjson.dumps({"id": "c1", "choices": [], "usage": usage}) + b"\n\n"
                )
            await resp.write(b"data: [DONE]\n\n")
            await resp.write_eof()
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        finally:
            self.running -= 1
        return resp
