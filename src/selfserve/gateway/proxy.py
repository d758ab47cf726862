"""One completion request through the gateway: route, forward, stream back, account, log.

The path: read and validate the body → features → arm (incumbent or canary) → the shared
`Router` picks a backend → open the upstream request. A failure before the first response
byte (connect error, 5xx, timeout, a stream that dies before its first event) tells the
Router the attempt failed and retries on a backend not yet tried, at most `max_retries`
times. Once the first byte is sent to the client the request is committed to its backend:
the `SseRelay` then streams the rest straight from the upstream connection's callbacks, and
a later failure ends the stream with an explicit error event. A client that disconnects
cancels the handler, which closes the upstream connection (aborting the engine's work).
Whatever happens, the finally-block completes the Router's bookkeeping, updates metrics
and the canary's live figures, and writes the log record.
"""

from __future__ import annotations

import asyncio
import os
import random
import time
from itertools import count

import orjson

from selfserve.gateway.arms import Arm, PolicyArms
from selfserve.gateway.backends import BackendPool
from selfserve.gateway.config import GatewayConfig
from selfserve.gateway.errors import ApiError, check_body_size
from selfserve.gateway.features import RequestFeatures, extract_features
from selfserve.gateway.http_server import HttpRequest, HttpServerProtocol, Reply
from selfserve.gateway.metrics import GatewayMetrics
from selfserve.gateway.recorder import Outcome, RequestRecorder
from selfserve.gateway.sse_relay import SseRelay, take_usage
from selfserve.gateway.upstream import UpstreamBroken, UpstreamResponse, UpstreamUnavailable
from selfserve.policy.router import Router, RoutingError
from selfserve.policy.snapshot import RequestView

_PATHS = {"chat": "/v1/chat/completions", "completions": "/v1/completions"}
_SSE_HEADERS = (
    (b"Content-Type", b"text/event-stream"),
    (b"Cache-Control", b"no-cache"),
    (b"X-Accel-Buffering", b"no"),
)
_DONE = b"data: [DONE]\n\n"


class _Deadline:
    """`limits.request_timeout_s` for one request: cancels its task when it passes.

    What `asyncio.timeout` does, with one timer and no context-manager machinery per
    request; `has_expired()` tells a cancellation by the deadline from any other (a client
    that went away), exactly as `asyncio.timeout` does with `uncancel()`."""

    __slots__ = ("task", "handle", "expired")

    def __init__(self, loop: asyncio.AbstractEventLoop, delay_s: float) -> None:
        self.task = asyncio.current_task()
        self.expired = False
        self.handle = loop.call_later(delay_s, self._expire)

    def _expire(self) -> None:
        self.expired = True
        self.task.cancel()

    def has_expired(self) -> bool:
        """True if this deadline (and nothing else) cancelled the task."""
        return self.expired and self.task.uncancel() == 0

    def cancel(self) -> None:
        self.handle.cancel()


