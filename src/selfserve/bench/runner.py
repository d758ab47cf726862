"""Replay a workload against an OpenAI-compatible endpoint and time every token.

The dispatcher walks the workload in arrival order and sends each request at its
(rate-scaled) arrival time. A later turn of a session waits for the previous turn to finish
and then for its think time (scaled the same way), so closed-loop agentic traffic keeps
its shape on a slower or faster server. Requests stream (``stream=True`` with
``include_usage``) over one pooled aiohttp session; each outcome records TTFT, every ITL,
E2E, tokens, cached tokens and errors. The run is bounded by `max_requests` and
`duration_s` (requests still running at the deadline are cancelled and counted as
incomplete), honours `max_concurrency`, and stops cleanly when `stop_event` is set or the
task is cancelled.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence

import aiohttp
import orjson

from selfserve.bench.prompts import PromptBuilder
from selfserve.bench.result import INCOMPLETE, BenchResult, RequestOutcome
from selfserve.workload.request import Request, Workload

DEFAULT_REQUEST_TIMEOUT_S = 3600.0
MAX_CONNECTIONS = 1024


class BenchTargetError(RuntimeError):
    """The target cannot be benchmarked (unreachable, or no model to ask for)."""


async def discover_model(session: aiohttp.ClientSession, base_url: str) -> str:
    """The first model id from the target's `/v1/models`."""
    try:
        async with session.get(f"{base_url}/v1/models") as response:
            if response.status != 200:
                raise BenchTargetError(
                    f"{base_url}/v1/models answered {response.status}; pass the model name explicitly"
                )
            data = orjson.loads(await response.read())
    except aiohttp.ClientError as exc:
        raise BenchTargetError(f"cannot reach {base_url}: {exc}") from exc
    models = data.get("data") or []
    if not models:
        raise BenchTargetError(
            f"{base_url}/v1/models lists no model; pass the model name explicitly"
        )
    return str(models[0]["id"])


def _error_message(raw: bytes) -> str:
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return raw[:200].decode(errors="replace")
    error = data.get("error", data) if isinstance(data, dict) else data
    if isinstance(error, dict):
        return str(error.get("message", error))
    return str(error)


async def send_request(
    session: aiohttp.ClientSession,
    url: str,
    body: dict | bytes,
    outcome: RequestOutcome,
    t0_s: float,
) -> None:
    """POST one streaming request and record its timings into `outcome`.

    The body is read in whatever pieces arrive (cheaper than line by line); every SSE
    event in one piece gets that piece's arrival time, which is when the client saw it.
    """
    clock = time.perf_counter
    start = clock()
    outcome.start_s = start - t0_s
    state = _StreamState(start, outcome)
    try:
        data = body if isinstance(body, bytes) else orjson.dumps(body)
        async with session.post(url, data=data, headers=_JSON_HEADERS) as response:
            outcome.status = response.status
            if response.status != 200:
                outcome.error = _error_message(await response.read())
                return
            pending = b""
            # Reading to the end of the body (past [DONE]) lets the connection be reused.
            async for piece in response.content.iter_any():
                now = clock()
                events = (pending + piece).split(b"\n\n")
                pending = events.pop()
                for event in events:
                    state.on_event(event, now)
            if pending.strip():
                state.on_event(pending, clock())
    except (TimeoutError, aiohttp.ClientError, orjson.JSONDecodeError) as exc:
        outcome.error = f"{type(exc).__name__}: {exc}"
        return
    if state.last_s is None:
        outcome.error = "the stream ended without a token"
        return
    outcome.e2e_s = state.last_s - start
    outcome.output_tokens = state.usage_tokens if state.usage_tokens is not None else state.tokens


_JSON_HEADERS = {"Content-Type": "application/json"}


