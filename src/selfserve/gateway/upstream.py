"""The one interface the gateway uses to talk to an engine: `Upstream`.

An `Upstream` is one OpenAI-compatible backend (vLLM, SGLang, a selfserve twin) behind a
pooled aiohttp `ClientSession`. It opens completions (the caller streams the body event by
event or reads it whole), fetches `/v1/models`, probes health and reads `/metrics`.
Failures that happen before any response byte raise `UpstreamUnavailable`, which is what
makes a retry on another backend safe.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass

import aiohttp

from selfserve.gateway.config import BackendConfig

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
    """An open response from a backend; the caller must `close()` it."""

    backend: str
    status: int
    content_type: str
    raw: aiohttp.ClientResponse
    pending: AsyncIterator[list[bytes]] | None = None  # the batch iterator, once reading began

    async def read(self) -> bytes:
        try:
            return await self.raw.read()
        except (aiohttp.ClientError, ConnectionError) as exc:
            raise UpstreamBroken(self.backend, f"connection lost while reading: {exc!r}") from exc

    async def event_batches(self) -> AsyncIterator[list[bytes]]:
        """Yield the complete SSE events (each ending in a blank line) that have arrived.

        One event per batch while the stream is slower than the gateway (token-by-token
        pass-through); when several are already buffered they come together, so the
        gateway forwards them in one write instead of one system call each.
        """
        content = self.raw.content
        pending = b""
        try:
            while True:
                data = await content.readany()
                if not data:
                    if pending.strip():
                        yield [pending]  # an unterminated last event: pass it on as is
                    return
                pending += data
                if SSE_SEPARATOR not in pending:
                    continue
                *complete, pending = pending.split(SSE_SEPARATOR)
                yield [event + SSE_SEPARATOR for event in complete]
        except (aiohttp.ClientError, ConnectionError) as exc:
            raise UpstreamBroken(self.backend, f"connection lost mid-stream: {exc!r}") from exc

    async def finish(self) -> None:
        """The body reached its logical end (`[DONE]`): read the rest of the framing so the
        connection goes back to the pool instead of being closed (a new TCP connection per
        request costs more CPU than everything else the gateway does for it)."""
        content = self.raw.content
        try:
            # bounded by the session's sock_read timeout, like every read
            while not content.at_eof():
                if not await content.readany():
                    break
            self.raw.release()
        except (TimeoutError, aiohttp.ClientError, ConnectionError):
            self.raw.close()

    def close(self) -> None:
        """Release the connection; closing before EOF aborts the request on the engine."""
        if not self.raw.closed:
            self.raw.close()


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

    async def start(self) -> None:
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
        if self._session is not None:
            await self._session.close()
            self._session = None

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            raise RuntimeError(f"upstream {self.name} is not started")
        return self._session

    async def open(
        self,
        path: str,
        body: bytes,
        *,
        headers: dict[str, str] | None = None,
    ) -> UpstreamResponse:
        """POST `body` to `path`; return once headers arrive. 5xx and transport errors raise
        `UpstreamUnavailable`; 4xx is returned (the client's request was at fault)."""
        send_headers = {"Content-Type": "application/json"}
        if headers:
            send_headers.update(headers)
        try:
            # no asyncio.timeout here: the session's sock_read timeout bounds the wait for
            # the response (and every later stall) with a cheaper timer
            raw = await self.session.post(self.base_url + path, data=body, headers=send_headers)
        except TimeoutError as exc:
            raise UpstreamUnavailable(
                self.name, f"no response within {self._read_timeout_s:g} s"
            ) from exc
        except (aiohttp.ClientError, ConnectionError, OSError) as exc:
            raise UpstreamUnavailable(
                self.name, f"cannot connect: {exc.__class__.__name__}: {exc}"
            ) from exc
        if raw.status >= 500:
            try:
                detail = (await raw.read())[:300].decode("utf-8", "replace")
            except (aiohttp.ClientError, ConnectionError):
                detail = ""
            raw.close()
            raise UpstreamUnavailable(
                self.name, f"HTTP {raw.status} {detail}".strip(), status=raw.status
            )
        return UpstreamResponse(self.name, raw.status, raw.content_type, raw)

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
