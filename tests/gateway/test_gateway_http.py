"""The gateway's own HTTP/1.1 layer, seen from raw sockets: keep-alive and pipelining,
100-continue, HTTP/1.0 streams, chunked bodies over the limit, malformed requests, and the
upstream pool (connection reuse, a stale keep-alive connection, a stalled stream)."""

from __future__ import annotations

import asyncio
import socket

import httptools
import orjson
from gateway_harness import base_url, eventually, gateway_over, run
from loopback_engine import LoopbackEngine

CHAT = orjson.dumps({"model": "m", "messages": [{"role": "user", "content": "hi"}]})
STREAM = orjson.dumps(
    {"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": True}
)


def _post(body: bytes, *, version: str = "1.1", extra: str = "") -> bytes:
    return (
        f"POST /v1/chat/completions HTTP/{version}\r\nHost: gw\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n{extra}\r\n"
    ).encode() + body


class _Responses:
    """Parses a byte stream of HTTP responses (what a client would see)."""

    def __init__(self) -> None:
        self.parser = httptools.HttpResponseParser(self)
        self.done: list[tuple[int, dict[bytes, bytes], bytes]] = []
        self._headers: dict[bytes, bytes] = {}
        self._body: list[bytes] = []

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers[name.lower()] = value

    def on_body(self, body: bytes) -> None:
        self._body.append(body)

    def on_message_complete(self) -> None:
        status = self.parser.get_status_code()
        self.done.append((status, self._headers, b"".join(self._body)))
        self._headers, self._body = {}, []


async def _until_closed(reader: asyncio.StreamReader) -> bytes:
    data = b""
    while chunk := await asyncio.wait_for(reader.read(65536), 5):
        data += chunk
    return data


async def _exchange(gw, raw_requests: bytes) -> bytes:
    """Send raw bytes on a new connection; everything the gateway answers until it closes."""
    reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
    writer.write(raw_requests)
    try:
        return await _until_closed(reader)
    finally:
        writer.close()


def test_pipelined_keep_alive_requests_are_answered_in_order_on_one_connection():
    async def body():
        engine = LoopbackEngine(tokens=3)
        async with gateway_over([engine]) as gw:
            raw = await _exchange(
                gw, _post(CHAT) + _post(STREAM) + _post(CHAT, extra="Connection: close\r\n")
            )
        responses = _Responses()
        responses.parser.feed_data(raw)
        assert [status for status, _, _ in responses.done] == [200, 200, 200]
        first, stream, last = (body for _, _, body in responses.done)
        assert orjson.loads(first)["choices"][0]["message"]["content"] == "xxx"
        assert stream.endswith(b"data: [DONE]\n\n") and stream.count(b'"delta"') == 3
        assert responses.done[1][1][b"transfer-encoding"] == b"chunked"
        assert responses.done[2][1][b"connection"] == b"close"
        assert engine.seen == 3

    run(body())


def test_expect_100_continue_gets_an_interim_answer_before_the_body_is_sent():
    async def body():
        async with gateway_over([LoopbackEngine()]) as gw:
            reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
            head, _, payload = _post(
                CHAT, extra="Expect: 100-continue\r\nConnection: close\r\n"
            ).partition(b"\r\n\r\n")
            writer.write(head + b"\r\n\r\n")
            interim = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
            writer.write(payload)
            raw = await _until_closed(reader)
            writer.close()
        assert raw.startswith(b"HTTP/1.1 200 OK\r\n")

    run(body())


def test_an_http_10_client_gets_an_unchunked_stream_ended_by_closing():
    async def body():
        async with gateway_over([LoopbackEngine(tokens=4)]) as gw:
            raw = await _exchange(gw, _post(STREAM, version="1.0"))
        head, _, events = raw.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200 OK") and b"chunked" not in head.lower()
        assert events.count(b'"delta"') == 4 and events.endswith(b"data: [DONE]\n\n")

    run(body())


def test_a_chunked_body_over_the_limit_is_a_413_and_the_connection_closes():
    async def body():
        engine = LoopbackEngine()
        async with gateway_over([engine], limits={"max_body_bytes": 1024}) as gw:
            reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
            chunk = b"x" * 800
            writer.write(
                b"POST /v1/chat/completions HTTP/1.1\r\nHost: gw\r\nTransfer-Encoding: chunked\r\n\r\n"
                + (b"%x\r\n%b\r\n" % (len(chunk), chunk)) * 2
                + b"0\r\n\r\n"
            )
            raw = await _until_closed(reader)  # the server closes after answering
            writer.close()
        responses = _Responses()
        responses.parser.feed_data(raw)
        (status, headers, payload), *_ = responses.done
        assert status == 413 and headers[b"connection"] == b"close"
        assert orjson.loads(payload)["error"]["code"] == "request_too_large"
        assert engine.seen == 0

    run(body())


