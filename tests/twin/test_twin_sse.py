"""SSE events: the pre-rendered fast path is byte-identical to the general JSON path."""

from __future__ import annotations

import json

import pytest

from selfserve.twin.responses import FILLER_WORDS, ChunkWriter, Usage, filler_text


@pytest.mark.parametrize("is_chat", [True, False])
def test_token_events_parse_as_vllm_chunks(is_chat):
    writer = ChunkWriter('cmpl-"1', "model/x", 1700000000, is_chat)
    raw = writer.token_events(0, 5, "length")
    events = [e for e in raw.split(b"\n\n") if e]
    assert len(events) == 5 and all(e.startswith(b"data: ") for e in events)
    chunks = [json.loads(e[6:]) for e in events]
    assert {c["id"] for c in chunks} == {'cmpl-"1'}
    assert [c["choices"][0]["finish_reason"] for c in chunks] == [None] * 4 + ["length"]
    if is_chat:
        assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": FILLER_WORDS[0]}
        text = "".join(c["choices"][0]["delta"]["content"] for c in chunks)
        assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    else:
        text = "".join(c["choices"][0]["text"] for c in chunks)
        assert all(c["choices"][0]["stop_reason"] is None for c in chunks)
    assert text == filler_text(0, 5)


def test_fast_path_equals_general_path_with_usage_removed():
    writer = ChunkWriter("x", "m", 1, False)
    fast = json.loads(writer.token_events(7, 1, None)[6:])
    slow = json.loads(writer.token_events(7, 1, None, Usage(3, 8, 0))[6:])
    slow.pop("usage")
    assert fast == slow


def test_usage_event_has_empty_choices_and_cached_tokens():
    event = json.loads(ChunkWriter("x", "m", 1, True).usage_event(Usage(10, 4, 8))[6:])
    assert event["choices"] == []
    assert event["usage"] == {
        "prompt_tokens": 10,
        "total_tokens": 14,
        "completion_tokens": 4,
        "prompt_tokens_details": {"cached_tokens": 8},
    }
