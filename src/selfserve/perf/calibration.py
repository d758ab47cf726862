"""Calibration: the fitted physical efficiency factors of the perf model, and their file format.

A calibration is a small JSON document of dimensionless factors (fractions of the card's
datasheet peak), a per-layer fixed time and power fractions, plus the card and model it was
fitted on. Because the factors are fractions of peak, the same file transfers to another
card by its datasheet ratios (`PerfModel` multiplies them by that card's peaks) and to
other models by their shapes. Factors that no profile measures (TP all-reduce, engine
overhead) are documented assumptions, kept in the same file so a user can override them.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

import yaml

from selfserve.perf.errors import CalibrationError

FORMAT = "selfserve-calibration/1"
CALIBRATION_DIR = Path(__file__).resolve().parents[1] / "data" / "calibration"

# (lower, upper) bounds of every factor; values outside are a malformed file.
BOUNDS: dict[str, tuple[float, float]] = {
    "gemm_efficiency": (0.01, 1.0),
    "gemm_half_tokens": (0.0, 4096.0),
    "overlap_exponent": (1.0, 64.0),
    "weight_bw_efficiency": (0.01, 1.0),
    "kv_bw_efficiency": (0.01, 1.0),
    "attn_unit_bw_fraction": (0.0, 1.0),
    "attn_causal_efficiency": (0.01, 1.0),
    "attn_cached_efficiency": (0.01, 1.0),
    "layer_overhead_s": (0.0, 1e-3),
    "idle_power_w": (0.0, 5000.0),
    "compute_power_fraction": (0.0, 2.0),
    "memory_power_fraction": (0.0, 2.0),
    "kv_power_fraction": (0.0, 2.0),
    "allreduce_bw_efficiency": (0.01, 1.0),
    "allreduce_latency_s": (0.0, 1e-3),
    "engine_step_overhead_s": (0.0, 1.0),
    "engine_seq_overhead_s": (0.0, 1e-2),
}


@dataclass(frozen=True, slots=True)
class Calibration:
    """Physical efficiency factors; see `BOUNDS` for valid ranges.

    Fitted on a profile:
    - `gemm_efficiency`: fraction of dense peak FLOP/s the layer GEMMs reach at large token
      counts; `gemm_half_tokens`: tokens per step at which GEMM efficiency is half of that.
    - `overlap_exponent` p: GEMM time = (t_compute^p + t_memory^p)^(1/p); p=1 is no overlap
      of weight streaming with math, large p is the ideal roofline max.
    - `weight_bw_efficiency`: fraction of HBM peak for streaming weights.
    - `kv_bw_efficiency`: fraction of HBM peak for KV-cache reads when attention has enough
      parallel work; `attn_unit_bw_fraction`: bandwidth one (sequence x KV head) work unit of
      the decode attention kernel reaches, as a fraction of HBM peak (kernels without
      split-KV leave the card idle at small batch, long context); 0 means no such limit.
    - `attn_causal_efficiency`: fraction of peak for causal attention among new tokens;
      `attn_cached_efficiency`: for attention of new tokens over a cached prefix.
    - `layer_overhead_s`: fixed time per layer per step (launches, small kernels).
    - energy: `idle_power_w` (whole board) + `compute_power_fraction` x TDP x (FLOPs/peak)
      + `memory_power_fraction` x TDP x (weight and activation bytes / peak bandwidth)
      + `kv_power_fraction` x TDP x (KV-cache bytes read / peak bandwidth), joules per step.
    Assumed (no profile measures them; override in the file):
    - `allreduce_bw_efficiency`, `allreduce_latency_s`: ring all-reduce over the scale-up
      link, two per layer when TP > 1.
    - `engine_step_overhead_s`, `engine_seq_overhead_s`: scheduler/sampling CPU time per
      step and per scheduled sequence, not in the layer profile.
    """

    gemm_efficiency: float = 0.62
    gemm_half_tokens: float = 0.0
    overlap_exponent: float = 2.0
    weight_bw_efficiency: float = 0.65
    kv_bw_efficiency: float = 0.85
    attn_unit_bw_fraction: float = 0.0
    attn_causal_efficiency: float = 0.55
    attn_cached_efficiency: float = 0.3
    layer_overhead_s: float = 10e-6
    idle_power_w: float = 124.0
    compute_power_fraction: float = 0.6
    memory_power_fraction: float = 0.3
    kv_power_fraction: float = 0.6
    allreduce_bw_efficiency: float = 0.7
    allreduce_latency_s: float = 8e-6
    engine_step_overhead_s: float = 0.8e-3
    engine_seq_overhead_s: float = 5e-6
    hardware: str = "h200"
    model: str = "llama-3.1-8b"
    fitted_on: str = ""
    notes: dict[str, str] = field(default_factory=dict)

    def validate(self, origin: str = "calibration") -> Calibration:
        for name, (lo, hi) in BOUNDS.items():
            value = getattr(self, name)
            if not isinstance(value, int | float) or not lo <= float(value) <= hi:
                raise CalibrationError(
                    f"{origin}: field {name!r} = {value!r}; valid range [{lo}, {hi}]"
                )
        return self

    def with_factors(self, **factors: float) -> Calibration:
        return replace(self, **factors)

    def to_dict(self) -> dict:
        return {"format": FORMAT, **asdict(self)}

    @classmethod
    def from_dict(cls, doc: dict, origin: str = "calibration") -> Calibration:
        if not isinstance(doc, dict):
            raise CalibrationError(f"{origin}: expected a JSON object, got {type(doc).__name__}")
        if doc.get("format") != FORMAT:
            raise CalibrationError(
                f"{origin}: field 'format' = {doc.get('format')!r}; expected {FORMAT!r}"
            )
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(doc) - known - {"format"})
        if unknown:
            raise CalibrationError(f"{origin}: unknown field(s) {unknown}; valid: {sorted(known)}")
        values = {k: v for k, v in doc.items() if k != "format"}
        return cls(**values).validate(origin)

    def save(self, path: str | Path) -> None:
        """Write JSON, or YAML when the name ends in .yaml/.yml."""
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        if p.suffix in (".yaml", ".yml"):
            p.write_text(yaml.safe_dump(self.to_dict(), sort_keys=False))
        else:
            p.write_text(json.dumps(self.to_dict(), indent=2) + "\n")


def load_calibration(path: str | Path) -> Calibration:
    """Read a calibration file (JSON, or YAML by suffix); errors name the file and field."""
    p = Path(path)
    try:
        text = p.read_text()
    except FileNotFoundError:
        raise CalibrationError(f"{path}: calibration file not found") from None
    if p.suffix in (".yaml", ".yml"):
        try:
            doc = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f":{mark.line + 1}" if mark is not None else ""
            raise CalibrationError(f"{path}{where}: not valid YAML ({exc})") from None
    else:
        try:
            doc = json.loads(text)
        except json.JSONDecodeError as exc:
            raise CalibrationError(f"{path}:{exc.lineno}: not valid JSON ({exc.msg})") from None
    return Calibration.from_dict(doc, str(path))


def shipped_calibration(hardware: str) -> Calibration | None:
    """The calibration shipped for `hardware` (fitted on a real profile), or None."""
    path = CALIBRATION_DIR / f"{hardware}.json"
    if not path.is_file():
        return None
    return Calibration.from_dict(
        json.loads(path.read_text()), f"selfserve/data/calibration/{hardware}.json"
    )


def default_calibration(hardware: str) -> Calibration:
    """Shipped calibration for this card, else the H200 one (applied by datasheet ratios)."""
    own = shipped_calibration(hardware)
    if own is not None:
        return own
    reference = shipped_calibration("h200")
    return reference if reference is not None else Calibration()
