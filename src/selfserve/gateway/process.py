"""Run `selfserve serve` as a child process (the demo and benchmarks use the real CLI path).

`gateway_process(config_path)` starts it with `--port-file`, waits (bounded) until it
listens and `/health` answers, yields its base URL, and on exit sends SIGTERM (a graceful
drain) and then SIGKILL after a grace period, so no child outlives its caller.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path


class GatewayStartError(RuntimeError):
    """The gateway child exited or did not become ready in time."""


def stop_process(process: subprocess.Popen, grace_s: float = 10.0) -> None:
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=5)


@contextmanager
def gateway_process(
    config_path: str | Path,
    *,
    extra_args: Sequence[str] = (),
    startup_timeout_s: float = 30.0,
    log_path: str | Path | None = None,
) -> Iterator[str]:
    """Start `selfserve serve --config config_path --port 0`; yield `http://127.0.0.1:PORT`."""
    workdir = Path(tempfile.mkdtemp(prefix="selfserve-gateway-"))
    port_file = workdir / "port"
    out_path = Path(log_path) if log_path else workdir / "gateway.out"
    out = out_path.open("wb")
    command = [
        sys.executable,
        "-m",
        "selfserve.cli.main",
        "serve",
        "--config",
        str(config_path),
        "--port",
        "0",
        "--port-file",
        str(port_file),
        *extra_args,
    ]
    process = subprocess.Popen(
        command, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"}
    )
    try:
        deadline = time.monotonic() + startup_timeout_s
        while not port_file.exists() or not port_file.read_text().strip():
            if process.poll() is not None:
                raise GatewayStartError(
                    f"gateway exited with {process.returncode}: {out_path.read_text()[-2000:]}"
                )
            if time.monotonic() > deadline:
                raise GatewayStartError(
                    f"gateway not listening within {startup_timeout_s:g} s; see {out_path}"
                )
            time.sleep(0.05)
        url = f"http://127.0.0.1:{int(port_file.read_text())}"
        while True:
            try:
                with urllib.request.urlopen(url + "/health", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise GatewayStartError(
                    f"gateway /health not OK within {startup_timeout_s:g} s; see {out_path}"
                )
            time.sleep(0.1)
        yield url
    finally:
        stop_process(process)
        out.close()
