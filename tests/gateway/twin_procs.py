"""Run selfserve twins as subprocesses on 127.0.0.1 free ports (bounded start, always stopped)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def twin_processes(
    count: int,
    *,
    model: str = "llama-3.1-8b",
    hardware: str = "h100",
    time_scale: float = 20.0,
    start_timeout_s: float = 30.0,
):
    """Yield a list of (url, Popen) for `count` twins; kill them all on exit."""
    folder = Path(tempfile.mkdtemp(prefix="twins-"))
    procs: list[subprocess.Popen] = []
    try:
        for i in range(count):
            ready = folder / f"ready-{i}.json"
            cmd = [
                sys.executable,
                "-m",
                "selfserve.cli.main",
                "twin",
                "--model",
                model,
                "--hardware",
                hardware,
                "--port",
                "0",
                "--time-scale",
                str(time_scale),
                "--seed",
                str(i),
                "--ready-file",
                str(ready),
            ]
            procs.append(
                subprocess.Popen(
                    cmd,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.PIPE,
                    env={**os.environ, "PYTHONUNBUFFERED": "1"},
                )
            )
        urls = []
        for i, proc in enumerate(procs):
            ready = folder / f"ready-{i}.json"
            deadline = time.monotonic() + start_timeout_s
            while not ready.exists():
                if proc.poll() is not None:
                    raise RuntimeError(f"twin {i} exited: {proc.stderr.read().decode()[-2000:]}")
                if time.monotonic() > deadline:
                    raise RuntimeError(f"twin {i} not ready within {start_timeout_s} s")
                time.sleep(0.05)
            time.sleep(0.05)  # the file is written in one go, but give the writer a moment
            urls.append(json.loads(ready.read_text())["url"])
        yield list(zip(urls, procs, strict=True))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
