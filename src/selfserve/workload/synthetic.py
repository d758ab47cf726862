"""Synthetic traffic: single-turn chat, multi-turn sessions, agentic tool loops, long context.

Every generator is a lazy, arrival-ordered `Iterator[Request]` driven by one seed, so a
million requests stream to a log without being held in memory (sessions are merged with a
heap of the sessions still running, not by sorting everything). Prefix structure is real:
requests that share a system prompt share its blocks' hashes, and a session's next turn
extends the previous prompt (previous prompt + answer + new user or tool tokens), so its
leading blocks repeat. Content never shared gets fresh random 63-bit hashes, which are
unique with overwhelming probability — as good as chained hashes of unique text.

`with_long_context` swaps a fraction of any stream's requests for 128K–1M-token prompts
(MRCR-style: a pool of long documents asked about repeatedly). Media parts are added by
`selfserve.workload.synthetic_media.with_media`.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from types import MappingProxyType

import numpy as np

from selfserve.workload.arrivals import ArrivalProcess
from selfserve.workload.lengths import LengthDist
from selfserve.workload.request import Request, Workload

DEFAULT_BLOCK_TOKENS = 64  # coarser than an engine's 16: engines re-hash trace blocks
# Frozen records, so sharing them as defaults is safe.
CHAT_PROMPT = LengthDist.lognormal(1000, 1.0)
CHAT_OUTPUT = LengthDist.lognormal(250, 0.8)


class HashSource:
    """Fresh 63-bit hashes drawn in batches from the generator's RNG (fast, seeded)."""

    __slots__ = ("_rng", "_buffer", "_next")

    def __init__(self, rng: np.random.Generator) -> None:
        self._rng = rng
        self._buffer: list[int] = []
        self._next = 0

    def take(self, count: int) -> tuple[int, ...]:
        if count <= 0:
            return ()
        if self._next + count > len(self._buffer):
            size = max(65536, count)
            self._buffer = self._rng.integers(1, 1 << 63, size=size, dtype=np.int64).tolist()
            self._next = 0
        out = self._buffer[self._next : self._next + count]
        self._next += count
        return tuple(out)


class _Arrivals:
    """Arrival times from a process, in batches, until `count` or `end_s` (else forever)."""

    def __init__(
        self,
        process: ArrivalProcess,
        rng: np.random.Generator,
        count: int | None,
        end_s: float | None,
    ) -> None:
        self.process, self.rng, self.count, self.end_s = process, rng, count, end_s

    def __iter__(self) -> Iterator[float]:
        emitted, t = 0, 0.0
        while True:
            gaps = self.process.gaps_s(self.rng, 4096)
            for time_s in (t + np.cumsum(gaps)).tolist():
                if (self.count is not None and emitted >= self.count) or (
                    self.end_s is not None and time_s >= self.end_s
                ):
                    return
                yield time_s
                emitted += 1
                t = time_s