def test_a_malformed_request_gets_a_400_and_the_connection_closes():
    async def body():
        async with gateway_over([LoopbackEngine()]) as gw:
            raw = await _exchange(gw, b"NOT HTTP AT ALL\r\n\r\n")
        assert raw.startswith(b"HTTP/1.1 400 Bad Request\r\n")
        assert b"malformed HTTP request" in raw

    run(body())


def test_upstream_connections_are_kept_alive_and_reused():
    async def body():
        engine = LoopbackEngine(tokens=2)
        async with gateway_over([engine]) as gw:
            for payload in (CHAT, STREAM, CHAT, STREAM, CHAT):
                reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
                writer.write(_post(payload, extra="Connection: close\r\n"))
                assert (await _until_closed(reader)).startswith(b"HTTP/1.1 200 OK")
                writer.close()
        assert engine.seen == 5 and len(engine.peers) == 1

    run(body())


async def _one_answer_per_connection(reader, writer, counts: dict) -> None:
    """An engine that answers one request per connection, then drops the connection
    when the next request arrives: what a server closing an idle keep-alive looks like
    when the close races with the gateway reusing it."""
    counts["connections"] += 1
    try:
        head = await reader.readuntil(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":")[1])
        await reader.readexactly(length)
        counts["answered"] += 1
        payload = orjson.dumps(
            {
                "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}}],
                "usage": {"prompt_tokens": 3, "completion_tokens": 1},
            }
        )
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%b"
            % (len(payload), payload)
        )
        await writer.drain()
        await reader.read(1)  # the next request on this connection: drop it unanswered
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()


def test_a_keep_alive_connection_closed_by_the_backend_is_replaced_without_a_failure():
    async def body():
        counts = {"connections": 0, "answered": 0}
        server = await asyncio.start_server(
            lambda r, w: _one_answer_per_connection(r, w, counts), "127.0.0.1", 0
        )
        port = server.sockets[0].getsockname()[1]
        try:
            async with gateway_over(
                [], backends=[{"name": "e0", "url": f"http://127.0.0.1:{port}", "models": ["m"]}],
                health={"interval_s": 60}, scrape={"interval_s": 60},
            ) as gw:  # fmt: skip
                answered_at_start = counts["answered"]  # the first health probe and scrape
                for _ in range(3):
                    raw = await _exchange(gw, _post(CHAT, extra="Connection: close\r\n"))
                    assert raw.startswith(b"HTTP/1.1 200 OK"), raw[:200]
                assert counts["answered"] - answered_at_start == 3
                assert gw.pool.health[0].consecutive_failures == 0
                value = gw.metrics.registry.get_sample_value(
                    "selfserve_gateway_retries_total", {"backend": "e0"}
                )
                assert not value
        finally:
            server.close()
            await server.wait_closed()

    run(body())


def test_a_stream_that_stalls_mid_way_ends_with_an_error_event_after_the_read_timeout():
    async def body():
        engine = LoopbackEngine(tokens=5, delay_s=2.0)  # one token, then silence
        async with gateway_over([engine], limits={"first_byte_timeout_s": 0.3}) as gw:
            raw = await _exchange(gw, _post(STREAM, extra="Connection: close\r\n"))
            assert gw.router.num_in_flight == 0
        responses = _Responses()
        responses.parser.feed_data(raw)
        (status, _, events), *_ = responses.done
        assert status == 200 and events.count(b'"delta"') == 1
        error = orjson.loads(events.split(b"\n\n")[-3].removeprefix(b"data: "))
        assert "no data from the backend for 0.3 s" in error["error"]["message"]
        assert events.endswith(b"data: [DONE]\n\n")

    run(body())


