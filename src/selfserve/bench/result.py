"""What a bench run measured: per-request outcomes and the summary `vllm bench serve` prints.

Definitions follow the project's (ARCHITECTURE.md, "Metrics"): TTFT is send → first token,
TPOT is (E2E − TTFT) / (output tokens − 1), ITL every gap between tokens, E2E send → last
token; goodput counts requests meeting every SLO target. All durations are wall seconds
multiplied by `time_scale`, so a run against twins at ``--time-scale X`` reports model
time (what a real engine would show).
"""

from __future__ import annotations

import re
from array import array
from dataclasses import dataclass, field

import numpy as np

PERCENTILES = (50, 90, 95, 99)
INCOMPLETE = "incomplete"
_SLO_KEYS = ("ttft", "tpot", "itl", "e2e")
_DURATION = re.compile(r"^\s*([0-9]*\.?[0-9]+)\s*(ms|s)?\s*$")


class SloFormatError(ValueError):
    """An SLO string that is not ``key=duration[,key=duration]`` with known keys."""


def parse_slo(text: str | dict | None) -> dict[str, float]:
    """``"ttft=2s,tpot=100ms"`` → ``{"ttft": 2.0, "tpot": 0.1}`` (seconds).

    Also accepts a dict, or an object with `ttft_s`/`tpot_s`/`itl_s`/`e2e_s` attributes
    (the simulator's SLO record).
    """
    if text is None:
        return {}
    if isinstance(text, dict):
        return {key: float(value) for key, value in text.items()}
    if not isinstance(text, str):
        found = {key: getattr(text, f"{key}_s", None) for key in _SLO_KEYS}
        return {key: float(value) for key, value in found.items() if value is not None}
    out: dict[str, float] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        key, sep, value = item.partition("=")
        key = key.strip().lower()
        match = _DURATION.match(value)
        if not sep or key not in _SLO_KEYS or match is None:
            raise SloFormatError(
                f"SLO item {item!r}: expected key=duration with key in {', '.join(_SLO_KEYS)} "
                "and duration like 2s or 150ms"
            )
        seconds = float(match.group(1)) / (1000.0 if match.group(2) == "ms" else 1.0)
        out[key] = seconds
    return out


@dataclass(slots=True)
class RequestOutcome:
    """One request as the client saw it (wall seconds since the bench started)."""

    request_id: str
    scheduled_s: float
    prompt_tokens: int
    expected_output_tokens: int
    start_s: float = 0.0
    ttft_s: float | None = None
    e2e_s: float | None = None
    itl_s: array = field(default_factory=lambda: array("d"))
    output_tokens: int = 0
    cached_tokens: int | None = None
    server_prompt_tokens: int | None = None  # usage.prompt_tokens as the server counted them
    status: int | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None and self.ttft_s is not None

    @property
    def is_incomplete(self) -> bool:
        """Cut off by the run's time limit or a stop, not failed by the server."""
        return self.error is not None and self.error.startswith(INCOMPLETE)

    @property
    def tpot_s(self) -> float | None:
        if not self.ok or self.output_tokens < 2 or self.e2e_s is None:
            return None
        return (self.e2e_s - self.ttft_s) / (self.output_tokens - 1)


def _stats(values: np.ndarray, scale: float) -> dict[str, float]:
    if values.size == 0:
        return {"mean": 0.0, "median": 0.0, "std": 0.0, **{f"p{p}": 0.0 for p in PERCENTILES}}
    scaled = values * scale
    out = {
        "mean": float(scaled.mean()),
        "median": float(np.median(scaled)),
        "std": float(scaled.std()),
    }
    for p, value in zip(PERCENTILES, np.percentile(scaled, PERCENTILES), strict=True):
        out[f"p{p}"] = float(value)
    return out


