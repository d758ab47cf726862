"""The twin's HTTP server: an aiohttp app that looks like one vLLM replica on the wire.

Routes: ``POST /v1/completions``, ``POST /v1/chat/completions`` (SSE or JSON),
``GET /v1/models``, ``GET /health``, ``GET /metrics`` (Prometheus, vLLM names) and
``GET /twin/stats`` (the twin's own schedule-lag percentiles and load). A request is
validated (`protocol`), sized (selfserve's tokenizer rule + the catalog's media rules),
queued in the engine model (`runtime`), and its tokens are written as the engine emits
them. `start_twin` runs one on a port and returns a handle whose `stop()` shuts it down.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import orjson
from aiohttp import web

from selfserve.catalog import get_model
from selfserve.engine import EngineConfig, EngineReplica, EngineRequest
from selfserve.perf import PerfModel
from selfserve.twin.errors import ApiError, context_length_error
from selfserve.twin.metrics import TwinMetrics
from selfserve.twin.protocol import TwinRequest, parse_chat, parse_completion
from selfserve.twin.responses import DONE_EVENT, ChunkWriter, Usage, full_response
from selfserve.twin.runtime import LiveRequest, TwinRuntime
from selfserve.workload.tokenize import block_hashes

DEFAULT_MAX_BODY_BYTES = 64 * 1024 * 1024
SSE_HEADERS = {"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}


@dataclass(frozen=True, slots=True)
class TwinConfig:
    """What one twin serves and how fast it runs."""

    model: str
    hardware: str
    tp: int = 1
    time_scale: float = 1.0
    seed: int = 0
    served_model_name: str | None = None
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    natural_output_mean_tokens: int = 256
    max_num_seqs: int = 256
    max_num_batched_tokens: int = 8192
    block_size: int = 16
    gpu_memory_utilization: float = 0.9
    enable_prefix_caching: bool = True

    @property
    def model_name(self) -> str:
        return self.served_model_name or self.model


def _error_response(error: ApiError) -> web.Response:
    return web.Response(status=error.status, body=error.body(), content_type="application/json")


class TwinApp:
    """Request handling for one twin; owns the runtime (engine model + pacing task)."""

    def __init__(self, config: TwinConfig) -> None:
        self.config = config
        self.perf = PerfModel.create(config.model, config.hardware, tp=config.tp)
        self.model_spec = get_model(config.model)
        self.max_model_len = int(self.perf.max_model_len)
        engine_config = EngineConfig(
            max_num_seqs=config.max_num_seqs,
            max_num_batched_tokens=config.max_num_batched_tokens,
            block_size=config.block_size,
            gpu_memory_utilization=config.gpu_memory_utilization,
            enable_prefix_caching=config.enable_prefix_caching,
        )
        engine = EngineReplica(self.perf, engine_config)
        self.runtime = TwinRuntime(
            engine,
            lambda read: TwinMetrics(config.model_name, self.max_model_len, read),
            time_scale=config.time_scale,
            seed=config.seed,
            natural_output_mean_tokens=config.natural_output_mean_tokens,
        )
        self.created_s = int(time.time())

    # -- app ------------------------------------------------------------------
    def build(self) -> web.Application:
        app = web.Application(client_max_size=self.config.max_body_bytes)
        app.router.add_post("/v1/completions", self.completions)
        app.router.add_post("/v1/chat/completions", self.chat_completions)
        app.router.add_get("/v1/models", self.models)
        app.router.add_get("/health", self.health)
        app.router.add_get("/metrics", self.metrics)
        app.router.add_get("/twin/stats", self.stats)
        app.on_startup.append(self._on_startup)
        app.on_cleanup.append(self._on_cleanup)
        return app

    async def _on_startup(self, _app: web.Application) -> None:
        self.runtime.start()

    async def _on_cleanup(self, _app: web.Application) -> None:
        await self.runtime.stop()

    # -- simple routes --------------------------------------------------------
    async def models(self, _request: web.Request) -> web.Response:
        name = self.config.model_name
        body = {
            "object": "list",
            "data": [
                {
                    "id": name,
                    "object": "model",
                    "created": self.created_s,
                    "owned_by": "selfserve",
                    "root": self.config.model,
                    "parent": None,
                    "max_model_len": self.max_model_len,
                }
            ],
        }
        return web.Response(body=orjson.dumps(body), content_type="application/json")

    async def health(self, _request: web.Request) -> web.Response:
        return web.Response(status=200)

    async def metrics(self, _request: web.Request) -> web.Response:
        return web.Response(
            body=self.runtime.metrics.render(),
            headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"},
        )

    async def stats(self, _request: web.Request) -> web.Response:
        gauges = self.runtime.scheduler_gauges()
        body = {
            "lag": self.runtime.lag.percentiles(),
            "live_requests": self.runtime.num_live,
            "num_running": gauges.num_running,
            "num_waiting": gauges.num_waiting,
            "kv_usage": gauges.kv_usage,
            "time_scale": self.config.time_scale,
        }
        return web.Response(body=orjson.dumps(body), content_type="application/json")

    # -- generation -----------------------------------------------------------
    async def completions(self, request: web.Request) -> web.StreamResponse:
        return await self._generate(request, parse_completion, "cmpl")

    async def chat_completions(self, request: web.Request) -> web.StreamResponse:
        return await self._generate(request, parse_chat, "chatcmpl")

    async def _read_json(self, request: web.Request):
        try:
            raw = await request.read()
        except web.HTTPRequestEntityTooLarge as exc:
            raise ApiError(
                413,
                f"request body is larger than the twin's limit of {self.config.max_body_bytes} bytes",
            ) from exc
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise ApiError(400, f"request body is not valid JSON: {exc}") from exc

    def _media_sizes(self, twin_request: TwinRequest) -> tuple[int, ...]:
        """Tokens of each media part by the catalog model's rules."""
        return tuple(
            self.model_spec.media_tokens(
                part.kind, pixels=part.pixels, seconds=part.seconds, frames=part.frames
            )
            for part in twin_request.media
        )

    async def _generate(self, request: web.Request, parser, id_prefix: str) -> web.StreamResponse:
        arrival_wall_s = time.perf_counter()
        runtime = self.runtime
        try:
            twin_request = parser(await self._read_json(request), self.config.model_name)
            try:
                media_sizes = self._media_sizes(twin_request)
            except ValueError as exc:  # the model takes no media of this kind
                raise ApiError(400, str(exc), "messages") from exc
            ids = twin_request.prompt_token_ids
            prompt_total = len(ids) + sum(media_sizes)
            max_tokens = twin_request.max_tokens
            if prompt_total >= self.max_model_len or (
                max_tokens is not None and prompt_total + max_tokens > self.max_model_len
            ):
                raise context_length_error(self.max_model_len, prompt_total, max_tokens)
            if max_tokens is None:
                max_tokens = self.max_model_len - prompt_total
            output_tokens, finish_reason = runtime.output_budget(
                max_tokens, twin_request.min_tokens, twin_request.ignore_eos
            )
            request_id = runtime.new_request_id(id_prefix)
            engine_request = EngineRequest(
                request_id=request_id,
                prompt_tokens=len(ids),
                output_tokens=output_tokens,
                block_hashes=block_hashes(ids, self.config.block_size),
                media_tokens=sum(media_sizes),
                media_hashes=tuple(part.content_hash for part in twin_request.media),
                arrival_s=runtime.model_now_s(),
                hash_block_tokens=self.config.block_size,
                media_part_tokens=media_sizes,
            )
            live = LiveRequest(
                request_id=request_id,
                prompt_tokens=prompt_total,
                target_output_tokens=output_tokens,
                finish_reason=finish_reason,
                arrival_wall_s=arrival_wall_s,
                engine_request=engine_request,
            )
            try:
                runtime.submit(live, engine_request)
            except ValueError as exc:  # the engine's RequestTooLarge: it can never fit
                raise ApiError(400, str(exc), "messages") from exc
        except ApiError as error:
            return _error_response(error)
        try:
            if twin_request.stream:
                return await self._stream(request, twin_request, live)
            while not live.is_finished:
                await runtime.wait(live)
            usage = Usage(live.prompt_tokens, live.emitted_tokens, live.cached_tokens)
            body = full_response(
                request_id,
                twin_request.model,
                int(time.time()),
                twin_request.kind == "chat",
                live.finish_reason,
                usage,
            )
            return web.Response(body=body, content_type="application/json")
        except asyncio.CancelledError:
            runtime.abort(live)
            raise
        except ConnectionResetError:
            # The client went away mid-stream (a cancelled bench, a closed browser): free
            # the engine's slot; there is no one left to answer.
            runtime.abort(live)
            return web.Response(status=499)

    async def _stream(
        self, request: web.Request, twin_request: TwinRequest, live: LiveRequest
    ) -> web.StreamResponse:
        response = web.StreamResponse(status=200, headers=SSE_HEADERS)
        await response.prepare(request)
        writer = ChunkWriter(
            live.request_id, twin_request.model, int(time.time()), twin_request.kind == "chat"
        )
        direct = _DirectStream(request.transport, writer, twin_request.continuous_usage)
        while True:
            if live.sink is None:
                emitted = live.emitted_tokens
                if emitted > direct.sent:
                    await response.write(direct.events(live, emitted))
                    direct.sent = emitted
                    # Headers are out with the first chunk: later tokens can go straight
                    # from the engine loop to the socket.
                    if not live.is_finished:
                        live.sink = direct
            if live.is_finished and direct.sent >= live.emitted_tokens:
                break
            await self.runtime.wait(live)
        live.sink = None
        if twin_request.include_usage:
            usage = Usage(live.prompt_tokens, direct.sent, live.cached_tokens)
            await response.write(writer.usage_event(usage) + DONE_EVENT)
        else:
            await response.write(DONE_EVENT)
        await response.write_eof()
        return response


