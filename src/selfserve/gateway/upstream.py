"""The one interface the gateway uses to talk to an engine: `Upstream`.

An `Upstream` is one OpenAI-compatible backend (vLLM, SGLang, a selfserve twin). Completions
— the hot path — go through the lean keep-alive pool of `http_client` (the caller streams
the body or reads it whole); the occasional GETs (`/v1/models`, health probes, `/metrics`
scrapes) use an aiohttp `ClientSession`.
Failures that happen before any response byte raise `UpstreamUnavailable`, which is what
makes a retry on another backend safe.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import aiohttp

from selfserve.gateway.config import BackendConfig
from selfserve.gateway.http_client import (
    ClientConnection,
    ConnectionFailed,
    ConnectionPool,
    ReadTimeout,
)

SSE_SEPARATOR = b"\n\n"


class UpstreamUnavailable(Exception):
    """The backend failed before sending a response byte (connect error, 5xx, timeout)."""

    def __init__(self, backend: str, reason: str, status: int = 0) -> None:
        super().__init__(f"backend {backend}: {reason}")
        self.backend = backend
        self.reason = reason
        self.status = status


class UpstreamBroken(Exception):
    """The backend failed after the response started (connection lost mid-body)."""

    def __init__(self, backend: str, reason: str) -> None:
        super().__init__(f"backend {backend}: {reason}")
        self.backend = backend
        self.reason = reason


@dataclass(slots=True)
class UpstreamResponse:
    """An open response from a backend on a pooled connection; the caller must end it with
    `finish()` (body read to its end: the connection is reused) or `close()` (abort)."""

    backend: str
    status: int
    content_type: str
    conn: ClientConnection
    is_released: bool = False

    async def read(self) -> bytes:
        """The whole body; the connection goes back to the pool."""
        try:
            body = await self.conn.read_all()
        except ConnectionFailed as exc:
            raise UpstreamBroken(
                self.backend, f"connection lost while reading: {exc.reason}"
            ) from exc
        self.finish()
        return body

    async def first_events(self) -> tuple[list[bytes], bytes]:
        """Wait for the first complete SSE event(s): (events without their blank-line
        separator, the partial event after them).

        An empty list means the body ended before any complete event (the leftover bytes
        are whatever came). A connection failure here is `UpstreamUnavailable`: no byte
        has reached the client yet, so the request may be retried elsewhere."""
        pending = b""
        try:
            while True:
                data = await self.conn.next_body()
                if not data:
                    return [], pending
                pending += data
                if SSE_SEPARATOR in pending:
                    *complete, rest = pending.split(SSE_SEPARATOR)
                    return complete, rest
        except ConnectionFailed as exc:
            raise UpstreamUnavailable(self.backend, exc.reason) from exc

    def finish(self) -> None:
        """The body reached its logical end (`[DONE]`): the rest of the framing is read in
        the background and the connection goes back to the pool (a new TCP connection per
        request costs more CPU than everything else the gateway does for it)."""
        if not self.is_released:
            self.is_released = True
            self.conn.release_when_complete()

    def close(self) -> None:
        """Abort unless finished: closing before the end aborts the request on the engine."""
        if not self.is_released:
            self.is_released = True
            self.conn.abort()


class Upstream:
    """One backend and its connection pool."""

    def __init__(
        self,
        index: int,
        config: BackendConfig,
        *,
        connect_timeout_s: float,
        max_connections: int,
        read_timeout_s: float = 120.0,
    ) -> None:
        self.index = index
        self.config = config
        self.name = config.name
        self.base_url = config.url
        self._connect_timeout_s = connect_timeout_s
        self._read_timeout_s = read_timeout_s  # no byte for this long: the backend stalled
        self._max_connections = max_connections
        self._session: aiohttp.ClientSession | None = None
        self._pool: ConnectionPool | None = None

    async def start(self) -> None:
        self._pool = ConnectionPool(
            self.base_url,
            connect_timeout_s=self._connect_timeout_s,
            max_connections=self._max_connections,
        )
        connector = aiohttp.TCPConnector(
            limit=self._max_connections, ttl_dns_cache=300, enable_cleanup_closed=True
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            timeout=aiohttp.ClientTimeout(
                total=None, sock_connect=self._connect_timeout_s, sock_read=self._read_timeout_s
            ),
            auto_decompress=False,
            skip_auto_headers=("User-Agent",),
        )

    async def close(self) -> None:
        if self._pool is not None:
            self._pool.close()
            self._pool = None
        if self._session is not None:
            await self._session.close()
            self._session = None

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            raise RuntimeError(f"upstream {self.name} is not started")
        return self._session

    async def open(self, path: str, body: bytes) -> UpstreamResponse:
        """POST `body` to `path` on a pooled connection; return once the head arrives.

        5xx and transport failures raise `UpstreamUnavailable`; 4xx is returned (the
        client's request was at fault). The wait for the head is bounded by the read
        timeout; a reused keep-alive connection that the backend had closed meanwhile is
        replaced once, silently (nothing reached the engine)."""
        pool = self._pool
        if pool is None:
            raise RuntimeError(f"upstream {self.name} is not started")
        request = pool.request_bytes("POST", path, body)
        for attempt in (0, 1):
            try:
                conn, reused = await pool.acquire()
            except ConnectionFailed as exc:
                raise UpstreamUnavailable(self.name, exc.reason) from exc
            conn.send(request, self._read_timeout_s)
            try:
                status = await conn.response_head()
            except ConnectionFailed as exc:
                conn.abort()
                stale = reused and not exc.got_response and not isinstance(exc, ReadTimeout)
                if stale and attempt == 0:
                    continue
                if isinstance(exc, ReadTimeout):
                    raise UpstreamUnavailable(
                        self.name, f"no response within {self._read_timeout_s:g} s"
                    ) from exc
                raise UpstreamUnavailable(self.name, exc.reason) from exc
            except BaseException:
                conn.abort()  # cancelled (client gone, request timeout): stop the engine
                raise
            response = UpstreamResponse(
                self.name, status, conn.content_type.decode("latin-1").split(";")[0], conn
            )
            if status >= 500:
                try:
                    detail = (await response.read())[:300].decode("utf-8", "replace")
                except UpstreamBroken:
                    detail = ""
                response.close()
                raise UpstreamUnavailable(
                    self.name, f"HTTP {status} {detail}".strip(), status=status
                )
            return response
        raise AssertionError("unreachable: the second attempt returns or raises")

    async def get(self, path: str, timeout_s: float) -> tuple[int, bytes]:
        """GET `path`; transport failures and timeouts raise `UpstreamUnavailable`."""
        try:
            async with asyncio.timeout(timeout_s):
                async with self.session.get(self.base_url + path) as resp:
                    return resp.status, await resp.read()
        except TimeoutError as exc:
            raise UpstreamUnavailable(
                self.name, f"GET {path}: no answer within {timeout_s:g} s"
            ) from exc
        except (aiohttp.ClientError, ConnectionError, OSError) as exc:
            raise UpstreamUnavailable(
                self.name, f"GET {path}: {exc.__class__.__name__}: {exc}"
            ) from exc
