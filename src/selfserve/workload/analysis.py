"""Traffic analysis: the figures `selfserve analyze` prints, as one frozen record.

Arrival process (span, mean and peak-minute rate, CV of inter-arrival gaps), token-length
percentiles (numpy linear interpolation, like the trace READMEs), prefix reuse (infinite
cache and the LRU curve from `prefix_reuse`), sessions, modality mix and tag counts. The
record also holds the compact series the HTML report plots (rate per bin, length quantiles),
so the report renders without recomputing anything.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from selfserve.workload.prefix_reuse import PrefixReuse, prefix_reuse
from selfserve.workload.request import MEDIA_KINDS, Workload

PERCENTILES = (50, 90, 99)
DEFAULT_KV_BYTES_PER_TOKEN = 131_072  # llama-3.1-8b, bf16: 2 x 32 layers x 8 kv heads x 128 x 2 B
TAG_KEYS = ("model", "class", "tenant", "client")


@dataclass(frozen=True, slots=True)
class LengthStats:
    mean: float
    p50: float
    p90: float
    p99: float
    max: int
    total: int

    @staticmethod
    def of(values: np.ndarray) -> LengthStats:
        if len(values) == 0:
            return LengthStats(0.0, 0.0, 0.0, 0.0, 0, 0)
        p50, p90, p99 = np.percentile(values, PERCENTILES)
        return LengthStats(
            float(values.mean()),
            float(p50),
            float(p90),
            float(p99),
            int(values.max()),
            int(values.sum()),
        )


@dataclass(frozen=True, slots=True)
class ModalityMix:
    kind: str
    requests_fraction: float  # requests carrying at least one part of this kind
    parts_per_request: float  # among those requests
    tokens_mean: float  # media tokens per request that has this kind
    token_share: float  # of all prompt tokens (text + media)
    distinct_fraction: float  # distinct content hashes / parts (1 - repeat rate)


@dataclass(frozen=True, slots=True)
class SessionStats:
    sessions: int
    requests_in_sessions_fraction: float
    multi_turn_requests_fraction: float
    turns_p50: float
    turns_p90: float
    turns_max: int


@dataclass(frozen=True, slots=True)
class WorkloadAnalysis:
    name: str
    source: str
    requests: int
    span_s: float
    mean_rate_per_s: float
    peak_minute_rate_per_s: float
    interarrival_cv: float
    prompt_tokens: LengthStats
    output_tokens: LengthStats
    media_tokens: LengthStats
    prefix: PrefixReuse | None
    kv_bytes_per_token: int
    kv_model: str
    sessions: SessionStats | None
    modality: tuple[ModalityMix, ...]
    tags: dict[str, dict[str, int]]
    warnings: tuple[str, ...]
    skipped_records: int
    # Series for plots: arrivals per bin, and length quantiles at 0..100%.
    rate_bin_s: float = 60.0
    rate_per_bin: tuple[int, ...] = ()
    prompt_quantiles: tuple[float, ...] = ()
    output_quantiles: tuple[float, ...] = ()
    extra: dict[str, Any] = field(default_factory=dict)

    def kv_gb(self, blocks: float) -> float:
        """GB (1e9 bytes) of KV that `blocks` prefix blocks take for the analysed model."""
        block_size = self.prefix.block_size if self.prefix else 16
        return blocks * block_size * self.kv_bytes_per_token / 1e9

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: numpy arrays become lists, the LRU curve gets its GB column."""
        data = asdict(self)
        if self.prefix is not None:
            lru = self.prefix.lru
            data["prefix"]["lru"] = {
                "capacity_blocks": lru.capacity_blocks.tolist(),
                "capacity_gb": [self.kv_gb(c) for c in lru.capacity_blocks.tolist()],
                "block_hit_rate": lru.block_hit_rate.tolist(),
                "token_hit_rate": lru.token_hit_rate.tolist(),
            }
            data["prefix"]["working_set_gb"] = self.kv_gb(self.prefix.distinct_blocks)
        return data