def test_health_and_metrics_are_served_on_the_same_port():
    async def body():
        async with gateway_over([LoopbackEngine()]) as gw:
            raw = await _exchange(
                gw,
                b"GET /health HTTP/1.1\r\nHost: gw\r\n\r\n"
                b"GET /metrics HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n",
            )
            url = base_url(gw)
        responses = _Responses()
        responses.parser.feed_data(raw)
        (s1, _, health), (s2, headers, metrics) = responses.done
        assert s1 == 200 and orjson.loads(health)["status"] == "ok", url
        assert s2 == 200 and headers[b"content-type"].startswith(b"text/plain")
        assert b"selfserve_gateway_in_flight_requests 0.0" in metrics

    run(body())


def test_a_slow_reader_gets_the_whole_stream_and_the_upstream_connection_is_reused_after():
    async def body():
        # 100 chunks of 64 KiB (more than the kernel's 4 MiB socket buffers) towards a
        # client that reads slowly through a 4 KiB receive buffer: the gateway's write
        # buffer fills, so it stops reading from the engine until the client catches up
        engine = LoopbackEngine(tokens=100, content="y" * 65536, delay_s=0.0)
        async with gateway_over([engine]) as gw:
            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.setblocking(False)
            await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", gw.port))
            reader, writer = await asyncio.open_connection(sock=sock, limit=2**20)
            writer.write(_post(STREAM, extra="Connection: close\r\n"))
            raw = b""
            while chunk := await asyncio.wait_for(reader.read(65536), 5):
                raw += chunk
                await asyncio.sleep(0.002)
            writer.close()
            # the same upstream connection serves the next request: it was left reading
            second = await _exchange(gw, _post(CHAT, extra="Connection: close\r\n"))
        responses = _Responses()
        responses.parser.feed_data(raw)
        (status, _, events), *_ = responses.done
        assert status == 200 and events.count(b'"delta"') == 100
        assert events.count(b"y") == 100 * 65536 and events.endswith(b"data: [DONE]\n\n")
        assert second.startswith(b"HTTP/1.1 200 OK"), second[:300]
        assert engine.seen == 2 and len(engine.peers) == 1

    run(body())


def test_an_idle_keep_alive_client_connection_is_closed_after_the_idle_timeout():
    async def body():
        async with gateway_over([LoopbackEngine()], limits={"client_idle_timeout_s": 0.2}) as gw:
            reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
            writer.write(_post(CHAT))  # keep-alive: the server keeps the connection open
            started = asyncio.get_running_loop().time()
            raw = await _until_closed(reader)  # ... until it has been idle for 0.2 s
            closed_after_s = asyncio.get_running_loop().time() - started
            writer.close()
        assert raw.startswith(b"HTTP/1.1 200 OK") and b"Connection: close" not in raw
        assert 0.2 <= closed_after_s < 2.0

    run(body())


def test_requests_queue_for_a_connection_when_a_backend_is_at_its_limit():
    async def body():
        engine = LoopbackEngine(tokens=5, delay_s=0.02)
        async with gateway_over([engine], limits={"max_connections_per_backend": 1}) as gw:

            async def stream() -> bytes:
                return await _exchange(gw, _post(STREAM, extra="Connection: close\r\n"))

            # a client that gives up while queued must not hold the slot it was waiting for
            first = asyncio.create_task(stream())
            await eventually(
                lambda: engine.running == 1, timeout_s=2.5, poll_s=0.005
            )  # the first holds the one connection
            reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
            writer.write(_post(STREAM))
            await eventually(
                lambda: gw.proxy.num_in_flight == 2, timeout_s=2.5, poll_s=0.005
            )  # ... so this one waits
            writer.close()
            results = await asyncio.gather(first, stream(), stream())
            assert gw.router.num_in_flight == 0
        assert all(r.endswith(b"data: [DONE]\n\n\r\n0\r\n\r\n") for r in results)
        assert engine.seen == 3 and engine.cancelled == 0  # the one that left never got there
        assert len(engine.peers) == 1  # every request went over the one allowed connection

    run(body())


def test_head_is_answered_like_get_without_a_body():
    async def body():
        async with gateway_over([LoopbackEngine()]) as gw:
            raw = await _exchange(
                gw,
                b"HEAD /health HTTP/1.1\r\nHost: gw\r\n\r\n"
                b"GET /health HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n",
            )
        head_answer, _, rest = raw.partition(b"\r\n\r\n")
        assert head_answer.startswith(b"HTTP/1.1 200 OK") and b"Content-Length: " in head_answer
        assert rest.startswith(b"HTTP/1.1 200 OK")  # no body between the two answers
        assert rest.endswith(b"}") and b'"status":"ok"' in rest

    run(body())
