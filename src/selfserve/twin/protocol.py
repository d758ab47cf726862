"""Parse and validate OpenAI `/v1/completions` and `/v1/chat/completions` bodies.

The result, `TwinRequest`, holds what the engine model needs (prompt token ids under
selfserve's tokenizer rule, media parts, the output budget) and what the response needs
(stream flags, model name). Every refusal is an `ApiError` naming the field, as vLLM's
pydantic validation does (status 400 for invalid values, 404 for an unknown model).

Chat messages are rendered with a fixed template, ``<|role|>\\n{content}\\n`` per message
followed by ``<|assistant|>\\n``, so a chat prompt costs its content plus a few template
tokens; `selfserve.workload.tokenize.chat_overhead_tokens(roles)` tells a client how many.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from selfserve.twin.errors import ApiError
from selfserve.twin.media import MediaInput, parse_media_part
from selfserve.workload.tokenize import (
    CHAT_GENERATION_PROMPT,
    CHAT_MESSAGE_END,
    CHAT_ROLE_OPEN,
    tokenize,
)

VALID_ROLES = ("system", "user", "assistant", "tool", "developer")


@dataclass(slots=True)
class TwinRequest:
    """One validated request."""

    kind: str  # "chat" | "completion"
    model: str
    prompt_token_ids: list[int]
    media: list[MediaInput] = field(default_factory=list)
    max_tokens: int | None = None
    min_tokens: int = 0
    ignore_eos: bool = False
    stream: bool = False
    include_usage: bool = False
    continuous_usage: bool = False
    echo_role: bool = True


def _int_field(body: dict, name: str, *, minimum: int, default: int | None) -> int | None:
    value = body.get(name, default)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int):
        raise ApiError(400, f"{name} must be an integer, got {value!r}", name)
    if value < minimum:
        raise ApiError(400, f"{name} must be at least {minimum}, got {value}.", name)
    return value


def _bool_field(body: dict, name: str, default: bool) -> bool:
    value = body.get(name, default)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise ApiError(400, f"{name} must be a boolean, got {value!r}", name)
    return value


def _check_sampling(body: dict) -> None:
    """Reject sampling parameters vLLM would reject; the twin itself ignores their values."""
    ranges = {
        "temperature": (0.0, 2.0),
        "top_p": (1e-9, 1.0),
        "presence_penalty": (-2.0, 2.0),
        "frequency_penalty": (-2.0, 2.0),
    }
    for name, (low, high) in ranges.items():
        value = body.get(name)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ApiError(400, f"{name} must be a number, got {value!r}", name)
        if not low <= value <= high:
            raise ApiError(400, f"{name} must be in [{low:g}, {high:g}], got {value}.", name)
    n = body.get("n", 1)
    if n != 1:
        raise ApiError(400, f"n must be 1 (the twin returns one choice), got {n!r}", "n")
    stop = body.get("stop")
    if stop is not None and not isinstance(stop, str | list):
        raise ApiError(400, f"stop must be a string or a list of strings, got {stop!r}", "stop")


def _common(body: dict, kind: str, served_model: str) -> TwinRequest:
    model = body.get("model", served_model)
    if not isinstance(model, str):
        raise ApiError(400, f"model must be a string, got {model!r}", "model")
    if model != served_model:
        raise ApiError(404, f"The model `{model}` does not exist.", "model")
    _check_sampling(body)
    max_tokens = _int_field(body, "max_tokens", minimum=1, default=None)
    if kind == "chat" and body.get("max_completion_tokens") is not None:
        max_tokens = _int_field(body, "max_completion_tokens", minimum=1, default=None)
    options = body.get("stream_options")
    if options is not None and not isinstance(options, dict):
        raise ApiError(400, "stream_options must be an object", "stream_options")
    stream = _bool_field(body, "stream", False)
    if options and not stream:
        raise ApiError(
            400, "Stream options can only be defined when `stream=True`.", "stream_options"
        )
    options = options or {}
    return TwinRequest(
        kind=kind,
        model=model,
        prompt_token_ids=[],
        max_tokens=max_tokens,
        min_tokens=_int_field(body, "min_tokens", minimum=0, default=0) or 0,
        ignore_eos=_bool_field(body, "ignore_eos", False),
        stream=stream,
        include_usage=_bool_field(options, "include_usage", False),
        continuous_usage=_bool_field(options, "continuous_usage_stats", False),
    )


def parse_completion(body: Any, served_model: str) -> TwinRequest:
    """Validate a `/v1/completions` body (prompt: string, one-string list, or token ids)."""
    if not isinstance(body, dict):
        raise ApiError(400, "request body must be a JSON object", None)
    request = _common(body, "completion", served_model)
    prompt = body.get("prompt")
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str | list):
        prompt = prompt[0]
    if isinstance(prompt, str):
        request.prompt_token_ids = tokenize(prompt)
    elif isinstance(prompt, list) and all(
        isinstance(t, int) and not isinstance(t, bool) for t in prompt
    ):
        request.prompt_token_ids = list(prompt)
    else:
        raise ApiError(
            400,
            "prompt must be a string, a list with one string, or a list of token ids "
            "(the twin serves one prompt per request)",
            "prompt",
        )
    if not request.prompt_token_ids:
        raise ApiError(400, "prompt must not be empty", "prompt")
    return request


def parse_chat(body: Any, served_model: str) -> TwinRequest:
    """Validate a `/v1/chat/completions` body; render messages and collect media parts."""
    if not isinstance(body, dict):
        raise ApiError(400, "request body must be a JSON object", None)
    request = _common(body, "chat", served_model)
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise ApiError(400, "messages must be a non-empty list of message objects", "messages")
    pieces: list[str] = []
    for index, message in enumerate(messages):
        param = f"messages[{index}]"
        if not isinstance(message, dict):
            raise ApiError(400, f"{param} must be an object with role and content", param)
        role = message.get("role")
        if role not in VALID_ROLES:
            raise ApiError(
                400, f"{param}.role must be one of {', '.join(VALID_ROLES)}; got {role!r}", param
            )
        pieces.append(CHAT_ROLE_OPEN.format(role=role))
        content = message.get("content")
        if isinstance(content, str):
            pieces.append(content)
        elif isinstance(content, list):
            for part_index, part in enumerate(content):
                part_param = f"{param}.content[{part_index}]"
                if not isinstance(part, dict):
                    raise ApiError(400, f"{part_param} must be a content-part object", part_param)
                if part.get("type") == "text":
                    text = part.get("text")
                    if not isinstance(text, str):
                        raise ApiError(400, f"{part_param}.text must be a string", part_param)
                    pieces.append(text)
                else:
                    request.media.append(parse_media_part(part, part_param))
        elif content is None and (role == "assistant" or message.get("tool_calls")):
            pass
        else:
            raise ApiError(
                400, f"{param}.content must be a string or a list of content parts", param
            )
        pieces.append(CHAT_MESSAGE_END)
    pieces.append(CHAT_GENERATION_PROMPT)
    # Tokenize pieces one by one: template boundaries then never merge with content.
    ids: list[int] = []
    for piece in pieces:
        ids.extend(tokenize(piece))
    request.prompt_token_ids = ids
    return request
