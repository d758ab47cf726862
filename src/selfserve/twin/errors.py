"""OpenAI-style API errors the twin returns, worded and shaped as vLLM's server does.

vLLM answers ``{"error": {"message", "type", "param", "code"}}`` with the HTTP status in
``code``; the official `openai` client maps the status to its exception classes
(400 → BadRequestError, 404 → NotFoundError, 413/422 → APIStatusError subclasses).
"""

from __future__ import annotations

from dataclasses import dataclass

import orjson

_TYPE_BY_STATUS = {
    400: "BadRequestError",
    404: "NotFoundError",
    405: "MethodNotAllowed",
    413: "RequestEntityTooLarge",
    422: "UnprocessableEntityError",
    500: "InternalServerError",
    503: "ServiceUnavailableError",
}


@dataclass(frozen=True, slots=True)
class ApiError(Exception):
    """A request the twin refuses: HTTP `status`, a message naming the field, and `param`."""

    status: int
    message: str
    param: str | None = None

    def __str__(self) -> str:
        return f"{self.status}: {self.message}"

    def body(self) -> bytes:
        return orjson.dumps(
            {
                "error": {
                    "message": self.message,
                    "type": _TYPE_BY_STATUS.get(self.status, "BadRequestError"),
                    "param": self.param,
                    "code": self.status,
                }
            }
        )


def context_length_error(
    max_model_len: int, prompt_tokens: int, max_tokens: int | None
) -> ApiError:
    """vLLM's wording for prompts (or prompt + max_tokens) beyond the model's context."""
    if max_tokens is None or prompt_tokens >= max_model_len:
        return ApiError(
            400,
            f"This model's maximum context length is {max_model_len} tokens. However, your "
            f"request has {prompt_tokens} input tokens. Please reduce the length of the input "
            "messages.",
            "messages",
        )
    return ApiError(
        400,
        f"'max_tokens' or 'max_completion_tokens' is too large: {max_tokens}. This model's "
        f"maximum context length is {max_model_len} tokens and your request has "
        f"{prompt_tokens} input tokens ({max_tokens} > {max_model_len} - {prompt_tokens}).",
        "max_tokens",
    )