@dataclass(frozen=True, slots=True)
class SystemPrompts:
    """A pool of shared prompt prefixes (system prompt, tool definitions)."""

    tokens: int = 0
    count: int = 1
    skew: float = 1.0  # Zipf exponent of how often each prefix is used

    def build(self, hashes: HashSource, block_size: int) -> list[tuple[int, ...]]:
        return [hashes.take(self.tokens // block_size) for _ in range(max(self.count, 1))]

    def weights(self) -> np.ndarray:
        ranks = np.arange(1, max(self.count, 1) + 1, dtype=float)
        w = ranks**-self.skew
        return w / w.sum()


def _extend(
    prefix: tuple[int, ...],
    prefix_tokens: int,
    total_tokens: int,
    block_size: int,
    hashes: HashSource,
) -> tuple[int, ...]:
    """Hashes of a prompt whose first `prefix_tokens` tokens are the prefix's."""
    shared = min(prefix_tokens, total_tokens) // block_size
    return prefix[:shared] + hashes.take(total_tokens // block_size - shared)


def chat(
    *,
    rate_per_s: float,
    count: int | None = None,
    duration_s: float | None = None,
    arrival: ArrivalProcess | None = None,
    prompt: LengthDist = CHAT_PROMPT,
    output: LengthDist = CHAT_OUTPUT,
    system: SystemPrompts = SystemPrompts(),
    block_size: int = DEFAULT_BLOCK_TOKENS,
    seed: int = 0,
    tags: dict[str, str] | None = None,
) -> Iterator[Request]:
    """Single-turn requests: `system.tokens` shared tokens, then a user prompt."""
    rng = np.random.default_rng(seed)
    hashes = HashSource(rng)
    process = arrival or ArrivalProcess(rate_per_s)
    prefixes = system.build(hashes, block_size)
    weights = system.weights()
    frozen_tags = MappingProxyType({"class": "chat", **(tags or {})})
    batch = 4096
    user = out = pick = np.empty(0, dtype=np.int64)
    for i, t in enumerate(_Arrivals(process, rng, count, duration_s)):
        k = i % batch
        if k == 0:
            user, out = prompt.sample(rng, batch), output.sample(rng, batch)
            pick = rng.choice(len(prefixes), size=batch, p=weights)
        total = system.tokens + int(user[k])
        yield Request(
            request_id=f"chat-{seed}-{i}",
            arrival_s=t,
            prompt_tokens=total,
            output_tokens=int(out[k]),
            block_hashes=_extend(prefixes[int(pick[k])], system.tokens, total, block_size, hashes),
            block_size=block_size,
            tags=frozen_tags,
        )


@dataclass(frozen=True, slots=True)
class SessionShape:
    """How a multi-turn session or agentic loop evolves.

    Turn k+1's prompt = turn k's prompt + its output + `added` new tokens (a user message,
    or a tool result). The client sends it `think_time_mean_s` (exponential) after the
    answer ends, which we estimate as output tokens × `tpot_s` after the arrival.
    """

    turns_mean: float = 4.0  # geometric number of turns
    first_prompt: LengthDist = LengthDist.lognormal(800, 1.0)
    added: LengthDist = LengthDist.lognormal(300, 1.0)
    output: LengthDist = LengthDist.lognormal(300, 0.8)
    think_time_mean_s: float = 30.0
    tpot_s: float = 0.03
    max_context_tokens: int = 131_072
    system: SystemPrompts = SystemPrompts()
    label: str = "chat"

    @staticmethod
    def agentic() -> SessionShape:
        """Coding-agent loops (kv-cache-tester-like): ~15K-token tools+system prefix shared
        by all sessions, many steps, tool results of ~2K tokens, short outputs, short pauses."""
        return SessionShape(
            turns_mean=40.0,
            first_prompt=LengthDist.lognormal(1500, 1.0),
            added=LengthDist.lognormal(2000, 2.0, maximum=60_000),
            output=LengthDist.lognormal(250, 1.2, maximum=8000),
            think_time_mean_s=5.0,
            tpot_s=0.02,
            max_context_tokens=400_000,
            system=SystemPrompts(tokens=15_000, count=3, skew=1.0),
            label="agentic",
        )


@dataclass(slots=True)
class _Session:
    session_id: str
    turns_left: int
    prompt_tokens: int
    hashes: tuple[int, ...]
    turn: int = 0
    think_s: float = 0.0


def sessions(
    *,
    session_rate_per_s: float,
    num_sessions: int | None = None,
    duration_s: float | None = None,
    arrival: ArrivalProcess | None = None,
    shape: SessionShape = SessionShape(),
    block_size: int = DEFAULT_BLOCK_TOKENS,
    seed: int = 0,
) -> Iterator[Request]:
    """Multi-turn sessions (or agentic loops with `SessionShape.agentic()`), arrival-ordered.

    Sessions start by the arrival process; `duration_s` bounds session *starts* and every
    turn (a session still running at the end is cut there).
    """
    rng = np.random.default_rng(seed)
    hashes = HashSource(rng)
    prefixes = shape.system.build(hashes, block_size)
    weights = shape.system.weights()
    process = arrival or ArrivalProcess(session_rate_per_s)
    starts = iter(_Arrivals(process, rng, num_sessions, duration_s))
    tags = MappingProxyType({"class": shape.label})
    heap: list[tuple[float, int, _Session]] = []
    next_start = next(starts, None)
    started = 0
    end_s = duration_s if duration_s is not None else float("inf")
    while heap or next_start is not None:
        if next_start is not None and (not heap or next_start <= heap[0][0]):
            first = shape.system.tokens + int(shape.first_prompt.sample(rng, 1)[0])
            prefix = prefixes[int(rng.choice(len(prefixes), p=weights))]
            state = _Session(
                session_id=f"{shape.label}-{seed}-{started}",
                turns_left=1 + int(rng.geometric(1.0 / max(shape.turns_mean, 1.0))) - 1,
                prompt_tokens=first,
                hashes=_extend(prefix, shape.system.tokens, first, block_size, hashes),
            )
            heapq.heappush(heap, (next_start, started, state))
            started += 1
            next_start = next(starts, None)
            continue
        t, order, state = heapq.heappop(heap)
        output = int(shape.output.sample(rng, 1)[0])
        yield Request(
            request_id=f"{state.session_id}#{state.turn}",
            arrival_s=t,
            prompt_tokens=state.prompt_tokens,
            output_tokens=output,
            block_hashes=state.hashes,
            block_size=block_size,
            session_id=state.session_id,
            turn=state.turn,
            think_time_s=state.think_s,
            tags=tags,
        )
        state.turns_left -= 1
        grown = state.prompt_tokens + output + int(shape.added.sample(rng, 1)[0])
        if state.turns_left <= 0 or grown > shape.max_context_tokens:
            continue
        state.think_s = (
            float(rng.exponential(shape.think_time_mean_s)) if shape.think_time_mean_s > 0 else 0.0
        )
        next_t = t + output * shape.tpot_s + state.think_s
        if next_t >= end_s:
            continue
        # The previous prompt's full blocks are the shared prefix of the next turn.
        state.hashes = _extend(state.hashes, state.prompt_tokens, grown, block_size, hashes)
        state.prompt_tokens = grown
        state.turn += 1
        heapq.heappush(heap, (next_t, order, state))


def with_long_context(
    stream: Iterable[Request],
    fraction: float,
    *,
    low_tokens: int = 131_072,
    high_tokens: int = 1_048_576,
    num_documents: int | None = 64,
    question_tokens: int = 200,
    seed: int = 0,
) -> Iterator[Request]:
    """Replace `fraction` of requests by long-context ones (log-uniform size in [low, high]).

    With `num_documents`, prompts are one of that many long documents followed by a fresh
    question, so repeated questions over a document share its prefix (the multi-round
    coreference-retrieval load a 1M-context model sees); None makes every document unique.
    Arrival time and output length stay those of the replaced request.
    """
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"long-context fraction must be within [0, 1], got {fraction}")
    rng = np.random.default_rng(seed + 7919)
    hashes = HashSource(rng)
    sizes = LengthDist.loguniform(low_tokens, high_tokens)
    documents: dict[int, tuple[int, tuple[int, ...] | None]] = {}
    tags = MappingProxyType({"class": "long-context"})
    for request in stream:
        if fraction == 0.0 or rng.random() >= fraction:
            yield request
            continue
        bs = request.block_size
        if num_documents:
            doc = int(rng.integers(0, num_documents))
            if doc not in documents:
                size = int(sizes.sample(rng, 1)[0])
                documents[doc] = (size, None)
            size, doc_hashes = documents[doc]
            if doc_hashes is None:  # hashed lazily: a pool of 1M-token documents is big
                doc_hashes = hashes.take(size // bs)
                documents[doc] = (size, doc_hashes)
            total = size + question_tokens
            block_hashes = _extend(doc_hashes, size, total, bs, hashes)
        else:
            total = int(sizes.sample(rng, 1)[0])
            block_hashes = hashes.take(total // bs)
        yield replace(
            request,
            prompt_tokens=total,
            block_hashes=block_hashes,
            session_id=None,
            turn=0,
            think_time_s=0.0,
            tags=tags,
        )


def to_workload(
    stream: Iterable[Request], name: str = "synthetic", block_size: int = DEFAULT_BLOCK_TOKENS
) -> Workload:
    """Materialise a stream (fine for tests and simulation; stream large ones to a log)."""
    requests = list(stream)
    if not requests:
        raise ValueError(f"{name}: the generator produced no request (rate/duration too small?)")
    return Workload(requests=requests, name=name, source="synthetic", block_size=block_size)
