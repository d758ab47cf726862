"""Measure a model's layer shapes with random weights (needs torch; `pip install 'selfserve[gpu]'`).

Builds the transformer layers of a catalog model (RMSNorm, fused QKV, grouped-query SDPA
attention, SiLU-gated MLP, residuals) with random weights (step time does not depend on
weight values) and times prefill steps (`new_tokens` after a cached `prefix`) and decode
steps (`batch` sequences at `context`), writing the profile format `selfserve calibrate`
reads. Decode groups the query heads of each KV head into one SDPA call. On CUDA, decode
is captured in a CUDA graph and timed with CUDA events; energy comes from NVML's
total-energy counter when `pynvml` is importable. The LM head, embedding, RoPE and engine
overhead are left out, like the shared H200 profile.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace

from selfserve.catalog import ModelSpec
from selfserve.perf.profile_io import ProfileRecord


class TorchMissingError(RuntimeError):
    """torch is not installed; the message says how to install the `gpu` extra."""


def _torch():
    try:
        import torch
    except ImportError:
        raise TorchMissingError(
            "selfserve profile needs torch: pip install 'selfserve[gpu]' (or pip install torch)"
        ) from None
    return torch


# A tiny stand-in with the same structure, for CPU tests and smoke runs.
def tiny_shapes(model: ModelSpec) -> ModelSpec:
    group = max(1, model.num_heads // model.num_kv_heads)
    kv_heads = 2
    return replace(
        model, hidden_size=256, num_layers=2, num_heads=kv_heads * min(group, 4), num_kv_heads=kv_heads,
        head_dim=32, intermediate_size=512, max_model_len=4096,
    )  # fmt: skip


@dataclass(frozen=True, slots=True)
class ProfilePoint:
    kind: str
    batch: int
    new_tokens: int = 0
    prefix: int = 0
    context: int = 0


def default_points(
    shapes: str, max_model_len: int, kv_bytes_per_token: int, free_bytes: float
) -> list[ProfilePoint]:
    """The shared profile's grid (or a tiny one), within the context limit and memory."""
    if shapes == "tiny":
        return [
            ProfilePoint("prefill", 1, 16, 0), ProfilePoint("prefill", 1, 64, 0), ProfilePoint("prefill", 1, 16, 64),
            ProfilePoint("decode", 1, context=32), ProfilePoint("decode", 4, context=32),
            ProfilePoint("decode", 1, context=128), ProfilePoint("decode", 4, context=128),
        ]  # fmt: skip
    points = [ProfilePoint("prefill", 1, n, 0) for n in (128, 512, 2048, 8192, 32768)]
    points += [ProfilePoint("prefill", 1, n, p) for p in (8192, 32768) for n in (512, 2048)]
    points.append(ProfilePoint("prefill", 1, 2048, 131072))
    for ctx in (1024, 4096, 16384, 65536):
        for batch in (1, 4, 16, 64, 128, 256):
            points.append(ProfilePoint("decode", batch, context=ctx))
    fits = []
    for p in points:
        tokens = p.batch * (p.context + 1) if p.kind == "decode" else p.prefix + p.new_tokens
        if (
            tokens <= max_model_len * (p.batch if p.kind == "decode" else 1)
            and tokens * kv_bytes_per_token < 0.4 * free_bytes
        ):
            fits.append(p)
    return fits


