"""Media-token rules: how many LLM-sequence tokens an image, audio clip or video becomes.

Two kinds of omnimodal models count differently. Early-fusion models (Chameleon) turn an
image into a fixed number of discrete VQ tokens in the one sequence. Adapter models
(Qwen2.5-Omni) run a vision/audio encoder first; its output embeddings (after patch merging
or pooling) are the LLM's media tokens, and the encoder's own work is an extra stage.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from selfserve.catalog.errors import MediaNotSupportedError


@dataclass(frozen=True, slots=True)
class MediaRules:
    """Token-count rules for one model; `None` fields mean the modality is not accepted.

    - `image_fixed_tokens`: every image becomes this many tokens (early-fusion VQ tokenizers
      resize to a fixed size), else `image_patch_px` x `image_merge` gives pixels per token
      (Qwen-VL: 14 px patches, 2x2 merge -> one token per 28x28 pixels), clamped to
      [`image_min_tokens`, `image_max_tokens`].
    - `audio_tokens_per_s`: encoder output rate after pooling.
    - video: `video_temporal_patch` frames share one grid of tokens per frame, clamped to
      [`video_min_tokens_per_frame`, `video_max_tokens_per_frame`].
    - `wrapper_tokens`: begin/end special tokens added around every media item.
    """

    image_fixed_tokens: int | None = None
    image_patch_px: int | None = None
    image_merge: int = 1
    image_min_tokens: int = 1
    image_max_tokens: int = 1 << 30
    audio_tokens_per_s: float | None = None
    video_temporal_patch: int | None = None
    video_min_tokens_per_frame: int = 1
    video_max_tokens_per_frame: int = 1 << 30
    wrapper_tokens: int = 0
    source: str = ""

    def kinds(self) -> list[str]:
        out = []
        if self.image_fixed_tokens is not None or self.image_patch_px is not None:
            out.append("image")
        if self.audio_tokens_per_s is not None:
            out.append("audio")
        if self.video_temporal_patch is not None:
            out.append("video")
        return out

    def _image_grid_tokens(self, pixels: int, lo: int, hi: int) -> int:
        if self.image_fixed_tokens is not None:
            return self.image_fixed_tokens
        assert self.image_patch_px is not None
        px_per_token = (self.image_patch_px * self.image_merge) ** 2
        return min(hi, max(lo, round(pixels / px_per_token)))

    def tokens(self, model: str, kind: str, pixels: int, seconds: float, frames: int) -> int:
        if kind not in self.kinds():
            raise MediaNotSupportedError(
                f"model {model!r} does not take {kind!r} input; it takes: {', '.join(self.kinds()) or 'text only'}"
            )
        if pixels < 0 or seconds < 0 or frames < 0:
            raise ValueError(
                f"media size must be >= 0 (pixels={pixels}, seconds={seconds}, frames={frames})"
            )
        if kind == "image":
            if self.image_fixed_tokens is None and pixels <= 0:
                raise ValueError(
                    f"model {model!r} counts image tokens from pixels; pass pixels=width*height > 0"
                )
            grid = self._image_grid_tokens(pixels, self.image_min_tokens, self.image_max_tokens)
            return grid + self.wrapper_tokens
        if kind == "audio":
            assert self.audio_tokens_per_s is not None
            return math.ceil(seconds * self.audio_tokens_per_s) + self.wrapper_tokens
        assert self.video_temporal_patch is not None
        if frames <= 0:
            raise ValueError(f"model {model!r} counts video tokens from frames; pass frames > 0")
        if self.image_fixed_tokens is None and pixels <= 0:
            raise ValueError(
                f"model {model!r} counts video tokens from frame pixels; pass pixels > 0"
            )
        per_frame = self._image_grid_tokens(
            pixels, self.video_min_tokens_per_frame, self.video_max_tokens_per_frame
        )
        groups = math.ceil(frames / self.video_temporal_patch)
        return groups * per_frame + self.wrapper_tokens


QWEN_OMNI_MEDIA = MediaRules(
    image_patch_px=14,
    image_merge=2,
    image_min_tokens=4,  # min_pixels 3136 = 4 x 28 x 28
    image_max_tokens=16384,  # max_pixels 12845056 = 16384 x 28 x 28
    audio_tokens_per_s=25.0,  # Whisper-style encoder: 100 mel frames/s, conv stride 2, pool 2 -> 40 ms/token
    video_temporal_patch=2,
    video_min_tokens_per_frame=128,  # qwen-vl-utils VIDEO_MIN_PIXELS = 128 x 28 x 28 [R]
    video_max_tokens_per_frame=768,  # qwen-vl-utils VIDEO_MAX_PIXELS = 768 x 28 x 28 [R]
    wrapper_tokens=2,  # <|vision_bos|>/<|audio_bos|> ... eos
    source="Qwen2.5-Omni-7B preprocessor/config (patch_size 14, spatial_merge_size 2, temporal_patch_size 2); "
    "Qwen2-Audio/Qwen2.5-Omni paper: one audio token per ~40 ms",
)

CHAMELEON_MEDIA = MediaRules(
    image_fixed_tokens=1024,  # 512x512 image -> 32x32 VQ codes (codebook 8192)
    video_temporal_patch=1,  # no native video: each sampled frame is an image
    wrapper_tokens=2,  # <racm3:break> image start/end sentinels
    source="Chameleon paper (arXiv 2405.09818): images tokenized into 1024 discrete tokens from 512x512",
)
