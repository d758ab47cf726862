"""`make_policy(spec)`: a builtin name, a policy-file document (dict) or a YAML path → a
fresh `Policy`.

Policy file kinds:
- `kind: anchor` — `name:` a builtin (see `list_anchors()`), optional `params:` overrides;
- `kind: profile` — `scorers:` a list of `{type, weight, params}`, optional `filters:`
  (`{type, params}`) and `picker:` (`{type, params}`, default max-score), optional `name:`;
- `kind: expression` — handed whole to `selfserve.policy.expression.build_expression_policy`.
Free keys kept for provenance on every kind: `description`, `evidence`, `metadata`,
`version`. Everything else is validated; errors name the key and what is valid.
A string spec may also be `NAME:key=value,key=value` (anchor overrides) for the CLI.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from selfserve.policy.base import Policy
from selfserve.policy.framework import PolicyConfigError, ProfilePolicy, WeightedScorer
from selfserve.policy.params import build
from selfserve.policy.registry import ANCHORS, FILTERS, PICKERS, SCORERS

_FREE_KEYS = ("description", "evidence", "metadata", "version")
_KINDS = ("anchor", "profile", "expression")


def list_anchors() -> list[str]:
    """Names of the builtin policies, in registry order."""
    return list(ANCHORS)


def make_policy(spec: Any) -> Policy:
    """A fresh policy from a name, `NAME:k=v,...`, a policy document, or a YAML path."""
    if isinstance(spec, Mapping):
        return policy_from_document(spec, where="policy")
    if isinstance(spec, Path):
        return load_policy_file(spec)
    if isinstance(spec, str):
        name, _, overrides = spec.partition(":")
        if name in ANCHORS:
            return build(ANCHORS[name], _parse_overrides(overrides, spec), where=name)
        if spec.endswith((".yaml", ".yml", ".json")) or Path(spec).is_file():
            return load_policy_file(spec)
        raise PolicyConfigError(
            f"unknown policy {spec!r}; valid: a policy file path or one of {', '.join(ANCHORS)}"
        )
    if hasattr(spec, "choose") and hasattr(spec, "on_route"):
        return spec
    raise PolicyConfigError(f"policy spec must be a name, a mapping or a path, got {spec!r}")


def load_policy_file(path: str | Path) -> Policy:
    path = Path(path)
    if not path.is_file():
        raise PolicyConfigError(f"{path}: policy file not found")
    try:
        doc = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise PolicyConfigError(f"{path}: not valid YAML: {exc}") from None
    return policy_from_document(doc, where=str(path))


def policy_from_document(doc: Any, where: str = "policy") -> Policy:
    if not isinstance(doc, Mapping):
        raise PolicyConfigError(
            f"{where}: a policy document must be a mapping, got {type(doc).__name__}"
        )
    kind = doc.get("kind")
    if kind not in _KINDS:
        raise PolicyConfigError(f"{where}.kind: got {kind!r}; valid: {', '.join(_KINDS)}")
    if kind == "expression":
        try:
            module = importlib.import_module("selfserve.policy.expression")
        except ImportError as exc:
            raise PolicyConfigError(
                f"{where}.kind: 'expression' needs selfserve.policy.expression, "
                f"which is not available ({exc})"
            ) from None
        return module.build_expression_policy(dict(doc))
    if kind == "anchor":
        _check_keys(doc, ("kind", "name", "params"), where)
        name = doc.get("name")
        if name not in ANCHORS:
            raise PolicyConfigError(f"{where}.name: got {name!r}; valid: {', '.join(ANCHORS)}")
        return build(ANCHORS[name], doc.get("params"), where=f"{where}.params")
    return _profile(doc, where)


def _profile(doc: Mapping, where: str) -> Policy:
    _check_keys(doc, ("kind", "name", "filters", "scorers", "picker"), where)
    name = doc.get("name", "profile")
    if not isinstance(name, str) or not name:
        raise PolicyConfigError(f"{where}.name: got {name!r}; valid: a non-empty string")
    scorer_docs = doc.get("scorers")
    if not isinstance(scorer_docs, list) or not scorer_docs:
        raise PolicyConfigError(
            f"{where}.scorers: got {scorer_docs!r}; valid: a non-empty list of "
            f"{{type, weight, params}} with type one of {', '.join(SCORERS)}"
        )
    scorers = []
    for k, sd in enumerate(scorer_docs):
        at = f"{where}.scorers[{k}]"
        cls, params = _typed(sd, SCORERS, at, extra=("weight",))
        if "weight" not in sd:
            raise PolicyConfigError(f"{at}.weight: missing; valid: a number >= 0")
        weight = sd["weight"]
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not weight >= 0:
            raise PolicyConfigError(f"{at}.weight: got {weight!r}; valid: a number >= 0")
        scorers.append(WeightedScorer(build(cls, params, f"{at}.params"), float(weight)))
    filter_docs = doc.get("filters", [])
    if not isinstance(filter_docs, list):
        raise PolicyConfigError(f"{where}.filters: got {filter_docs!r}; valid: a list")
    filters = []
    for k, fd in enumerate(filter_docs):
        at = f"{where}.filters[{k}]"
        cls, params = _typed(fd, FILTERS, at)
        filters.append(build(cls, params, f"{at}.params"))
    picker_doc = doc.get("picker", {"type": "max-score"})
    cls, params = _typed(picker_doc, PICKERS, f"{where}.picker")
    picker = build(cls, params, f"{where}.picker.params")
    return ProfilePolicy(name, scorers, picker, filters)


def _typed(item: Any, table: Mapping, at: str, extra: tuple[str, ...] = ()) -> tuple[type, Any]:
    if isinstance(item, str):
        item = {"type": item}
    if not isinstance(item, Mapping):
        raise PolicyConfigError(f"{at}: got {item!r}; valid: a mapping with 'type'")
    _check_keys(item, ("type", "params", *extra), at)
    type_name = item.get("type")
    if type_name not in table:
        valid = ", ".join(table) or "(none registered)"
        raise PolicyConfigError(f"{at}.type: got {type_name!r}; valid: {valid}")
    return table[type_name], item.get("params")


def _check_keys(doc: Mapping, allowed: tuple[str, ...], where: str) -> None:
    for key in doc:
        if key not in allowed and key not in _FREE_KEYS:
            raise PolicyConfigError(
                f"{where}.{key}: unknown key; valid: {', '.join((*allowed, *_FREE_KEYS))}"
            )


def _parse_overrides(text: str, spec: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if not text:
        return out
    for part in text.split(","):
        key, eq, value = part.partition("=")
        if not eq or not key.strip():
            raise PolicyConfigError(f"{spec!r}: override {part!r} is not key=value")
        out[key.strip()] = yaml.safe_load(value.strip())
    return out
