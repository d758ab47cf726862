"""`ClusterSpec`: which replicas a simulated cluster has, from a shorthand or a YAML file.

Shorthand: groups joined by `+`, each `COUNTxHARDWARE/MODEL[:key=value,...]`, e.g.
`8xh200/llama-3.1-8b` or `2xgb200/llama-3.1-70b:tp=4 + 4xh100/llama-3.1-70b:tp=8`.
YAML: `replicas:` a list of mappings with `count`, `hardware`, `model` and the same keys.
Keys: `tp`, `dtype` (weight dtype: bf16, fp8, fp4), `calibration` (a file), and the engine
arguments `max_num_seqs`, `max_num_batched_tokens`, `block_size`,
`gpu_memory_utilization`, `enable_prefix_caching`, `enable_chunked_prefill`.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import yaml

from selfserve.engine import EngineConfig, EngineReplica
from selfserve.policy.snapshot import ReplicaInfo


class ClusterSpecError(ValueError):
    """A cluster shorthand or file that cannot be read; the message says where and why."""


_ENGINE_KEYS = {f.name: f.type for f in fields(EngineConfig)}
_ALIASES = {
    "weight_dtype": "dtype",
    "gmu": "gpu_memory_utilization",
    "prefix_caching": "enable_prefix_caching",
    "chunked_prefill": "enable_chunked_prefill",
}
_VALID_KEYS = ("tp", "dtype", "calibration", *_ENGINE_KEYS)


@dataclass(frozen=True, slots=True)
class ReplicaGroup:
    """`count` identical replicas: `model` on `tp` GPUs of `hardware`."""

    count: int
    hardware: str
    model: str
    tp: int = 1
    dtype: str = "bf16"
    calibration: str | None = None
    engine: EngineConfig = field(default_factory=EngineConfig)

    @property
    def label(self) -> str:
        tp = f":tp={self.tp}" if self.tp != 1 else ""
        dtype = (
            f",dtype={self.dtype}"
            if self.dtype != "bf16" and tp
            else (f":dtype={self.dtype}" if self.dtype != "bf16" else "")
        )
        return f"{self.count}x{self.hardware}/{self.model}{tp}{dtype}"


@dataclass(frozen=True, slots=True)
class ClusterSpec:
    """The replica groups of a cluster, in order (replica indices follow this order)."""

    groups: tuple[ReplicaGroup, ...]

    @classmethod
    def parse(cls, spec: str | Path | ClusterSpec) -> ClusterSpec:
        """A shorthand string, a YAML path, or an existing spec (returned as is)."""
        if isinstance(spec, ClusterSpec):
            return spec
        text = str(spec).strip()
        if not text:
            raise ClusterSpecError("empty cluster spec; example: 8xh200/llama-3.1-8b")
        if text.endswith((".yaml", ".yml")) or Path(text).is_file():
            return cls.from_yaml(Path(text))
        groups = tuple(_parse_group(part.strip(), text) for part in text.split("+"))
        return cls(groups)

    @classmethod
    def from_yaml(cls, path: Path) -> ClusterSpec:
        try:
            doc = yaml.safe_load(path.read_text())
        except FileNotFoundError as exc:
            raise ClusterSpecError(f"{path}: no such cluster file") from exc
        except yaml.YAMLError as exc:
            raise ClusterSpecError(f"{path}: not valid YAML: {exc}") from exc
        if isinstance(doc, dict) and "cluster" in doc and isinstance(doc["cluster"], dict):
            doc = doc["cluster"]
        if not isinstance(doc, dict) or not isinstance(doc.get("replicas"), list):
            raise ClusterSpecError(
                f"{path}: expected a mapping with a 'replicas' list of "
                "{count, hardware, model, tp, ...} entries"
            )
        groups = []
        for i, entry in enumerate(doc["replicas"]):
            where = f"{path}: replicas[{i}]"
            if not isinstance(entry, dict):
                raise ClusterSpecError(f"{where}: expected a mapping, got {entry!r}")
            entry = dict(entry)
            for key in ("hardware", "model"):
                if not isinstance(entry.get(key), str):
                    raise ClusterSpecError(f"{where}: '{key}' is required (a catalog name)")
            count = entry.pop("count", 1)
            hardware = entry.pop("hardware")
            model = entry.pop("model")
            engine = entry.pop("engine", {}) or {}
            if not isinstance(engine, dict):
                raise ClusterSpecError(f"{where}: 'engine' must be a mapping")
            options = {**{str(k): v for k, v in engine.items()}, **entry}
            groups.append(_build_group(count, hardware, model, options, where))
        if not groups:
            raise ClusterSpecError(f"{path}: 'replicas' is empty")
        return cls(tuple(groups))

    @property
    def num_replicas(self) -> int:
        return sum(g.count for g in self.groups)

    @property
    def num_gpus(self) -> int:
        return sum(g.count * g.tp for g in self.groups)

    @property
    def label(self) -> str:
        return " + ".join(g.label for g in self.groups)

    def kv_capacity_tokens(self) -> int:
        """Every replica's KV-cache tokens, summed (as the engines size them)."""
        return sum(info.kv_capacity_tokens for info in self.build()[1])

    def with_engine(self, **overrides: Any) -> ClusterSpec:
        """The same cluster with engine arguments overridden in every group."""
        return ClusterSpec(
            tuple(replace(g, engine=replace(g.engine, **overrides)) for g in self.groups)
        )

    def build(self) -> tuple[list[EngineReplica], list[ReplicaInfo]]:
        """Fresh engine replicas (one perf model per distinct deployment) and their infos."""
        from selfserve.perf import DeploymentError, PerfModel

        perfs: dict[tuple, Any] = {}
        replicas: list[EngineReplica] = []
        infos: list[ReplicaInfo] = []
        for group in self.groups:
            key = (group.model, group.hardware, group.tp, group.dtype, group.calibration)
            if key not in perfs:
                try:
                    perfs[key] = PerfModel.create(
                        group.model, group.hardware, group.tp, group.dtype, group.calibration
                    )
                except (DeploymentError, KeyError, ValueError) as exc:
                    raise ClusterSpecError(f"{group.label}: {exc}") from exc
            perf = perfs[key]
            for _ in range(group.count):
                index = len(replicas)
                name = f"r{index}-{group.hardware}"
                replica = EngineReplica(perf, group.engine, name=name)
                replicas.append(replica)
                infos.append(
                    ReplicaInfo(
                        index=index,
                        name=name,
                        hardware=group.hardware,
                        model=group.model,
                        tp=group.tp,
                        kv_capacity_tokens=replica.kv_capacity_tokens,
                        max_model_len=replica.max_model_len,
                        block_size=group.engine.block_size,
                    )
                )
        return replicas, infos


