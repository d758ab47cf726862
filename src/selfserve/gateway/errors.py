"""OpenAI-style error bodies: `{"error": {"message", "type", "param", "code"}}` with a status.

Clients written against the OpenAI API (the `openai` package, LangChain, curl scripts) map
these to their exception classes by status, so each kind of failure has its own.
"""

from __future__ import annotations

import orjson

from selfserve.gateway.http_server import HttpRequest, Reply

_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "invalid_request_error",
    405: "invalid_request_error",
    413: "invalid_request_error",
    429: "rate_limit_error",
    500: "internal_error",
    502: "upstream_error",
    503: "service_unavailable",
    504: "timeout",
}


class ApiError(Exception):
    """An error answered to the client with `status` and an OpenAI-style body."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        kind: str = "client",
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code
        self.kind = kind  # for the errors metric: client | upstream | timeout | internal

    def payload(self) -> dict:
        return {
            "error": {
                "message": self.message,
                "type": _TYPES.get(self.status, "error"),
                "param": self.param,
                "code": self.code,
            }
        }

    def body(self) -> bytes:
        return orjson.dumps(self.payload())

    def response(self) -> Reply:
        headers = ((b"WWW-Authenticate", b"Bearer"),) if self.status == 401 else ()
        return Reply(self.status, self.body(), headers=headers)

    def sse_event(self) -> bytes:
        """The same error as a final server-sent event, for failures after streaming began."""
        return b"data: " + self.body() + b"\n\n"


def check_body_size(request: HttpRequest, limit_bytes: int) -> None:
    """413 for a body the server did not read because it was over the limit."""
    if request.body_too_large:
        size = f"of {request.content_length} bytes " if request.content_length is not None else ""
        raise ApiError(
            413,
            f"request body {size}exceeds the limit of {limit_bytes} bytes",
            code="request_too_large",
        )
