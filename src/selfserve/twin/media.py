"""Media content parts of an OpenAI request → their size, content hash and media tokens.

The twin never decodes pixels or samples: it reads just enough of a file's header to know
its size (PNG/GIF/WebP/JPEG dimensions, WAV duration) and hashes the bytes, so a repeated
image hits the prefix cache as it would on vLLM. Remote URLs are not fetched (a twin must
work offline): they count as a `DEFAULT_IMAGE_PIXELS` image (or `DEFAULT_VIDEO_SECONDS`
video) and are hashed by URL. The catalog model turns the size into tokens.
"""

from __future__ import annotations

import base64
import binascii
import struct
from dataclasses import dataclass

from selfserve.twin.errors import ApiError
from selfserve.workload.tokenize import content_hash

DEFAULT_IMAGE_PIXELS = 1024 * 1024
DEFAULT_VIDEO_SECONDS = 10.0
DEFAULT_VIDEO_FPS = 2.0
# Encoded audio we cannot parse (mp3, …) is sized by bytes at a typical 128 kbit/s.
FALLBACK_AUDIO_BYTES_PER_S = 16_000


@dataclass(frozen=True, slots=True)
class MediaInput:
    """One media part as the twin saw it."""

    kind: str  # "image" | "audio" | "video"
    content_hash: int
    pixels: int = 0
    seconds: float = 0.0
    frames: int = 0


def _decode_data_url(url: str, param: str) -> tuple[str, bytes]:
    header, sep, payload = url.partition(",")
    if not sep or ";base64" not in header:
        raise ApiError(
            400, f"{param}: a data URL must look like 'data:<mime>;base64,<data>'", param
        )
    try:
        return header[5:].split(";")[0], base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ApiError(400, f"{param}: invalid base64 data ({exc})", param) from exc


def image_pixels(data: bytes) -> int | None:
    """Width × height from a PNG, GIF, WebP (VP8/VP8L/VP8X) or JPEG header; None if unknown."""
    if data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) >= 24:
        width, height = struct.unpack(">II", data[16:24])
        return width * height
    if data[:6] in (b"GIF87a", b"GIF89a") and len(data) >= 10:
        width, height = struct.unpack("<HH", data[6:10])
        return width * height
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP" and len(data) >= 30:
        chunk = data[12:16]
        if chunk == b"VP8X":
            width = int.from_bytes(data[24:27], "little") + 1
            height = int.from_bytes(data[27:30], "little") + 1
            return width * height
        if chunk == b"VP8L":
            bits = int.from_bytes(data[21:25], "little")
            return ((bits & 0x3FFF) + 1) * (((bits >> 14) & 0x3FFF) + 1)
        if chunk == b"VP8 ":
            width, height = struct.unpack("<HH", data[26:30])
            return (width & 0x3FFF) * (height & 0x3FFF)
    if data[:2] == b"\xff\xd8":
        return _jpeg_pixels(data)
    return None


def _jpeg_pixels(data: bytes) -> int | None:
    pos = 2
    while pos + 9 < len(data):
        if data[pos] != 0xFF:
            return None
        marker = data[pos + 1]
        length = struct.unpack(">H", data[pos + 2 : pos + 4])[0]
        # SOF0..SOF15 except DHT (C4), JPG (C8) and DAC (CC) carry the frame size.
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            height, width = struct.unpack(">HH", data[pos + 5 : pos + 9])
            return width * height
        pos += 2 + length
    return None


def wav_seconds(data: bytes) -> float | None:
    """Duration of a RIFF/WAVE file from its fmt byte rate and data chunk size."""
    if data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        return None
    pos, byte_rate = 12, 0
    while pos + 8 <= len(data):
        chunk_id, size = data[pos : pos + 4], struct.unpack("<I", data[pos + 4 : pos + 8])[0]
        if chunk_id == b"fmt " and size >= 16:
            byte_rate = struct.unpack("<I", data[pos + 16 : pos + 20])[0]
        elif chunk_id == b"data":
            return size / byte_rate if byte_rate else None
        pos += 8 + size + (size & 1)
    return None


def parse_media_part(part: dict, param: str) -> MediaInput:
    """An `image_url`, `input_audio` or `video_url` content part → `MediaInput`."""
    kind = part.get("type")
    if kind == "image_url":
        url = _url_of(part.get("image_url"), param + ".image_url")
        if url.startswith("data:"):
            _, data = _decode_data_url(url, param + ".image_url.url")
            pixels = image_pixels(data)
            if pixels is None:
                raise ApiError(
                    400,
                    f"{param}.image_url: unsupported image data (expected PNG, JPEG, GIF or WebP)",
                    param,
                )
            return MediaInput("image", content_hash(data), pixels=pixels)
        return MediaInput("image", content_hash(url), pixels=DEFAULT_IMAGE_PIXELS)
    if kind == "input_audio":
        audio = part.get("input_audio")
        if not isinstance(audio, dict) or not isinstance(audio.get("data"), str):
            raise ApiError(
                400, f"{param}.input_audio must be {{'data': <base64>, 'format': ...}}", param
            )
        try:
            data = base64.b64decode(audio["data"], validate=True)
        except (binascii.Error, ValueError) as exc:
            raise ApiError(400, f"{param}.input_audio.data: invalid base64 ({exc})", param) from exc
        seconds = wav_seconds(data)
        if seconds is None:
            seconds = len(data) / FALLBACK_AUDIO_BYTES_PER_S
        return MediaInput("audio", content_hash(data), seconds=seconds)
    if kind == "video_url":
        url = _url_of(part.get("video_url"), param + ".video_url")
        raw: bytes | str = _decode_data_url(url, param)[1] if url.startswith("data:") else url
        frames = int(DEFAULT_VIDEO_SECONDS * DEFAULT_VIDEO_FPS)
        return MediaInput(
            "video",
            content_hash(raw),
            pixels=DEFAULT_IMAGE_PIXELS // 4,
            seconds=DEFAULT_VIDEO_SECONDS,
            frames=frames,
        )
    raise ApiError(
        400,
        f"{param}.type: unknown content part type {kind!r}; valid: text, image_url, input_audio, video_url",
        param,
    )


def _url_of(value: object, param: str) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and isinstance(value.get("url"), str):
        return value["url"]
    raise ApiError(400, f"{param} must be {{'url': <string>}}", param)
