"""Response bodies and SSE chunks in vLLM's OpenAI-compatible format.

Streaming follows vLLM: one ``data: {json}\\n\\n`` event per generated token
(`chat.completion.chunk` with a `delta`, or `text_completion` with `text`), the first
chat chunk carries ``role: assistant``, the last token's chunk carries `finish_reason`,
an optional usage-only chunk (``choices: []``) when ``stream_options.include_usage`` is
set, then ``data: [DONE]``. Output text is filler: token i is ``FILLER_WORDS[i % n]``,
each one token under selfserve's tokenizer rule.
"""

from __future__ import annotations

from dataclasses import dataclass

import orjson

FILLER_WORDS: tuple[str, ...] = (
    " the", " twin", " says", " this", " is", " text", " from", " a", " model", " of",
    " one", " serv", " ing", " engi", " ne", ".",
)  # fmt: skip
DONE_EVENT = b"data: [DONE]\n\n"
_FILLER_JSON: tuple[bytes, ...] = tuple(orjson.dumps(word) for word in FILLER_WORDS)


def filler_text(start: int, count: int) -> str:
    """The filler text of output tokens start .. start+count-1."""
    n = len(FILLER_WORDS)
    return "".join(FILLER_WORDS[i % n] for i in range(start, start + count))


@dataclass(frozen=True, slots=True)
class Usage:
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int

    def as_dict(self) -> dict:
        return {
            "prompt_tokens": self.prompt_tokens,
            "total_tokens": self.prompt_tokens + self.completion_tokens,
            "completion_tokens": self.completion_tokens,
            "prompt_tokens_details": {"cached_tokens": self.cached_tokens},
        }


def _event(payload: dict) -> bytes:
    return b"data: " + orjson.dumps(payload) + b"\n\n"


class ChunkWriter:
    """Builds the SSE events of one streamed response.

    The common event (a mid-stream token without usage) is pre-rendered as prefix +
    JSON-encoded filler word + suffix, byte-identical to what orjson writes for the full
    dict, because it is built thousands of times a second.
    """

    __slots__ = ("response_id", "model", "created", "is_chat", "_prefix", "_suffix")

    def __init__(self, response_id: str, model: str, created: int, is_chat: bool) -> None:
        self.response_id = response_id
        self.model = model
        self.created = created
        self.is_chat = is_chat
        obj = b"chat.completion.chunk" if is_chat else b"text_completion"
        head = (
            b'data: {"id":' + orjson.dumps(response_id) + b',"object":"' + obj
            + b'","created":' + str(created).encode() + b',"model":' + orjson.dumps(model)
            + b',"choices":[{"index":0,'
        )  # fmt: skip
        if is_chat:
            self._prefix = head + b'"delta":{"content":'
            self._suffix = b'},"logprobs":null,"finish_reason":null}]}\n\n'
        else:
            self._prefix = head + b'"text":'
            self._suffix = b',"logprobs":null,"finish_reason":null,"stop_reason":null}]}\n\n'

    def token_events(
        self, start: int, count: int, finish_reason: str | None, usage: Usage | None = None
    ) -> bytes:
        """Events for `count` tokens from index `start`; the last carries `finish_reason`."""
        out: list[bytes] = []
        n_words = len(FILLER_WORDS)
        for index in range(start, start + count):
            reason = finish_reason if index == start + count - 1 else None
            if reason is None and usage is None and not (self.is_chat and index == 0):
                out.append(self._prefix + _FILLER_JSON[index % n_words] + self._suffix)
                continue
            word = FILLER_WORDS[index % n_words]
            if self.is_chat:
                delta = {"role": "assistant", "content": word} if index == 0 else {"content": word}
                choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": reason}
                obj = "chat.completion.chunk"
            else:
                choice = {
                    "index": 0,
                    "text": word,
                    "logprobs": None,
                    "finish_reason": reason,
                    "stop_reason": None,
                }
                obj = "text_completion"
            payload = {
                "id": self.response_id,
                "object": obj,
                "created": self.created,
                "model": self.model,
                "choices": [choice],
            }
            if usage is not None:
                payload["usage"] = usage.as_dict()
            out.append(_event(payload))
        return b"".join(out)

    def usage_event(self, usage: Usage) -> bytes:
        return _event(
            {
                "id": self.response_id,
                "object": "chat.completion.chunk" if self.is_chat else "text_completion",
                "created": self.created,
                "model": self.model,
                "choices": [],
                "usage": usage.as_dict(),
            }
        )


def full_response(
    response_id: str, model: str, created: int, is_chat: bool, finish_reason: str, usage: Usage
) -> bytes:
    """A non-streaming response body."""
    text = filler_text(0, usage.completion_tokens)
    if is_chat:
        choice = {
            "index": 0,
            "message": {"role": "assistant", "content": text, "tool_calls": []},
            "logprobs": None,
            "finish_reason": finish_reason,
            "stop_reason": None,
        }
        obj = "chat.completion"
    else:
        choice = {
            "index": 0,
            "text": text,
            "logprobs": None,
            "finish_reason": finish_reason,
            "stop_reason": None,
            "prompt_logprobs": None,
        }
        obj = "text_completion"
    return orjson.dumps(
        {
            "id": response_id,
            "object": obj,
            "created": created,
            "model": model,
            "choices": [choice],
            "usage": usage.as_dict(),
        }
    )
