"""Omnimodal synthetic traffic: add images, audio and video to any request stream.

Media become tokens by the serving model's rule when the catalog knows the model
(`ModelSpec.media_tokens(kind, pixels, seconds, frames)`), else by documented defaults:
images one token per 28×28-pixel patch (Qwen2-VL after 2×2 merging), audio 25 tokens per
second (Qwen2-Audio / Qwen2.5-Omni), video sampled at 2 frames/s (at most 64) with a frame
costing half an image of its size (temporal 2× merging). Popular media repeat: with
probability `repeat_prob` a part re-uses an earlier item of its kind (same content hash,
size and tokens), drawn from the last `pool_size` items, so an encoder or prefix cache
can hit on it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace
from types import MappingProxyType

import numpy as np

from selfserve.workload.request import MediaPart, Request

IMAGE_SIZES: tuple[tuple[int, int], ...] = (
    (448, 448),
    (640, 480),
    (1024, 768),
    (1280, 720),
    (1920, 1080),
)
AUDIO_TOKENS_PER_S = 25
VIDEO_FPS = 2.0
VIDEO_MAX_FRAMES = 64


@dataclass(frozen=True, slots=True)
class MediaMix:
    """Per-request probabilities of carrying each kind, and how many/how big."""

    image_fraction: float = 0.5
    images_mean: float = 1.5  # 1 + Poisson(mean - 1) images when a request has images
    audio_fraction: float = 0.0
    audio_seconds_mean: float = 15.0
    video_fraction: float = 0.0
    video_seconds_mean: float = 20.0
    repeat_prob: float = 0.3
    pool_size: int = 1000

    def __post_init__(self) -> None:
        for name in ("image_fraction", "audio_fraction", "video_fraction", "repeat_prob"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be within [0, 1], got {value}")


def default_media_tokens(kind: str, pixels: int = 0, seconds: float = 0.0, frames: int = 0) -> int:
    """The fallback token rule described in the module docstring."""
    if kind == "image":
        return max(1, math.ceil(pixels / (28 * 28)))
    if kind == "audio":
        return max(1, math.ceil(seconds * AUDIO_TOKENS_PER_S))
    if kind == "video":
        return max(1, frames * math.ceil(pixels / (28 * 28) / 2))
    raise ValueError(f"media kind must be image, audio or video, got {kind!r}")


def token_rule(model: str | None) -> Callable[..., int]:
    """The model's media-token rule from the catalog, or the default rule."""
    if model is None:
        return default_media_tokens
    from selfserve.catalog import get_model

    spec = get_model(model)
    return spec.media_tokens


def with_media(
    stream: Iterable[Request],
    mix: MediaMix = MediaMix(),
    *,
    model: str | None = None,
    seed: int = 0,
) -> Iterator[Request]:
    """The stream with media parts added per `mix` (text tokens unchanged)."""
    rng = np.random.default_rng(seed + 104729)
    tokens_of = token_rule(model)
    pools: dict[str, list[MediaPart]] = {"image": [], "audio": [], "video": []}
    tags_cache: dict[int, MappingProxyType] = {}

    def fresh(kind: str) -> MediaPart:
        content_hash = int(rng.integers(1, 1 << 63))
        if kind == "image":
            w, h = IMAGE_SIZES[int(rng.integers(0, len(IMAGE_SIZES)))]
            return MediaPart("image", tokens_of("image", pixels=w * h), content_hash, pixels=w * h)
        if kind == "audio":
            seconds = round(float(rng.lognormal(math.log(mix.audio_seconds_mean) - 0.18, 0.6)), 2)
            return MediaPart(
                "audio", tokens_of("audio", seconds=seconds), content_hash, seconds=seconds
            )
        w, h = IMAGE_SIZES[int(rng.integers(0, 3))]
        seconds = round(float(rng.lognormal(math.log(mix.video_seconds_mean) - 0.18, 0.6)), 2)
        frames = max(1, min(VIDEO_MAX_FRAMES, int(seconds * VIDEO_FPS)))
        tokens = tokens_of("video", pixels=w * h, seconds=seconds, frames=frames)
        return MediaPart(
            "video", tokens, content_hash, pixels=w * h, seconds=seconds, frames=frames
        )

    def part(kind: str) -> MediaPart:
        pool = pools[kind]
        if pool and rng.random() < mix.repeat_prob:
            # Zipf-like popularity: recent and early items alike, weighted to the head.
            return pool[min(len(pool) - 1, int(rng.zipf(1.5)) - 1)]
        item = fresh(kind)
        if len(pool) < mix.pool_size:
            pool.append(item)
        else:
            pool[int(rng.integers(0, mix.pool_size))] = item
        return item

    for request in stream:
        parts: list[MediaPart] = []
        if rng.random() < mix.image_fraction:
            count = 1 + int(rng.poisson(max(mix.images_mean - 1.0, 0.0)))
            parts.extend(part("image") for _ in range(count))
        if rng.random() < mix.audio_fraction:
            parts.append(part("audio"))
        if rng.random() < mix.video_fraction:
            parts.append(part("video"))
        if not parts:
            yield request
            continue
        key = id(request.tags)
        tags = tags_cache.get(key)
        if tags is None:
            tags = tags_cache[key] = MappingProxyType({**request.tags, "class": "multimodal"})
        yield replace(request, media=request.media + tuple(parts), tags=tags)
