"""The unit of traffic every part of selfserve exchanges: one `Request`, and a `Workload`.

A request carries what routing and simulation need and nothing private: timings, token
counts, chained prefix block hashes and media content hashes — never text.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Literal

MediaKind = Literal["image", "audio", "video"]
MEDIA_KINDS: tuple[str, ...] = ("image", "audio", "video")

_EMPTY_TAGS: Mapping[str, str] = MappingProxyType({})
EMPTY_TAGS = _EMPTY_TAGS  # public name for readers that build requests without tags


@dataclass(frozen=True, slots=True)
class MediaPart:
    """One image, audio clip or video in a prompt.

    `tokens` is the count the trace or recorder saw (for the model it was served by);
    the raw size (`pixels`, `seconds`, `frames`) lets another model's catalog rule recount.
    Equal `content_hash` means equal content, so a repeat can hit the encoder/prefix cache.
    """

    kind: MediaKind
    tokens: int
    content_hash: int
    pixels: int = 0  # width x height of the image (or of one video frame)
    seconds: float = 0.0  # duration of audio or video
    frames: int = 0  # sampled video frames


@dataclass(frozen=True, slots=True)
class Request:
    """One inference request as traffic: when it arrived and how big it was.

    - `prompt_tokens`: text tokens of the prompt (media tokens are in `media`).
    - `block_hashes`: chained hashes of the prompt's full `block_size`-token blocks, so
      equal `block_hashes[i]` means the first `(i + 1) * block_size` tokens are equal.
      Traces that publish a hash for a trailing partial block keep it (Mooncake lists
      `ceil(prompt_tokens / 512)` ids), so a block may cover fewer than `block_size`
      tokens only when it is the last one.
    - `session_id`/`turn`: multi-turn or agentic grouping; `think_time_s` is the pause the
      client took after the previous turn of the session completed (0 when unknown).
    - `tags`: free labels such as tenant, model, class.
    """

    request_id: str
    arrival_s: float
    prompt_tokens: int
    output_tokens: int
    block_hashes: tuple[int, ...] = ()
    block_size: int = 16
    session_id: str | None = None
    turn: int = 0
    think_time_s: float = 0.0
    media: tuple[MediaPart, ...] = ()
    # A factory, not `default=`: dataclasses reject an unhashable default (mappingproxy),
    # and the shared read-only empty mapping is safe to hand to every request.
    tags: Mapping[str, str] = field(default_factory=lambda: _EMPTY_TAGS)

    def __reduce__(self):
        """Pickle with the tags as a plain dict (pickle refuses a `mappingproxy`), so that
        a workload crosses a process boundary (spawn/forkserver workers, Ray tasks)."""
        fields = {name: getattr(self, name) for name in self.__dataclass_fields__}
        fields["tags"] = dict(self.tags)
        return (_request_from_fields, (fields,))

    @property
    def media_tokens(self) -> int:
        return sum(part.tokens for part in self.media)

    @property
    def total_prompt_tokens(self) -> int:
        """Text plus media tokens: the prefill sequence of an early-fusion model."""
        return self.prompt_tokens + self.media_tokens


def _request_from_fields(fields: dict) -> Request:
    """Unpickle a `Request`; its tags become a read-only mapping again."""
    tags = fields["tags"]
    return Request(**{**fields, "tags": MappingProxyType(tags) if tags else _EMPTY_TAGS})


@dataclass(slots=True)
class Workload:
    """An arrival-ordered collection of requests plus where it came from."""

    requests: list[Request]
    name: str = "workload"
    source: str = ""
    block_size: int = 16
    warnings: list[str] = field(default_factory=list)
    # Records a reader skipped as malformed under `skip_bad=True` (never silently dropped).
    skipped_records: int = 0

    def __len__(self) -> int:
        return len(self.requests)

    def __iter__(self) -> Iterator[Request]:
        return iter(self.requests)

    def __getitem__(self, index: int) -> Request:
        return self.requests[index]

    @property
    def span_s(self) -> float:
        if not self.requests:
            return 0.0
        return self.requests[-1].arrival_s - self.requests[0].arrival_s

    @property
    def start_s(self) -> float:
        return self.requests[0].arrival_s if self.requests else 0.0
