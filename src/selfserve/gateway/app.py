"""The gateway server: routes, authentication, admin endpoints, start and drain.

Every route is served on one port by the lean `HttpServer` (`http_server`): the completion
routes are the hot path, and the few others (`/v1/models`, `/health`, `/metrics`,
`/admin/policy`) are small request/reply handlers. `Gateway(config)` assembles the parts — `BackendPool` (upstreams, health, scraped metrics),
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

from selfserve.gateway.arms import PolicyArms, PolicyValidationError
from selfserve.gateway.backends import BackendPool
from selfserve.gateway.config import CanaryConfig, GatewayConfig, GatewayConfigError, parse_canary
from selfserve.gateway.errors import ApiError, check_body_size
from selfserve.gateway.http_server import HttpRequest, HttpServer, HttpServerProtocol, Reply
from selfserve.gateway.metrics import GatewayMetrics
from selfserve.gateway.proxy import CompletionProxy
from selfserve.gateway.recorder import RequestRecorder
from selfserve.policy.router import Router
from selfserve.policy.snapshot import ReplicaInfo

log = logging.getLogger("selfserve.gateway")
LOG_FLUSH_INTERVAL_S = 0.5


_JSON_TEXT = b"application/json"


def _bearer(request: HttpRequest) -> str:
    header = request.header(b"authorization") or ""
    return header[7:].strip() if header[:7].lower() == "bearer " else ""


def _json(payload: Any, status: int = 200) -> Reply:
    return Reply(status, orjson.dumps(payload, default=str))


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
        # read when /metrics is scraped: no locked update on every request
        self.metrics.in_flight.set_function(lambda: self.proxy.num_in_flight)
        self._routes = {
            ("POST", "/v1/chat/completions"): self._chat,
            ("POST", "/v1/completions"): self._completions,
            ("GET", "/v1/models"): self._models,
            ("GET", "/health"): self._health,
            ("GET", "/metrics"): self._metrics,
            ("GET", "/admin/policy"): self._get_policy,
            ("POST", "/admin/policy"): self._post_policy,
        }
        self._methods: dict[str, list[str]] = {}
        for method, path in self._routes:
            self._methods.setdefault(path, []).append(method)
        self._server: HttpServer | None = None
        self._flusher: asyncio.Task | None = None
        self.port = config.port

    # ---- lifecycle ------------------------------------------------------------------------
    async def start(self) -> int:
        """Start background loops and listen; returns the bound port."""
        await self.pool.start()
        for up in self.pool.upstreams:
            self.metrics.backend_healthy.labels(up.name).set(
                1 if self.pool.healthy[up.index] else 0
            )
        # a client that disconnects cancels its request's task, whose cleanup closes the
        # upstream connection so the engine stops generating
        self._server = HttpServer(
            self._dispatch,
            max_body_bytes=self.config.limits.max_body_bytes,
            idle_timeout_s=self.config.limits.client_idle_timeout_s,
        )
        self.port = await self._server.listen(self.config.host, self.config.port)
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
        if self._server is not None:
            await self._server.close()
            self._server = None
        await self.pool.close()
        if self._flusher is not None:
            self._flusher.cancel()
            self._flusher = None
        self.recorder.close()

    def _health_changed(self, index: int, is_up: bool) -> None:
        self.metrics.backend_healthy.labels(self.pool.upstreams[index].name).set(1 if is_up else 0)

    # ---- dispatch and auth -------------------------------------------------------------------
    async def _dispatch(self, request: HttpRequest, conn: HttpServerProtocol) -> Reply | None:
        # HEAD is GET without the body (load balancers probe /health that way)
        method = "GET" if request.method == "HEAD" else request.method
        route = self._routes.get((method, request.path))
        try:
            if route is None:
                allowed = self._methods.get(request.path)
                if allowed is None:
                    raise ApiError(
                        404,
                        f"no route {request.method} {request.path}; see /v1/chat/completions, /v1/completions, /v1/models",
                        code="not_found",
                    )
                raise ApiError(
                    405,
                    f"method {request.method} not allowed on {request.path}; allowed: {', '.join(sorted(allowed))}",
                )
            return await route(request, conn)
        except ApiError as exc:
            self.metrics.errors.labels(exc.kind).inc()
            return exc.response()

    def _check_client(self, request: HttpRequest) -> None:
        if self.config.api_keys and not _key_matches(_bearer(request), self.config.api_keys):
            raise ApiError(
                401,
                "Incorrect or missing API key: send 'Authorization: Bearer <key>'",
                code="invalid_api_key",
            )

    def _check_admin(self, request: HttpRequest) -> None:
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
    async def _chat(self, request: HttpRequest, conn: HttpServerProtocol) -> Reply | None:
        self._check_client(request)
        return await self.proxy.handle(request, conn, "chat")

    async def _completions(self, request: HttpRequest, conn: HttpServerProtocol) -> Reply | None:
        self._check_client(request)
        return await self.proxy.handle(request, conn, "completions")

    async def _models(self, request: HttpRequest, conn: HttpServerProtocol) -> Reply:
        self._check_client(request)
        data = await self.pool.list_models()
        return _json({"object": "list", "data": data})

    async def _health(self, request: HttpRequest, conn: HttpServerProtocol) -> Reply:
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
        return _json(body, 200 if status == "ok" else 503)

    async def _metrics(self, request: HttpRequest, conn: HttpServerProtocol) -> Reply:
        return Reply(
            200, self.metrics.exposition(), content_type=b"text/plain; version=0.0.4; charset=utf-8"
        )

    async def _get_policy(self, request: HttpRequest, conn: HttpServerProtocol) -> Reply:
        self._check_admin(request)
        return _json(self.arms.describe())

    async def _post_policy(self, request: HttpRequest, conn: HttpServerProtocol) -> Reply:
        """Body: `{"policy": spec}` swaps at once; `{"canary": {...}}` starts a canary."""
        self._check_admin(request)
        check_body_size(request, self.config.limits.max_body_bytes)
        try:
            doc: Any = orjson.loads(request.body)
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
        return _json(
            {
                "event": event.event,
                "arm": event.arm,
                "reason": event.reason,
                "state": self.arms.describe(),
            }
        )