class CompletionProxy:
    """Serves `/v1/chat/completions` and `/v1/completions` for one gateway."""

    def __init__(
        self,
        config: GatewayConfig,
        pool: BackendPool,
        router: Router,
        arms: PolicyArms,
        metrics: GatewayMetrics,
        recorder: RequestRecorder,
    ) -> None:
        self.config = config
        self.pool = pool
        self.router = router
        self.arms = arms
        self.metrics = metrics
        self.recorder = recorder
        self.rng = random.Random(config.seed)
        # ids are unique across gateway replicas: a random instance prefix plus a counter
        self._prefix = f"gw-{os.urandom(4).hex()}-"
        self._ids = count()
        self.num_in_flight = 0
        self.draining = False
        # bound on the first request (the proxy may be built before the loop runs); in
        # Python 3.11 every asyncio.get_running_loop() costs a getpid system call
        self._loop: asyncio.AbstractEventLoop | None = None

    # ---- entry ------------------------------------------------------------------------
    async def handle(
        self, request: HttpRequest, conn: HttpServerProtocol, endpoint: str
    ) -> Reply | None:
        """Serve one completion: a whole `Reply`, or None once it was streamed on `conn`."""
        loop = self._loop
        if loop is None:
            loop = self._loop = asyncio.get_running_loop()
        arrival_mono_s = loop.time()
        arrival_unix_s = time.time()
        try:
            body_bytes, body = self._read(request)
            features = extract_features(
                endpoint,
                body,
                session_header=request.header(b"x-session-id"),
                block_size=self.config.block_size,
            )
            if not self.pool.serving(features.model):
                served = ", ".join(self.config.model_names)
                raise ApiError(
                    404,
                    f"The model '{features.model}' does not exist on this gateway; served models: {served}",
                    param="model",
                    code="model_not_found",
                )
            if self.draining:
                raise ApiError(
                    503, "the gateway is shutting down; retry on another instance", kind="draining"
                )
        except ApiError as exc:
            self.metrics.errors.labels(exc.kind).inc()
            self.metrics.count_request(endpoint, "", "", str(exc.status))
            return exc.response()
        outcome = Outcome(
            request_id=f"{self._prefix}{next(self._ids)}",
            arrival_unix_s=arrival_unix_s,
            arrival_mono_s=arrival_mono_s,
            endpoint=endpoint,
            model=features.model,
            prompt_tokens=features.prompt_tokens,
            block_hashes=features.block_hashes,
            block_size=self.config.block_size,
            media=features.media,
            session_id=features.session_id,
        )
        self.num_in_flight += 1  # the in-flight gauge reads this at scrape time
        try:
            return await self._serve(conn, endpoint, body_bytes, body, features, outcome)
        finally:
            self.num_in_flight -= 1

    def _read(self, request: HttpRequest) -> tuple[bytes, object]:
        check_body_size(request, self.config.limits.max_body_bytes)
        body_bytes = request.body
        try:
            return body_bytes, orjson.loads(body_bytes)
        except orjson.JSONDecodeError as exc:
            raise ApiError(
                400, f"the request body is not valid JSON: {exc}", code="invalid_json"
            ) from exc

    # ---- the accepted request ---------------------------------------------------------------
    async def _serve(
        self,
        conn: HttpServerProtocol,
        endpoint: str,
        body_bytes: bytes,
        body: dict,
        features: RequestFeatures,
        outcome: Outcome,
    ) -> Reply | None:
        arm = self.arms.pick(outcome.request_id, features.session_id)
        outcome.arm = arm.label
        if features.stream and not features.client_wants_usage:
            # ask the engine for usage so the log has its token counts; the extra final
            # chunk is not forwarded to a client that did not ask for it
            body = dict(body)
            body["stream_options"] = {**(body.get("stream_options") or {}), "include_usage": True}
            body_bytes = orjson.dumps(body)
        routed_id: str | None = None
        upstream: UpstreamResponse | None = None
        streaming = False
        deadline = _Deadline(self._loop, self.config.limits.request_timeout_s)
        try:
            try:
                routed_id, upstream, first = await self._open_with_retries(
                    endpoint, body_bytes, features, outcome, arm
                )
                if upstream.status != 200:
                    return await self._pass_error(upstream, outcome)
                if not features.stream:
                    return await self._whole(upstream, outcome, routed_id)
                ttft_hist, itl_hist, _ = self.metrics.latency_children(outcome.backend, outcome.arm)
                relay = SseRelay(
                    conn,
                    upstream.conn,
                    upstream.backend,
                    outcome,
                    routed_id,
                    self.router,
                    strip_usage=not features.client_wants_usage,
                    ttft_hist=ttft_hist,
                    itl_hist=itl_hist,
                    loop=self._loop,
                )
                conn.start_stream(200, _SSE_HEADERS)
                streaming = True
                relay.start(*first)
                if not relay.done.done():
                    await relay.done
                relay.done.result()  # raises the relay's UpstreamBroken
                upstream.finish()
                return None
            except asyncio.CancelledError:
                if deadline.has_expired():
                    raise TimeoutError from None
                raise
            finally:
                deadline.cancel()
        except ApiError as exc:
            outcome.status, outcome.error, outcome.http_status = "error", exc.message, exc.status
            self.metrics.errors.labels(exc.kind).inc()
            return exc.response()
        except TimeoutError:
            message = f"request timed out after {self.config.limits.request_timeout_s:g} s"
            outcome.status, outcome.error = "error", message
            self.metrics.errors.labels("timeout").inc()
            if not streaming:
                outcome.http_status = 504
                return ApiError(504, message, code="timeout").response()
            self._end_stream_with_error(conn, ApiError(504, message, code="timeout"))
            return None
        except UpstreamBroken as exc:
            outcome.status, outcome.error = "error", exc.reason
            self.metrics.errors.labels("midstream").inc()
            if not streaming:
                outcome.http_status = 502
                return ApiError(
                    502, f"backend {exc.backend} failed: {exc.reason}", code="upstream_error"
                ).response()
            self._end_stream_with_error(
                conn,
                ApiError(
                    502,
                    f"backend {exc.backend} failed mid-stream: {exc.reason}",
                    code="upstream_error",
                ),
            )
            return None
        except (asyncio.CancelledError, ConnectionResetError):
            outcome.status, outcome.error, outcome.http_status = "error", "client disconnected", 499
            self.metrics.errors.labels("disconnect").inc()
            raise
        finally:
            if upstream is not None:
                upstream.close()
            self._finish(outcome, outcome.routed_id, arm)

    async def _open_with_retries(
        self,
        endpoint: str,
        body_bytes: bytes,
        features: RequestFeatures,
        outcome: Outcome,
        arm: Arm,
    ) -> tuple[str, UpstreamResponse, tuple[list[bytes], bytes]]:
        loop = self._loop
        serving = set(self.pool.serving(features.model))
        tried: set[int] = set()
        last_reason = ""
        limits = self.config.limits
        for attempt in range(limits.max_retries + 1):
            allowed = [
                ok and i in serving and i not in tried for i, ok in enumerate(self.pool.healthy)
            ]
            if not any(allowed):
                # health may lag behind reality (a backend just restarted): fall back to
                # any backend serving the model that this request has not tried yet
                allowed = [i in serving and i not in tried for i in range(len(self.pool.healthy))]
                if not any(allowed):
                    break
            routed_id = (
                outcome.request_id if attempt == 0 else f"{outcome.request_id}#retry{attempt}"
            )
            view = RequestView(
                request_id=routed_id,
                arrival_s=outcome.arrival_mono_s,
                prompt_tokens=features.prompt_tokens,
                media_tokens=sum(p.tokens for p in features.media),
                expected_output_tokens=features.expected_output_tokens,
                block_hashes=features.block_hashes,
                block_size=self.config.block_size,
                media_hashes=tuple(p.content_hash for p in features.media),
                session_id=features.session_id,
            )
            self.arms.router_policy.current = arm
            now_s = loop.time()
            try:
                index = self.router.route(view, now_s, self.pool.metrics, self.rng, allowed)
            except RoutingError as exc:
                raise ApiError(500, f"routing failed: {exc}", kind="internal") from exc
            # from here the Router counts it in flight until on_complete, whatever happens
            outcome.routed_id = routed_id
            upstream = self.pool.upstreams[index]
            outcome.backend = upstream.name
            outcome.backend_index = index
            self.metrics.count_decision(arm.label, upstream.name)
            response: UpstreamResponse | None = None
            try:
                response = await upstream.open(_PATHS[endpoint], body_bytes)
                first: tuple[list[bytes], bytes] = ([], b"")
                if features.stream and response.status == 200:
                    first = await self._first_events(response)
                return routed_id, response, first
            except (UpstreamUnavailable, UpstreamBroken) as exc:
                if response is not None:
                    response.close()
                last_reason = f"{upstream.name}: {exc.reason}"
                self.router.on_complete(routed_id, loop.time(), 0, ok=False)
                outcome.routed_id = None
                self.pool.report_failure(index, exc.reason)
                self.metrics.backend_healthy.labels(upstream.name).set(
                    1 if self.pool.healthy[index] else 0
                )
                tried.add(index)
                if attempt < limits.max_retries:
                    outcome.retries += 1
                    self.metrics.retries.labels(upstream.name).inc()
            except BaseException:
                if response is not None:
                    response.close()  # cancelled (client gone, deadline): stop the engine
                raise
        if last_reason:
            raise ApiError(
                502,
                f"no backend could serve the request after {len(tried)} attempt(s); last failure: {last_reason}",
                code="upstream_error",
                kind="upstream",
            )
        raise ApiError(
            503,
            f"no healthy backend serves model '{features.model}'",
            code="no_healthy_backend",
            kind="upstream",
        )

    @staticmethod
    async def _first_events(response: UpstreamResponse) -> tuple[list[bytes], bytes]:
        # a stall here ends in the connection's read timeout: retryable, nothing was sent
        events, rest = await response.first_events()
        if not events:
            if not rest.strip():
                raise UpstreamUnavailable(response.backend, "stream ended before its first event")
            events, rest = [rest], b""  # one unterminated event, then the end of the body
        return events, rest

    # ---- response bodies ----------------------------------------------------------------
    async def _pass_error(self, upstream: UpstreamResponse, outcome: Outcome) -> Reply:
        """A 4xx from the engine: the request itself was at fault; pass it through."""
        body = await upstream.read()
        outcome.status, outcome.http_status = "error", upstream.status
        try:
            outcome.error = str(orjson.loads(body)["error"]["message"])[:300]
        except (orjson.JSONDecodeError, KeyError, TypeError):
            outcome.error = f"backend answered HTTP {upstream.status}"
        self.metrics.errors.labels("client").inc()
        return Reply(upstream.status, body)

    async def _whole(self, upstream: UpstreamResponse, outcome: Outcome, routed_id: str) -> Reply:
        body = await upstream.read()
        now = self._loop.time()
        outcome.first_token_mono_s = outcome.last_token_mono_s = now
        self.router.on_first_token(routed_id, now)
        try:
            take_usage(orjson.loads(body).get("usage"), outcome)
        except (orjson.JSONDecodeError, AttributeError):
            pass
        return Reply(200, body)

    @staticmethod
    def _end_stream_with_error(conn: HttpServerProtocol, error: ApiError) -> None:
        conn.end_stream(error.sse_event() + _DONE)

    # ---- bookkeeping ------------------------------------------------------------------------
    def _finish(self, outcome: Outcome, routed_id: str | None, arm: Arm) -> None:
        now = self._loop.time()
        outcome.end_mono_s = now
        ok = outcome.status == "ok"
        if routed_id is not None:
            try:
                self.router.on_complete(routed_id, now, outcome.output_tokens, ok=ok)
            except KeyError:
                pass  # already completed by a failed attempt
            if ok:
                self.pool.report_success(outcome.backend_index)
        if outcome.backend:
            _, _, e2e_hist = self.metrics.latency_children(outcome.backend, outcome.arm)
            e2e_hist.observe(outcome.e2e_s)
            if (
                outcome.first_token_mono_s is not None
                and outcome.endpoint
                and routed_id
                and not outcome.token_events
            ):
                # non-streaming: TTFT is the whole response time
                self.metrics.latency_children(outcome.backend, outcome.arm)[0].observe(
                    outcome.ttft_s
                )
        self.metrics.count_request(outcome.endpoint, outcome.backend, outcome.arm, outcome.status)
        event = self.arms.record(arm, ok=ok, ttft_s=outcome.ttft_s, tpot_s=outcome.tpot_s)
        if event is not None:
            self.metrics.policy_events.labels(event.event).inc()
        self.recorder.write(outcome)
