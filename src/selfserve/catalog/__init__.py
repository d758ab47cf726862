"""Hardware and model catalogs: public datasheet and config figures, each with its source.

`get_accelerator("h200")`, `get_model("llama-3.1-8b")`, `list_accelerators()`,
`list_models()`. Unknown names raise `UnknownNameError` listing the valid names.
"""

from __future__ import annotations

from selfserve.catalog.accelerators import Accelerator, Price, get_accelerator, list_accelerators
from selfserve.catalog.errors import MediaNotSupportedError, UnknownNameError
from selfserve.catalog.media import MediaRules
from selfserve.catalog.model_table import MODELS
from selfserve.catalog.models import EncoderSpec, ModelSpec


def list_models() -> list[str]:
    """Catalog model names, lowercase."""
    return list(MODELS)


def get_model(name: str) -> ModelSpec:
    """Look up a model by name (case-insensitive; an `org/` prefix is ignored)."""
    key = name.strip().lower().rsplit("/", 1)[-1]
    try:
        return MODELS[key]
    except KeyError:
        raise UnknownNameError("model", name, list_models()) from None


__all__ = [
    "Accelerator",
    "EncoderSpec",
    "MediaNotSupportedError",
    "MediaRules",
    "ModelSpec",
    "Price",
    "UnknownNameError",
    "get_accelerator",
    "get_model",
    "list_accelerators",
    "list_models",
]