class _StreamState:
    """Parses SSE events of one response into token times and usage."""

    __slots__ = ("start_s", "outcome", "last_s", "tokens", "usage_tokens")

    def __init__(self, start_s: float, outcome: RequestOutcome) -> None:
        self.start_s = start_s
        self.outcome = outcome
        self.last_s: float | None = None
        self.tokens = 0
        self.usage_tokens: int | None = None

    def on_event(self, event: bytes, now: float) -> None:
        event = event.strip()
        if not event.startswith(b"data:"):
            return
        payload = event[5:].strip()
        if payload == b"[DONE]":
            return
        chunk = orjson.loads(payload)
        usage = chunk.get("usage")
        if usage:
            self.usage_tokens = usage.get("completion_tokens")
            self.outcome.server_prompt_tokens = usage.get("prompt_tokens")
            details = usage.get("prompt_tokens_details") or {}
            if details.get("cached_tokens") is not None:
                self.outcome.cached_tokens = int(details["cached_tokens"])
        choices = chunk.get("choices")
        if not choices:
            return
        choice = choices[0]
        text = choice.get("text")
        if text is None:
            text = (choice.get("delta") or {}).get("content")
        if not text:
            return
        self.tokens += 1
        if self.last_s is None:
            self.outcome.ttft_s = now - self.start_s
        else:
            self.outcome.itl_s.append(now - self.last_s)
        self.last_s = now


class _SessionChain:
    """Per session: when the previous turn finished (an event + its completion time)."""

    __slots__ = ("done", "finished_s")

    def __init__(self) -> None:
        self.done = asyncio.Event()
        self.finished_s = 0.0


