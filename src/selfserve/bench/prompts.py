"""Turn trace `Request`s into OpenAI request bodies whose text reproduces their prefixes.

A trace gives token counts and chained block hashes, never text. `PromptBuilder` writes
one text block per block hash: `block_size` words of the form ``" wxyz"`` (four lowercase
letters drawn from a generator seeded by the hash), each exactly one token under
selfserve's tokenizer rule, and concatenation-stable. Equal hash → equal text block, so two
requests that share leading blocks in the trace share a text prefix on the wire, and an
engine's prefix cache (the twin's, or a real vLLM's with its own tokenizer) sees the same
sharing. Tokens beyond the hashed blocks are unique to the request.

Media parts become real files: an image is a valid grayscale PNG of about the trace's pixel
count whose tEXt chunk carries the content hash (equal hash → byte-identical image), audio
is an 8 kHz 8-bit mono WAV of the trace's duration. Video parts are sent as a
``video_url`` data URL that carries only the content hash (enough for the twin; real
engines need real video, which selfserve cannot synthesize).
"""

from __future__ import annotations

import base64
import hashlib
import math
import struct
import zlib

import numpy as np

from selfserve.workload.request import MediaPart, Request
from selfserve.workload.tokenize import chat_overhead_tokens

CHARS_PER_TOKEN = 5  # " wxyz"
_TEXT_CACHE_BLOCKS = 8192
_MEDIA_CACHE_ITEMS = 256


def words_text(seed: int, num_tokens: int) -> str:
    """`num_tokens` one-token words drawn from a generator seeded by `seed`."""
    if num_tokens <= 0:
        return ""
    rng = np.random.default_rng(seed & ((1 << 63) - 1))
    chars = np.empty((num_tokens, CHARS_PER_TOKEN), dtype=np.uint8)
    chars[:, 0] = 32
    chars[:, 1:] = rng.integers(0, 26, size=(num_tokens, 4), dtype=np.uint8) + 97
    return chars.tobytes().decode("ascii")


def _seed_of(text: str) -> int:
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little")


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def synth_png(pixels: int, content_hash: int) -> bytes:
    """A valid square grayscale PNG with about `pixels` pixels, unique per `content_hash`."""
    side = max(1, math.isqrt(max(1, pixels)))
    header = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    raw = bytes((1 + side) * side)  # filter byte 0 + black row, compressed to almost nothing
    return b"".join(
        (
            b"\x89PNG\r\n\x1a\n",
            _png_chunk(b"IHDR", header),
            _png_chunk(b"tEXt", b"selfserve\x00" + str(content_hash).encode()),
            _png_chunk(b"IDAT", zlib.compress(raw, 1)),
            _png_chunk(b"IEND", b""),
        )
    )


def synth_wav(seconds: float, content_hash: int) -> bytes:
    """An 8 kHz 8-bit mono WAV of `seconds`, whose first samples encode `content_hash`."""
    rate = 8000
    samples = bytearray(b"\x80" * max(8, int(seconds * rate)))
    samples[:8] = content_hash.to_bytes(8, "little")
    fmt = struct.pack("<HHIIHH", 1, 1, rate, rate, 1, 8)
    body = b"WAVE" + b"fmt " + struct.pack("<I", 16) + fmt + b"data"
    body += struct.pack("<I", len(samples)) + bytes(samples)
    return b"RIFF" + struct.pack("<I", len(body)) + body


class PromptBuilder:
    """Builds request bodies for one bench run; caches text blocks and media files."""

    def __init__(self, *, model: str, endpoint: str = "completions") -> None:
        if endpoint not in ("completions", "chat"):
            raise ValueError(f"endpoint must be 'completions' or 'chat', got {endpoint!r}")
        self.model = model
        self.endpoint = endpoint
        self._blocks: dict[tuple[int, int], str] = {}
        self._media: dict[tuple[str, int], dict] = {}

    def _block_text(self, block_hash: int, block_size: int) -> str:
        key = (block_hash, block_size)
        text = self._blocks.get(key)
        if text is None:
            if len(self._blocks) >= _TEXT_CACHE_BLOCKS:
                self._blocks.clear()
            text = words_text(block_hash, block_size)
            self._blocks[key] = text
        return text

    def prompt_text(self, request: Request, num_tokens: int | None = None) -> str:
        """Text of `num_tokens` (default: the request's) tokens reproducing its prefix blocks.

        A partial trailing hashed block (Mooncake lists one) uses the start of its block's
        text, so requests that share it share those tokens too.
        """
        total = request.prompt_tokens if num_tokens is None else num_tokens
        size = request.block_size
        parts: list[str] = []
        used = 0
        for block_hash in request.block_hashes:
            if used >= total:
                break
            take = min(size, total - used)
            block = self._block_text(block_hash, size)
            parts.append(block if take == size else block[: take * CHARS_PER_TOKEN])
            used += take
        if used < total:
            parts.append(words_text(_seed_of(request.request_id) ^ 0x7A11, total - used))
        return "".join(parts)

    def media_part(self, part: MediaPart) -> dict:
        key = (part.kind, part.content_hash)
        cached = self._media.get(key)
        if cached is not None:
            return cached
        if len(self._media) >= _MEDIA_CACHE_ITEMS:
            self._media.clear()
        if part.kind == "image":
            png = synth_png(part.pixels or 512 * 512, part.content_hash)
            url = "data:image/png;base64," + base64.b64encode(png).decode()
            built = {"type": "image_url", "image_url": {"url": url}}
        elif part.kind == "audio":
            wav = synth_wav(part.seconds or 5.0, part.content_hash)
            built = {
                "type": "input_audio",
                "input_audio": {"data": base64.b64encode(wav).decode(), "format": "wav"},
            }
        else:
            data = base64.b64encode(part.content_hash.to_bytes(8, "little")).decode()
            built = {"type": "video_url", "video_url": {"url": "data:video/mp4;base64," + data}}
        self._media[key] = built
        return built

    def body(self, request: Request) -> dict:
        """The JSON body for `request`: exact output length via max_tokens + ignore_eos."""
        output_tokens = max(1, request.output_tokens)
        common = {
            "model": self.model,
            "max_tokens": output_tokens,
            "ignore_eos": True,
            "stream": True,
            "stream_options": {"include_usage": True},
            "temperature": 0.0,
        }
        if self.endpoint == "completions" and not request.media:
            return {**common, "prompt": self.prompt_text(request) or " x"}
        text_tokens = max(1, request.prompt_tokens - chat_overhead_tokens(["user"]))
        content: list[dict] = [self.media_part(part) for part in request.media]
        content.append({"type": "text", "text": self.prompt_text(request, text_tokens)})
        return {**common, "messages": [{"role": "user", "content": content}]}

    def path(self, request: Request) -> str:
        if self.endpoint == "completions" and not request.media:
            return "/v1/completions"
        return "/v1/chat/completions"
