"""Prompts rebuilt from a trace keep its prefix structure under selfserve's tokenizer."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from selfserve.bench.prompts import PromptBuilder, synth_png, synth_wav, words_text
from selfserve.twin.media import image_pixels, wav_seconds
from selfserve.workload.request import MediaPart, Request
from selfserve.workload.tokenize import block_hashes, chat_overhead_tokens, count_tokens, tokenize


def _request(
    rid: str, hashes: tuple[int, ...], prompt_tokens: int, block_size: int = 64
) -> Request:
    return Request(rid, 0.0, prompt_tokens, 8, block_hashes=hashes, block_size=block_size)


@settings(max_examples=40, deadline=None)
@given(
    shared=st.integers(0, 4),
    extra_a=st.integers(0, 3),
    extra_b=st.integers(0, 3),
    tail_a=st.integers(0, 63),
    tail_b=st.integers(0, 63),
)
def test_shared_trace_blocks_become_shared_engine_blocks(shared, extra_a, extra_b, tail_a, tail_b):
    builder = PromptBuilder(model="m")
    common = tuple(range(1, shared + 1))
    a = _request(
        "a", common + tuple(100 + i for i in range(extra_a)), 64 * (shared + extra_a) + tail_a
    )
    b = _request(
        "b", common + tuple(200 + i for i in range(extra_b)), 64 * (shared + extra_b) + tail_b
    )
    text_a, text_b = builder.prompt_text(a), builder.prompt_text(b)
    ids_a, ids_b = tokenize(text_a), tokenize(text_b)
    assert len(ids_a) == a.prompt_tokens and len(ids_b) == b.prompt_tokens
    hashes_a, hashes_b = block_hashes(ids_a, 16), block_hashes(ids_b, 16)
    common_blocks = 0
    for x, y in zip(hashes_a, hashes_b, strict=False):
        if x != y:
            break
        common_blocks += 1
    # every shared 64-token trace block is four shared 16-token engine blocks ...
    assert common_blocks >= 4 * shared
    # ... and a distinct next trace block diverges at once (random words collide ~never)
    if extra_a and extra_b:
        assert common_blocks == 4 * shared


def test_prompt_has_exact_token_count_beyond_hashed_blocks():
    builder = PromptBuilder(model="m")
    request = _request("x", (7,), 64 + 37)
    assert count_tokens(builder.prompt_text(request)) == 101


def test_words_are_deterministic_per_seed():
    assert words_text(42, 10) == words_text(42, 10)
    assert words_text(42, 10) != words_text(43, 10)
    assert count_tokens(words_text(42, 10)) == 10


def test_body_forces_exact_output_length_and_streams_usage():
    builder = PromptBuilder(model="m")
    body = builder.body(_request("x", (), 20))
    assert body["max_tokens"] == 8 and body["ignore_eos"] is True
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}
    assert builder.path(_request("x", (), 20)) == "/v1/completions"


def test_chat_endpoint_subtracts_the_template_tokens():
    builder = PromptBuilder(model="m", endpoint="chat")
    body = builder.body(_request("x", (), 100))
    text = body["messages"][0]["content"][-1]["text"]
    assert count_tokens(text) + chat_overhead_tokens(["user"]) == 100


def test_media_parts_are_real_files_of_the_traced_size_and_repeat_by_hash():
    builder = PromptBuilder(model="m")
    image = MediaPart("image", 300, content_hash=5, pixels=640 * 640)
    audio = MediaPart("audio", 50, content_hash=6, seconds=3.0)
    request = Request("m", 0.0, 40, 4, media=(image, audio))
    body = builder.body(request)
    assert builder.path(request) == "/v1/chat/completions"
    parts = body["messages"][0]["content"]
    assert [p["type"] for p in parts] == ["image_url", "input_audio", "text"]
    assert image_pixels(synth_png(640 * 640, 5)) == 640 * 640
    assert abs(wav_seconds(synth_wav(3.0, 6)) - 3.0) < 1e-3
    assert synth_png(640 * 640, 5) == synth_png(640 * 640, 5)
    assert synth_png(640 * 640, 5) != synth_png(640 * 640, 6)
