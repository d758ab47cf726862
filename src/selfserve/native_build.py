"""The compiled build of the simulator's hot path: which modules mypyc compiles, and the guard
against a stale build.

`setup.py` compiles `COMPILED_MODULES` with mypyc into extension modules beside their
sources (the same .py files stay the pure-Python fallback) and writes `native_build.json`
next to this file: the SHA-256 of every source it compiled, or why it fell back to pure
Python. An extension module shadows its .py, so after an edit Python would silently run the
old compiled code; `check_build()` (run when `selfserve.engine` or `selfserve.perf.model`
is imported) compares the digests and raises `StaleBuildError` naming the file and the fix.
Standard library only: `setup.py` loads this file by path before the package is installed.
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import importlib.machinery
import json
from pathlib import Path

# The hot path of `simulate` (engine, perf step cost, simulator loop). Policies and the
# Router are shared with the gateway and stay pure Python.
COMPILED_MODULES = (
    "selfserve.engine.blocks",
    "selfserve.engine.config",
    "selfserve.engine.outputs",
    "selfserve.engine.request",
    "selfserve.engine.scheduler",
    "selfserve.engine.stretch",
    "selfserve.engine.replica",
    "selfserve.perf.model",
    "selfserve.sim.environment",
    "selfserve.sim.simulator",
)
GROUP_NAME = "selfserve_native"  # mypyc's shared library: `selfserve_native__mypyc`
MANIFEST_NAME = "native_build.json"
FIX = "run `make setup` (or `.venv/bin/pip install -e .`) to rebuild the compiled modules"
PACKAGE_ROOT = Path(__file__).resolve().parent  # the `selfserve` package directory


class StaleBuildError(ImportError):
    """Compiled modules that do not match their sources (edited since the build)."""


def source_path(module: str, package_root: Path = PACKAGE_ROOT) -> Path:
    """The .py source of a `selfserve.*` module under `package_root`."""
    parts = module.split(".")
    return package_root.joinpath(*parts[1:]).with_suffix(".py")


def source_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def extension_path(source: Path) -> Path | None:
    """The extension module that Python would import instead of `source`, if any."""
    for suffix in importlib.machinery.EXTENSION_SUFFIXES:
        candidate = source.with_name(source.stem + suffix)
        if candidate.exists():
            return candidate
    return None


def read_manifest(package_root: Path = PACKAGE_ROOT) -> dict:
    """The build's record (`{}` when no build wrote one, e.g. a plain source checkout)."""
    path = package_root / MANIFEST_NAME
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def stale_modules(package_root: Path = PACKAGE_ROOT) -> list[str]:
    """Why the compiled build cannot be trusted, one line per module (empty when it can,
    or when there is no compiled module at all)."""
    compiled = {m: extension_path(source_path(m, package_root)) for m in COMPILED_MODULES}
    present = [m for m, ext in compiled.items() if ext is not None]
    if not present:
        return []
    digests = read_manifest(package_root).get("sources", {})
    problems = []
    for module, ext in compiled.items():
        source = source_path(module, package_root)
        if ext is None:
            problems.append(f"{source}: no compiled module beside it (a partial build)")
        elif not source.exists():
            continue  # an installed wheel may ship the extension alone
        elif digests.get(module) != source_digest(source):
            problems.append(f"{source} changed since {ext.name} was compiled from it")
    return problems


@functools.cache
def check_build() -> None:
    """`raise_if_stale` for the installed package, once per process (it imports nothing,
    so a compiled module may call it before anything else)."""
    raise_if_stale(PACKAGE_ROOT)


def raise_if_stale(package_root: Path) -> None:
    """Raise `StaleBuildError`, naming each file and the fix, if a compiled module under
    `package_root` no longer matches its source."""
    problems = stale_modules(package_root)
    if problems:
        raise StaleBuildError(
            "selfserve's compiled simulator modules are stale, and Python would run the old "
            "compiled code instead of the sources:\n  "
            + "\n  ".join(problems)
            + f"\nFix: {FIX} (a failed compile falls back to pure Python)."
        )


def running_build() -> str:
    """How the simulator's hot path runs in this process: "mypyc" (compiled) or "pure"."""
    module = importlib.import_module("selfserve.engine.scheduler")
    return "pure" if str(module.__file__).endswith(".py") else "mypyc"


def describe_build(package_root: Path = PACKAGE_ROOT) -> str:
    """One line for `make setup`: compiled, or pure Python and why."""
    problems = stale_modules(package_root)
    if problems:
        return f"selfserve: STALE compiled build ({problems[0]}); {FIX}"
    if extension_path(source_path(COMPILED_MODULES[0], package_root)) is not None:
        return (
            f"selfserve: simulator hot path compiled with mypyc ({len(COMPILED_MODULES)} modules)"
        )
    reason = read_manifest(package_root).get("fallback") or "no compiled build"
    return f"selfserve: WARNING: simulator runs as pure Python (slower): {reason}"
