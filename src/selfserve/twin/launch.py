"""Start twins as child processes on free loopback ports (tests, benchmarks, demos).

Each twin runs ``python -m selfserve.cli.main twin --port 0 --ready-file F``; the child
binds a free port and writes its URL to F, which `spawn_twins` waits for. Leaving the
context stops every child (SIGTERM, then SIGKILL after a grace period).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import orjson


class TwinStartError(RuntimeError):
    """A twin process exited or did not become ready in time."""


@dataclass(slots=True)
class TwinProcess:
    url: str
    port: int
    process: subprocess.Popen
    log_path: Path  # removed when the spawn_twins context exits


def _stop(process: subprocess.Popen, grace_s: float = 5.0) -> None:
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=grace_s)


@contextmanager
def spawn_twins(
    count: int,
    model: str,
    hardware: str,
    *,
    time_scale: float = 1.0,
    extra_args: Sequence[str] = (),
    startup_timeout_s: float = 60.0,
    env: dict[str, str] | None = None,
) -> Iterator[list[TwinProcess]]:
    """`count` twin processes on 127.0.0.1; yields them once all are listening."""
    workdir = Path(tempfile.mkdtemp(prefix="selfserve-twins-"))
    started: list[tuple[subprocess.Popen, Path, Path]] = []
    try:
        for index in range(count):
            ready = workdir / f"twin{index}.ready.json"
            log = workdir / f"twin{index}.log"
            command = [
                sys.executable, "-m", "selfserve.cli.main", "twin",
                "--model", model, "--hardware", hardware,
                "--host", "127.0.0.1", "--port", "0",
                "--time-scale", str(time_scale), "--seed", str(index),
                "--ready-file", str(ready), *extra_args,
            ]  # fmt: skip
            with log.open("wb") as log_file:
                process = subprocess.Popen(
                    command,
                    stdout=log_file,
                    stderr=subprocess.STDOUT,
                    env={**os.environ, **(env or {})},
                )
            started.append((process, ready, log))
        twins: list[TwinProcess] = []
        deadline = time.monotonic() + startup_timeout_s
        for process, ready, log in started:
            while not ready.exists():
                if process.poll() is not None:
                    raise TwinStartError(
                        f"twin exited with code {process.returncode}: {log.read_text()[-2000:]}"
                    )
                if time.monotonic() > deadline:
                    raise TwinStartError(f"twin not ready after {startup_timeout_s:.0f} s")
                time.sleep(0.05)
            info = orjson.loads(ready.read_bytes())
            twins.append(TwinProcess(info["url"], int(info["port"]), process, log))
        yield twins
    finally:
        for process, _, _ in started:
            _stop(process)
        shutil.rmtree(workdir, ignore_errors=True)
