"""Build hook: compile the simulator's hot path with mypyc, else fall back to pure Python.

All metadata lives in pyproject.toml; this file only adds the compiled modules. The modules
listed in `selfserve.native_build.COMPILED_MODULES` are compiled by mypyc (typed Python to
C) into extension modules beside their sources; the same .py files stay the pure-Python
fallback. The compile runs inside `build_ext` (not when setup.py is imported, so pip's
metadata steps stay fast). If mypy is missing, the type check fails or the C compiler does,
the install still succeeds, without extension modules, after a warning; the reason is kept
in `native_build.json`, which `make setup` prints. `SELFSERVE_PURE_PYTHON=1` skips the
compile on purpose. After a build, `native_build.json` records each compiled source's
SHA-256 so that an edited source is detected (see `selfserve.native_build`).
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
import time
from pathlib import Path

from setuptools import Distribution, setup
from setuptools.command.build_ext import build_ext

ROOT = Path(__file__).resolve().parent
PACKAGE = ROOT / "src" / "selfserve"


def _load_native_build():
    """`selfserve.native_build`, loaded by path (the package is not installed yet)."""
    spec = importlib.util.spec_from_file_location("_native_build", PACKAGE / "native_build.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


NATIVE = _load_native_build()
# mypy's options: modules outside the compiled set are read for their types only, and
# third-party packages may be absent from pip's isolated build environment.
MYPY_OPTIONS = ["--follow-imports=silent", "--ignore-missing-imports", "--no-incremental"]


class NativeDistribution(Distribution):
    """Always runs `build_ext` (the extensions are only known once mypyc has run)."""

    def has_ext_modules(self) -> bool:
        return True


class MypycBuildExt(build_ext):
    """`build_ext` that asks mypyc for the extensions, and falls back to none on failure."""

    def run(self) -> None:
        started = time.monotonic()
        package_dir = self._package_dir()
        self._remove_old_build(package_dir)
        self._fallback: str | None = None
        digests: dict[str, str] = {}
        try:
            if os.environ.get("SELFSERVE_PURE_PYTHON", "") not in ("", "0"):
                raise _Skip("SELFSERVE_PURE_PYTHON is set")
            digests = {
                m: NATIVE.source_digest(NATIVE.source_path(m, PACKAGE))
                for m in NATIVE.COMPILED_MODULES
            }
            # mypyc runs here, when the command runs (not at every setup.py invocation
            # pip makes), so the extensions arrive after finalize_options.
            self._adopt(self._mypyc_extensions())
            super().run()
        except (Exception, SystemExit) as exc:  # mypyc reports type errors by SystemExit
            self._fall_back(exc)
            self._remove_old_build(package_dir)
        manifest = {
            "mypyc": None if self._fallback else _mypy_version(),
            "sources": {} if self._fallback else digests,
            "compile_s": round(time.monotonic() - started, 1),
            "fallback": self._fallback,
        }
        package_dir.mkdir(parents=True, exist_ok=True)
        (package_dir / NATIVE.MANIFEST_NAME).write_text(json.dumps(manifest, indent=1) + "\n")

    def _adopt(self, extensions: list) -> None:
        """What setuptools' finalize_options does for each extension (plain modules: no
        shared-library stubs)."""
        self.distribution.ext_modules = self.extensions = extensions
        self.check_extensions_list(extensions)
        for ext in extensions:
            ext._full_name = self.get_ext_fullname(ext.name)
            self.ext_map[ext._full_name] = ext
            self.ext_map[ext._full_name.split(".")[-1]] = ext
            ext._links_to_dynamic = ext._needs_stub = False
            ext._file_name = self.get_ext_filename(ext._full_name)

    def _fall_back(self, exc: BaseException) -> None:
        reason = str(exc) if isinstance(exc, _Skip) else f"{type(exc).__name__}: {exc}"
        print(
            f"selfserve build: WARNING: the simulator stays pure Python ({reason})", file=sys.stderr
        )
        # kept short for `make setup`'s line (a compiler error quotes its whole command)
        self._fallback = reason if len(reason) <= 200 else reason[:200] + " ... (pip install -v)"
        self.distribution.ext_modules = self.extensions = []

    def _package_dir(self) -> Path:
        """Where the `selfserve` package's files go: the source tree when building in
        place (editable installs), else the build directory."""
        if self.inplace or getattr(self, "editable_mode", False):
            return PACKAGE
        return Path(self.build_lib) / "selfserve"

    def _mypyc_extensions(self) -> list:
        try:
            from mypyc.build import mypycify
        except ImportError as exc:
            raise _Skip(f"mypyc is not importable: {exc}") from None
        paths = [
            str(NATIVE.source_path(m, PACKAGE).relative_to(ROOT)) for m in NATIVE.COMPILED_MODULES
        ]
        target_dir = (Path(self.build_temp) / "mypyc").resolve()
        cwd = os.getcwd()
        os.chdir(ROOT)  # mypy derives module names from paths under src/
        try:
            extensions = mypycify(
                [*MYPY_OPTIONS, *paths],
                opt_level="3",
                group_name=NATIVE.GROUP_NAME,
                target_dir=str(target_dir),
            )
        finally:
            os.chdir(cwd)
        for ext in extensions:
            # Same float results as the interpreter: no fused multiply-adds.
            ext.extra_compile_args = [*ext.extra_compile_args, "-ffp-contract=off"]
        return extensions

    def _remove_old_build(self, package_dir: Path) -> None:
        """Delete extension modules of an earlier build, so that none can outlive a failed
        or skipped compile and shadow its source."""
        stale = [
            NATIVE.extension_path(NATIVE.source_path(m, package_dir))
            for m in NATIVE.COMPILED_MODULES
        ]
        stale += list(package_dir.parent.glob(f"{NATIVE.GROUP_NAME}__mypyc.*"))
        for path in stale:
            if path is not None and path.exists():
                path.unlink()
        manifest = package_dir / NATIVE.MANIFEST_NAME
        if manifest.exists():
            manifest.unlink()


class _Skip(Exception):
    """The compile was not attempted (no mypyc, or opted out)."""


def _mypy_version() -> str:
    from mypy.version import __version__

    return __version__


setup(distclass=NativeDistribution, cmdclass={"build_ext": MypycBuildExt})
