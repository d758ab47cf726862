"""The gateway's lean HTTP/1.1 client for the hot path: keep-alive connection pools per backend.

A completion costs the gateway little besides moving bytes, so the client is an
`asyncio.Protocol` with MagicStack's C parser (`httptools`) instead of a general-purpose
client: one `ClientConnection` carries one exchange at a time (request written in one
system call, response parsed in C), and a `ConnectionPool` keeps idle connections per
backend. The body reaches the caller either buffered (`read_all`, `next_body`) or, once
`stream_to(sink)` is called, synchronously from `data_received` — no task switch per chunk,
which is what lets SSE pass through token by token at a fraction of a general client's CPU.
A connection that has not answered for `read_timeout_s` (waiting for the head or mid-body)
fails with `ReadTimeout`; a closed or garbled connection fails with `ConnectionFailed`.
"""

from __future__ import annotations

import asyncio
import ssl
from collections import deque
from collections.abc import Callable

import httptools


class ConnectionFailed(Exception):
    """The exchange failed: connect error, connection lost, timeout or a bad response."""

    def __init__(self, reason: str, *, got_response: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.got_response = got_response  # False: no response byte arrived (a retry is safe)


class ReadTimeout(ConnectionFailed):
    """No byte from the backend for `read_timeout_s` (not the request's overall timeout)."""


_FRAMING_NAME_LENGTHS = frozenset(
    (len(b"content-type"), len(b"content-length"), len(b"transfer-encoding"))
)


class ClientConnection(asyncio.Protocol):
    """One keep-alive connection to a backend, carrying one request/response at a time."""

    def __init__(self, pool: ConnectionPool) -> None:
        self.pool = pool
        self.loop = pool.loop
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.is_open = False
        self.is_paused = False
        self.num_exchanges = 0
        # the current exchange
        self.status = 0
        self.content_type = b""
        self.is_complete = True
        self.keep_alive = True
        self.got_response = False
        self._framed = False  # Content-Length or chunked: the end is known without EOF
        self._body: list[bytes] = []
        self._sink: Callable[[bytes], None] | None = None
        self._waiter: asyncio.Future | None = None  # head, body data or completion
        self._error: ConnectionFailed | None = None
        self._release_on_complete = False
        self._read_timeout_s = 0.0
        self._last_read_s = 0.0
        self._timer: asyncio.TimerHandle | None = None

    # ---- asyncio.Protocol ---------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.is_open = True

    def data_received(self, data: bytes) -> None:
        self._last_read_s = self.loop.time()
        self.got_response = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(ConnectionFailed(f"malformed HTTP response: {exc}", got_response=True))
            self.abort()

    def eof_received(self) -> bool:
        return False  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        self.is_open = False
        self.pool.forget(self)
        if not self.is_complete:
            if self.status and not self._framed:
                self.on_message_complete()  # a body delimited by the connection's end
            else:
                detail = f": {exc}" if exc else ""
                self._fail(
                    ConnectionFailed(
                        f"connection closed by the backend{detail}", got_response=self.got_response
                    )
                )

    # ---- httptools callbacks -----------------------------------------------------------
    def on_header(self, name: bytes, value: bytes) -> None:
        # only three names matter (12, 14 and 17 letters): skip the rest without lower()
        if len(name) not in _FRAMING_NAME_LENGTHS:
            return
        lower = name.lower()
        if lower == b"content-type":
            self.content_type = value
        elif lower == b"content-length" or (
            lower == b"transfer-encoding" and b"chunked" in value.lower()
        ):
            self._framed = True

    def on_headers_complete(self) -> None:
        self.status = self.parser.get_status_code()
        self.keep_alive = self.parser.should_keep_alive()
        if self.status == 204 or self.status == 304:
            self._framed = True
        self._wake()

    def on_body(self, body: bytes) -> None:
        if self._sink is not None:
            self._sink(body)
        else:
            self._body.append(body)
            if self._waiter is not None:
                self._wake()

    def on_message_complete(self) -> None:
        if self.is_complete:
            return
        self.is_complete = True
        self._stop_timer()
        if self._sink is not None:
            self._sink(b"")  # end of body
            self._sink = None
        self._wake()
        if self._release_on_complete:
            self.pool.release(self)

    # ---- the exchange ------------------------------------------------------------------
    def send(self, request: bytes, read_timeout_s: float) -> None:
        """Write a whole request (head and body in one system call) and start waiting."""
        self.status = 0
        self.content_type = b""
        self.is_complete = False
        self.keep_alive = True
        self.got_response = False
        self._framed = False
        self._body = []
        self._sink = None
        self._error = None
        self._release_on_complete = False
        self.num_exchanges += 1
        self._read_timeout_s = read_timeout_s
        self._last_read_s = self.loop.time()
        self._timer = self.loop.call_at(self._last_read_s + read_timeout_s, self._check_timeout)
        self.transport.write(request)  # type: ignore[union-attr]

    async def response_head(self) -> int:
        """Wait for the status line and headers; returns the status."""
        while not self.status:
            await self._wait()
        return self.status

    async def next_body(self) -> bytes:
        """Body bytes buffered so far (waiting for some); b"" once the body is complete."""
        while not self._body:
            if self.is_complete:
                return b""
            await self._wait()
        data = b"".join(self._body) if len(self._body) > 1 else self._body[0]
        self._body = []
        return data

    async def read_all(self) -> bytes:
        while not self.is_complete:
            await self._wait()
        data = b"".join(self._body)
        self._body = []
        return data

    def stream_to(self, sink: Callable[[bytes], None]) -> None:
        """From now on hand each body piece to `sink` as it arrives, and b"" at the end."""
        if self._error is not None:
            raise self._error
        pending, self._body = self._body, []
        for piece in pending:
            sink(piece)
        if self.is_complete:
            sink(b"")
        else:
            self._sink = sink

    def pause_reading(self) -> None:
        """Stop reading (the client is slow); `resume_reading` undoes it."""
        if self.is_open and not self.is_paused:
            self.is_paused = True
            self.transport.pause_reading()  # type: ignore[union-attr]

    def resume_reading(self) -> None:
        if self.is_open and self.is_paused:
            self.is_paused = False
            self.transport.resume_reading()  # type: ignore[union-attr]

    def release_when_complete(self) -> None:
        """The caller is done: back to the pool now, or when the rest of the body arrives
        (e.g. the chunked terminator after `[DONE]`); the read timer still bounds the wait."""
        self._sink = None
        self._body = []
        self.resume_reading()  # paused for a slow client: the rest must still arrive
        if self.is_complete:
            self.pool.release(self)
        elif self.is_open:
            self._sink = _discard
            self._release_on_complete = True

    def abort(self) -> None:
        """Drop the connection (the engine sees the client go and stops generating)."""
        self._stop_timer()
        self._sink = None
        if self.transport is not None:
            self.transport.abort()
        self.is_open = False
        self.pool.forget(self)

    # ---- internals ---------------------------------------------------------------------
    async def _wait(self) -> None:
        if self._error is not None:
            raise self._error
        self._waiter = self.loop.create_future()
        try:
            await self._waiter
        finally:
            self._waiter = None

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None  # one wake-up per wait: later pieces skip the check
            if not waiter.done():
                waiter.set_result(None)

    def _fail(self, error: ConnectionFailed) -> None:
        if self.is_complete:
            return
        self._stop_timer()
        self._error = error
        sink, self._sink = self._sink, None
        if sink is not None and sink is not _discard:
            sink(b"")  # the sink sees the end; `failure` tells it why
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_exception(error)

    @property
    def failure(self) -> ConnectionFailed | None:
        return self._error

    def _check_timeout(self) -> None:
        # one timer per exchange, re-armed lazily: reads only store a timestamp
        self._timer = None
        if self.is_complete:
            return
        idle_s = self.loop.time() - self._last_read_s
        if idle_s + 1e-3 < self._read_timeout_s:
            self._timer = self.loop.call_at(
                self._last_read_s + self._read_timeout_s, self._check_timeout
            )
            return
        self._fail(
            ReadTimeout(
                f"no data from the backend for {self._read_timeout_s:g} s",
                got_response=self.got_response,
            )
        )
        self.abort()

    def _stop_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


def _discard(_: bytes) -> None:
    pass


class ConnectionPool:
    """Idle keep-alive connections to one backend, at most `max_connections` open."""

    def __init__(
        self,
        url: str,
        *,
        connect_timeout_s: float,
        max_connections: int,
        loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        scheme, _, netloc = url.partition("://")
        host, _, port = netloc.rpartition(":") if ":" in netloc.strip("[]") else (netloc, "", "")
        self.host = host.strip("[]") or netloc
        self.port = int(port) if port else (443 if scheme == "https" else 80)
        self.host_header = netloc.encode()
        self._ssl = ssl.create_default_context() if scheme == "https" else None
        self.connect_timeout_s = connect_timeout_s
        self.max_connections = max_connections
        self.loop = loop or asyncio.get_running_loop()
        self._idle: deque[ClientConnection] = deque()
        self._open: set[ClientConnection] = set()
        self._waiters: deque[asyncio.Future] = deque()
        self._heads: dict[str, bytes] = {}
        self.is_closed = False

    def request_bytes(
        self, method: str, path: str, body: bytes, extra_headers: bytes = b""
    ) -> bytes:
        head = self._heads.get(method + path)
        if head is None:
            head = self._heads[method + path] = (
                f"{method} {path} HTTP/1.1\r\n".encode()
                + b"Host: "
                + self.host_header
                + b"\r\nContent-Type: application/json\r\nAccept: */*\r\n"
            )
        return head + extra_headers + b"Content-Length: %d\r\n\r\n" % len(body) + body

    async def acquire(self) -> tuple[ClientConnection, bool]:
        """An idle connection (reused=True) or a new one; waits while the pool is full."""
        while True:
            while self._idle:
                conn = self._idle.pop()  # most recently used: least likely closed by the server
                if conn.is_open:
                    return conn, True
            if self.is_closed:
                raise ConnectionFailed("the gateway is shutting down")
            if len(self._open) < self.max_connections:
                return await self._connect(), False
            waiter = self.loop.create_future()
            self._waiters.append(waiter)
            try:
                await waiter
            except BaseException:
                if waiter.done() and not waiter.cancelled():
                    self._wake_one()  # woken, then cancelled: pass the free slot on
                raise
            finally:
                if waiter in self._waiters:
                    self._waiters.remove(waiter)

    async def _connect(self) -> ClientConnection:
        conn = ClientConnection(self)
        self._open.add(conn)
        try:
            async with asyncio.timeout(self.connect_timeout_s):
                await self.loop.create_connection(
                    lambda: conn,
                    self.host,
                    self.port,
                    ssl=self._ssl,
                    server_hostname=self.host if self._ssl else None,
                )
        except TimeoutError as exc:
            self.forget(conn)
            raise ConnectionFailed(f"cannot connect within {self.connect_timeout_s:g} s") from exc
        except OSError as exc:
            self.forget(conn)
            raise ConnectionFailed(
                f"cannot connect: {exc.__class__.__name__}: {exc.strerror or exc}"
            ) from exc
        except BaseException:
            conn.abort()  # cancelled while connecting: give the slot back
            raise
        return conn

    def release(self, conn: ClientConnection) -> None:
        """The exchange completed: keep the connection for the next request if we can."""
        conn._release_on_complete = False
        conn._sink = None
        conn.resume_reading()  # never hand out a connection that does not read
        if conn.is_open and conn.keep_alive and conn.is_complete and not self.is_closed:
            self._idle.append(conn)
            self._wake_one()
        else:
            conn.abort()

    def forget(self, conn: ClientConnection) -> None:
        if conn in self._open:
            self._open.discard(conn)
            self._wake_one()

    def _wake_one(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    def close(self) -> None:
        self.is_closed = True
        for conn in list(self._open):
            conn.abort()
        self._idle.clear()
        for waiter in self._waiters:
            if not waiter.done():
                waiter.set_result(None)
