"""Time windows of a workload: train/validate splits, sub-windows for bootstrap, fingerprints.

Tuning must never see the traffic it is validated on, so windows are cut on arrival time:
`"0:50%"` is the first half of the trace's span, `"30m:59m"` minutes 30 to 59 after the
first arrival, `"0:1800s"` seconds. A window's requests are re-based so the first arrival
of the window is at 0 (the simulator then replays it from an idle cluster).
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
import struct
from dataclasses import dataclass

from selfserve.workload.request import Workload

_BOUND = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(%|s|m|min|h)?\s*$")


class WindowError(ValueError):
    """A window spec that cannot be read or does not fit the trace."""


@dataclass(frozen=True, slots=True)
class WindowSpec:
    """A `[start, end)` window as written by the user, resolved against a trace's span."""

    text: str
    start: float
    start_unit: str  # "%" or "s"
    end: float
    end_unit: str

    def resolve(self, span_s: float) -> tuple[float, float]:
        """(start_s, end_s) relative to the first arrival."""

        def seconds(value: float, unit: str) -> float:
            return value / 100.0 * span_s if unit == "%" else value

        start_s, end_s = seconds(self.start, self.start_unit), seconds(self.end, self.end_unit)
        if self.end_unit == "%" and self.end >= 100.0:
            end_s = span_s + 1e-6  # include the last arrival
        return start_s, end_s


def parse_window(text: str) -> WindowSpec:
    """Parse `A:B` where A and B are `N%`, `Ns`, `Nm`/`Nmin` or `Nh` (bare numbers: %)."""
    if not isinstance(text, str) or text.count(":") != 1:
        raise WindowError(f"window {text!r}: expected START:END such as 0:50%, 50:100% or 0m:30m")
    parts = text.split(":")
    bounds: list[tuple[float, str]] = []
    for part in parts:
        match = _BOUND.match(part)
        if not match:
            raise WindowError(
                f"window {text!r}: bound {part!r} is not N%, Ns, Nm or Nh (e.g. 50%, 30m)"
            )
        value, unit = float(match.group(1)), match.group(2) or "%"
        if unit in ("m", "min"):
            value, unit = value * 60.0, "s"
        elif unit == "h":
            value, unit = value * 3600.0, "s"
        if unit == "%" and value > 100.0:
            raise WindowError(f"window {text!r}: {value}% is beyond the end of the trace")
        bounds.append((value, unit))
    (start, start_unit), (end, end_unit) = bounds
    if start_unit == end_unit and end <= start:
        raise WindowError(f"window {text!r}: the end must be after the start")
    return WindowSpec(text.strip(), start, start_unit, end, end_unit)


def cut(workload: Workload, start_s: float, end_s: float, *, name: str | None = None) -> Workload:
    """Requests arriving in `[start_s, end_s)` after the first arrival, re-based to 0."""
    origin = workload.start_s
    lo, hi = origin + start_s, origin + end_s
    chosen = [r for r in workload.requests if lo <= r.arrival_s < hi]
    if chosen:
        first = chosen[0].arrival_s
        chosen = [dataclasses.replace(r, arrival_s=r.arrival_s - first) for r in chosen]
    return Workload(
        requests=chosen,
        name=name or f"{workload.name}[{start_s:.0f}s:{end_s:.0f}s]",
        source=workload.source,
        block_size=workload.block_size,
    )


def window(workload: Workload, spec: WindowSpec | str, *, label: str = "window") -> Workload:
    if isinstance(spec, str):
        spec = parse_window(spec)
    start_s, end_s = spec.resolve(workload.span_s)
    part = cut(workload, start_s, end_s, name=f"{workload.name}[{spec.text}]")
    if len(part) < 2:
        raise WindowError(
            f"{label} {spec.text!r} holds {len(part)} request(s) of {workload.name} "
            f"(span {workload.span_s / 60:.1f} min); choose a wider window"
        )
    return part


def check_disjoint(train: WindowSpec, validate: WindowSpec, span_s: float) -> None:
    """Validation must come strictly after training (no look-ahead, no overlap)."""
    t0, t1 = train.resolve(span_s)
    v0, _ = validate.resolve(span_s)
    del t0
    if v0 < t1 - 1e-6:
        raise WindowError(
            f"--validate {validate.text!r} starts before --train {train.text!r} ends; "
            "validation must be a later window than training"
        )


def sub_windows(workload: Workload, count: int) -> list[Workload]:
    """`count` equal-time consecutive pieces (for bootstrap confidence intervals)."""
    span = workload.span_s + 1e-6
    pieces = [
        cut(workload, span * k / count, span * (k + 1) / count, name=f"{workload.name}#{k}")
        for k in range(count)
    ]
    return [piece for piece in pieces if len(piece) >= 2]


def fingerprint(workload: Workload) -> str:
    """A content hash of the traffic (arrivals, sizes, prefix hashes), independent of format."""
    digest = hashlib.sha256()
    for request in workload.requests:
        digest.update(
            struct.pack(
                "<dqqq",
                request.arrival_s,
                request.prompt_tokens,
                request.output_tokens,
                len(request.block_hashes),
            )
        )
        if request.block_hashes:
            digest.update(struct.pack("<q", request.block_hashes[-1] & 0x7FFFFFFFFFFFFFFF))
    return f"sha256:{digest.hexdigest()[:32]}"