class _Layers:
    """Random-weight transformer layers of `spec`'s shapes on one device."""

    def __init__(self, spec: ModelSpec, device: str, dtype) -> None:
        torch = _torch()
        self.torch, self.spec, self.device, self.dtype = torch, spec, device, dtype
        d, q, kv, ffn = spec.hidden_size, spec.q_dim, spec.kv_dim, spec.intermediate_size
        scale = d**-0.5

        def w(rows: int, cols: int):
            return torch.randn(rows, cols, device=device, dtype=dtype) * scale

        self.layers = [
            {"qkv": w(q + 2 * kv, d), "o": w(d, q), "gate_up": w(2 * ffn, d), "down": w(d, ffn) * (ffn / d) ** -0.5,
             "n1": torch.ones(d, device=device, dtype=dtype), "n2": torch.ones(d, device=device, dtype=dtype)}
            for _ in range(spec.num_layers)
        ]  # fmt: skip

    def _norm(self, x, weight):
        var = x.float().pow(2).mean(-1, keepdim=True)
        return (x.float() * self.torch.rsqrt(var + 1e-5)).to(x.dtype) * weight

    def _mlp(self, h, layer):
        F = self.torch.nn.functional
        gate, up = F.linear(self._norm(h, layer["n2"]), layer["gate_up"]).chunk(2, dim=-1)
        return h + F.linear(F.silu(gate) * up, layer["down"])

    def prefill(self, x, caches, mask):
        """x: [1, n, d]; caches: per layer (k, v) [1, h_kv, prefix, hd] or None."""
        torch, F, s = self.torch, self.torch.nn.functional, self.spec
        n = x.shape[1]
        group = s.num_heads // s.num_kv_heads
        for layer, cache in zip(self.layers, caches, strict=True):
            q, k, v = F.linear(self._norm(x, layer["n1"]), layer["qkv"]).split(
                [s.q_dim, s.kv_dim, s.kv_dim], dim=-1
            )
            q = q.view(1, n, s.num_heads, s.head_dim).transpose(1, 2)
            k = k.view(1, n, s.num_kv_heads, s.head_dim).transpose(1, 2)
            v = v.view(1, n, s.num_kv_heads, s.head_dim).transpose(1, 2)
            if cache is not None:
                k = torch.cat([cache[0], k], dim=2)
                v = torch.cat([cache[1], v], dim=2)
            k = k.repeat_interleave(group, dim=1)
            v = v.repeat_interleave(group, dim=1)
            if mask is None:
                a = F.scaled_dot_product_attention(q, k, v, is_causal=True)
            else:
                a = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
            x = x + F.linear(a.transpose(1, 2).reshape(1, n, s.q_dim), layer["o"])
            x = self._mlp(x, layer)
        return x

    def decode(self, x, caches):
        """x: [b, 1, d]; caches: per layer (k, v) [b, h_kv, ctx, hd]; one new token each."""
        F, s = self.torch.nn.functional, self.spec
        b = x.shape[0]
        group = s.num_heads // s.num_kv_heads
        for layer, (kc, vc) in zip(self.layers, caches, strict=True):
            q, _k, _v = F.linear(self._norm(x, layer["n1"]), layer["qkv"]).split(
                [s.q_dim, s.kv_dim, s.kv_dim], dim=-1
            )
            # The query heads of one KV head attend together: [b, h_kv, group, hd] vs [b, h_kv, ctx, hd].
            q = q.view(b, s.num_kv_heads, group, s.head_dim)
            a = F.scaled_dot_product_attention(q, kc, vc)
            x = x + F.linear(a.reshape(b, 1, s.q_dim), layer["o"])
            x = self._mlp(x, layer)
        return x


