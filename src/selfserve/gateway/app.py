"""The gateway server: aiohttp routes, authentication, admin endpoints, start and drain.

`Gateway(config)` assembles the parts — `BackendPool` (upstreams, health, scraped metrics),
one `Router` driven by `PolicyArms` (incumbent + canary), `GatewayMetrics`, the request
recorder and the `CompletionProxy` — and serves them. `await gateway.start()` binds (port 0
picks a free one, see `gateway.port`); `await gateway.stop()` stops accepting, answers
`/health` with 503 so load balancers move away, waits up to `drain_timeout_s` for in-flight
requests to finish, then closes upstream pools and the log.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
from typing import Any

import orjson
from aiohttp import web

from selfserve.gateway.arms import PolicyArms, PolicyValidationError
from selfserve.gateway.backends import BackendPool
from selfserve.gateway.config import CanaryConfig, GatewayConfig, GatewayConfigError, parse_canary
from selfserve.gateway.errors import ApiError
from selfserve.gateway.metrics import GatewayMetrics
from selfserve.gateway.proxy import CompletionProxy
from selfserve.gateway.recorder import RequestRecorder
from selfserve.policy.router import Router
from selfserve.policy.snapshot import ReplicaInfo

log = logging.getLogger("selfserve.gateway")
LOG_FLUSH_INTERVAL_S = 0.5


def _bearer(request: web.Request) -> str:
    header = request.headers.get("Authorization", "")
    return header[7:].strip() if header[:7].lower() == "bearer " else ""


def _key_matches(given: str, keys: tuple[str, ...]) -> bool:
    # constant-time comparison so a key cannot be guessed byte by byte from timings
    return any(hmac.compare_digest(given.encode(), key.encode()) for key in keys)


class Gateway:
    """One gateway instance (soft state only: several can run behind a load balancer)."""

    def __init__(self, config: GatewayConfig) -> None:
        self.config = config
        self.metrics = GatewayMetrics([b.name for b in config.backends])
        self.pool = BackendPool(config, on_health_change=self._health_changed)
        self.arms = PolicyArms(config.policy, seed=config.seed)
        if config.canary is not None:
            self.arms.start_canary(config.canary)
        replicas = [
            ReplicaInfo(
                index=i,
                name=b.name,
                hardware=b.hardware,
                model=b.models[0],
                kv_capacity_tokens=b.kv_capacity_tokens,
                max_model_len=b.max_model_len,
                block_size=config.block_size,
            )
            for i, b in enumerate(config.backends)
        ]
        self.router = Router(self.arms.router_policy, replicas)
        self.recorder = RequestRecorder(config.log)
        self.proxy = CompletionProxy(
            config, self.pool, self.router, self.arms, self.metrics, self.recorder
        )
        self.app = self._build_app()
        self._runner: web.AppRunner | None = None
        self._flusher: asyncio.Task | None = None
        self.port = config.port

    # ---- lifecycle ------------------------------------------------------------------------
    def _build_app(self) -> web.Application:
        app = web.Application(
            client_max_size=self.config.limits.max_body_bytes, middlewares=[self._errors_middleware]
        )
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_post("/v1/completions", self._completions)
        app.router.add_get("/v1/models", self._models)
        app.router.add_get("/health", self._health)
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/admin/policy", self._get_policy)
        app.router.add_post("/admin/policy", self._post_policy)
        return app

    async def start(self) -> int:
        """Start background loops and listen; returns the bound port."""
        await self.pool.start()
        for up in self.pool.upstreams:
            self.metrics.backend_healthy.labels(up.name).set(
                1 if self.pool.healthy[up.index] else 0
            )
        # handler_cancellation: a client that disconnects cancels its handler, whose
        # cleanup closes the upstream connection so the engine stops generating
        self._runner = web.AppRunner(
            self.app,
            handler_cancellation=True,
            access_log=None,
            shutdown_timeout=self.config.drain_timeout_s,
        )
        await self._runner.setup()
        site = web.TCPSite(
            self._runner, self.config.host, self.config.port, backlog=2048, reuse_address=True
        )
        await site.start()
        server = site._server  # aiohttp exposes the bound socket only here
        if server is not None and server.sockets:
            self.port = server.sockets[0].getsockname()[1]
        if self.recorder.enabled:
            self._flusher = asyncio.create_task(self._flush_log(), name="log-flush")
        log.info("gateway listening on http://%s:%d", self.config.host, self.port)
        return self.port

    async def _flush_log(self) -> None:
        # the writer buffers (one syscall per batch, not per request); flushing twice a
        # second keeps the log readable by `selfserve tune` while the gateway runs
        while True:
            await asyncio.sleep(LOG_FLUSH_INTERVAL_S)
            self.recorder.flush()

    async def stop(self) -> None:
        """Drain: refuse new requests, wait for in-flight ones (bounded), then close."""
        self.proxy.draining = True
        deadline = asyncio.get_running_loop().time() + self.config.drain_timeout_s
        while self.proxy.num_in_flight and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.05)
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        await self.pool.close()
        if self._flusher is not None:
            self._flusher.cancel()
            self._flusher = None
        self.recorder.close()

    def _health_changed(self, index: int, is_up: bool) -> None:
        self.metrics.backend_healthy.labels(self.pool.upstreams[index].name).set(1 if is_up else 0)

    # ---- middleware and auth ----------------------------------------------------------------
    @web.middleware
    async def _errors_middleware(self, request: web.Request, handler) -> web.StreamResponse:
        try:
            return await handler(request)
        except ApiError as exc:
            self.metrics.errors.labels(exc.kind).inc()
            return exc.response()
        except web.HTTPNotFound:
            return ApiError(
                404,
                f"no route {request.method} {request.path}; see /v1/chat/completions, /v1/completions, /v1/models",
                code="not_found",
            ).response()
        except web.HTTPMethodNotAllowed as exc:
            return ApiError(
                405,
                f"method {request.method} not allowed on {request.path}; allowed: {', '.join(sorted(exc.allowed_methods))}",
            ).response()

    def _check_client(self, request: web.Request) -> None:
        if self.config.api_keys and not _key_matches(_bearer(request), self.config.api_keys):
            raise ApiError(
                401,
                "Incorrect or missing API key: send 'Authorization: Bearer <key>'",
                code="invalid_api_key",
            )

    def _check_admin(self, request: web.Request) -> None:
        if not self.config.admin_key:
            raise ApiError(
                403,
                "admin endpoints are disabled: set admin_key in the gateway config",
                code="admin_disabled",
            )
        if not _key_matches(_bearer(request), (self.config.admin_key,)):
            raise ApiError(
                401,
                "Incorrect or missing admin key: send 'Authorization: Bearer <admin_key>'",
                code="invalid_api_key",
            )

    # ---- handlers ---------------------------------------------------------------------------
    async def _chat(self, request: web.Request) -> web.StreamResponse:
        self._check_client(request)
        return await self.proxy.handle(request, "chat")

    async def _completions(self, request: web.Request) -> web.StreamResponse:
        self._check_client(request)
        return await self.proxy.handle(request, "completions")

    async def _models(self, request: web.Request) -> web.Response:
        self._check_client(request)
        data = await self.pool.list_models()
        return web.json_response(
            {"object": "list", "data": data}, dumps=lambda o: orjson.dumps(o).decode()
        )

    async def _health(self, request: web.Request) -> web.Response:
        healthy = sum(self.pool.healthy)
        status = "draining" if self.proxy.draining else ("ok" if healthy else "no healthy backend")
        body = {
            "status": status,
            "backends": {
                up.name: {
                    "healthy": self.pool.healthy[up.index],
                    "last_error": self.pool.health[up.index].last_error,
                }
                for up in self.pool.upstreams
            },
            "in_flight": self.proxy.num_in_flight,
            "policy": self.arms.incumbent.label,
            "canary": self.arms.candidate.label if self.arms.candidate else None,
        }
        return web.json_response(body, status=200 if status == "ok" else 503)

    async def _metrics(self, request: web.Request) -> web.Response:
        return web.Response(
            body=self.metrics.exposition(),
            headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"},
        )

    async def _get_policy(self, request: web.Request) -> web.Response:
        self._check_admin(request)
        return web.json_response(
            self.arms.describe(), dumps=lambda o: orjson.dumps(o, default=str).decode()
        )

    async def _post_policy(self, request: web.Request) -> web.Response:
        """Body: `{"policy": spec}` swaps at once; `{"canary": {...}}` starts a canary."""
        self._check_admin(request)
        try:
            doc: Any = orjson.loads(await request.read())
        except orjson.JSONDecodeError as exc:
            raise ApiError(400, f"the body is not valid JSON: {exc}", code="invalid_json") from exc
        if not isinstance(doc, dict) or ("policy" in doc) == ("canary" in doc):
            raise ApiError(
                400,
                "send exactly one of {'policy': <spec>} (swap now) or {'canary': {'policy': <spec>, 'fraction': ...}}",
                code="invalid_value",
            )
        try:
            if "policy" in doc:
                event = self.arms.swap(
                    doc["policy"], reason=str(doc.get("reason") or "POST /admin/policy")
                )
            else:
                canary: CanaryConfig | None = parse_canary(doc["canary"], "canary")
                assert canary is not None
                event = self.arms.start_canary(canary)
        except (PolicyValidationError, GatewayConfigError) as exc:
            raise ApiError(
                400,
                f"policy rejected, nothing changed: {exc}",
                param="policy",
                code="invalid_policy",
            ) from exc
        self.metrics.policy_events.labels(event.event).inc()
        return web.json_response(
            {
                "event": event.event,
                "arm": event.arm,
                "reason": event.reason,
                "state": self.arms.describe(),
            },
            dumps=lambda o: orjson.dumps(o, default=str).decode(),
        )
