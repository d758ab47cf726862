"""Read and write step profiles: the JSONL format of `shared/calibration/` and `selfserve profile`.

One JSON object a line. `kind: "prefill"` records carry `batch`, `prefix`, `new_tokens`;
`kind: "decode"` records carry `batch`, `context`; both carry `ms_median` (and optionally
`ms_min`, `joules` per repetition, `model`, `gpu`). A bad line raises `ProfileFormatError`
naming the file, line and field.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from selfserve.perf.errors import ProfileFormatError


@dataclass(frozen=True, slots=True)
class ProfileRecord:
    """One measured step: `batch` prefills of `new_tokens` after `prefix`, or a decode step."""

    kind: str  # "prefill" | "decode"
    batch: int
    new_tokens: int
    prefix: int
    context: int
    ms_median: float
    ms_min: float | None = None
    joules: float | None = None
    model: str = ""
    gpu: str = ""
    line: int = 0

    @property
    def time_s(self) -> float:
        return self.ms_median / 1000.0

    def step(self) -> tuple[list[tuple[int, int]], list[int]]:
        """The step as `PerfModel.step_time_s` arguments."""
        if self.kind == "prefill":
            return [(self.new_tokens, self.prefix)] * self.batch, []
        return [], [self.context] * self.batch

    def label(self) -> str:
        if self.kind == "prefill":
            return f"prefill b={self.batch} new={self.new_tokens} prefix={self.prefix}"
        return f"decode b={self.batch} ctx={self.context}"

    def to_dict(self) -> dict:
        out: dict = {"model": self.model, "gpu": self.gpu, "kind": self.kind, "batch": self.batch}
        if self.kind == "prefill":
            out.update(prefix=self.prefix, new_tokens=self.new_tokens)
        else:
            out["context"] = self.context
        out.update(ms_median=self.ms_median)
        if self.ms_min is not None:
            out["ms_min"] = self.ms_min
        if self.joules is not None:
            out["joules"] = self.joules
        if self.kind == "decode":
            out["tokens_per_s"] = round(self.batch / self.time_s, 1)
        return out


def _int(doc: dict, key: str, path: str, line: int, minimum: int) -> int:
    value = doc.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ProfileFormatError(path, line, key, f"an integer >= {minimum}, got {value!r}")
    return value


def _num(doc: dict, key: str, path: str, line: int, required: bool) -> float | None:
    value = doc.get(key)
    if value is None and not required:
        return None
    if not isinstance(value, int | float) or isinstance(value, bool) or value <= 0:
        raise ProfileFormatError(path, line, key, f"a number > 0, got {value!r}")
    return float(value)


def parse_record(doc: object, path: str, line: int) -> ProfileRecord:
    if not isinstance(doc, dict):
        raise ProfileFormatError(path, line, "<line>", "a JSON object")
    kind = doc.get("kind")
    if kind not in ("prefill", "decode"):
        raise ProfileFormatError(path, line, "kind", f"'prefill' or 'decode', got {kind!r}")
    batch = _int(doc, "batch", path, line, 1)
    if kind == "prefill":
        new_tokens = _int(doc, "new_tokens", path, line, 1)
        prefix = _int(doc, "prefix", path, line, 0)
        context = 0
    else:
        context = _int(doc, "context", path, line, 0)
        new_tokens, prefix = 1, 0
    ms_median = _num(doc, "ms_median", path, line, True)
    assert ms_median is not None
    return ProfileRecord(
        kind=kind, batch=batch, new_tokens=new_tokens, prefix=prefix, context=context,
        ms_median=ms_median, ms_min=_num(doc, "ms_min", path, line, False),
        joules=_num(doc, "joules", path, line, False), model=str(doc.get("model", "")),
        gpu=str(doc.get("gpu", "")), line=line,
    )  # fmt: skip


def read_profile(path: str | Path) -> list[ProfileRecord]:
    """All records of a profile JSONL file (blank lines skipped)."""
    p = Path(path)
    try:
        text = p.read_text()
    except FileNotFoundError:
        raise ProfileFormatError(str(p), 0, "<file>", "an existing profile JSONL file") from None
    records = []
    for number, raw in enumerate(text.splitlines(), start=1):
        if not raw.strip():
            continue
        try:
            doc = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise ProfileFormatError(str(p), number, "<line>", f"valid JSON ({exc.msg})") from None
        records.append(parse_record(doc, str(p), number))
    if not records:
        raise ProfileFormatError(str(p), 0, "<file>", "at least one record")
    return records


def write_profile(path: str | Path, records: list[ProfileRecord]) -> None:
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text("".join(json.dumps(r.to_dict()) + "\n" for r in records))
