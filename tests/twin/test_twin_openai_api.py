"""A twin on the wire: the official `openai` client, vLLM's errors, SSE format, metrics."""

from __future__ import annotations

import base64
import concurrent.futures
import json
import time
import urllib.error
import urllib.request

import openai
import pytest

from selfserve.bench.prompts import synth_png, synth_wav, words_text
from selfserve.twin.launch import spawn_twins

MODEL = "llama-3.1-8b"


class _Reply:
    def __init__(self, status: int, body: bytes) -> None:
        self.status_code = status
        self.content = body
        self.text = body.decode()

    def json(self):
        return json.loads(self.content)


def _call(url: str, data: bytes | None = None, timeout: float = 10) -> _Reply:
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return _Reply(response.status, response.read())
    except urllib.error.HTTPError as exc:
        return _Reply(exc.code, exc.read())


def http_get(url: str, timeout: float = 10) -> _Reply:
    return _call(url, None, timeout)


def http_post(
    url: str, *, json=None, content: bytes | None = None, headers=None, timeout: float = 10
) -> _Reply:
    del headers
    return _call(url, content if content is not None else _dumps(json), timeout)


def _dumps(value) -> bytes:
    return json.dumps(value).encode()


@pytest.fixture(scope="module")
def twin():
    # A small body limit so the 413 path is testable without megabytes of JSON.
    with spawn_twins(1, MODEL, "h100", extra_args=["--max-body-bytes", "2000000"]) as twins:
        yield twins[0]


@pytest.fixture(scope="module")
def client(twin):
    return openai.OpenAI(base_url=twin.url + "/v1", api_key="unused", max_retries=0)


def test_chat_non_streaming_returns_exact_length_and_usage(client):
    reply = client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "Say hello to the twin."}],
        max_tokens=7,
        extra_body={"ignore_eos": True},
    )
    assert reply.object == "chat.completion"
    assert reply.choices[0].finish_reason == "length"
    assert reply.choices[0].message.role == "assistant"
    assert reply.usage.completion_tokens == 7
    # content tokens + 15 template tokens (see chat_overhead_tokens)
    assert reply.usage.prompt_tokens == 7 + 15
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + 7


def test_chat_streaming_sends_one_chunk_per_token_then_usage(client):
    stream = client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "Count to five."}],
        max_tokens=5,
        stream=True,
        stream_options={"include_usage": True},
        extra_body={"ignore_eos": True},
    )
    chunks = list(stream)
    token_chunks = [c for c in chunks if c.choices and c.choices[0].delta.content]
    assert len(token_chunks) == 5
    assert token_chunks[0].choices[0].delta.role == "assistant"
    assert token_chunks[-1].choices[0].finish_reason == "length"
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 5
    assert all(c.object == "chat.completion.chunk" for c in chunks)


def test_completions_stream_and_non_stream_agree_on_text(client):
    full = client.completions.create(
        model=MODEL, prompt="The twin", max_tokens=6, extra_body={"ignore_eos": True}
    )
    parts = client.completions.create(
        model=MODEL, prompt="The twin", max_tokens=6, stream=True, extra_body={"ignore_eos": True}
    )
    streamed = "".join(c.choices[0].text for c in parts if c.choices)
    assert full.object == "text_completion"
    assert streamed == full.choices[0].text
    assert full.usage.completion_tokens == 6
    assert full.usage.prompt_tokens == 2  # "The", " twin"


def test_without_ignore_eos_output_stops_at_or_before_max_tokens(client):
    reply = client.completions.create(model=MODEL, prompt="hi", max_tokens=3)
    assert 1 <= reply.usage.completion_tokens <= 3
    assert reply.choices[0].finish_reason in ("stop", "length")


def test_shared_prefix_is_reported_as_cached_tokens(client):
    prefix = words_text(1234, 400)
    first = client.completions.create(model=MODEL, prompt=prefix + words_text(1, 50), max_tokens=1)
    second = client.completions.create(model=MODEL, prompt=prefix + words_text(2, 50), max_tokens=1)
    assert first.usage.prompt_tokens_details.cached_tokens == 0
    # 400 shared tokens = 25 full 16-token blocks
    assert second.usage.prompt_tokens_details.cached_tokens == 400


