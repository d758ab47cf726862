"""The gateway's lean HTTP/1.1 front server: `asyncio.Protocol` + MagicStack's C parser.

One `HttpServerProtocol` per client connection parses requests with `httptools` (the parser
uvicorn uses), hands each complete request (`HttpRequest`: method, path, lowercase headers,
body) to the gateway's handler in its own task, and writes what the handler answers: a
whole `Reply` (head and body in one system call) or a chunked stream whose head leaves
with the first chunk (`start_stream` / `write_chunk` / `end_stream`). Keep-alive and
pipelined requests are served in order; `Expect: 100-continue` is honoured; a body over
`max_body_bytes` is not buffered (the handler sees `body_too_large`) and the connection is
closed after the answer; a connection with no request in progress and no byte received for
`idle_timeout_s` is closed by a sweep every few seconds (no timer per request). A client that disconnects cancels its request's task, which is how
the gateway aborts the engine's work. While a client is slow to read, `on_pause_writing` /
`on_resume_writing` hooks let the streamer stop reading from the engine.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import httptools

log = logging.getLogger("selfserve.gateway")

_REASONS = {
    100: "Continue",
    200: "OK",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    413: "Payload Too Large",
    429: "Too Many Requests",
    499: "Client Closed Request",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}
# pipelined requests parsed ahead of the one being served; beyond this, stop reading
_MAX_QUEUED_REQUESTS = 8
# response heads remembered by (status, headers, keep-alive); a bound, as headers can vary
_MAX_CACHED_HEADS = 256


def _status_line(status: int) -> bytes:
    return b"HTTP/1.1 %d %s\r\n" % (status, _REASONS.get(status, "Status").encode())


@dataclass(slots=True)
class HttpRequest:
    method: str
    path: str
    query: bytes
    headers: dict[bytes, bytes]  # lowercase names; a repeated header keeps its last value
    body: bytes
    content_length: int | None
    body_too_large: bool = False

    def header(self, name: bytes) -> str | None:
        value = self.headers.get(name)
        return None if value is None else value.decode("latin-1")


@dataclass(frozen=True, slots=True)
class Reply:
    """A whole response: status, body, content type and extra `(name, value)` headers."""

    status: int
    body: bytes
    content_type: bytes = b"application/json"
    headers: tuple[tuple[bytes, bytes], ...] = ()


Handler = Callable[[HttpRequest, "HttpServerProtocol"], Awaitable[Reply | None]]


class HttpServerProtocol(asyncio.Protocol):
    """One client connection."""

    def __init__(self, server: HttpServer) -> None:
        self.server = server
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.is_closed = False
        self.last_read_s = server.loop.time()
        self.on_pause_writing: Callable[[], None] | None = None
        self.on_resume_writing: Callable[[], None] | None = None
        self._queue: deque[tuple[HttpRequest, bool]] = deque()
        self._task: asyncio.Task | None = None
        # the request being parsed
        self._url = b""
        self._headers: dict[bytes, bytes] = {}
        self._body: list[bytes] = []
        self._body_bytes = 0
        self._too_large = False
        # the response being written
        self._keep_alive = True
        self._stream_head: bytes | None = None
        self._is_chunked = True
        self._is_head = False
        self.is_responding = False  # a head has been written for the current request

    # ---- asyncio.Protocol ---------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.server.connections.add(self)

    def data_received(self, data: bytes) -> None:
        self.last_read_s = self.server.loop.time()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._reject(400, b"protocol upgrades are not supported")
        except httptools.HttpParserError as exc:
            self._reject(400, f"malformed HTTP request: {exc}".encode())

    def connection_lost(self, exc: Exception | None) -> None:
        self.is_closed = True
        self.server.connections.discard(self)
        self._queue.clear()
        if self._task is not None and not self._task.done():
            self._task.cancel()  # the client is gone: stop the work done for it

    def pause_writing(self) -> None:
        if self.on_pause_writing is not None:
            self.on_pause_writing()

    def resume_writing(self) -> None:
        if self.on_resume_writing is not None:
            self.on_resume_writing()

    # ---- httptools callbacks -----------------------------------------------------------
    def on_message_begin(self) -> None:
        self._url = b""
        self._headers = {}
        self._body = []
        self._body_bytes = 0
        self._too_large = False

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers[name.lower()] = value

    def on_headers_complete(self) -> None:
        length = self._headers.get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.server.max_body_bytes:
            self._too_large = True
        elif self._headers.get(b"expect", b"").lower() == b"100-continue":
            self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")  # type: ignore[union-attr]

    def on_body(self, body: bytes) -> None:
        if self._too_large:
            return
        self._body_bytes += len(body)
        if self._body_bytes > self.server.max_body_bytes:
            self._too_large = True
            self._body = []
        else:
            self._body.append(body)

    def on_message_complete(self) -> None:
        url = self._url
        path, _, query = url.partition(b"?")
        length = self._headers.get(b"content-length")
        body = self._body[0] if len(self._body) == 1 else b"".join(self._body)
        request = HttpRequest(
            method=self.parser.get_method().decode("latin-1"),
            path=path.decode("latin-1"),
            query=query,
            headers=self._headers,
            body=b"" if self._too_large else body,
            content_length=int(length) if length is not None and length.isdigit() else None,
            body_too_large=self._too_large,
        )
        # an over-long body was not read into memory: answer, then close the connection
        keep_alive = self.parser.should_keep_alive() and not self._too_large
        self._body = []
        if self._task is None:
            self._start(request, keep_alive)
        else:
            self._queue.append((request, keep_alive))
            if len(self._queue) >= _MAX_QUEUED_REQUESTS:
                self.transport.pause_reading()  # type: ignore[union-attr]

    # ---- serving ------------------------------------------------------------------------
    def _start(self, request: HttpRequest, keep_alive: bool) -> None:
        self._keep_alive = keep_alive
        self._is_head = request.method == "HEAD"  # answered like GET, without the body
        self._stream_head = None
        self.is_responding = False
        self._task = self.server.loop.create_task(self._serve(request))

    async def _serve(self, request: HttpRequest) -> None:
        try:
            reply = await self.server.handler(request, self)
            if reply is not None:
                self.reply(reply)
            elif self._stream_head is not None:
                self.end_stream()  # a stream that was started but never ended
        except asyncio.CancelledError:
            self.close()
            return
        except Exception:
            log.exception("unhandled error serving %s %s", request.method, request.path)
            if not self.is_responding:
                self.reply(
                    Reply(
                        500,
                        b'{"error":{"message":"internal gateway error","type":"internal_error","param":null,"code":null}}',
                    )
                )
            self._keep_alive = False
        finally:
            self._task = None
            self.on_pause_writing = self.on_resume_writing = None
        if self.is_closed:
            return
        if not self._keep_alive:
            self.close()
        elif self._queue:
            self.transport.resume_reading()  # type: ignore[union-attr]
            self._start(*self._queue.popleft())
        elif self.server.is_closing:
            self.close()  # idle after the drain

    def _reject(self, status: int, message: bytes) -> None:
        if self._task is None and not self.is_closed:
            body = (
                b'{"error":{"message":"%s","type":"invalid_request_error","param":null,"code":null}}'
                % (message.replace(b'"', b"'"))
            )
            self._keep_alive = False
            self.is_responding = False
            self.reply(Reply(status, body))
        self.close()

    # ---- writing ------------------------------------------------------------------------
    def _head(self, status: int, headers: tuple[tuple[bytes, bytes], ...]) -> bytes:
        # the same few heads repeat (200 + SSE headers above all): build each once
        key = (status, headers, self._keep_alive)
        head = self.server.heads.get(key)
        if head is None:
            parts = [_status_line(status)]
            parts.extend(name + b": " + value + b"\r\n" for name, value in headers)
            if not self._keep_alive:
                parts.append(b"Connection: close\r\n")
            head = b"".join(parts)
            if len(self.server.heads) < _MAX_CACHED_HEADS:
                self.server.heads[key] = head
        return head

    def reply(self, reply: Reply) -> None:
        """Write a whole response in one system call."""
        if self.is_closed or self.is_responding:
            return
        self.is_responding = True
        head = self._head(reply.status, reply.headers)
        self.transport.write(  # type: ignore[union-attr]
            head
            + b"Content-Type: "
            + reply.content_type
            + b"\r\nContent-Length: %d\r\n\r\n" % len(reply.body)
            + (b"" if self._is_head else reply.body)
        )

    def start_stream(self, status: int, headers: tuple[tuple[bytes, bytes], ...]) -> None:
        """Begin a chunked response; its head leaves with the first chunk (one call fewer)."""
        self.is_responding = True
        if self.parser.get_http_version() == "1.0":
            self._is_chunked = False  # HTTP/1.0 has no chunks: the body ends with the connection
            self._keep_alive = False
            self._stream_head = self._head(status, headers) + b"\r\n"
        else:
            self._is_chunked = True
            self._stream_head = self._head(status, headers) + b"Transfer-Encoding: chunked\r\n\r\n"

    def write_chunk(self, data: bytes) -> None:
        if self.is_closed or not data:
            return
        frame = b"%x\r\n%b\r\n" % (len(data), data) if self._is_chunked else data
        if self._stream_head:
            frame = self._stream_head + frame
            self._stream_head = b""
        self.transport.write(frame)  # type: ignore[union-attr]

    def end_stream(self, data: bytes = b"") -> None:
        """The last chunk (if any) and the end of the body, in one system call."""
        if self.is_closed or self._stream_head is None:
            return
        frame = b"%x\r\n%b\r\n" % (len(data), data) if data and self._is_chunked else data
        if self._is_chunked:
            frame += b"0\r\n\r\n"
        if self._stream_head:
            frame = self._stream_head + frame
        self._stream_head = None
        self.transport.write(frame)  # type: ignore[union-attr]
        if not self._is_chunked:
            self.close()

    @property
    def is_writable(self) -> bool:
        return not self.is_closed and not self.transport.is_closing()  # type: ignore[union-attr]

    def close(self) -> None:
        if not self.is_closed:
            self.is_closed = True
            self.server.connections.discard(self)
            self.transport.close()  # type: ignore[union-attr]


class HttpServer:
    """Listens on one address and serves every connection with `handler`."""

    def __init__(
        self, handler: Handler, *, max_body_bytes: int, idle_timeout_s: float = 75.0
    ) -> None:
        self.handler = handler
        self.max_body_bytes = max_body_bytes
        self.idle_timeout_s = idle_timeout_s  # aiohttp's and nginx's keep-alive default
        self.connections: set[HttpServerProtocol] = set()
        self.heads: dict[tuple, bytes] = {}
        self.is_closing = False
        self.loop = asyncio.get_running_loop()
        self._server: asyncio.Server | None = None
        self._sweeper: asyncio.Task | None = None

    async def listen(self, host: str, port: int, *, backlog: int = 2048) -> int:
        """Bind and start accepting; returns the bound port (port 0 picks a free one)."""
        self._server = await self.loop.create_server(
            lambda: HttpServerProtocol(self), host, port, backlog=backlog, reuse_address=True
        )
        self._sweeper = self.loop.create_task(self._sweep_idle())
        return self._server.sockets[0].getsockname()[1]

    async def _sweep_idle(self) -> None:
        interval_s = max(0.05, min(5.0, self.idle_timeout_s / 4))
        while True:
            await asyncio.sleep(interval_s)
            cutoff_s = self.loop.time() - self.idle_timeout_s
            for conn in list(self.connections):
                if conn._task is None and not conn._queue and conn.last_read_s < cutoff_s:
                    conn.close()

    async def close(self) -> None:
        """Stop listening and close every connection (in-flight requests are cancelled:
        drain them first)."""
        self.is_closing = True
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        if self._server is not None:
            self._server.close()
        for conn in list(self.connections):
            if conn._task is not None and not conn._task.done():
                conn._task.cancel()
            conn.close()
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None
