"""Model architectures: the shape figures a perf model needs, and sizes derived from them.

A `ModelSpec` holds what a public `config.json` says (hidden size, layers, heads, FFN,
vocabulary, context limit, MoE experts) plus, for omnimodal models, the fusion kind, media
token rules and the encoder stage. Derived sizes (parameters, weight bytes, KV bytes per
token, FLOPs per token) are computed here once; nothing here knows about hardware.
"""

from __future__ import annotations

from dataclasses import dataclass

from selfserve.catalog.media import MediaRules


@dataclass(frozen=True, slots=True)
class EncoderSpec:
    """The encoder stage of an adapter-style model (a ViT / audio encoder before the LLM).

    `inputs_per_media_token`: encoder positions per LLM media token (4 for a 2x2 patch
    merge), so encoder FLOPs = 2 x params x positions.
    """

    name: str
    params: float
    hidden_size: int
    num_layers: int
    inputs_per_media_token: float
    source: str


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """One model's architecture from its public config; see `selfserve.catalog.get_model`."""

    name: str
    hf_id: str
    hidden_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    intermediate_size: int  # dense FFN width (0 for all-MoE models)
    vocab_size: int
    max_model_len: int
    fusion: str = "text"  # "text", "early" (media are tokens in the sequence), "adapter"
    num_experts: int = 0
    experts_per_token: int = 0
    moe_intermediate_size: int = 0
    media: MediaRules | None = None
    encoders: tuple[EncoderSpec, ...] = ()
    source: str = ""

    # --- derived sizes (per whole model, unsharded) ---
    @property
    def is_moe(self) -> bool:
        return self.num_experts > 0

    @property
    def q_dim(self) -> int:
        return self.num_heads * self.head_dim

    @property
    def kv_dim(self) -> int:
        return self.num_kv_heads * self.head_dim

    @property
    def attn_params_per_layer(self) -> int:
        d = self.hidden_size
        return d * self.q_dim + 2 * d * self.kv_dim + self.q_dim * d

    @property
    def expert_params(self) -> int:
        """Parameters of one routed expert (gate, up, down)."""
        return 3 * self.hidden_size * self.moe_intermediate_size

    @property
    def dense_mlp_params_per_layer(self) -> int:
        return 3 * self.hidden_size * self.intermediate_size

    @property
    def layer_params(self) -> int:
        """All transformer-layer weights (every expert), without embedding and LM head."""
        per_layer = self.attn_params_per_layer + self.dense_mlp_params_per_layer
        if self.is_moe:
            per_layer += self.num_experts * self.expert_params + self.hidden_size * self.num_experts
        return self.num_layers * per_layer

    @property
    def active_layer_params(self) -> int:
        """Layer weights one token multiplies with (routed experts: only the top-k)."""
        per_layer = self.attn_params_per_layer + self.dense_mlp_params_per_layer
        if self.is_moe:
            per_layer += (
                self.experts_per_token * self.expert_params + self.hidden_size * self.num_experts
            )
        return self.num_layers * per_layer

    @property
    def lm_head_params(self) -> int:
        return self.vocab_size * self.hidden_size

    @property
    def total_params(self) -> int:
        """Layers + input embedding + LM head (counted once more even when tied, as served)."""
        return self.layer_params + 2 * self.vocab_size * self.hidden_size

    @property
    def active_params(self) -> int:
        return self.active_layer_params + 2 * self.vocab_size * self.hidden_size

    def kv_bytes_per_token(self, kv_dtype_bytes: int = 2) -> int:
        """K and V for every layer: 2 x L x h_kv x d_h x bytes (whole model, all TP ranks)."""
        return 2 * self.num_layers * self.kv_dim * kv_dtype_bytes

    def weight_bytes(self, weight_dtype_bytes: float = 2.0) -> float:
        """Bytes of weights held on the GPUs (layers + embedding + LM head)."""
        return self.total_params * weight_dtype_bytes

    def media_tokens(
        self, kind: str, pixels: int = 0, seconds: float = 0.0, frames: int = 0
    ) -> int:
        """LLM-sequence tokens for one media item (`kind` in "image", "audio", "video").

        Raises `MediaNotSupportedError` (a ValueError) for a text model or a modality the
        model does not take, naming the ones it does.
        """
        if self.media is None:
            from selfserve.catalog.errors import MediaNotSupportedError

            raise MediaNotSupportedError(
                f"model {self.name!r} is text-only; it takes no {kind!r} input"
            )
        return self.media.tokens(self.name, kind, pixels, seconds, frames)

    def encoder_for(self, kind: str) -> EncoderSpec | None:
        """The encoder that handles `kind` media (audio -> audio encoder, else vision)."""
        if not self.encoders:
            return None
        wanted = "audio" if kind == "audio" else "vision"
        for encoder in self.encoders:
            if encoder.name == wanted:
                return encoder
        return self.encoders[0]
