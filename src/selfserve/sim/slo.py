"""`SLO`: the latency targets a request must meet to count toward attainment and goodput."""

from __future__ import annotations

import re
from dataclasses import dataclass


class SLOError(ValueError):
    """An SLO text that cannot be read; the message shows a valid example."""


_UNITS = {"ms": 1e-3, "s": 1.0, "us": 1e-6, "m": 60.0}
_KEYS = {"ttft": "ttft_s", "tpot": "tpot_s", "e2e": "e2e_s", "e2el": "e2e_s"}
_VALUE = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*(ms|us|s|m)?\s*$")


@dataclass(frozen=True, slots=True)
class SLO:
    """TTFT and TPOT targets (and an optional E2E target); a request meets the SLO when it
    completes and meets every target. TPOT of a one-token output counts as 0 (as vLLM)."""

    ttft_s: float = 2.0
    tpot_s: float = 0.1
    e2e_s: float | None = None

    @classmethod
    def parse(cls, text: str | SLO | None) -> SLO:
        """`ttft=2s,tpot=100ms[,e2e=30s]`; bare numbers are seconds; None -> defaults."""
        if text is None:
            return cls()
        if isinstance(text, SLO):
            return text
        values: dict[str, float] = {}
        for item in str(text).split(","):
            if not item.strip():
                continue
            key, eq, value = item.partition("=")
            name = _KEYS.get(key.strip().lower())
            match = _VALUE.match(value) if eq else None
            if name is None or match is None:
                raise SLOError(
                    f"bad SLO item {item.strip()!r} in {text!r}; expected e.g. "
                    "'ttft=2s,tpot=100ms' (keys: ttft, tpot, e2e; units: ms, s)"
                )
            values[name] = float(match.group(1)) * _UNITS[match.group(2) or "s"]
        return cls(**values)

    @property
    def label(self) -> str:
        text = f"ttft={self.ttft_s * 1e3:g}ms,tpot={self.tpot_s * 1e3:g}ms"
        return text + (f",e2e={self.e2e_s:g}s" if self.e2e_s is not None else "")

    def as_dict(self) -> dict[str, float | None]:
        return {"ttft_s": self.ttft_s, "tpot_s": self.tpot_s, "e2e_s": self.e2e_s}
