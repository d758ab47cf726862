"""The compiled (mypyc) build of the simulator's hot path: same records as the pure-Python
sources, and a stale build (sources edited since the compile) refused with the fix."""

from __future__ import annotations

import importlib.machinery
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from selfserve.native_build import (
    COMPILED_MODULES,
    MANIFEST_NAME,
    StaleBuildError,
    extension_path,
    raise_if_stale,
    source_digest,
    source_path,
    stale_modules,
)

ROOT = Path(__file__).resolve().parents[2]

# Runs small simulations and prints their records; with "pure", a finder placed first on
# sys.meta_path loads the compiled modules from their .py sources instead.
CHILD = r"""
import dataclasses, importlib.util, json, sys
from selfserve.native_build import COMPILED_MODULES, source_path
if sys.argv[1] == "pure":
    class SourcesFirst:
        @staticmethod
        def find_spec(name, path=None, target=None):
            if name in COMPILED_MODULES:
                return importlib.util.spec_from_file_location(name, source_path(name))
            return None
    sys.meta_path.insert(0, SourcesFirst)
from selfserve.sim import simulate
from selfserve.workload.embedded import load_embedded
from selfserve.workload.request import Workload
runs = {}
text = load_embedded("mooncake-conversation-10min")
part = Workload(text.requests[:400], block_size=text.block_size)
# a KV cache small enough to preempt; a prefix-aware policy; both modes
for policy in ("round-robin", "lmetric"):
    for mode in ("fast", "step"):
        r = simulate(part, "2xh200/llama-3.1-8b:num_gpu_blocks_override=2500", policy, mode=mode, seed=3)
        runs[f"{policy}/{mode}"] = r
media = load_embedded("servegen-mm-image-6clients")
runs["omni"] = simulate(Workload(media.requests[:150]), "1xh100/qwen2.5-omni-7b", "least-loaded")
out = {
    name: [repr(dataclasses.astuple(x)) for x in r.records]
    + [repr(dataclasses.astuple(x)) for x in r.replicas] + [repr(r.end_s)]
    for name, r in runs.items()
}
out["files"] = [sys.modules[m].__file__ for m in COMPILED_MODULES]
print(json.dumps(out))
"""


def _run_child(build: str) -> dict:
    done = subprocess.run(
        [sys.executable, "-c", CHILD, build], capture_output=True, text=True, cwd=ROOT, timeout=240
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def _compiled_build_present() -> bool:
    return all(extension_path(source_path(m)) is not None for m in COMPILED_MODULES)


@pytest.mark.skipif(
    not _compiled_build_present(),
    reason="no compiled build here (setup.py's mypyc compile was skipped or failed): "
    "nothing to compare with the pure-Python sources",
)
def test_compiled_modules_give_the_same_records_as_the_pure_python_sources():
    compiled, pure = _run_child("compiled"), _run_child("pure")
    ext_suffixes = tuple(importlib.machinery.EXTENSION_SUFFIXES)
    assert all(f.endswith(ext_suffixes) for f in compiled.pop("files"))
    assert all(f.endswith(".py") for f in pure.pop("files"))
    assert compiled.keys() == pure.keys()
    for name in compiled:
        assert len(compiled[name]) > 100
        assert compiled[name] == pure[name], name  # repr: bit for bit, int vs float too


def _fake_build(root: Path, *, compiled: tuple[str, ...] = COMPILED_MODULES) -> Path:
    """A package tree with every compiled module's source, extension file and manifest."""
    package = root / "selfserve"
    suffix = importlib.machinery.EXTENSION_SUFFIXES[0]
    digests = {}
    for module in COMPILED_MODULES:
        source = source_path(module, package)
        source.parent.mkdir(parents=True, exist_ok=True)
        source.write_text(f"# {module}\n")
        digests[module] = source_digest(source)
        if module in compiled:
            source.with_name(source.stem + suffix).write_bytes(b"")
    (package / MANIFEST_NAME).write_text(json.dumps({"sources": digests}))
    return package


def test_a_build_that_matches_its_sources_is_accepted(tmp_path):
    package = _fake_build(tmp_path)
    assert stale_modules(package) == []
    raise_if_stale(package)


def test_pure_python_tree_without_extensions_is_never_stale(tmp_path):
    package = _fake_build(tmp_path, compiled=())
    source_path("selfserve.engine.scheduler", package).write_text("# edited\n")
    assert stale_modules(package) == []


def test_an_edited_source_is_refused_naming_the_file_and_the_fix(tmp_path):
    package = _fake_build(tmp_path)
    edited = source_path("selfserve.engine.scheduler", package)
    edited.write_text("# edited after the build\n")
    with pytest.raises(StaleBuildError) as caught:
        raise_if_stale(package)
    message = str(caught.value)
    assert str(edited) in message and "changed since scheduler." in message
    assert "make setup" in message
    assert len(stale_modules(package)) == 1


def test_a_partial_or_unrecorded_build_is_refused(tmp_path):
    partial = _fake_build(tmp_path / "a", compiled=COMPILED_MODULES[1:])
    assert any("partial build" in p for p in stale_modules(partial))
    unrecorded = _fake_build(tmp_path / "b")
    (unrecorded / MANIFEST_NAME).unlink()
    assert len(stale_modules(unrecorded)) == len(COMPILED_MODULES)


def test_makefile_rebuilds_when_any_compiled_source_changes():
    makefile = (ROOT / "Makefile").read_text()
    rule = re.search(r"NATIVE_SOURCES :=(.*?)\n\n", makefile, re.S)
    assert rule, "Makefile has no NATIVE_SOURCES"
    deps = rule.group(1)
    wildcard_dirs = re.findall(r"\$\(wildcard (\S+)/\*\.py\)", deps)
    assert "$(STAMP): pyproject.toml $(NATIVE_SOURCES)" in makefile
    for module in COMPILED_MODULES:
        rel = source_path(module, Path("src/selfserve")).as_posix()
        assert rel in deps or str(Path(rel).parent) in wildcard_dirs, rel