def _image_message(pixels: int, content_hash: int) -> list[dict]:
    url = "data:image/png;base64," + base64.b64encode(synth_png(pixels, content_hash)).decode()
    return [
        {
            "role": "user",
            "content": [
                {"type": "image_url", "image_url": {"url": url}},
                {"type": "text", "text": "What is in the image?"},
            ],
        }
    ]


def test_text_only_model_refuses_images_naming_the_reason(client):
    with pytest.raises(openai.BadRequestError, match="text-only"):
        client.chat.completions.create(
            model=MODEL, messages=_image_message(448 * 448, 1), max_tokens=1
        )


def test_media_parts_become_catalog_media_tokens_and_repeats_hit_the_cache():
    from selfserve.catalog import get_model

    omni = "qwen2.5-omni-7b"
    spec = get_model(omni)
    image_tokens = spec.media_tokens("image", pixels=448 * 448)
    audio_tokens = spec.media_tokens("audio", seconds=2.0)
    wav = base64.b64encode(synth_wav(2.0, 5)).decode()
    with spawn_twins(1, omni, "h100") as twins:
        omni_client = openai.OpenAI(base_url=twins[0].url + "/v1", api_key="unused", max_retries=0)
        text_only = omni_client.chat.completions.create(
            model=omni,
            messages=[{"role": "user", "content": "What is in the image?"}],
            max_tokens=1,
        )
        messages = _image_message(448 * 448, 99)
        messages[0]["content"].append(
            {"type": "input_audio", "input_audio": {"data": wav, "format": "wav"}}
        )
        first = omni_client.chat.completions.create(model=omni, messages=messages, max_tokens=1)
        second = omni_client.chat.completions.create(model=omni, messages=messages, max_tokens=1)
        other = omni_client.chat.completions.create(
            model=omni, messages=_image_message(448 * 448, 100), max_tokens=1
        )
    assert first.usage.prompt_tokens == text_only.usage.prompt_tokens + image_tokens + audio_tokens
    # only the shared leading 16-token text block was cached before the media
    assert first.usage.prompt_tokens_details.cached_tokens == 16
    # the image repeats byte-for-byte, so its tokens come from the cache the second time
    assert second.usage.prompt_tokens_details.cached_tokens >= image_tokens
    # a different image (other content hash) after a short text prefix: no media hit
    assert other.usage.prompt_tokens_details.cached_tokens < image_tokens


@pytest.mark.parametrize(
    ("body", "status", "needle"),
    [
        ({"model": "nope", "prompt": "x"}, 404, "does not exist"),
        ({"model": MODEL, "prompt": "x", "max_tokens": 0}, 400, "max_tokens"),
        ({"model": MODEL, "prompt": "x", "n": 2}, 400, "n must be 1"),
        ({"model": MODEL, "prompt": "x", "temperature": -1}, 400, "temperature"),
        ({"model": MODEL, "prompt": 5}, 400, "prompt"),
        ({"model": MODEL, "prompt": "x", "stream_options": {"include_usage": True}}, 400, "stream"),
        ({"model": MODEL, "prompt": "x", "max_tokens": 10**7}, 400, "maximum context length"),
    ],
)
def test_invalid_completions_get_openai_style_errors(twin, body, status, needle):
    response = http_post(twin.url + "/v1/completions", json=body, timeout=10)
    assert response.status_code == status
    error = response.json()["error"]
    assert error["code"] == status and needle in error["message"]


def test_chat_errors_name_the_field(twin):
    response = http_post(
        twin.url + "/v1/chat/completions",
        json={"model": MODEL, "messages": [{"role": "wizard", "content": "x"}]},
        timeout=10,
    )
    assert response.status_code == 400
    assert "messages[0].role" in response.json()["error"]["message"]