@dataclass(slots=True)
class BenchResult:
    """All outcomes of one run plus how it was run."""

    target: str
    model: str
    outcomes: list[RequestOutcome]
    duration_s: float  # wall seconds from the first send to the last completion
    time_scale: float = 1.0
    rate_scale: float = 1.0
    max_concurrency: int | None = None
    cancelled: bool = False
    workload_name: str = ""

    def ttft_s(self) -> np.ndarray:
        return np.array([o.ttft_s for o in self.outcomes if o.ok]) * self.time_scale

    def tpot_s(self) -> np.ndarray:
        values = [o.tpot_s for o in self.outcomes if o.tpot_s is not None]
        return np.array(values) * self.time_scale

    def e2e_s(self) -> np.ndarray:
        return np.array([o.e2e_s for o in self.outcomes if o.ok]) * self.time_scale

    def token_times_s(self) -> np.ndarray:
        """Wall time (since start) of every received output token, for throughput plots."""
        times: list[np.ndarray] = []
        for o in self.outcomes:
            if o.ttft_s is None:
                continue
            first = o.start_s + o.ttft_s
            gaps = np.frombuffer(o.itl_s, dtype=float) if len(o.itl_s) else np.empty(0)
            times.append(np.concatenate(([first], first + np.cumsum(gaps))))
        return np.concatenate(times) if times else np.empty(0)

    def meets_slo(self, outcome: RequestOutcome, slo: dict[str, float]) -> bool:
        if not outcome.ok:
            return False
        scale = self.time_scale
        checks = {
            "ttft": outcome.ttft_s,
            "tpot": outcome.tpot_s if outcome.tpot_s is not None else 0.0,
            "e2e": outcome.e2e_s,
            "itl": max(outcome.itl_s) if len(outcome.itl_s) else 0.0,
        }
        return all(checks[key] * scale <= limit for key, limit in slo.items())

    def summary(self, slo: str | dict | None = None) -> dict:
        """The figures `vllm bench serve` prints, in seconds of model time."""
        targets = parse_slo(slo)
        ok = [o for o in self.outcomes if o.ok]
        duration_s = max(self.duration_s * self.time_scale, 1e-9)
        input_tokens = sum(o.prompt_tokens for o in ok)
        output_tokens = sum(o.output_tokens for o in ok)
        itl = np.concatenate(
            [np.frombuffer(o.itl_s, dtype=float) for o in ok if len(o.itl_s)] or [np.empty(0)]
        )
        lag = np.array([o.start_s - o.scheduled_s for o in self.outcomes if o.start_s > 0])
        cached = [o.cached_tokens for o in ok if o.cached_tokens is not None]
        errors: dict[str, int] = {}
        incomplete = sum(1 for o in self.outcomes if o.is_incomplete)
        for o in self.outcomes:
            if not o.ok and not o.is_incomplete:
                key = f"{o.status or 'error'}: {(o.error or 'no token')[:80]}"
                errors[key] = errors.get(key, 0) + 1
        out = {
            "target": self.target,
            "model": self.model,
            "workload": self.workload_name,
            "completed": len(ok),
            "failed": len(self.outcomes) - len(ok) - incomplete,
            "incomplete": incomplete,
            "cancelled": self.cancelled,
            "max_concurrency": self.max_concurrency,
            "rate_scale": self.rate_scale,
            "time_scale": self.time_scale,
            "duration_s": duration_s,
            "total_input_tokens": input_tokens,
            "total_output_tokens": output_tokens,
            "request_throughput_rps": len(ok) / duration_s,
            "output_throughput_tps": output_tokens / duration_s,
            "total_token_throughput_tps": (input_tokens + output_tokens) / duration_s,
            "ttft_s": _stats(np.array([o.ttft_s for o in ok]), self.time_scale),
            "tpot_s": _stats(
                np.array([o.tpot_s for o in ok if o.tpot_s is not None]), self.time_scale
            ),
            "itl_s": _stats(itl, self.time_scale),
            "e2e_s": _stats(np.array([o.e2e_s for o in ok]), self.time_scale),
            "send_lag_s": _stats(lag, 1.0),
            "prefix_cache_hit_rate": (sum(cached) / input_tokens)
            if cached and input_tokens
            else None,
            "errors": errors,
        }
        if targets:
            good = [o for o in self.outcomes if self.meets_slo(o, targets)]
            out["slo"] = targets
            out["slo_attainment"] = len(good) / len(self.outcomes) if self.outcomes else 0.0
            out["goodput_rps"] = len(good) / duration_s
            out["goodput_output_tps"] = sum(o.output_tokens for o in good) / duration_s
        return out