DIRECT_WRITE_LIMIT_BYTES = 256 * 1024


class _DirectStream:
    """Writes a stream's new tokens as HTTP chunks straight to its transport."""

    __slots__ = ("transport", "writer", "continuous_usage", "sent")

    def __init__(self, transport, writer: ChunkWriter, continuous_usage: bool) -> None:
        self.transport = transport
        self.writer = writer
        self.continuous_usage = continuous_usage
        self.sent = 0

    def events(self, live: LiveRequest, emitted: int) -> bytes:
        done = emitted >= live.target_output_tokens
        usage = (
            Usage(live.prompt_tokens, emitted, live.cached_tokens)
            if self.continuous_usage
            else None
        )
        return self.writer.token_events(
            self.sent, emitted - self.sent, live.finish_reason if done else None, usage
        )

    def __call__(self, live: LiveRequest) -> bool:
        transport = self.transport
        if (
            transport is None
            or transport.is_closing()
            or transport.get_write_buffer_size() > DIRECT_WRITE_LIMIT_BYTES
        ):
            return False
        emitted = live.emitted_tokens
        data = self.events(live, emitted)
        transport.write(b"%x\r\n%b\r\n" % (len(data), data))
        self.sent = emitted
        return True


@dataclass(slots=True)
class RunningTwin:
    """A twin serving on a port; `await stop()` shuts it down."""

    app: TwinApp
    runner: web.AppRunner
    host: str
    port: int

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def stop(self) -> None:
        await self.runner.cleanup()


async def start_twin(config: TwinConfig, *, host: str = "127.0.0.1", port: int = 0) -> RunningTwin:
    """Start a twin on `host:port` (0 = a free port) in the running event loop."""
    twin_app = TwinApp(config)
    runner = web.AppRunner(twin_app.build(), handler_cancellation=True, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port, backlog=4096)
    await site.start()
    bound_port = runner.addresses[0][1]  # the OS-chosen port when port=0
    return RunningTwin(twin_app, runner, host, bound_port)
