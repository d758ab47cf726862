"""The LLM proposer against a tiny local OpenAI-compatible server: hostile, garbled and
valid answers all go through the parser; only valid expressions become candidates."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator

import pytest
from aiohttp import web

from selfserve.tune.proposer import LLMProposer, build_prompt, extract_candidates, parse_answer

HOSTILE = (
    "Sure! Here are ideas:\n"
    "score: __import__('os').system('touch /tmp/pwned')\n"
    "score: open('/etc/passwd').read()\n"
    "score: in_flight_requests +\n"
    "score: 42\n"
)
VALID = (
    "```\n"
    "score: in_flight_requests + 0.002 * queued_prefill_tokens\n"
    "score: max(total_prompt_tokens - prefix_hit_tokens, 0) * (in_flight_requests + 1)\n"
    "```\n"
)


class FakeLLM:
    """Serves canned answers on 127.0.0.1 and records what it was asked."""

    def __init__(self, answers: list[object]):
        self.answers = list(answers)
        self.requests: list[dict] = []
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    async def _handle(self, request: web.Request) -> web.Response:
        self.requests.append(await request.json())
        answer = self.answers.pop(0) if self.answers else "score: in_flight_requests"
        if isinstance(answer, bytes):
            return web.Response(body=answer, content_type="application/json")
        return web.json_response(
            {"choices": [{"message": {"role": "assistant", "content": answer}}]}
        )

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._handle)
        self._runner = web.AppRunner(app)
        self._loop.run_until_complete(self._runner.setup())
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        self._loop.run_until_complete(site.start())
        self.port = site._server.sockets[0].getsockname()[1]
        self._ready.set()
        self._loop.run_forever()

    def __enter__(self) -> FakeLLM:
        self._thread.start()
        assert self._ready.wait(10)
        return self

    def __exit__(self, *exc) -> None:
        asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)


@pytest.fixture
def fake_llm() -> Iterator[FakeLLM]:
    with FakeLLM([HOSTILE, VALID, b"{not json", "no candidates here"]) as server:
        yield server


def test_hostile_answer_yields_only_rejections_and_valid_answer_yields_candidates(fake_llm):
    proposer = LLMProposer(f"http://127.0.0.1:{fake_llm.port}/v1", "tiny", timeout_s=10)
    best = [("in_flight_requests", 1.5)]
    hostile = proposer.propose(best, "capacity")
    assert hostile.accepted == []
    assert len(hostile.rejected) == 4
    reasons = " ".join(why for _, why in hostile.rejected)
    assert "unexpected character" in reasons and "constant" in reasons
    valid = proposer.propose(best, "capacity")
    assert [c.text for c in valid.accepted] == [
        "in_flight_requests + 0.002 * queued_prefill_tokens",
        "max(total_prompt_tokens - prefix_hit_tokens, 0) * (in_flight_requests + 1)",
    ]
    assert all(c.origin == "llm" for c in valid.accepted)
    garbled = proposer.propose(best, "capacity")
    assert garbled.accepted == [] and "JSONDecodeError" in (garbled.error or "")
    empty = proposer.propose(best, "capacity")
    assert empty.accepted == [] and "no 'score" in empty.error
    # the model was told the features, the grammar and the best so far
    prompt = fake_llm.requests[0]["messages"][0]["content"]
    assert "prefix_hit_tokens" in prompt and "in_flight_requests" in prompt and "1.5" in prompt
    assert fake_llm.requests[0]["model"] == "tiny"


def test_unreachable_endpoint_is_an_error_not_an_exception():
    proposer = LLMProposer("http://127.0.0.1:9", "tiny", timeout_s=2)
    proposal = proposer.propose([("in_flight_requests", 1.0)], "capacity")
    assert proposal.accepted == [] and proposal.error


def test_extraction_reads_fenced_and_bulleted_lines():
    text = "1. score: a\n- score = b\nnoise score: c\n```python\nscore: d\n```"
    assert extract_candidates(text) == ["d"]  # fenced blocks win when present
    assert extract_candidates("1. score: a\n- score = b") == ["a", "b"]
    assert parse_answer("score: kv_cache_usage").accepted[0].text == "kv_cache_usage"
    assert "LOWEST" in build_prompt([], "capacity", 3)
