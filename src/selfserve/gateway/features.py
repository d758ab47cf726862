"""From an OpenAI request body to routing features: validation, prompt tokens, block hashes.

The gateway never keeps prompt text: it renders the prompt to a string (chat messages in
order, so turn N+1 starts with turn N's text and shares its block hashes), tokenizes it
with selfserve's deterministic rule (`selfserve.workload.tokenize`), hashes full blocks,
and drops the text. Media parts are hashed by content (or URL) so repeats can be routed to
the replica that has them cached; their token count comes from the engine's `usage`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from selfserve.gateway.errors import ApiError
from selfserve.workload.request import MediaPart
from selfserve.workload.tokenize import block_hashes, content_hash, tokenize

_MEDIA_PARTS = {
    "image_url": ("image", "url"),
    "input_audio": ("audio", "data"),
    "video_url": ("video", "url"),
    "input_image": ("image", "image_url"),
}


@dataclass(frozen=True, slots=True)
class RequestFeatures:
    endpoint: str  # "chat" | "completions"
    model: str
    stream: bool
    client_wants_usage: bool  # stream_options.include_usage set by the client
    prompt_tokens: int
    block_hashes: tuple[int, ...]
    media: tuple[MediaPart, ...]
    session_id: str | None
    expected_output_tokens: int


def _check_number(
    body: dict, key: str, lo: float, hi: float | None, *, integer: bool = False
) -> None:
    if key not in body or body[key] is None:
        return
    value = body[key]
    ok_type = isinstance(value, int) if integer else isinstance(value, int | float)
    if isinstance(value, bool) or not ok_type or value < lo or (hi is not None and value > hi):
        bound = f"between {lo:g} and {hi:g}" if hi is not None else f">= {lo:g}"
        kind = "an integer" if integer else "a number"
        raise ApiError(
            400, f"'{key}' must be {kind} {bound}, got {value!r}", param=key, code="invalid_value"
        )


def _text_of_content(content: Any, index: int, media: list[MediaPart]) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise ApiError(
            400,
            f"messages[{index}].content must be a string or a list of content parts",
            param=f"messages[{index}].content",
        )
    texts = []
    for j, part in enumerate(content):
        if not isinstance(part, dict) or not isinstance(part.get("type"), str):
            raise ApiError(
                400,
                f"messages[{index}].content[{j}] must be an object with a 'type'",
                param=f"messages[{index}].content[{j}]",
            )
        kind = part["type"]
        if kind in ("text", "input_text"):
            text = part.get("text")
            if not isinstance(text, str):
                raise ApiError(
                    400,
                    f"messages[{index}].content[{j}].text must be a string",
                    param=f"messages[{index}].content[{j}].text",
                )
            texts.append(text)
        elif kind in _MEDIA_PARTS:
            media_kind, field = _MEDIA_PARTS[kind]
            inner = part.get(kind)
            source = inner.get(field) if isinstance(inner, dict) else inner
            if not isinstance(source, str) or not source:
                raise ApiError(
                    400,
                    f"messages[{index}].content[{j}].{kind}.{field} must be a non-empty string",
                    param=f"messages[{index}].content[{j}]",
                )
            media.append(MediaPart(kind=media_kind, tokens=0, content_hash=content_hash(source)))
        # other part types (refusal, file, …) carry no prompt text the gateway can count
    return "\n".join(texts)


def extract_features(
    endpoint: str, body: Any, *, session_header: str | None, block_size: int
) -> RequestFeatures:
    """Validate an OpenAI request body and compute its routing features."""
    if not isinstance(body, dict):
        raise ApiError(400, "the request body must be a JSON object")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise ApiError(
            400,
            "'model' is required and must be a string",
            param="model",
            code="missing_required_parameter" if model is None else "invalid_type",
        )
    stream = body.get("stream", False)
    if stream is None:
        stream = False
    if not isinstance(stream, bool):
        raise ApiError(
            400, f"'stream' must be a boolean, got {stream!r}", param="stream", code="invalid_type"
        )
    _check_number(body, "max_tokens", 1, None, integer=True)
    _check_number(body, "max_completion_tokens", 1, None, integer=True)
    _check_number(body, "n", 1, 128, integer=True)
    _check_number(body, "temperature", 0, 2)
    _check_number(body, "top_p", 0, 1)
    stream_options = body.get("stream_options")
    if stream_options is not None and not isinstance(stream_options, dict):
        raise ApiError(400, "'stream_options' must be an object", param="stream_options")
    media: list[MediaPart] = []
    token_ids: list[int]
    if endpoint == "chat":
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise ApiError(
                400,
                "'messages' is required and must be a non-empty list",
                param="messages",
                code="missing_required_parameter" if messages is None else "invalid_type",
            )
        pieces = []
        for i, message in enumerate(messages):
            if not isinstance(message, dict) or not isinstance(message.get("role"), str):
                raise ApiError(
                    400,
                    f"messages[{i}] must be an object with a string 'role'",
                    param=f"messages[{i}]",
                )
            pieces.append(
                f"{message['role']}: {_text_of_content(message.get('content'), i, media)}\n"
            )
        token_ids = tokenize("".join(pieces))
    else:
        prompt = body.get("prompt")
        if isinstance(prompt, str):
            token_ids = tokenize(prompt)
        elif isinstance(prompt, list) and prompt and all(isinstance(p, str) for p in prompt):
            token_ids = tokenize("".join(prompt))
        elif (
            isinstance(prompt, list)
            and prompt
            and all(isinstance(t, int) and not isinstance(t, bool) for t in prompt)
        ):
            token_ids = [int(t) for t in prompt]
        else:
            raise ApiError(
                400,
                "'prompt' is required: a string, a list of strings or a list of token ids",
                param="prompt",
                code="missing_required_parameter" if prompt is None else "invalid_type",
            )
    session = session_header or body.get("user")
    if session is not None and not isinstance(session, str):
        raise ApiError(400, "'user' must be a string", param="user")
    max_out = body.get("max_completion_tokens") or body.get("max_tokens") or 0
    return RequestFeatures(
        endpoint=endpoint,
        model=model,
        stream=stream,
        client_wants_usage=bool(stream_options and stream_options.get("include_usage")),
        prompt_tokens=len(token_ids),
        block_hashes=block_hashes(token_ids, block_size),
        media=tuple(media),
        session_id=session or None,
        expected_output_tokens=int(max_out),
    )
