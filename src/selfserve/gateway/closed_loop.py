"""The closed loop `selfserve demo` runs: record → tune → canary → promote → replay, over HTTP.

Everything is the real thing on loopback: engine twins (time-scaled child processes), the
gateway (`selfserve serve` as a child process), the load generator (`selfserve bench`'s
`arun_bench`) and the tuner (`selfserve tune`). The loop:

1. start twins and the gateway with an anchor policy; replay a window of the vendored trace
   through it ("before") while the gateway writes its request log;
2. convert the log from wall time to model time (the twins run `time_scale`x faster than
   real engines) and tune on it in the simulator;
3. send the learned policy to `POST /admin/policy` as a canary on part of the traffic and
   replay the next window, until the gateway promotes (or rolls back) it by its live figures;
4. restart the twins (cold caches, same ports, so "after" starts where "before" did) and
   replay the first window again ("after").

Each phase reports through a callback; every process is stopped on exit, also on Ctrl-C.
"""

from __future__ import annotations

import asyncio
import secrets
import signal
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import orjson
import yaml

from selfserve.workload.request import Workload

PhaseFn = Callable[[str, str], None]


class DemoError(RuntimeError):
    """A phase of the loop could not run (a process failed, the canary never decided, …)."""


@dataclass(frozen=True, slots=True)
class LoopConfig:
    out_dir: Path
    trace: str = "mooncake-conversation-10min"
    model: str = "llama-3.1-8b"
    hardware: str = "h100"
    replicas: int = 3
    time_scale: float = 5.0
    rate_scale: float = 0.5
    requests: int = 200  # first N requests of the trace: the "before" and "after" window
    canary_requests: int = 120  # the next N requests carry the canary
    anchor: str = "round-robin"
    tune_anchors: tuple[str, ...] = ("round-robin", "least-loaded", "sglang-cache-aware")
    tune_budget_s: float = 30.0
    tune_workers: int = 2
    slo: str = "ttft=2s,tpot=100ms"
    canary_fraction: float = 0.5
    canary_min_samples: int = 30
    canary_margin: float = 0.25
    seed: int = 0


@dataclass(slots=True)
class LoopResult:
    before: dict[str, Any] = field(default_factory=dict)
    after: dict[str, Any] = field(default_factory=dict)
    learned_doc: dict[str, Any] = field(default_factory=dict)
    learned_text: str = ""
    tune_summary: dict[str, Any] = field(default_factory=dict)
    canary_events: list[dict[str, Any]] = field(default_factory=list)
    canary_outcome: str = ""
    final_policy: str = ""
    phase_s: dict[str, float] = field(default_factory=dict)
    paths: dict[str, str] = field(default_factory=dict)
    recorded_requests: int = 0


def load_trace(name: str) -> Workload:
    from selfserve.workload.embedded import embedded_names, load_embedded
    from selfserve.workload.io import load_workload

    if name in embedded_names():
        return load_embedded(name)
    return load_workload(name)


def window(workload: Workload, start: int, count: int) -> Workload:
    """Requests [start, start + count) with arrivals shifted to start at 0."""
    requests = workload.requests[start : start + count]
    if not requests:
        raise DemoError(f"the trace has {len(workload)} requests; no window at {start}")
    t0 = requests[0].arrival_s
    shifted = [replace(r, arrival_s=r.arrival_s - t0) for r in requests]
    return Workload(
        shifted,
        name=f"{workload.name}[{start}:{start + len(requests)}]",
        source=workload.source,
        block_size=workload.block_size,
    )


def to_model_time(log: Workload, time_scale: float) -> Workload:
    """A log recorded against `time_scale`x twins, with arrivals stretched back to model time."""
    if not log.requests:
        return log
    t0 = min(r.arrival_s for r in log.requests)
    requests = sorted(
        (replace(r, arrival_s=(r.arrival_s - t0) * time_scale) for r in log.requests),
        key=lambda r: r.arrival_s,
    )
    return Workload(
        requests, name=f"{log.name} (model time)", source=log.source, block_size=log.block_size
    )


