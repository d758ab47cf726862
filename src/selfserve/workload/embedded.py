"""Trace slices shipped inside the package, so demos and tests run without ../shared.

Each name maps to a file or folder under `selfserve/data/traces/` and its reader options;
`src/selfserve/data/README.md` gives each slice's source, license and how it was cut.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib.resources import files
from pathlib import Path
from types import MappingProxyType
from typing import Any

from selfserve.workload.io import load_workload
from selfserve.workload.request import Workload


@dataclass(frozen=True, slots=True)
class EmbeddedTrace:
    name: str
    relative_path: str
    format: str
    description: str
    options: MappingProxyType = field(default_factory=lambda: MappingProxyType({}))


EMBEDDED: MappingProxyType[str, EmbeddedTrace] = MappingProxyType(
    {
        t.name: t
        for t in (
            EmbeddedTrace(
                "mooncake-conversation-10min",
                "mooncake-conversation-10min.jsonl.gz",
                "mooncake",
                "Kimi production chat, first 10 minutes of the Mooncake FAST'25 conversation trace",
            ),
            EmbeddedTrace(
                "azure-conv-10min",
                "azure-conv-10min.csv.gz",
                "azure",
                "Azure LLM 2023 conversation service, first 10 minutes",
            ),
            EmbeddedTrace(
                "ragpulse-day1",
                "ragpulse-day1",
                "ragpulse",
                "RAGPulse university RAG service, first 24 hours with their segment tables",
            ),
            EmbeddedTrace(
                "kv-cache-tester-sessions",
                "kv-cache-tester-sessions",
                "kv-cache-tester",
                "10 Claude Code agentic sessions (one with a sub-agent) from kv-cache-tester",
            ),
            EmbeddedTrace(
                "servegen-mm-image-6clients",
                "servegen-mm-image-6clients",
                "servegen",
                "ServeGen Qwen-VL distributions of 6 clients; 10 minutes sampled at noon",
            ),
        )
    }
)
DEFAULT_EMBEDDED = "mooncake-conversation-10min"


def embedded_names() -> list[str]:
    return list(EMBEDDED)


def embedded_path(name: str = DEFAULT_EMBEDDED) -> Path:
    """The file or folder of an embedded slice."""
    trace = EMBEDDED.get(name)
    if trace is None:
        raise KeyError(f"no embedded trace {name!r}; available: " + ", ".join(EMBEDDED))
    return Path(str(files("selfserve") / "data" / "traces" / trace.relative_path))


def load_embedded(name: str = DEFAULT_EMBEDDED, **reader_options: Any) -> Workload:
    """An embedded slice as a Workload (named `embedded:<name>`)."""
    trace = EMBEDDED.get(name)
    if trace is None:
        raise KeyError(f"no embedded trace {name!r}; available: " + ", ".join(EMBEDDED))
    options = {**trace.options, **reader_options}
    return load_workload(embedded_path(name), trace.format, name=f"embedded:{name}", **options)
