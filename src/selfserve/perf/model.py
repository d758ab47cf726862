"""The step-time and energy model of one engine step on one replica (roofline + calibration).

A step is a batch of prefill chunks `(new_tokens, cached_tokens)` and decoding sequences
(their context lengths). Its time is a sum of the kernels a transformer runs one after
another, each a roofline of FLOPs and bytes against the card's peaks times a fitted
efficiency (`Calibration`): layer GEMMs (weights streamed, math overlapped), attention
(causal among new tokens, over the cached prefix, and decode KV reads that grow with
context), element-wise activation traffic and KV writes, the LM head for each sampled
sequence, TP all-reduces over the scale-up link, a fixed per-layer time and the engine's
own per-step overhead. Everything is precomputed into float coefficients at `create`, and a
pure-decode step is `alpha(B) + beta(B) x total_context`, so `decode_stretch` (many decode
steps in a row) is an exact arithmetic-series sum. No numpy in this module: the simulator
calls it millions of times.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

from selfserve.catalog import Accelerator, ModelSpec, get_accelerator, get_model
from selfserve.native_build import check_build
from selfserve.perf.calibration import Calibration, default_calibration, load_calibration
from selfserve.perf.deployment import (
    KV_DTYPE_BYTES,
    WEIGHT_DTYPE_BYTES,
    check_deployment,
    kv_bytes_per_token_per_gpu,
    kv_capacity_tokens,
    kv_heads_per_gpu,
)

check_build()  # this module may be compiled: refuse a build older than its source


class StepCost(NamedTuple):
    """Time and energy of one step (or of a stretch of steps) on a whole replica.

    A NamedTuple rather than a frozen dataclass: it is immutable too, and building one is
    several times cheaper, which matters at millions of `decode_stretch` calls.
    """

    time_s: float
    energy_j: float


_new_cost = tuple.__new__  # builds a StepCost without NamedTuple's Python-level __new__


def _smooth_max(a: float, b: float, p: float) -> float:
    """(a^p + b^p)^(1/p): between a + b (p = 1) and max(a, b) (p -> inf)."""
    hi, lo = (a, b) if a >= b else (b, a)
    if hi <= 0.0:
        return 0.0
    return hi * (1.0 + (lo / hi) ** p) ** (1.0 / p)


def _memo(table: dict, key: int, value):
    """Store `value` under `key` while the table is small (bounded memory); return it."""
    if len(table) < 65536:
        table[key] = value
    return value


class PerfModel:
    """Step time and energy of one replica: `model` on `tp` GPUs of `hardware`.

    Build with `PerfModel.create(...)`. Attributes: `model` (ModelSpec), `hardware`
    (Accelerator), `tp`, `num_gpus`, `weight_dtype`, `calibration`, `kv_bytes_per_token`
    (whole replica), `max_model_len`, `price_per_gpu_hour`, `idle_power_w` (per GPU).
    """

    __slots__ = (
        "model", "hardware", "tp", "num_gpus", "weight_dtype", "calibration", "layers_only",
        "kv_bytes_per_token", "max_model_len", "price_per_gpu_hour", "idle_power_w",
        "_gemm_s_per_token", "_gemm_half", "_p", "_weight_fixed_s", "_expert_s", "_experts",
        "_expert_pick", "_moe_layers", "_act_s_per_token", "_ar_s_per_token", "_ar_fixed_s",
        "_lm_s_per_seq", "_lm_weight_s", "_fixed_s", "_seq_s", "_causal_s_per_pair",
        "_cached_s_per_pair", "_kv_read_s_per_token", "_kv_rate", "_kv_unit_rate",
        "_kv_tok_bytes", "_attn_flops_per_pair", "_gemm_flops_per_token", "_lm_flops_per_seq",
        "_weight_bytes", "_expert_bytes", "_act_bytes_per_token", "_lm_bytes",
        "_compute_w", "_j_per_byte", "_j_per_kv_byte", "_idle_replica_w", "_decode_cache", "_token_cache", "_seq_cache",
        "_gemm_cache", "_lm_cache", "_slope_cache",
    )  # fmt: skip

    @classmethod
    def create(
        cls,
        model: str | ModelSpec,
        hardware: str | Accelerator,
        tp: int = 1,
        weight_dtype: str = "bf16",
        calibration: Calibration | str | Path | None = None,
        *,
        layers_only: bool = False,
    ) -> PerfModel:
        """A perf model for a deployment; raises for unknown names or a deployment that cannot run.

        `calibration`: None -> the shipped calibration for this card, else the H200 one applied
        by datasheet ratios (its factors are fractions of peak); a `Calibration` or a path to a
        calibration JSON file otherwise. `layers_only=True` leaves out the LM head and engine
        overhead, matching what a layer profile measures (used by `selfserve calibrate`).
        """
        spec = get_model(model) if isinstance(model, str) else model
        hw = get_accelerator(hardware) if isinstance(hardware, str) else hardware
        check_deployment(spec, hw, tp, weight_dtype)
        if calibration is None:
            cal = default_calibration(hw.name)
        elif isinstance(calibration, Calibration):
            cal = calibration.validate()
        else:
            cal = load_calibration(calibration)
        return cls(spec, hw, tp, weight_dtype, cal, layers_only)

    def __init__(
        self,
        spec: ModelSpec,
        hw: Accelerator,
        tp: int,
        weight_dtype: str,
        cal: Calibration,
        layers_only: bool,
    ) -> None:
        self.model, self.hardware, self.tp, self.num_gpus = spec, hw, tp, tp
        self.weight_dtype, self.calibration, self.layers_only = weight_dtype, cal, layers_only
        self.max_model_len = spec.max_model_len
        self.price_per_gpu_hour = hw.price_per_gpu_hour
        # The fitted idle power belongs to the card it was measured on; other cards use theirs.
        self.idle_power_w = cal.idle_power_w if cal.hardware == hw.name else hw.idle_w
        kv_tok = kv_bytes_per_token_per_gpu(spec, tp)
        self.kv_bytes_per_token = kv_tok * tp
        self._kv_tok_bytes = kv_tok
        wbytes = WEIGHT_DTYPE_BYTES[weight_dtype]
        peak_gemm = hw.flops(weight_dtype)  # FP8/FP4 weights run W8A8/W4A4-style GEMMs
        peak_attn = hw.bf16_flops  # attention runs in bf16 on a bf16 KV cache
        bw = hw.hbm_bytes_per_s
        weight_rate = bw * cal.weight_bw_efficiency
        L, d, hd = spec.num_layers, spec.hidden_size, spec.head_dim

        # Layer GEMMs: FLOPs from active params; bytes from the weights a step touches.
        self._gemm_flops_per_token = 2.0 * spec.active_layer_params / tp
        self._gemm_s_per_token = self._gemm_flops_per_token / (peak_gemm * cal.gemm_efficiency)
        self._gemm_half = cal.gemm_half_tokens
        self._p = cal.overlap_exponent
        expert_total = spec.num_layers * spec.num_experts * spec.expert_params if spec.is_moe else 0
        self._weight_bytes = (spec.layer_params - expert_total) * wbytes / tp
        self._weight_fixed_s = self._weight_bytes / weight_rate
        self._expert_bytes = (
            spec.expert_params * spec.num_layers * wbytes / tp
        )  # one expert, all layers
        self._expert_s = self._expert_bytes / weight_rate
        self._experts = spec.num_experts
        self._expert_pick = 1.0 - spec.experts_per_token / spec.num_experts if spec.is_moe else 0.0
        self._moe_layers = spec.is_moe

        # Element-wise traffic per token (norms, residuals, gated activation; KV write).
        ffn_per_gpu = (
            spec.intermediate_size + spec.experts_per_token * spec.moe_intermediate_size
        ) / tp
        self._act_bytes_per_token = L * (10 * d + 3 * ffn_per_gpu) * 2 + kv_tok
        self._act_s_per_token = self._act_bytes_per_token / (bw * cal.kv_bw_efficiency)

        # Attention: 4 x h_q x d_h FLOPs per (query, key) pair per layer.
        self._attn_flops_per_pair = 4.0 * L * (spec.num_heads // tp) * hd
        self._causal_s_per_pair = self._attn_flops_per_pair / (
            peak_attn * cal.attn_causal_efficiency
        )
        self._cached_s_per_pair = self._attn_flops_per_pair / (
            peak_attn * cal.attn_cached_efficiency
        )
        self._kv_rate = bw * cal.kv_bw_efficiency
        self._kv_read_s_per_token = kv_tok / self._kv_rate
        self._kv_unit_rate = (
            cal.attn_unit_bw_fraction * bw * kv_heads_per_gpu(spec, tp)
        )  # per sequence

        # TP all-reduce: two per layer of T x d bf16 values, ring over one link direction.
        if tp > 1:
            link = hw.scaleup_unidir_bytes_per_s * cal.allreduce_bw_efficiency
            self._ar_s_per_token = 2 * L * (2.0 * (tp - 1) / tp) * d * 2 / link
            self._ar_fixed_s = 2 * L * cal.allreduce_latency_s
        else:
            self._ar_s_per_token = self._ar_fixed_s = 0.0

        # LM head (logits for each sampled sequence) and engine overhead: not in a layer profile.
        if layers_only:
            self._lm_flops_per_seq = self._lm_bytes = 0.0
            self._lm_s_per_seq = self._lm_weight_s = 0.0
            self._fixed_s = L * cal.layer_overhead_s + self._ar_fixed_s
            self._seq_s = 0.0
        else:
            self._lm_flops_per_seq = 2.0 * spec.vocab_size * d / tp
            self._lm_bytes = spec.vocab_size * d * wbytes / tp
            self._lm_s_per_seq = self._lm_flops_per_seq / (peak_gemm * cal.gemm_efficiency)
            self._lm_weight_s = self._lm_bytes / weight_rate
            self._fixed_s = L * cal.layer_overhead_s + self._ar_fixed_s + cal.engine_step_overhead_s
            self._seq_s = cal.engine_seq_overhead_s

        # Energy per GPU: idle power x time, + a power draw (fraction of TDP) while kernels are
        # compute-bound, + energy per byte moved (fraction of TDP at peak bandwidth); KV-cache
        # reads by attention kernels draw more per byte than streamed weights on the H200 profile.
        self._compute_w = cal.compute_power_fraction * hw.tdp_w
        self._j_per_byte = cal.memory_power_fraction * hw.tdp_w / bw
        self._j_per_kv_byte = cal.kv_power_fraction * hw.tdp_w / bw
        self._idle_replica_w = self.idle_power_w * tp
        self._decode_cache: dict[int, tuple[float, float, float, float]] = {0: (0.0, 0.0, 0.0, 0.0)}
        # Per-instance memo tables (bounded), keyed by step token count / sequence count.
        self._token_cache: dict[int, float] = {}
        self._seq_cache: dict[int, float] = {}
        self._gemm_cache: dict[int, tuple[float, float, float]] = {}
        self._lm_cache: dict[int, tuple[float, float]] = {}
        self._slope_cache: dict[int, tuple[float, float]] = {}

    # ----- pieces -----
    def _gemm_time(self, tokens: int) -> tuple[float, float, float]:
        """Layer-GEMM time for `tokens` rows, its compute-bound share, and weight bytes touched."""
        compute_s = self._gemm_s_per_token * (tokens + self._gemm_half)
        if self._moe_layers:
            # Distinct experts hit by `tokens` top-k draws (expected value per layer).
            touched = self._experts * (1.0 - self._expert_pick**tokens)
            memory_s = self._weight_fixed_s + self._expert_s * touched
            nbytes = self._weight_bytes + self._expert_bytes * touched
        else:
            memory_s, nbytes = self._weight_fixed_s, self._weight_bytes
        total_s = _smooth_max(compute_s, memory_s, self._p)
        return total_s, total_s * compute_s / (compute_s + memory_s), nbytes

    def _lm_time(self, seqs: int) -> tuple[float, float]:
        """LM-head time for `seqs` sampled rows, and its compute-bound share."""
        if seqs == 0 or self._lm_bytes == 0.0:
            return 0.0, 0.0
        compute_s = self._lm_s_per_seq * (seqs + self._gemm_half)
        total_s = _smooth_max(compute_s, self._lm_weight_s, self._p)
        return total_s, total_s * compute_s / (compute_s + self._lm_weight_s)

    def _decode_rate_slope(self, batch_size: int) -> tuple[float, float]:
        """(seconds per context token, compute-bound part of it) of decode attention."""
        rate = self._kv_rate
        if self._kv_unit_rate > 0.0:
            # Kernels without split-KV run one work unit per (sequence, KV head).
            rate = min(rate, self._kv_unit_rate * batch_size)
        memory_slope = self._kv_tok_bytes / rate
        if self._cached_s_per_pair > memory_slope:
            return self._cached_s_per_pair, self._cached_s_per_pair
        return memory_slope, 0.0

    def _decode_coeffs(self, batch_size: int) -> tuple[float, float, float, float]:
        """(alpha_s, beta_s, alpha_j, beta_j): decode step = alpha + beta x total context."""
        cached = self._decode_cache.get(batch_size)
        if cached is not None:
            return cached
        if batch_size <= 0:  # an empty batch costs nothing (negative sizes are treated alike)
            return (0.0, 0.0, 0.0, 0.0)
        b = batch_size
        gemm_s, gemm_busy_s, wbytes = self._gemm_time(b)
        lm_s, lm_busy_s = self._lm_time(b)
        alpha_s = (gemm_s + lm_s + self._act_s_per_token * b + self._ar_s_per_token * b
                   + self._fixed_s + self._seq_s * b)  # fmt: skip
        beta_s, beta_busy_s = self._decode_rate_slope(b)
        idle = self._idle_replica_w
        alpha_bytes = wbytes + self._lm_bytes + self._act_bytes_per_token * b
        alpha_j = idle * alpha_s + self.tp * (
            self._compute_w * (gemm_busy_s + lm_busy_s) + self._j_per_byte * alpha_bytes
        )
        beta_j = idle * beta_s + self.tp * (
            self._compute_w * beta_busy_s + self._j_per_kv_byte * self._kv_tok_bytes
        )
        coeffs = (alpha_s, beta_s, alpha_j, beta_j)
        self._decode_cache[batch_size] = coeffs
        return coeffs

    # ----- public API -----
    def decode_step_time_s(self, batch_size: int, total_context_tokens: int) -> float:
        """Time of one pure-decode step of `batch_size` sequences holding `total_context_tokens`."""
        try:
            c = self._decode_cache[batch_size]
        except KeyError:
            c = self._decode_coeffs(batch_size)
        return c[0] + c[1] * total_context_tokens

    def decode_stretch(
        self, batch_size: int, total_context_tokens: int, num_steps: int
    ) -> StepCost:
        """Exact sum over `num_steps` decode steps; each step adds `batch_size` context tokens."""
        if num_steps <= 0:
            return StepCost(0.0, 0.0)
        try:
            c = self._decode_cache[batch_size]
        except KeyError:
            c = self._decode_coeffs(batch_size)
        n = num_steps
        context_sum = n * total_context_tokens + batch_size * (n * (n - 1) // 2)
        return _new_cost(StepCost, (n * c[0] + c[1] * context_sum, n * c[2] + c[3] * context_sum))

    def step_cost(
        self, prefill: Sequence[tuple[int, int]], decode_contexts: Sequence[int]
    ) -> StepCost:
        """Time and energy of one mixed step: prefill chunks `(new, cached)` + decoding contexts."""
        b = len(decode_contexts)
        if not prefill:
            if b == 0:
                return StepCost(0.0, 0.0)
            c = self._decode_cache.get(b) or self._decode_coeffs(b)
            total = sum(decode_contexts)
            return StepCost(c[0] + c[1] * total, c[2] + c[3] * total)
        new_total = 0
        attn_s = 0.0
        busy_s = 0.0  # time in compute-bound kernels, for the power model
        kv_read_tokens = 0
        causal_pp = self._causal_s_per_pair
        cached_pp = self._cached_s_per_pair
        kv_read = self._kv_read_s_per_token
        for new, cached in prefill:
            new_total += new
            causal_s = new * (new + 1) * 0.5 * causal_pp
            attn_s += causal_s
            busy_s += causal_s
            if cached:
                compute_s = float(new) * cached * cached_pp
                memory_s = cached * kv_read
                if compute_s >= memory_s:
                    attn_s += compute_s
                    busy_s += compute_s
                else:
                    attn_s += memory_s
                kv_read_tokens += cached
        tokens = new_total + b
        seqs = len(prefill) + b
        # the pieces are memoized by token / sequence count (same values, same arithmetic);
        # `get`, not try/except: a raised KeyError is costly once compiled (a traceback)
        gemm = self._gemm_cache.get(tokens)
        if gemm is None:
            gemm = _memo(self._gemm_cache, tokens, self._gemm_time(tokens))
        gemm_s, gemm_busy_s, wbytes = gemm
        lm = self._lm_cache.get(seqs)
        if lm is None:
            lm = _memo(self._lm_cache, seqs, self._lm_time(seqs))
        lm_s, lm_busy_s = lm
        time_s = (gemm_s + lm_s + attn_s + self._act_s_per_token * tokens
                  + self._ar_s_per_token * tokens + self._fixed_s + self._seq_s * seqs)  # fmt: skip
        busy_s += gemm_busy_s + lm_busy_s
        if b:
            total = sum(decode_contexts)
            slopes = self._slope_cache.get(b)
            if slopes is None:
                slopes = _memo(self._slope_cache, b, self._decode_rate_slope(b))
            slope, busy_slope = slopes
            time_s += slope * total
            busy_s += busy_slope * total
            kv_read_tokens += total
        nbytes = wbytes + self._lm_bytes + self._act_bytes_per_token * tokens
        kv_bytes = kv_read_tokens * self._kv_tok_bytes
        energy_j = self._idle_replica_w * time_s + self.tp * (
            self._compute_w * busy_s + self._j_per_byte * nbytes + self._j_per_kv_byte * kv_bytes
        )
        return _new_cost(StepCost, (time_s, energy_j))

    def step_time_s(
        self, prefill: Sequence[tuple[int, int]], decode_contexts: Sequence[int]
    ) -> float:
        """Seconds for one engine step (same arithmetic as `step_cost`, without the energy)."""
        b = len(decode_contexts)
        if not prefill:
            try:
                c = self._decode_cache[b]
            except KeyError:
                c = self._decode_coeffs(b)
            return c[0] + c[1] * sum(decode_contexts)
        causal_pp = self._causal_s_per_pair
        cached_pp = self._cached_s_per_pair
        kv_read = self._kv_read_s_per_token
        new_total = 0
        attn_s = 0.0
        for new, cached in prefill:
            new_total += new
            attn_s += new * (new + 1) * 0.5 * causal_pp
            if cached:
                compute_s = float(new) * cached * cached_pp
                memory_s = cached * kv_read
                attn_s += compute_s if compute_s >= memory_s else memory_s
        tokens = new_total + b
        try:
            base_s = self._token_cache[tokens]
        except KeyError:
            base_s = self._token_time(tokens)
        seqs = len(prefill) + b
        try:
            seq_s = self._seq_cache[seqs]
        except KeyError:
            seq_s = self._seq_time(seqs)
        time_s = base_s + seq_s + attn_s
        if b:
            try:
                c = self._decode_cache[b]
            except KeyError:
                c = self._decode_coeffs(b)
            time_s += c[1] * sum(decode_contexts)
        return time_s

    def _token_time(self, tokens: int) -> float:
        """Per-step time that depends on the step's token count: GEMMs, activations, all-reduce."""
        value = (
            self._gemm_time(tokens)[0]
            + (self._act_s_per_token + self._ar_s_per_token) * tokens
            + self._fixed_s
        )
        if len(self._token_cache) < 65536:
            self._token_cache[tokens] = value
        return value

    def _seq_time(self, seqs: int) -> float:
        """Per-step time that depends on the number of sampled sequences: LM head, engine."""
        value = self._lm_time(seqs)[0] + self._seq_s * seqs
        if len(self._seq_cache) < 65536:
            self._seq_cache[seqs] = value
        return value

    def step_energy_j(
        self, prefill: Sequence[tuple[int, int]], decode_contexts: Sequence[int]
    ) -> float:
        """Joules for one engine step on the whole replica (all `num_gpus` boards, idle included)."""
        return self.step_cost(prefill, decode_contexts).energy_j

    def prefill_time_s(self, new_tokens: int, cached_tokens: int = 0) -> float:
        """One prefill chunk alone in a step."""
        return self.step_cost(((new_tokens, cached_tokens),), ()).time_s

    def encoder_time_s(self, media_tokens: int, kind: str = "image") -> float:
        """Encoder-stage seconds for `media_tokens` LLM media tokens (0 unless adapter-style)."""
        if media_tokens <= 0 or self.model.fusion != "adapter":
            return 0.0
        enc = self.model.encoder_for(kind)
        if enc is None:
            return 0.0
        cal, hw = self.calibration, self.hardware
        positions = media_tokens * enc.inputs_per_media_token
        compute_s = (
            2.0
            * enc.params
            / self.tp
            * (positions + cal.gemm_half_tokens)
            / (hw.bf16_flops * cal.gemm_efficiency)
        )
        memory_s = enc.params * 2.0 / self.tp / (hw.hbm_bytes_per_s * cal.weight_bw_efficiency)
        return (
            _smooth_max(compute_s, memory_s, cal.overlap_exponent)
            + enc.num_layers * cal.layer_overhead_s
        )

    def kv_capacity_tokens(self, gpu_memory_utilization: float = 0.9) -> int:
        """KV-cache tokens this replica holds at the given memory utilization."""
        return kv_capacity_tokens(
            self.model, self.hardware, self.tp, self.weight_dtype, gpu_memory_utilization
        )

    def describe(self) -> str:
        return f"{self.model.name} on {self.tp}x{self.hardware.name} ({self.weight_dtype})"

    def __repr__(self) -> str:
        return f"PerfModel({self.describe()}, calibration={self.calibration.hardware}/{self.calibration.model})"


__all__ = ["KV_DTYPE_BYTES", "PerfModel", "StepCost"]
