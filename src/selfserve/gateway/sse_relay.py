"""Streams one engine's SSE body to the client as it arrives, and accounts for its tokens.

`SseRelay` is the sink of an upstream connection (`ClientConnection.stream_to`): it is
called from the connection's `data_received` with each body piece, splits complete events,
reads each `data:` chunk once (first token → the Router's `on_first_token` and the TTFT
histogram, later tokens → ITL, `usage` → the log record, an engine `error` event → a
mid-stream failure) and writes the events straight to the client connection in one write
per piece — no task switch or queue per chunk. The usage chunk the gateway asked for on
the client's behalf is not forwarded. `done` resolves at `[DONE]` (the client's body is
already closed then) or fails with `UpstreamBroken`.
"""

from __future__ import annotations

import asyncio

import orjson

from selfserve.gateway.http_client import ClientConnection
from selfserve.gateway.http_server import HttpServerProtocol
from selfserve.gateway.recorder import Outcome
from selfserve.gateway.upstream import SSE_SEPARATOR, UpstreamBroken
from selfserve.policy.router import Router


def take_usage(usage: object, outcome: Outcome) -> None:
    """Copy an OpenAI `usage` object's token counts into the outcome."""
    if not isinstance(usage, dict):
        return
    if isinstance(usage.get("prompt_tokens"), int):
        outcome.usage_prompt_tokens = usage["prompt_tokens"]
    if isinstance(usage.get("completion_tokens"), int):
        outcome.usage_output_tokens = usage["completion_tokens"]
    details = usage.get("prompt_tokens_details")
    if isinstance(details, dict) and isinstance(details.get("cached_tokens"), int):
        outcome.cached_tokens = details["cached_tokens"]


class SseRelay:
    """One streaming response: upstream connection → client connection."""

    __slots__ = (
        "client",
        "upstream",
        "backend",
        "outcome",
        "routed_id",
        "router",
        "strip_usage",
        "ttft_hist",
        "itl_hist",
        "loop",
        "done",
        "_pending",
    )

    def __init__(
        self,
        client: HttpServerProtocol,
        upstream: ClientConnection,
        backend: str,
        outcome: Outcome,
        routed_id: str,
        router: Router,
        *,
        strip_usage: bool,
        ttft_hist,
        itl_hist,
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        self.client = client
        self.upstream = upstream
        self.backend = backend
        self.outcome = outcome
        self.routed_id = routed_id
        self.router = router
        self.strip_usage = strip_usage
        self.ttft_hist = ttft_hist
        self.itl_hist = itl_hist
        self.loop = loop
        self.done: asyncio.Future = self.loop.create_future()
        self._pending = b""

    def start(self, first_events: list[bytes], rest: bytes) -> None:
        """Forward the first events (already read), then follow the upstream body."""
        # a slow client pauses the engine's connection instead of buffering without bound
        self.client.on_pause_writing = self.upstream.pause_reading
        self.client.on_resume_writing = self.upstream.resume_reading
        self._pending = rest
        self._forward(first_events)
        if not self.done.done():
            self.upstream.stream_to(self)

    def __call__(self, data: bytes) -> None:
        """The upstream sink: a body piece, or b"" at the end of the body."""
        if self.done.done():
            return  # after [DONE] or a failure nothing more is forwarded
        if not data:
            self._end_of_body()
            return
        pending = self._pending + data if self._pending else data
        if SSE_SEPARATOR not in pending:
            self._pending = pending
            return
        *complete, self._pending = pending.split(SSE_SEPARATOR)
        self._forward(complete)

    def _end_of_body(self) -> None:
        failure = self.upstream.failure
        if failure is not None:
            self._fail(f"connection lost mid-stream: {failure.reason}")
            return
        if self._pending.strip():
            last, self._pending = self._pending, b""
            self._forward([last])  # an unterminated last event: pass it on as is
        if not self.done.done():
            self._fail("stream ended without [DONE]")

    def _fail(self, reason: str) -> None:
        if not self.done.done():
            self.done.set_exception(UpstreamBroken(self.backend, reason))

    def _forward(self, events: list[bytes]) -> None:
        now = self.loop.time()
        forward = []
        saw_done = False
        failure = ""
        for event in events:
            if event.startswith(b"data: "):
                payload = event[6:].strip()
                if payload == b"[DONE]":
                    saw_done = True
                else:
                    try:
                        if not self._account(payload, now):
                            continue
                    except UpstreamBroken as exc:
                        failure = exc.reason
                        break
            forward.append(event + SSE_SEPARATOR)
            if saw_done:
                break
        data = b"".join(forward)
        if saw_done:
            # the last events and the end of the chunked body in one write
            self.client.end_stream(data)
            self.done.set_result(None)
            return
        if data:
            self.client.write_chunk(data)
        if failure:
            self._fail(failure)

    def _account(self, payload: bytes, now: float) -> bool:
        """Token timing from one chunk; False if the chunk must not be forwarded."""
        try:
            chunk = orjson.loads(payload)
        except orjson.JSONDecodeError:
            return True
        if not isinstance(chunk, dict):
            return True
        outcome = self.outcome
        if "error" in chunk and chunk["error"]:
            raise UpstreamBroken(
                outcome.backend, f"engine error event: {str(chunk['error'])[:200]}"
            )
        usage = chunk.get("usage")
        if usage:
            take_usage(usage, outcome)
        choices = chunk.get("choices")
        if not choices:
            return not (usage and self.strip_usage)
        choice = choices[0]
        delta = choice.get("delta")
        has_token = (
            bool(choice.get("text"))
            if delta is None
            else bool(
                delta.get("content") or delta.get("reasoning_content") or delta.get("tool_calls")
            )
        )
        if has_token:
            outcome.token_events += 1
            if outcome.first_token_mono_s is None:
                outcome.first_token_mono_s = now
                self.router.on_first_token(self.routed_id, now)
                self.ttft_hist.observe(now - outcome.arrival_mono_s)
            else:
                gap = now - outcome.last_token_mono_s
                outcome.gap_sum_s += gap
                outcome.num_gaps += 1
                self.itl_hist.observe(gap)
            outcome.last_token_mono_s = now
        return True
