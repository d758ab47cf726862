"""Gateway overhead: selfserve's gateway vs LiteLLM's proxy vs the SGLang router.

All proxies sit in front of the same two selfserve twins (time-scaled 1000x, so engine time
is negligible) and are driven by the same load generator in a separate process
(`gateway_loadgen.py`): short streaming chat requests (4 output tokens).

- max sustained rate: closed loop with 32 concurrent clients for a few seconds;
- proxy CPU per request: user + system CPU of the proxy's processes over a run divided by
  the requests served, for the closed loop and for the open loop at 200 req/s. It depends
  far less than rates and latencies on what else the machine runs, but an event loop's
  cost per request falls as its throughput rises (more events per wake-up), so the
  fixed-rate figure is the like-for-like comparison between proxies;
- added latency: open loop at 200 requests/s through the proxy, end-to-end p50/p99 minus
  the same figures for requests sent straight to the twins *interleaved in the same run*
  (one every 4th tick, round-robin in the client), so both see the same moments of a
  shared machine. The rows also say the rate the load generator actually sent at and how
  many requests failed: a p99 target only counts as met when the full rate was sent and
  nothing failed.

The machine's load average is reported with the figures: on a shared machine latencies
(not CPU per request) move with it.

LiteLLM (`litellm[proxy]`) and the SGLang router (`sglang-router`) are not project
dependencies: install each in a throwaway venv and point `SELFSERVE_BENCH_LITELLM` /
`SELFSERVE_BENCH_SGLANG_ROUTER` at its executable (or put it on PATH). A proxy that is
absent or fails to start gives a row saying so instead of a number.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import orjson
import yaml

HERE = Path(__file__).resolve().parent
MODEL = "llama-3.1-8b"
CLOSED_CONCURRENCY = 32
OPEN_RATE = 200.0
DURATION_S = float(os.environ.get("SELFSERVE_BENCH_GATEWAY_SECONDS", "5"))


def _cpu_seconds(pid: int) -> float:
    """User + system CPU of `pid` and its descendants (Linux /proc): the proxy's own cost,
    which, unlike latency, does not depend on what else the machine is running."""
    ticks = os.sysconf("SC_CLK_TCK")
    total, stack = 0.0, [pid]
    while stack:
        current = stack.pop()
        try:
            fields = Path(f"/proc/{current}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / ticks
            for task in Path(f"/proc/{current}/task").iterdir():
                stack.extend(int(c) for c in (task / "children").read_text().split())
        except (OSError, IndexError, ValueError):
            continue
    return total


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_http(url: str, timeout_s: float, process: subprocess.Popen) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"exited with {process.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status < 500:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url} not ready within {timeout_s:g} s")


@contextmanager
def _process(
    command: list[str], ready_url: str, *, timeout_s: float = 60.0, env: dict | None = None
):
    log = tempfile.NamedTemporaryFile(prefix="bench-proxy-", suffix=".log", delete=False)  # noqa: SIM115
    process = subprocess.Popen(
        command, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})}
    )
    try:
        try:
            _wait_http(ready_url, timeout_s, process)
        except RuntimeError as exc:
            raise RuntimeError(
                f"{Path(command[0]).name}: {exc}; log {log.name}: {Path(log.name).read_text()[-400:]}"
            ) from exc
        yield process
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)
        log.close()


def _load(urls: list[str], mode: str, baseline_urls: list[str] = ()) -> dict:
    command = [
        sys.executable,
        str(HERE / "gateway_loadgen.py"),
        "--urls",
        ",".join(urls),
        "--mode",
        mode,
        "--model",
        MODEL,
        "--duration-s",
        str(DURATION_S),
        "--concurrency",
        str(CLOSED_CONCURRENCY),
        "--rate",
        str(OPEN_RATE),
    ]
    if baseline_urls:
        command += ["--baseline-urls", ",".join(baseline_urls)]
    out = subprocess.run(command, capture_output=True, timeout=DURATION_S * 6 + 60)
    if out.returncode != 0:
        raise RuntimeError(f"load generator failed: {out.stderr.decode(errors='replace')[-300:]}")
    return orjson.loads(out.stdout.splitlines()[-1])


def _selfserve(twin_urls: list[str]):
    port = _free_port()
    folder = Path(tempfile.mkdtemp(prefix="bench-selfserve-"))
    config = {
        "listen": {"host": "127.0.0.1", "port": port},
        "backends": [
            {"name": f"twin{i}", "url": u, "models": [MODEL]} for i, u in enumerate(twin_urls)
        ],
        "policy": "round-robin",
        "api_keys": ["sk-bench"],  # authenticated, as LiteLLM is
        "log": {"path": str(folder / "requests.jsonl")},  # the real deployment records
    }
    (folder / "gateway.yaml").write_text(yaml.safe_dump(config))
    command = [
        sys.executable,
        "-m",
        "selfserve.cli.main",
        "serve",
        "--config",
        str(folder / "gateway.yaml"),
    ]
    return f"http://127.0.0.1:{port}", _process(command, f"http://127.0.0.1:{port}/health")


def _litellm(twin_urls: list[str]):
    exe = os.environ.get("SELFSERVE_BENCH_LITELLM") or shutil.which("litellm")
    if not exe or not Path(exe).exists():
        return (
            None,
            "not installed (set SELFSERVE_BENCH_LITELLM to a `litellm` from `pip install 'litellm[proxy]'`)",
        )
    port = _free_port()
    folder = Path(tempfile.mkdtemp(prefix="bench-litellm-"))
    config = {
        "model_list": [
            {
                "model_name": MODEL,
                "litellm_params": {
                    "model": f"openai/{MODEL}",
                    "api_base": u + "/v1",
                    "api_key": "none",
                },
            }
            for u in twin_urls
        ],
        "router_settings": {"routing_strategy": "simple-shuffle"},
        "litellm_settings": {"telemetry": False, "drop_params": True},
        "general_settings": {"master_key": "sk-bench", "disable_spend_logs": True},
    }
    (folder / "config.yaml").write_text(yaml.safe_dump(config))
    command = [
        exe,
        "--config",
        str(folder / "config.yaml"),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--num_workers",
        "1",
    ]
    # offline: use the bundled model-cost map instead of fetching it (a fetch per start
    # would time out here and is not part of the proxy's request path anyway)
    env = {
        "LITELLM_LOG": "ERROR",
        "LITELLM_TELEMETRY": "False",
        "DISABLE_SCHEMA_UPDATE": "true",
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",
        # its cost tracking counts tokens with the model's Hugging Face tokenizer; offline,
        # the download retries for ~25 s per request unless the hub is marked offline
        "HF_HUB_OFFLINE": "1",
    }
    return f"http://127.0.0.1:{port}", _process(
        command, f"http://127.0.0.1:{port}/health/liveliness", timeout_s=120, env=env
    )


def _sglang_router(twin_urls: list[str]):
    exe = os.environ.get("SELFSERVE_BENCH_SGLANG_ROUTER") or shutil.which("sglang-router")
    if not exe or not Path(exe).exists():
        return (
            None,
            "not installed (set SELFSERVE_BENCH_SGLANG_ROUTER to a `sglang-router` from `pip install sglang-router`)",
        )
    port = _free_port()
    command = [
        exe,
        "launch",
        "--worker-urls",
        *twin_urls,
        "--policy",
        "round_robin",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--log-level",
        "error",
        "--prometheus-port",
        str(_free_port()),
    ]
    return f"http://127.0.0.1:{port}", _process(
        command, f"http://127.0.0.1:{port}/health", timeout_s=60
    )


def _row(
    name: str, value: float | None, unit: str, target: str = "", ok: bool | None = None
) -> dict:
    return {
        "name": name,
        "value": value if value is not None else float("nan"),
        "unit": unit,
        "target": target,
        "ok": ok,
    }


def measure() -> dict[str, dict]:
    """{system: {"closed", "open": loadgen results} or {"error": text}}."""
    sys.path.insert(0, str(HERE.parent / "src"))
    from selfserve.twin.launch import spawn_twins

    results: dict[str, dict] = {"load_before": {"avg1": os.getloadavg()[0]}}
    with spawn_twins(2, MODEL, "h100", time_scale=1000.0) as twins:
        urls = [t.url for t in twins]
        results["direct"] = {"closed": _load(urls, "closed")}
        for name, make in (
            ("selfserve", _selfserve),
            ("litellm", _litellm),
            ("sglang-router", _sglang_router),
        ):
            url, context = make(urls)
            if url is None:
                results[name] = {"error": context}
                continue
            try:
                with context as process:
                    cpu_s = _cpu_seconds(process.pid)
                    closed = _load([url], "closed")
                    cpu_s = _cpu_seconds(process.pid) - cpu_s
                    closed["cpu_us_per_request"] = cpu_s / max(closed["completed"], 1) * 1e6
                    # the direct baseline is interleaved in the same open-loop run
                    cpu_s = _cpu_seconds(process.pid)
                    opened = _load([url], "open", urls)
                    cpu_s = _cpu_seconds(process.pid) - cpu_s
                    opened["cpu_us_per_request"] = cpu_s / max(opened["completed"], 1) * 1e6
                    results[name] = {"closed": closed, "open": opened}
            except (RuntimeError, subprocess.SubprocessError, OSError) as exc:
                results[name] = {"error": str(exc)[:300]}
    results["load_after"] = {"avg1": os.getloadavg()[0]}
    return results


CPU_TARGET_US = 500.0  # issue 7 follow-up: at least 2.5x below the aiohttp gateway's 1.34 ms


def run() -> list[dict]:
    results = measure()
    direct = results["direct"]
    rows = [
        _row(
            "machine load average (1 min) before / after",
            results["load_before"]["avg1"],
            f"/ {results['load_after']['avg1']:.2f}",
        ),
        _row(
            "direct to twins: sustained rate (32 clients)", direct["closed"]["req_per_s"], "req/s"
        ),
    ]
    mine = results.get("selfserve", {})
    for name in ("selfserve", "litellm", "sglang-router"):
        result = results.get(name, {})
        if "error" in result:
            rows.append(_row(f"{name}: skipped — {result['error']}", None, ""))
            continue
        closed, opened = result["closed"], result["open"]
        rows.append(_row(f"{name}: sustained rate (32 clients)", closed["req_per_s"], "req/s"))
        cpu_target, cpu_ok = "", None
        if name == "selfserve":
            cpu_target = f"<= {CPU_TARGET_US:g} us"
            cpu_ok = closed["cpu_us_per_request"] <= CPU_TARGET_US
        rows.append(
            _row(
                f"{name}: proxy CPU per request",
                closed["cpu_us_per_request"],
                "us",
                cpu_target,
                cpu_ok,
            )
        )
        rows.append(
            _row(
                f"{name}: proxy CPU per request at {OPEN_RATE:g} req/s (same rate for all)",
                opened["cpu_us_per_request"],
                "us",
            )
        )
        rows.append(
            _row(
                f"{name}: open loop sent at (generator p99 lag {opened['send_lag_p99_ms']:.1f} ms)",
                opened["sent_per_s"],
                "req/s",
                f"{OPEN_RATE:g}",
            )
        )
        failed = closed["errors"] + opened["errors"] + opened["baseline_errors"]
        rows.append(
            _row(
                f"{name}: failed requests (closed + open loop + baseline)",
                failed,
                "requests",
                "0",
                None,
            )
        )
        rows.append(
            _row(
                f"{name}: added e2e p50 at {OPEN_RATE:g} req/s",
                opened["p50_ms"] - opened["baseline_p50_ms"],
                "ms",
            )
        )
        added_p99 = opened["p99_ms"] - opened["baseline_p99_ms"]
        target, ok = "", None
        if name == "selfserve":
            # met only if the load generator really sent the rate and nothing failed
            full_rate = opened["sent_per_s"] >= 0.95 * OPEN_RATE
            target, ok = "< 2 ms", added_p99 < 2.0 and full_rate and failed == 0
        rows.append(
            _row(
                f"{name}: added e2e p99 at {OPEN_RATE:g} req/s "
                f"(p99 {opened['p99_ms']:.1f} vs direct {opened['baseline_p99_ms']:.1f} ms, "
                f"{opened['baseline_completed']} direct samples)",
                added_p99,
                "ms",
                target,
                ok,
            )
        )
    if "closed" in mine:
        for other, factor, target in (
            ("litellm", 3.0, ">= 3x"),
            ("sglang-router", 0.5, ">= 0.5x (within 2x)"),
        ):
            if "closed" in results.get(other, {}):
                ratio = mine["closed"]["req_per_s"] / results[other]["closed"]["req_per_s"]
                rows.append(
                    _row(f"selfserve / {other} sustained rate", ratio, "x", target, ratio >= factor)
                )
        if "closed" in results.get("sglang-router", {}):
            router = results["sglang-router"]
            for mode, label in (("closed", "32 clients"), ("open", f"{OPEN_RATE:g} req/s")):
                ratio = mine[mode]["cpu_us_per_request"] / router[mode]["cpu_us_per_request"]
                rows.append(
                    _row(
                        f"selfserve / sglang-router CPU per request ({label})",
                        ratio,
                        "x",
                        "<= 2x",
                        ratio <= 2.0,
                    )
                )
    return rows


if __name__ == "__main__":
    for row in run():
        print(row)