def analyze_workload(
    workload: Workload,
    *,
    kv_bytes_per_token: int = DEFAULT_KV_BYTES_PER_TOKEN,
    kv_model: str = "llama-3.1-8b",
    lru_points: int = 32,
) -> WorkloadAnalysis:
    requests = workload.requests
    if not requests:
        raise ValueError(f"{workload.name}: cannot analyse an empty workload")
    n = len(requests)
    arrivals = np.fromiter((r.arrival_s for r in requests), np.float64, n)
    prompt = np.fromiter((r.prompt_tokens for r in requests), np.int64, n)
    output = np.fromiter((r.output_tokens for r in requests), np.int64, n)
    media = np.fromiter((r.media_tokens for r in requests), np.int64, n)
    span_s = float(arrivals[-1] - arrivals[0])
    gaps = np.diff(arrivals)
    cv = float(gaps.std() / gaps.mean()) if len(gaps) and gaps.mean() > 0 else 0.0
    relative = arrivals - arrivals[0]
    minute_counts = np.bincount((relative // 60.0).astype(np.int64))
    bin_s = max(60.0, float(np.ceil(span_s / 600.0 / 60.0) * 60.0))  # at most ~600 bins
    rate_bins = np.bincount((relative // bin_s).astype(np.int64))
    quantile_grid = np.linspace(0, 100, 101)
    return WorkloadAnalysis(
        name=workload.name,
        source=workload.source,
        requests=n,
        span_s=span_s,
        mean_rate_per_s=(n - 1) / span_s if span_s > 0 else float("nan"),
        peak_minute_rate_per_s=float(minute_counts.max()) / 60.0,
        interarrival_cv=cv,
        prompt_tokens=LengthStats.of(prompt),
        output_tokens=LengthStats.of(output),
        media_tokens=LengthStats.of(media),
        prefix=prefix_reuse(requests, num_points=lru_points),
        kv_bytes_per_token=kv_bytes_per_token,
        kv_model=kv_model,
        sessions=_sessions(workload),
        modality=_modality(workload, prompt, media),
        tags=_tags(workload),
        warnings=tuple(workload.warnings),
        skipped_records=workload.skipped_records,
        rate_bin_s=bin_s,
        rate_per_bin=tuple(int(c) for c in rate_bins),
        prompt_quantiles=tuple(float(q) for q in np.percentile(prompt, quantile_grid)),
        output_quantiles=tuple(float(q) for q in np.percentile(output, quantile_grid)),
    )


def _sessions(workload: Workload) -> SessionStats | None:
    counts = Counter(r.session_id for r in workload.requests if r.session_id is not None)
    if not counts:
        return None
    turns = np.fromiter(counts.values(), np.int64, len(counts))
    in_sessions = int(turns.sum())
    return SessionStats(
        sessions=len(counts),
        requests_in_sessions_fraction=in_sessions / len(workload),
        multi_turn_requests_fraction=float(turns[turns > 1].sum()) / len(workload),
        turns_p50=float(np.percentile(turns, 50)),
        turns_p90=float(np.percentile(turns, 90)),
        turns_max=int(turns.max()),
    )


def _modality(workload: Workload, prompt: np.ndarray, media: np.ndarray) -> tuple[ModalityMix, ...]:
    total_tokens = float(prompt.sum() + media.sum()) or 1.0
    mixes = []
    for kind in MEDIA_KINDS:
        requests_with = 0
        parts = 0
        tokens = 0
        hashes: set[int] = set()
        for r in workload.requests:
            if not r.media:
                continue
            mine = [m for m in r.media if m.kind == kind]
            if mine:
                requests_with += 1
                parts += len(mine)
                tokens += sum(m.tokens for m in mine)
                hashes.update(m.content_hash for m in mine)
        if requests_with:
            mixes.append(
                ModalityMix(
                    kind=kind,
                    requests_fraction=requests_with / len(workload),
                    parts_per_request=parts / requests_with,
                    tokens_mean=tokens / requests_with,
                    token_share=tokens / total_tokens,
                    distinct_fraction=len(hashes) / parts,
                )
            )
    return tuple(mixes)


def _tags(workload: Workload) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    for key in TAG_KEYS:
        counts = Counter(r.tags[key] for r in workload.requests if key in r.tags)
        if counts:
            out[key] = dict(counts.most_common(10))
    return out