class _Timer:
    """Median/min milliseconds and joules per repetition of `fn` on the device."""

    def __init__(self, torch, device: str) -> None:
        self.torch, self.device = torch, device
        self.nvml = None
        if device.startswith("cuda"):
            try:
                import pynvml

                pynvml.nvmlInit()
                self.nvml = (pynvml, pynvml.nvmlDeviceGetHandleByIndex(torch.cuda.current_device()))
            except Exception:  # noqa: BLE001 - energy is optional; NVML may be absent
                self.nvml = None

    def _energy_mj(self) -> float | None:
        if self.nvml is None:
            return None
        pynvml, handle = self.nvml
        return float(pynvml.nvmlDeviceGetTotalEnergyConsumption(handle))

    def measure(
        self, fn: Callable[[], object], reps: int, warmup: int = 3
    ) -> tuple[float, float, float | None]:
        torch = self.torch
        cuda = self.device.startswith("cuda")
        for _ in range(warmup):
            fn()
        if cuda:
            torch.cuda.synchronize()
        times_ms = []
        start_mj = self._energy_mj()
        for _ in range(reps):
            if cuda:
                start, end = (
                    torch.cuda.Event(enable_timing=True),
                    torch.cuda.Event(enable_timing=True),
                )
                start.record()
                fn()
                end.record()
                end.synchronize()
                times_ms.append(start.elapsed_time(end))
            else:
                t0 = time.perf_counter()
                fn()
                times_ms.append((time.perf_counter() - t0) * 1e3)
        end_mj = self._energy_mj()
        joules = None if start_mj is None or end_mj is None else (end_mj - start_mj) / 1e3 / reps
        times_ms.sort()
        return times_ms[len(times_ms) // 2], times_ms[0], joules


def run_profile(
    model: ModelSpec,
    *,
    device: str = "cuda",
    shapes: str = "full",
    reps: int = 20,
    points: list[ProfilePoint] | None = None,
) -> Iterator[ProfileRecord]:
    """Yield one measured record per profile point (a generator, so callers show progress)."""
    torch = _torch()
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(
            "no CUDA device is visible; use --device cpu (timings then describe the CPU)"
        )
    if model.is_moe:
        raise ValueError(
            f"{model.name} is a mixture-of-experts model; profiling supports dense layers only"
        )
    if not device.startswith("cuda"):
        # One thread: on a shared CPU, more threads make medians noise, not faster.
        torch.set_num_threads(1)
    spec = tiny_shapes(model) if shapes == "tiny" else model
    dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
    layers = _Layers(spec, device, dtype)
    timer = _Timer(torch, device)
    free_bytes = torch.cuda.mem_get_info()[0] if device.startswith("cuda") else 8e9
    kv_tok = spec.kv_bytes_per_token(2 if dtype == torch.bfloat16 else 4)
    gpu_name = torch.cuda.get_device_name() if device.startswith("cuda") else "cpu"
    todo = (
        points
        if points is not None
        else default_points(shapes, spec.max_model_len, kv_tok, free_bytes)
    )
    for point in todo:
        with torch.inference_mode():
            fn = _build(torch, layers, spec, point, device, dtype)
            median_ms, min_ms, joules = timer.measure(
                fn, max(3, reps if point.new_tokens < 16384 else reps // 4)
            )
        del fn  # frees this point's KV caches (and CUDA graph pool) before the next one
        if device.startswith("cuda"):
            torch.cuda.empty_cache()
        yield ProfileRecord(
            kind=point.kind, batch=point.batch, new_tokens=point.new_tokens or 1, prefix=point.prefix,
            context=point.context, ms_median=round(median_ms, 4), ms_min=round(min_ms, 4),
            joules=joules, model=model.name if shapes == "full" else f"{model.name}:tiny", gpu=gpu_name,
        )  # fmt: skip


def _build(
    torch, layers: _Layers, spec: ModelSpec, point: ProfilePoint, device: str, dtype
) -> Callable[[], object]:
    d = spec.hidden_size
    if point.kind == "prefill":
        x = torch.randn(1, point.new_tokens, d, device=device, dtype=dtype)
        caches: list = [None] * spec.num_layers
        mask = None
        if point.prefix:
            shape = (1, spec.num_kv_heads, point.prefix, spec.head_dim)
            caches = [(torch.randn(shape, device=device, dtype=dtype), torch.randn(shape, device=device, dtype=dtype))
                      for _ in range(spec.num_layers)]  # fmt: skip
            total = point.prefix + point.new_tokens
            # Causal over prefix + new: new token i sees every cached token and new tokens <= i.
            mask = torch.ones(point.new_tokens, total, device=device, dtype=torch.bool).tril(
                diagonal=point.prefix
            )
        return lambda: layers.prefill(x, caches, mask)
    x = torch.randn(point.batch, 1, d, device=device, dtype=dtype)
    shape = (point.batch, spec.num_kv_heads, point.context + 1, spec.head_dim)
    caches = [(torch.randn(shape, device=device, dtype=dtype), torch.randn(shape, device=device, dtype=dtype))
              for _ in range(spec.num_layers)]  # fmt: skip
    if not device.startswith("cuda"):
        return lambda: layers.decode(x, caches)
    # Replay a CUDA graph, as serving engines do for decode, so launch overhead is not timed.
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(2):
            layers.decode(x, caches)
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        layers.decode(x, caches)
    return graph.replay