def test_malformed_json_is_400_and_oversized_body_is_413(twin):
    bad = http_post(
        twin.url + "/v1/chat/completions",
        content=b"{not json",
        headers={"Content-Type": "application/json"},
        timeout=10,
    )
    assert bad.status_code == 400 and bad.json()["error"]["type"] == "BadRequestError"
    big = http_post(
        twin.url + "/v1/completions",
        json={"model": MODEL, "prompt": "x" * 3_000_000},
        timeout=30,
    )
    assert big.status_code == 413


def test_prompt_beyond_context_is_rejected_with_vllms_wording(twin):
    models = http_get(twin.url + "/v1/models", timeout=10).json()
    max_len = models["data"][0]["max_model_len"]
    response = http_post(
        twin.url + "/v1/completions",
        json={"model": MODEL, "prompt": list(range(max_len + 5))},
        timeout=30,
    )
    assert response.status_code == 400
    message = response.json()["error"]["message"]
    assert message.startswith(f"This model's maximum context length is {max_len} tokens.")
    assert f"your request has {max_len + 5} input tokens" in message


def test_health_and_models(twin):
    assert http_get(twin.url + "/health", timeout=10).status_code == 200
    models = http_get(twin.url + "/v1/models", timeout=10).json()
    assert models["data"][0]["id"] == MODEL


def _gauge(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} not in /metrics")


def test_metrics_use_vllm_names_and_count_requests(twin, client):
    client.completions.create(
        model=MODEL, prompt="count me", max_tokens=4, extra_body={"ignore_eos": True}
    )
    text = http_get(twin.url + "/metrics", timeout=10).text
    for name in (
        "vllm:num_requests_running",
        "vllm:num_requests_waiting",
        "vllm:kv_cache_usage_perc",
        "vllm:prefix_cache_queries_total",
        "vllm:prefix_cache_hits_total",
        "vllm:num_preemptions_total",
        "vllm:prompt_tokens_total",
        "vllm:generation_tokens_total",
        "vllm:time_to_first_token_seconds_bucket",
        "vllm:inter_token_latency_seconds_bucket",
        "vllm:time_per_output_token_seconds_bucket",
        "vllm:e2e_request_latency_seconds_bucket",
    ):
        assert name in text, name
    assert 'model_name="llama-3.1-8b"' in text
    assert _gauge(text, "vllm:generation_tokens_total") >= 4
    assert _gauge(text, "vllm:prefix_cache_hits_total") >= 400  # from the shared-prefix test


def test_overload_queues_requests_and_metrics_show_the_queue(tmp_path):
    # 4 sequences at a time; 24 requests of 64 tokens each must wait, not fail.
    lag_file = tmp_path / "lag.json"
    extra = ["--max-num-seqs", "4", "--json", str(lag_file)]
    with spawn_twins(1, MODEL, "h100", extra_args=extra) as twins:
        url = twins[0].url
        client = openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0)

        def one(i: int) -> int:
            reply = client.completions.create(
                model=MODEL, prompt=f"request {i}", max_tokens=64, extra_body={"ignore_eos": True}
            )
            return reply.usage.completion_tokens

        with concurrent.futures.ThreadPoolExecutor(24) as pool:
            futures = [pool.submit(one, i) for i in range(24)]
            peak_waiting = 0.0
            deadline = time.monotonic() + 30
            while not all(f.done() for f in futures) and time.monotonic() < deadline:
                text = http_get(url + "/metrics", timeout=10).text
                peak_waiting = max(peak_waiting, _gauge(text, "vllm:num_requests_waiting"))
                assert _gauge(text, "vllm:num_requests_running") <= 4
                time.sleep(0.02)
            lengths = [f.result() for f in futures]
        assert lengths == [64] * 24
        assert peak_waiting >= 10
    # on SIGTERM the twin writes its schedule-lag statistics
    lag = json.loads(lag_file.read_text())["lag"]
    assert lag["steps"] >= 24 * 64 // 4
