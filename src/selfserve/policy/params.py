"""Building a component or anchor from user parameters, with validation that names the key.

Parameters are the dataclass fields of the component class; their annotations (`int`,
`float`, `str`, `bool`) say what a value may be. Unknown keys, wrong types and values a
component's own `validate()` rejects all raise `PolicyConfigError` with the full key path
(e.g. `scorers[2].params.lru_capacity_blocks`) and what would be valid.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from selfserve.policy.framework import PolicyConfigError

_TYPES = {"int": int, "float": float, "str": str, "bool": bool}


def public_fields(cls: type) -> dict[str, dataclasses.Field]:
    """Fields a user may set: annotated as int/float/str/bool and not private."""
    return {
        f.name: f
        for f in dataclasses.fields(cls)
        if not f.name.startswith("_") and str(f.type) in _TYPES and f.init
    }


def describe_params(cls: type) -> str:
    parts = []
    for name, f in public_fields(cls).items():
        default = f.default if f.default is not dataclasses.MISSING else "?"
        parts.append(f"{name}: {f.type} = {default!r}")
    return ", ".join(parts) or "(no parameters)"


def build(cls: type, params: Mapping[str, Any] | None, where: str) -> Any:
    """Instantiate `cls` from `params`, validating names, types and ranges."""
    params = dict(params or {})
    if not isinstance(params, dict):
        raise PolicyConfigError(f"{where}: expected a mapping of parameters, got {params!r}")
    allowed = public_fields(cls)
    kwargs: dict[str, Any] = {}
    for key, value in params.items():
        if key not in allowed:
            raise PolicyConfigError(
                f"{where}.{key}: unknown parameter; valid: {describe_params(cls)}"
            )
        kind = _TYPES[str(allowed[key].type)]
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if kind is not bool and isinstance(value, bool) or not isinstance(value, kind):
            raise PolicyConfigError(
                f"{where}.{key}: got {value!r} ({type(value).__name__}); valid: {kind.__name__}"
            )
        if kind is float and value != value:
            raise PolicyConfigError(f"{where}.{key}: got NaN; valid: a finite number")
        kwargs[key] = value
    obj = cls(**kwargs)
    try:
        obj.validate()
    except PolicyConfigError as exc:
        raise PolicyConfigError(f"{where}.{exc}") from None
    return obj