def _admin(url: str, key: str, payload: dict | None = None) -> dict:
    data = orjson.dumps(payload) if payload is not None else None
    request = urllib.request.Request(
        url + "/admin/policy",
        data=data,
        method="POST" if payload is not None else "GET",
        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return orjson.loads(response.read())
    except urllib.error.HTTPError as exc:
        raise DemoError(
            f"gateway refused {request.method} /admin/policy: {exc.read()[:500].decode(errors='replace')}"
        ) from exc


def _wait_healthy(url: str, replicas: int, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url + "/health", timeout=2) as response:
                body = orjson.loads(response.read())
                if sum(1 for b in body["backends"].values() if b["healthy"]) == replicas:
                    return
        except OSError:
            pass
        time.sleep(0.1)
    raise DemoError(f"the gateway did not see all {replicas} twins healthy within {timeout_s:g} s")


def twin_lag_p99_s(urls: list[str]) -> float | None:
    """The worst twin's schedule-lag p99 (wall seconds): how far the twins fell behind their
    engine model for want of CPU. Large values mean the machine, not the policy, set the
    latencies of that run."""
    worst = None
    for url in urls:
        try:
            with urllib.request.urlopen(url + "/twin/stats", timeout=5) as response:
                p99 = float(orjson.loads(response.read())["lag"]["p99_s"])
        except (OSError, KeyError, ValueError, TypeError):
            continue
        worst = p99 if worst is None else max(worst, p99)
    return worst


class ClosedLoop:
    def __init__(
        self, config: LoopConfig, *, phase: PhaseFn | None = None, progress: bool = True
    ) -> None:
        self.config = config
        self.phase = phase or (lambda name, text: None)
        self.progress = progress
        self.result = LoopResult()
        self._admin_key = secrets.token_hex(16)

    def _bench(self, url: str, workload: Workload) -> tuple[dict[str, Any], Any]:
        from selfserve.bench.runner import arun_bench

        c = self.config
        interrupted = False

        async def replay():
            # the bench stops cleanly (and returns what it measured) when its stop event is
            # set; Ctrl-C sets it here and is re-raised below so the whole demo stops
            loop = asyncio.get_running_loop()
            stop = asyncio.Event()

            def on_interrupt() -> None:
                nonlocal interrupted
                interrupted = True
                stop.set()

            loop.add_signal_handler(signal.SIGINT, on_interrupt)
            try:
                return await arun_bench(
                    url,
                    workload,
                    rate_scale=c.rate_scale,
                    time_scale=c.time_scale,
                    model=c.model,
                    progress=self.progress,
                    stop_event=stop,
                )
            finally:
                loop.remove_signal_handler(signal.SIGINT)

        result = asyncio.run(replay())
        if interrupted:
            raise KeyboardInterrupt
        return result.summary(c.slo), result

    def _twins(self, stack: ExitStack, ports: list[int] | None = None):
        from selfserve.twin.launch import spawn_twins

        c = self.config
        if ports is None:
            return stack.enter_context(
                spawn_twins(c.replicas, c.model, c.hardware, time_scale=c.time_scale)
            )
        # the same ports again, so the gateway's backends come back without a config change
        twins = []
        for i, port in enumerate(ports):
            twins += stack.enter_context(
                spawn_twins(
                    1,
                    c.model,
                    c.hardware,
                    time_scale=c.time_scale,
                    extra_args=("--port", str(port), "--seed", str(i)),
                )
            )
        return twins

    def run(self) -> LoopResult:
        from selfserve.gateway.process import gateway_process

        c, res = self.config, self.result
        out = c.out_dir
        out.mkdir(parents=True, exist_ok=True)
        log_path = out / "requests.jsonl"
        for stale in out.glob("requests*.jsonl*"):
            stale.unlink()
        trace = load_trace(c.trace)
        before_window = window(trace, 0, c.requests)
        canary_window = window(trace, c.requests, c.canary_requests)
        with ExitStack() as gateway_stack:
            started = time.monotonic()
            twin_stack = ExitStack()
            gateway_stack.callback(twin_stack.close)
            twins = self._twins(twin_stack)
            ports = [t.port for t in twins]
            config_path = out / "gateway.yaml"
            config_path.write_text(
                yaml.safe_dump(
                    self._gateway_config([t.url for t in twins], log_path), sort_keys=False
                )
            )
            url = gateway_stack.enter_context(
                gateway_process(config_path, log_path=out / "gateway.out")
            )
            self.phase(
                "start",
                f"{c.replicas} twins of {c.model} on {c.hardware} ({c.time_scale:g}x time) and the gateway at {url} with policy {c.anchor}",
            )
            res.phase_s["start"] = time.monotonic() - started

            started = time.monotonic()
            self.phase(
                "before",
                f"replaying {len(before_window)} requests of {c.trace} through the gateway (policy {c.anchor})",
            )
            res.before, _ = self._bench(url, before_window)
            res.before["twin_lag_p99_s"] = twin_lag_p99_s([t.url for t in twins])
            res.phase_s["before"] = time.monotonic() - started

            started = time.monotonic()
            res.learned_doc, res.learned_text = self._tune(log_path, len(before_window))
            res.phase_s["tune"] = time.monotonic() - started

            started = time.monotonic()
            self._canary(url, canary_window)
            res.phase_s["canary"] = time.monotonic() - started

            started = time.monotonic()
            self.phase("restart", "restarting the twins with cold caches on the same ports")
            twin_stack.close()
            twin_stack = ExitStack()
            gateway_stack.callback(twin_stack.close)
            twins = self._twins(twin_stack, ports)
            _wait_healthy(url, c.replicas)
            self.phase(
                "after",
                f"replaying the same {len(before_window)} requests with policy {res.final_policy}",
            )
            res.after, _ = self._bench(url, before_window)
            res.after["twin_lag_p99_s"] = twin_lag_p99_s([t.url for t in twins])
            res.phase_s["after"] = time.monotonic() - started
        res.paths = {
            "gateway_config": str(config_path),
            "request_log": str(log_path),
            "learned_policy": str(out / "learned.yaml"),
        }
        return res

    def _gateway_config(self, urls: list[str], log_path: Path) -> dict:
        c = self.config
        return {
            "listen": {"host": "127.0.0.1", "port": 0},
            "admin_key": self._admin_key,
            "backends": [
                {"name": f"twin{i}", "url": u, "models": [c.model], "hardware": c.hardware}
                for i, u in enumerate(urls)
            ],
            "policy": c.anchor,
            "health": {"interval_s": 0.5, "timeout_s": 3.0, "eject_after_failures": 2},
            "scrape": {"interval_s": 0.2},
            "log": {"path": str(log_path.resolve())},
            "seed": c.seed,
        }

    def _tune(self, log_path: Path, expected: int) -> tuple[dict, str]:
        import argparse

        from selfserve.cli import tune as tune_cli
        from selfserve.workload.io import load_workload
        from selfserve.workload.log import RequestLogWriter

        c, out = self.config, self.config.out_dir
        # the gateway flushes its log twice a second: wait (bounded) for the last records
        deadline = time.monotonic() + 5.0
        while (
            time.monotonic() < deadline
            and log_path.exists()
            and sum(1 for _ in log_path.open("rb")) < expected
        ):
            time.sleep(0.1)
        log = load_workload(log_path)
        self.result.recorded_requests = len(log)
        model_time = to_model_time(log, c.time_scale)
        trace_path = out / "recorded-model-time.jsonl"
        trace_path.unlink(missing_ok=True)
        with RequestLogWriter(trace_path, rotate_bytes=None) as writer:
            for request in model_time.requests:
                writer.write(request)
        self.phase(
            "tune",
            f"tuning on the {len(log)} recorded requests (arrivals x{c.time_scale:g} back to model time), budget {c.tune_budget_s:g} s",
        )
        parser = argparse.ArgumentParser(prog="selfserve")
        tune_cli.register(parser.add_subparsers())
        cluster = f"{c.replicas}x{c.hardware}/{c.model}"
        args = parser.parse_args(
            [
                "tune",
                "--trace",
                str(trace_path),
                "--cluster",
                cluster,
                "--budget",
                f"{c.tune_budget_s:g}s",
                "--slo",
                c.slo,
                "--anchors",
                ",".join(c.tune_anchors),
                "--workers",
                str(c.tune_workers),
                "--bootstrap-windows",
                "2",
                "--curve-points",
                "2",
                "--seed",
                str(c.seed),
                "--out",
                str(out / "learned.yaml"),
                "--json",
                str(out / "tune.json"),
                "--html",
                str(out / "tune.html"),
            ]
        )
        # `selfserve tune` treats Ctrl-C as "stop searching, keep the best"; the demo notes it
        # and stops after tune has written its result
        interrupted = False
        default_handler = signal.getsignal(signal.SIGINT)

        def on_interrupt(signum, frame) -> None:
            nonlocal interrupted
            interrupted = True
            raise KeyboardInterrupt

        signal.signal(signal.SIGINT, on_interrupt)
        try:
            code = args.func(args)
        finally:
            signal.signal(signal.SIGINT, default_handler)
        if interrupted:
            raise KeyboardInterrupt
        if code:
            raise DemoError(f"selfserve tune exited with {code}")
        doc = yaml.safe_load((out / "learned.yaml").read_text())
        try:
            self.result.tune_summary = orjson.loads((out / "tune.json").read_bytes())
        except (OSError, orjson.JSONDecodeError):
            self.result.tune_summary = {}
        text = doc.get("score") or doc.get("expression") or f"anchor {doc.get('name')}"
        return doc, str(text)

    def _canary(self, url: str, canary_window: Workload) -> None:
        c, res = self.config, self.result
        policy = {k: v for k, v in res.learned_doc.items() if k != "evidence"}
        canary = {
            "policy": policy,
            "fraction": c.canary_fraction,
            "unit": "requests",
            "min_samples": c.canary_min_samples,
            "ttft_margin": c.canary_margin,
            "tpot_margin": c.canary_margin,
            "error_margin": 0.02,
        }
        answer = _admin(url, self._admin_key, {"canary": canary})
        self.phase(
            "canary",
            f"canary {answer['arm']} on {c.canary_fraction:.0%} of requests; replaying the next {len(canary_window)} requests until the gateway decides",
        )
        self._bench(url, canary_window)
        state = _admin(url, self._admin_key)
        res.canary_events = state["events"]
        decided = [
            e
            for e in state["events"]
            if e["event"] in ("promote", "rollback") and e["arm"] == answer["arm"]
        ]
        if decided:
            res.canary_outcome = f"{decided[-1]['event']}: {decided[-1]['reason']}"
        else:
            # not enough samples yet: end the canary explicitly rather than leave it running
            res.canary_outcome = f"undecided after {len(canary_window)} requests (min_samples {c.canary_min_samples}); kept {state['incumbent']['arm']}"
            _admin(
                url,
                self._admin_key,
                {
                    "policy": state["incumbent"]["spec"],
                    "reason": "demo: canary undecided, keep the incumbent",
                },
            )
            state = _admin(url, self._admin_key)
        res.final_policy = state["incumbent"]["arm"]
        self.phase("decision", res.canary_outcome)