def _parse_group(part: str, whole: str) -> ReplicaGroup:
    where = f"cluster spec {whole!r}, group {part!r}"
    head, _, opts = part.partition(":")
    count_hw, slash, model = head.partition("/")
    count_text, x, hardware = count_hw.partition("x")
    if not slash or not model or not x or not hardware:
        raise ClusterSpecError(
            f"{where}: expected COUNTxHARDWARE/MODEL[:key=value,...], e.g. 8xh200/llama-3.1-8b"
        )
    try:
        count = int(count_text)
    except ValueError:
        raise ClusterSpecError(f"{where}: replica count {count_text!r} is not an integer") from None
    options: dict[str, Any] = {}
    for item in opts.replace(":", ",").split(","):
        item = item.strip()
        if not item:
            continue
        key, eq, value = item.partition("=")
        if not eq:
            raise ClusterSpecError(f"{where}: option {item!r} must be key=value")
        options[key.strip()] = yaml.safe_load(value.strip())
    return _build_group(count, hardware.strip().lower(), model.strip().lower(), options, where)


def _build_group(
    count: Any, hardware: str, model: str, options: dict[str, Any], where: str
) -> ReplicaGroup:
    if not isinstance(count, int) or count < 1:
        raise ClusterSpecError(f"{where}: count must be a positive integer, got {count!r}")
    engine_args: dict[str, Any] = {}
    tp, dtype, calibration = 1, "bf16", None
    for raw_key, value in options.items():
        key = _ALIASES.get(raw_key, raw_key)
        if key == "tp":
            if not isinstance(value, int) or value < 1:
                raise ClusterSpecError(f"{where}: tp must be a positive integer, got {value!r}")
            tp = value
        elif key == "dtype":
            dtype = str(value).lower()
        elif key == "calibration":
            calibration = str(value)
        elif key in _ENGINE_KEYS:
            engine_args[key] = value
        else:
            raise ClusterSpecError(
                f"{where}: unknown option {raw_key!r}; valid: {', '.join(_VALID_KEYS)}"
            )
    try:
        engine = EngineConfig(**engine_args)
    except (TypeError, ValueError) as exc:
        raise ClusterSpecError(f"{where}: {exc}") from exc
    return ReplicaGroup(count, hardware, model, tp, dtype, calibration, engine)