async def arun_bench(
    target_url: str | Sequence[str],
    workload: Workload,
    *,
    rate_scale: float = 1.0,
    duration_s: float | None = None,
    max_requests: int | None = None,
    max_concurrency: int | None = None,
    slo=None,
    model: str | None = None,
    endpoint: str = "completions",
    time_scale: float = 1.0,
    progress: bool = True,
    stop_event: asyncio.Event | None = None,
    on_outcome: Callable[[RequestOutcome], None] | None = None,
    request_timeout_s: float = DEFAULT_REQUEST_TIMEOUT_S,
) -> BenchResult:
    """Replay `workload` against `target_url`; see the module docstring.

    Several target URLs are used round-robin by the client (request k goes to target
    k mod n), which is the simulator's `round-robin` routing without a gateway.

    Arrivals are sped up by ``rate_scale * time_scale``; `time_scale` also converts measured
    wall latencies to model time in the result (use it with twins run at ``--time-scale``).
    `slo` is accepted for symmetry with `run_bench`; pass it to `BenchResult.summary`.
    """
    del slo  # evaluated in BenchResult.summary
    if rate_scale <= 0 or time_scale <= 0:
        raise ValueError(f"rate_scale and time_scale must be > 0, got {rate_scale}, {time_scale}")
    targets = [target_url] if isinstance(target_url, str) else list(target_url)
    if not targets:
        raise ValueError("no target URL given")
    base_urls = [url.rstrip("/").removesuffix("/v1") for url in targets]
    requests: list[Request] = list(workload.requests)
    if max_requests is not None:
        requests = requests[:max_requests]
    speedup = rate_scale * time_scale
    start_arrival_s = requests[0].arrival_s if requests else 0.0
    # A bounded pool: past MAX_CONNECTIONS in flight, requests wait for a free connection
    # (reused, keep-alive) instead of opening ever more sockets, which costs the client
    # more CPU than the requests themselves when the target falls behind.
    connector = aiohttp.TCPConnector(
        limit=max_concurrency or MAX_CONNECTIONS, ttl_dns_cache=300, keepalive_timeout=60
    )
    timeout = aiohttp.ClientTimeout(total=request_timeout_s, sock_connect=30)
    outcomes: list[RequestOutcome] = []
    tasks: set[asyncio.Task] = set()
    semaphore = asyncio.Semaphore(max_concurrency) if max_concurrency else None
    chains: dict[str, _SessionChain] = {}
    bar = _progress(progress, len(requests))
    cancelled = False
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        if model is None:
            model = await discover_model(session, base_urls[0])
        builder = PromptBuilder(model=model, endpoint=endpoint)
        t0_s = time.perf_counter()

        async def one(
            request: Request,
            outcome: RequestOutcome,
            url: str,
            payload: bytes,
            previous: _SessionChain | None,
            mine: _SessionChain | None,
        ) -> None:
            try:
                if previous is not None:
                    await previous.done.wait()
                    # With a think time the turn follows its predecessor's end; without
                    # one it keeps its trace arrival unless the predecessor is still running.
                    if request.think_time_s > 0:
                        ready_s = previous.finished_s + request.think_time_s / speedup
                    else:
                        ready_s = max(outcome.scheduled_s, previous.finished_s)
                    outcome.scheduled_s = ready_s
                    wait_s = ready_s - (time.perf_counter() - t0_s)
                    if wait_s > 0:
                        await asyncio.sleep(wait_s)
                if semaphore is None:
                    await send_request(session, url, payload, outcome, t0_s)
                else:
                    async with semaphore:
                        await send_request(session, url, payload, outcome, t0_s)
            finally:
                if mine is not None:
                    mine.finished_s = time.perf_counter() - t0_s
                    mine.done.set()
            if bar is not None:
                bar.advance(1, ok=outcome.ok)
            if on_outcome is not None:
                on_outcome(outcome)

        async def dispatch() -> None:
            for request in requests:
                scheduled_s = (request.arrival_s - start_arrival_s) / speedup
                if duration_s is not None and scheduled_s > duration_s:
                    break
                previous = chains.get(request.session_id) if request.session_id else None
                # Build the body before its send time, so building (milliseconds for a
                # long prompt) does not delay the send.
                base_url = base_urls[len(outcomes) % len(base_urls)]
                url = base_url + builder.path(request)
                payload = orjson.dumps(builder.body(request))
                wait_s = scheduled_s - (time.perf_counter() - t0_s)
                if previous is None and wait_s > 0:
                    await asyncio.sleep(wait_s)
                mine = None
                if request.session_id:
                    mine = _SessionChain()
                    chains[request.session_id] = mine
                outcome = RequestOutcome(
                    request_id=request.request_id,
                    scheduled_s=scheduled_s,
                    prompt_tokens=request.total_prompt_tokens,
                    expected_output_tokens=request.output_tokens,
                )
                outcomes.append(outcome)
                task = asyncio.create_task(one(request, outcome, url, payload, previous, mine))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
                # Let the new task start sending before the next body of a burst is built.
                await asyncio.sleep(0)
            while tasks:
                await asyncio.gather(*list(tasks), return_exceptions=True)

        runner = asyncio.create_task(dispatch())
        waiters = [runner]
        if stop_event is not None:
            waiters.append(asyncio.create_task(stop_event.wait()))
        deadline_s = (
            None if duration_s is None else max(0.0, duration_s - (time.perf_counter() - t0_s))
        )
        try:
            done, _ = await asyncio.wait(
                waiters, timeout=deadline_s, return_when=asyncio.FIRST_COMPLETED
            )
            cancelled = runner not in done
        except asyncio.CancelledError:
            await _cancel_all(runner, tasks, waiters)
            if bar is not None:
                bar.close()
            raise
        await _cancel_all(runner, tasks, waiters)
        finished_s = time.perf_counter() - t0_s
    if bar is not None:
        bar.close()
    for outcome in outcomes:
        if outcome.error is None and outcome.e2e_s is None:
            outcome.error = f"{INCOMPLETE}: stopped before it finished"
    last_end = [o.start_s + o.e2e_s for o in outcomes if o.ok]
    duration = max(last_end) if last_end else finished_s
    first_start = min((o.start_s for o in outcomes if o.start_s > 0), default=0.0)
    return BenchResult(
        target=",".join(targets),
        model=model or "",
        outcomes=outcomes,
        duration_s=max(1e-9, duration - first_start),
        time_scale=time_scale,
        rate_scale=rate_scale,
        max_concurrency=max_concurrency,
        cancelled=cancelled,
        workload_name=workload.name,
    )


async def _cancel_all(
    runner: asyncio.Task, tasks: set[asyncio.Task], waiters: list[asyncio.Task]
) -> None:
    pending = [runner, *tasks, *waiters]
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)


class _Bar:
    """A rich progress bar counting finished requests and errors."""

    def __init__(self, total: int) -> None:
        from selfserve.cli.common import progress

        self.progress = progress(transient=True)
        self.progress.start()
        self.errors = 0
        self.task = self.progress.add_task("bench", total=total, status="")

    def advance(self, count: int, ok: bool) -> None:
        self.errors += not ok
        self.progress.update(
            self.task, advance=count, status=f"{self.errors} errors" if self.errors else ""
        )

    def close(self) -> None:
        self.progress.stop()


def _progress(enabled: bool, total: int) -> _Bar | None:
    return _Bar(total) if enabled else None


def run_bench(target_url: str, workload: Workload, **options) -> BenchResult:
    """Synchronous `arun_bench` (its own event loop, uvloop when available)."""
    try:
        import uvloop

        loop_factory = uvloop.new_event_loop
    except ImportError:  # pragma: no cover
        loop_factory = None
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        return runner.run(arun_bench(target_url, workload, **options))
