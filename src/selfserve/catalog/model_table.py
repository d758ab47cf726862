"""The model catalog's entries, taken from each model's public Hugging Face `config.json`.

Each entry names its config source; parameter counts are derived, not copied, and the
derived totals are checked against the model cards in the tests (e.g. 8.03B, 70.6B).
"""

from __future__ import annotations

from selfserve.catalog.media import CHAMELEON_MEDIA, QWEN_OMNI_MEDIA
from selfserve.catalog.models import EncoderSpec, ModelSpec


def _hf(hf_id: str) -> str:
    return f"huggingface.co/{hf_id}/blob/main/config.json"


def _llama(name: str, hf_id: str, d: int, layers: int, heads: int, ffn: int) -> ModelSpec:
    return ModelSpec(
        name=name, hf_id=hf_id, hidden_size=d, num_layers=layers, num_heads=heads,
        num_kv_heads=8, head_dim=128, intermediate_size=ffn, vocab_size=128256,
        max_model_len=131072, source=_hf(hf_id),
    )  # fmt: skip


def _qwen25(
    name: str, hf_id: str, d: int, layers: int, heads: int, kv: int, ffn: int, ctx: int = 131072
) -> ModelSpec:
    return ModelSpec(
        name=name, hf_id=hf_id, hidden_size=d, num_layers=layers, num_heads=heads,
        num_kv_heads=kv, head_dim=d // heads, intermediate_size=ffn, vocab_size=152064,
        max_model_len=ctx, source=_hf(hf_id),
    )  # fmt: skip


_QWEN_OMNI_VISION = EncoderSpec(
    name="vision", params=0.675e9, hidden_size=1280, num_layers=32, inputs_per_media_token=4.0,
    source="Qwen2.5-Omni-7B thinker_config.vision_config (depth 32, hidden 1280, patch 14, merge 2); ~675M params [R]",
)  # fmt: skip
_QWEN_OMNI_AUDIO = EncoderSpec(
    name="audio", params=0.64e9, hidden_size=1280, num_layers=32, inputs_per_media_token=2.0,
    source="Qwen2.5-Omni-7B thinker_config.audio_config (Whisper-large-v3-style, d_model 1280, 32 layers, "
    "50 positions/s pooled 2x -> 25 tokens/s); ~640M params [R]",
)  # fmt: skip

MODELS: dict[str, ModelSpec] = {
    m.name: m
    for m in (
        _llama("llama-3.1-8b", "meta-llama/Llama-3.1-8B", 4096, 32, 32, 14336),
        _llama("llama-3.1-70b", "meta-llama/Llama-3.1-70B", 8192, 80, 64, 28672),
        _llama("llama-3.1-405b", "meta-llama/Llama-3.1-405B", 16384, 126, 128, 53248),
        _qwen25("qwen2.5-7b", "Qwen/Qwen2.5-7B", 3584, 28, 28, 4, 18944),
        _qwen25("qwen2.5-14b", "Qwen/Qwen2.5-14B", 5120, 48, 40, 8, 13824),
        _qwen25("qwen2.5-32b", "Qwen/Qwen2.5-32B", 5120, 64, 40, 8, 27648),
        _qwen25("qwen2.5-72b", "Qwen/Qwen2.5-72B", 8192, 80, 64, 8, 29568),
        _qwen25("qwen2.5-7b-instruct-1m", "Qwen/Qwen2.5-7B-Instruct-1M", 3584, 28, 28, 4, 18944, ctx=1010000),
        ModelSpec(
            name="qwen3-30b-a3b", hf_id="Qwen/Qwen3-30B-A3B", hidden_size=2048, num_layers=48,
            num_heads=32, num_kv_heads=4, head_dim=128, intermediate_size=0, vocab_size=151936,
            max_model_len=40960, num_experts=128, experts_per_token=8, moe_intermediate_size=768,
            source=_hf("Qwen/Qwen3-30B-A3B") + " (30.5B total, 3.3B active per the model card)",
        ),
        ModelSpec(
            name="qwen2.5-omni-7b", hf_id="Qwen/Qwen2.5-Omni-7B", hidden_size=3584, num_layers=28,
            num_heads=28, num_kv_heads=4, head_dim=128, intermediate_size=18944, vocab_size=152064,
            max_model_len=32768, fusion="adapter", media=QWEN_OMNI_MEDIA,
            encoders=(_QWEN_OMNI_VISION, _QWEN_OMNI_AUDIO),
            source=_hf("Qwen/Qwen2.5-Omni-7B") + " (thinker_config.text_config; talker not modelled)",
        ),
        ModelSpec(
            name="chameleon-7b", hf_id="facebook/chameleon-7b", hidden_size=4096, num_layers=32,
            num_heads=32, num_kv_heads=32, head_dim=128, intermediate_size=11008, vocab_size=65536,
            max_model_len=4096, fusion="early", media=CHAMELEON_MEDIA,
            source=_hf("facebook/chameleon-7b") + "; torchtune chameleon_7b builder agrees",
        ),
    )
}  # fmt: skip
