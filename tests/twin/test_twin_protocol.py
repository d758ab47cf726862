"""Request validation: any JSON body is either a valid request or an OpenAI-style 4xx."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from selfserve.twin.errors import ApiError, context_length_error
from selfserve.twin.protocol import parse_chat, parse_completion

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-5, 10**6)
    | st.floats(allow_nan=False)
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=20,
)
keys = st.sampled_from(
    ["model", "prompt", "messages", "max_tokens", "stream", "stream_options", "n", "temperature",
     "top_p", "ignore_eos", "min_tokens", "stop", "max_completion_tokens"]
)  # fmt: skip


@settings(max_examples=100, deadline=None)
@given(st.one_of(json_values, st.dictionaries(keys, json_values, max_size=6)))
def test_any_body_is_a_request_or_a_4xx_error(body):
    for parse in (parse_completion, parse_chat):
        try:
            request = parse(body, "m")
        except ApiError as error:
            assert error.status in (400, 404)
            assert error.message
        else:
            assert request.model == "m"
            assert request.max_tokens is None or request.max_tokens >= 1


def test_valid_chat_with_parts_and_stream_options():
    request = parse_chat(
        {
            "model": "m",
            "messages": [
                {"role": "system", "content": "be brief"},
                {"role": "user", "content": [{"type": "text", "text": "hi"}]},
            ],
            "max_completion_tokens": 9,
            "stream": True,
            "stream_options": {"include_usage": True},
            "ignore_eos": True,
        },
        "m",
    )
    assert request.kind == "chat" and request.max_tokens == 9
    assert request.stream and request.include_usage and request.ignore_eos
    assert len(request.prompt_token_ids) > 3


def test_context_length_messages_follow_vllm():
    prompt_only = context_length_error(4096, 5000, None)
    assert prompt_only.message.startswith("This model's maximum context length is 4096 tokens.")
    with_budget = context_length_error(4096, 4000, 200)
    assert "'max_tokens' or 'max_completion_tokens' is too large: 200" in with_budget.message
    assert "(200 > 4096 - 4000)" in with_budget.message
