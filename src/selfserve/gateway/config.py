"""The gateway's configuration: a YAML file parsed into frozen records, checked key by key.

Every mistake a user can make in `gateway.yaml` raises `GatewayConfigError` naming the key
path (`backends[1].url`) and what would be valid, before any socket is opened.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import yaml


class GatewayConfigError(ValueError):
    """A bad gateway config: `where` is the file and key path, `message` what is wrong."""

    def __init__(self, where: str, message: str) -> None:
        super().__init__(f"{where}: {message}")
        self.where = where


@dataclass(frozen=True, slots=True)
class BackendConfig:
    name: str
    url: str  # base URL without /v1, e.g. http://10.0.0.5:8000
    models: tuple[str, ...]
    hardware: str = ""
    kv_capacity_tokens: int = 0
    max_model_len: int = 0
    metrics_path: str = "/metrics"
    health_path: str = "/health"


@dataclass(frozen=True, slots=True)
class CanaryConfig:
    """Run `policy` on `fraction` of traffic; promote or roll back after `min_samples`."""

    policy: Any  # a make_policy spec: name, path or inline dict
    fraction: float = 0.1
    unit: str = "requests"  # "requests" or "sessions" (sticky per session id)
    min_samples: int = 50
    ttft_margin: float = 0.2  # roll back when candidate median TTFT > incumbent x (1 + margin)
    tpot_margin: float = 0.2
    # medians at or under these are good enough (within the SLO): a slower candidate is not
    # rolled back for them; 0 compares always
    ttft_ok_s: float = 0.0
    tpot_ok_s: float = 0.0
    error_margin: float = 0.02  # roll back when candidate error rate > incumbent + margin
    max_duration_s: float = 0.0  # 0: no limit; else decide on what is there after this long


@dataclass(frozen=True, slots=True)
class HealthConfig:
    interval_s: float = 2.0
    timeout_s: float = 1.0
    eject_after_failures: int = 2
    readmit_after_successes: int = 1


@dataclass(frozen=True, slots=True)
class LogConfig:
    path: str = ""  # empty: no request log
    rotate_bytes: int = 100 * 1024 * 1024
    gzip_rotated: bool = True


@dataclass(frozen=True, slots=True)
class LimitsConfig:
    max_body_bytes: int = 4 * 1024 * 1024
    request_timeout_s: float = 600.0  # whole request, first byte to last
    connect_timeout_s: float = 3.0
    # no byte from a backend for this long (waiting for its response, or mid-stream) = stalled
    first_byte_timeout_s: float = 120.0
    max_retries: int = 2  # extra backends tried when one fails before its first byte
    max_connections_per_backend: int = 1024
    client_idle_timeout_s: float = 75.0  # a keep-alive client connection idle this long is closed


@dataclass(frozen=True, slots=True)
class GatewayConfig:
    backends: tuple[BackendConfig, ...]
    policy: Any = "least-loaded"
    host: str = "127.0.0.1"
    port: int = 8080
    api_keys: tuple[str, ...] = ()  # empty: no client authentication
    admin_key: str = ""  # empty: /admin endpoints disabled
    canary: CanaryConfig | None = None
    health: HealthConfig = field(default_factory=HealthConfig)
    scrape_interval_s: float = 0.5
    log: LogConfig = field(default_factory=LogConfig)
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    block_size: int = 16
    drain_timeout_s: float = 30.0
    seed: int = 0
    base_dir: str = "."  # relative policy/log paths resolve against the config's folder

    @property
    def model_names(self) -> tuple[str, ...]:
        seen: dict[str, None] = {}
        for backend in self.backends:
            for model in backend.models:
                seen.setdefault(model, None)
        return tuple(seen)


_SIZE_SUFFIXES = {"kb": 10**3, "mb": 10**6, "gb": 10**9, "kib": 2**10, "mib": 2**20, "gib": 2**30}


def _size_bytes(value: Any, where: str) -> int:
    if isinstance(value, bool):
        raise GatewayConfigError(where, "expected a byte count such as 1048576 or '1MiB'")
    if isinstance(value, int) and value > 0:
        return value
    if isinstance(value, str):
        text = value.strip().lower().replace(" ", "")
        for suffix in sorted(_SIZE_SUFFIXES, key=len, reverse=True):
            if text.endswith(suffix):
                try:
                    number = float(text[: -len(suffix)])
                except ValueError:
                    break
                if number > 0:
                    return int(number * _SIZE_SUFFIXES[suffix])
        if text.isdigit() and int(text) > 0:
            return int(text)
    raise GatewayConfigError(
        where, f"expected a positive byte count such as 1048576 or '1MiB', got {value!r}"
    )


def _section(doc: Mapping[str, Any], key: str, where: str) -> Mapping[str, Any]:
    value = doc.get(key) or {}
    if not isinstance(value, Mapping):
        raise GatewayConfigError(f"{where}{key}", f"expected a mapping, got {type(value).__name__}")
    return value


def _number(
    section: Mapping[str, Any],
    key: str,
    default: float,
    where: str,
    *,
    minimum: float = 0.0,
    integer: bool = False,
) -> Any:
    if key not in section:
        return default
    value = section[key]
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise GatewayConfigError(f"{where}{key}", f"expected a number >= {minimum}, got {value!r}")
    if value < minimum:
        raise GatewayConfigError(f"{where}{key}", f"must be >= {minimum}, got {value!r}")
    if integer:
        if int(value) != value:
            raise GatewayConfigError(f"{where}{key}", f"expected a whole number, got {value!r}")
        return int(value)
    return float(value)


def _check_keys(section: Mapping[str, Any], allowed: set[str], where: str) -> None:
    unknown = sorted(set(section) - allowed)
    if unknown:
        raise GatewayConfigError(
            f"{where}{unknown[0]}", f"unknown key; valid keys: {', '.join(sorted(allowed))}"
        )


def _parse_backend(raw: Any, where: str) -> BackendConfig:
    if not isinstance(raw, Mapping):
        raise GatewayConfigError(where, "expected a mapping with name, url, models")
    _check_keys(
        raw,
        {
            "name",
            "url",
            "models",
            "model",
            "hardware",
            "kv_capacity_tokens",
            "max_model_len",
            "metrics_path",
            "health_path",
        },
        f"{where}.",
    )
    url = raw.get("url")
    parsed = urlparse(url) if isinstance(url, str) else None
    if parsed is None or parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise GatewayConfigError(
            f"{where}.url", f"expected an http(s) URL such as http://127.0.0.1:8000, got {url!r}"
        )
    models = raw.get("models", raw.get("model"))
    if isinstance(models, str):
        models = [models]
    if (
        not isinstance(models, list)
        or not models
        or not all(isinstance(m, str) and m for m in models)
    ):
        raise GatewayConfigError(
            f"{where}.models", "expected a non-empty list of model names served by this backend"
        )
    name = raw.get("name") or parsed.netloc
    if not isinstance(name, str):
        raise GatewayConfigError(f"{where}.name", f"expected a string, got {name!r}")
    base = url.rstrip("/")
    if base.endswith("/v1"):
        base = base[: -len("/v1")]
    return BackendConfig(
        name=name,
        url=base,
        models=tuple(models),
        hardware=str(raw.get("hardware", "")),
        kv_capacity_tokens=_number(raw, "kv_capacity_tokens", 0, f"{where}.", integer=True),
        max_model_len=_number(raw, "max_model_len", 0, f"{where}.", integer=True),
        metrics_path=str(raw.get("metrics_path", "/metrics")),
        health_path=str(raw.get("health_path", "/health")),
    )


def parse_canary(raw: Any, where: str) -> CanaryConfig | None:
    if raw is None:
        return None
    if not isinstance(raw, Mapping):
        raise GatewayConfigError(
            where, "expected a mapping with policy, fraction, unit, min_samples, margins"
        )
    _check_keys(
        raw,
        {
            "policy",
            "fraction",
            "unit",
            "min_samples",
            "ttft_margin",
            "tpot_margin",
            "ttft_ok_s",
            "tpot_ok_s",
            "error_margin",
            "max_duration_s",
        },
        f"{where}.",
    )
    if "policy" not in raw:
        raise GatewayConfigError(
            f"{where}.policy", "required: the candidate policy (name, path or inline document)"
        )
    fraction = _number(raw, "fraction", 0.1, f"{where}.")
    if not 0.0 < fraction <= 1.0:
        raise GatewayConfigError(f"{where}.fraction", f"must be in (0, 1], got {fraction}")
    unit = raw.get("unit", "requests")
    if unit not in ("requests", "sessions"):
        raise GatewayConfigError(
            f"{where}.unit", f"expected 'requests' or 'sessions', got {unit!r}"
        )
    return CanaryConfig(
        policy=raw["policy"],
        fraction=fraction,
        unit=unit,
        min_samples=_number(raw, "min_samples", 50, f"{where}.", minimum=1, integer=True),
        ttft_margin=_number(raw, "ttft_margin", 0.2, f"{where}."),
        tpot_margin=_number(raw, "tpot_margin", 0.2, f"{where}."),
        ttft_ok_s=_number(raw, "ttft_ok_s", 0.0, f"{where}."),
        tpot_ok_s=_number(raw, "tpot_ok_s", 0.0, f"{where}."),
        error_margin=_number(raw, "error_margin", 0.02, f"{where}."),
        max_duration_s=_number(raw, "max_duration_s", 0.0, f"{where}."),
    )


_TOP_KEYS = {
    "listen",
    "host",
    "port",
    "api_keys",
    "admin_key",
    "backends",
    "policy",
    "canary",
    "health",
    "scrape",
    "log",
    "limits",
    "block_size",
    "drain_timeout_s",
    "seed",
}


def parse_gateway_config(
    doc: Any, *, source: str = "gateway config", base_dir: str = "."
) -> GatewayConfig:
    """Build a `GatewayConfig` from a parsed YAML document; errors name `source` and the key."""
    if not isinstance(doc, Mapping):
        raise GatewayConfigError(source, "expected a mapping at the top level")
    w = f"{source}: "
    _check_keys(doc, _TOP_KEYS, w)
    listen = _section(doc, "listen", w)
    _check_keys(listen, {"host", "port"}, f"{w}listen.")
    host = str(listen.get("host", doc.get("host", "127.0.0.1")))
    port = listen.get("port", doc.get("port", 8080))
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
        raise GatewayConfigError(
            f"{w}listen.port", f"expected a port 0-65535 (0 = any free port), got {port!r}"
        )
    raw_backends = doc.get("backends")
    if not isinstance(raw_backends, list) or not raw_backends:
        raise GatewayConfigError(
            f"{w}backends", "expected a non-empty list of backends (name, url, models)"
        )
    backends = tuple(_parse_backend(b, f"{w}backends[{i}]") for i, b in enumerate(raw_backends))
    names = [b.name for b in backends]
    duplicate = next((n for n in names if names.count(n) > 1), None)
    if duplicate:
        raise GatewayConfigError(
            f"{w}backends", f"backend name {duplicate!r} appears twice; names must be unique"
        )
    keys = doc.get("api_keys") or []
    if isinstance(keys, str):
        keys = [keys]
    if not isinstance(keys, list) or not all(isinstance(k, str) and k for k in keys):
        raise GatewayConfigError(f"{w}api_keys", "expected a list of non-empty strings")
    admin_key = doc.get("admin_key") or ""
    if not isinstance(admin_key, str):
        raise GatewayConfigError(f"{w}admin_key", "expected a string")
    health_raw = _section(doc, "health", w)
    _check_keys(
        health_raw,
        {"interval_s", "timeout_s", "eject_after_failures", "readmit_after_successes"},
        f"{w}health.",
    )
    health = HealthConfig(
        interval_s=_number(health_raw, "interval_s", 2.0, f"{w}health.", minimum=0.01),
        timeout_s=_number(health_raw, "timeout_s", 1.0, f"{w}health.", minimum=0.01),
        eject_after_failures=_number(
            health_raw, "eject_after_failures", 2, f"{w}health.", minimum=1, integer=True
        ),
        readmit_after_successes=_number(
            health_raw, "readmit_after_successes", 1, f"{w}health.", minimum=1, integer=True
        ),
    )
    scrape = _section(doc, "scrape", w)
    _check_keys(scrape, {"interval_s"}, f"{w}scrape.")
    log_raw = _section(doc, "log", w)
    _check_keys(log_raw, {"path", "rotate_bytes", "gzip"}, f"{w}log.")
    log_path = str(log_raw.get("path", "") or "")
    if log_path and not Path(log_path).is_absolute():
        log_path = str(Path(base_dir) / log_path)
    log = LogConfig(
        path=log_path,
        rotate_bytes=_size_bytes(log_raw.get("rotate_bytes", 100 * 2**20), f"{w}log.rotate_bytes"),
        gzip_rotated=bool(log_raw.get("gzip", True)),
    )
    lim = _section(doc, "limits", w)
    _check_keys(
        lim,
        {
            "max_body_bytes",
            "request_timeout_s",
            "connect_timeout_s",
            "first_byte_timeout_s",
            "max_retries",
            "max_connections_per_backend",
            "client_idle_timeout_s",
        },
        f"{w}limits.",
    )
    limits = LimitsConfig(
        max_body_bytes=_size_bytes(
            lim.get("max_body_bytes", 4 * 2**20), f"{w}limits.max_body_bytes"
        ),
        request_timeout_s=_number(lim, "request_timeout_s", 600.0, f"{w}limits.", minimum=0.001),
        connect_timeout_s=_number(lim, "connect_timeout_s", 3.0, f"{w}limits.", minimum=0.001),
        first_byte_timeout_s=_number(
            lim, "first_byte_timeout_s", 120.0, f"{w}limits.", minimum=0.001
        ),
        max_retries=_number(lim, "max_retries", 2, f"{w}limits.", integer=True),
        max_connections_per_backend=_number(
            lim, "max_connections_per_backend", 1024, f"{w}limits.", minimum=1, integer=True
        ),
        client_idle_timeout_s=_number(
            lim, "client_idle_timeout_s", 75.0, f"{w}limits.", minimum=0.001
        ),
    )
    policy = doc.get("policy", "least-loaded")
    if (
        isinstance(policy, str)
        and policy.endswith((".yaml", ".yml"))
        and not Path(policy).is_absolute()
    ):
        policy = str(Path(base_dir) / policy)
    canary = parse_canary(doc.get("canary"), f"{w}canary")
    if (
        canary
        and isinstance(canary.policy, str)
        and canary.policy.endswith((".yaml", ".yml"))
        and not Path(canary.policy).is_absolute()
    ):
        canary = CanaryConfig(
            **{
                **{f: getattr(canary, f) for f in CanaryConfig.__dataclass_fields__},
                "policy": str(Path(base_dir) / canary.policy),
            }
        )
    return GatewayConfig(
        backends=backends,
        policy=policy,
        host=host,
        port=port,
        api_keys=tuple(keys),
        admin_key=admin_key,
        canary=canary,
        health=health,
        scrape_interval_s=_number(scrape, "interval_s", 0.5, f"{w}scrape.", minimum=0.01),
        log=log,
        limits=limits,
        block_size=_number(doc, "block_size", 16, w, minimum=1, integer=True),
        drain_timeout_s=_number(doc, "drain_timeout_s", 30.0, w),
        seed=_number(doc, "seed", 0, w, integer=True),
        base_dir=base_dir,
    )


def load_gateway_config(path: str | Path) -> GatewayConfig:
    """Read and check `gateway.yaml`."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise GatewayConfigError(str(path), f"cannot read: {exc.strerror or exc}") from exc
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f" line {mark.line + 1}" if mark else ""
        raise GatewayConfigError(
            f"{path}{line}", f"not valid YAML: {getattr(exc, 'problem', exc)}"
        ) from exc
    return parse_gateway_config(doc, source=str(path), base_dir=str(path.parent))
