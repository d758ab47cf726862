"""Media-token rules of the omnimodal models: early fusion vs adapter."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from selfserve.catalog import MediaNotSupportedError, get_model


def test_fusion_kinds():
    assert get_model("llama-3.1-8b").fusion == "text"
    assert get_model("chameleon-7b").fusion == "early"
    assert get_model("qwen2.5-omni-7b").fusion == "adapter"


def test_qwen_omni_image_is_one_token_per_28x28_pixels_plus_wrappers():
    omni = get_model("qwen2.5-omni-7b")
    # 14 px patches merged 2x2: a 448x448 image is 16x16 = 256 tokens, + bos/eos.
    assert omni.media_tokens("image", pixels=448 * 448) == 256 + 2
    assert omni.media_tokens("image", pixels=10) == 4 + 2  # min_pixels clamp
    assert omni.media_tokens("image", pixels=100_000 * 100_000) == 16384 + 2  # max_pixels clamp


def test_qwen_omni_audio_is_25_tokens_per_second():
    omni = get_model("qwen2.5-omni-7b")
    assert omni.media_tokens("audio", seconds=10.0) == 250 + 2
    assert omni.media_tokens("audio", seconds=0.01) == 1 + 2


def test_qwen_omni_video_is_frame_pairs_times_tokens_per_frame():
    omni = get_model("qwen2.5-omni-7b")
    per_frame = omni.media_tokens("image", pixels=448 * 448) - 2
    assert omni.media_tokens("video", pixels=448 * 448, frames=16) == 8 * per_frame + 2
    assert omni.media_tokens("video", pixels=448 * 448, frames=15) == 8 * per_frame + 2


def test_early_fusion_image_is_a_fixed_1024_vq_tokens():
    chameleon = get_model("chameleon-7b")
    assert chameleon.media_tokens("image") == 1024 + 2
    assert chameleon.media_tokens("image", pixels=4000 * 3000) == 1024 + 2


def test_unsupported_media_names_what_the_model_takes():
    with pytest.raises(MediaNotSupportedError, match="text-only"):
        get_model("llama-3.1-8b").media_tokens("image", pixels=100)
    with pytest.raises(MediaNotSupportedError, match="takes: image, video"):
        get_model("chameleon-7b").media_tokens("audio", seconds=3.0)
    with pytest.raises(ValueError, match="pixels"):
        get_model("qwen2.5-omni-7b").media_tokens("image")


@given(
    st.integers(min_value=1, max_value=50_000_000), st.integers(min_value=1, max_value=50_000_000)
)
def test_more_pixels_never_means_fewer_image_tokens(a, b):
    omni = get_model("qwen2.5-omni-7b")
    lo, hi = sorted((a, b))
    assert omni.media_tokens("image", pixels=lo) <= omni.media_tokens("image", pixels=hi)


def test_adapter_model_has_vision_and_audio_encoders():
    omni = get_model("qwen2.5-omni-7b")
    assert omni.encoder_for("image").name == "vision"
    assert omni.encoder_for("audio").name == "audio"
    assert get_model("chameleon-7b").encoder_for("image") is None
