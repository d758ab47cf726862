"""Twin and bench speed (`make bench`, suite `twin`).

1. One twin process streams to >= 500 concurrent requests: 500 requests of 64 prompt /
   400 output tokens arrive within 1 s; the engine model (llama-3.1-8b on H100, 512
   sequences) is slowed to `STREAM_TIME_SCALE` so it emits a few thousand tokens/s, the
   rate a real replica of a big model streams. Figures: streamed tokens/s, the twin's
   schedule lag (how late each engine step's tokens went out) p50/p99, and whether every
   stream finished with its exact length.
2. `bench` from one process drives short requests (16 prompt tokens, 2 output tokens) at
   1,500 req/s against a minimal canned SSE server in another process (so the server is
   not the limit: this measures the load generator); figures: completed requests/s, the
   client's CPU time per request (what one core could drive), and its send lag.
3. Fidelity: two minutes of the embedded Mooncake trace through `bench` against two twins
   at time scale 2 vs `selfserve.sim.simulate` (see `selfserve.bench.fidelity`).
"""

from __future__ import annotations

import json
import os
import time
import urllib.request

from selfserve.bench import run_bench
from selfserve.twin.launch import spawn_twins
from selfserve.workload.request import Request, Workload

STREAMS = 500
STREAM_OUTPUT_TOKENS = 400
STREAM_TIME_SCALE = 0.15
SHORT_RATE_PER_S = 1500.0
SHORT_REQUESTS = 6000
FIDELITY_TRACE_S = 120.0


def _streams_workload() -> Workload:
    requests = [
        Request(
            request_id=f"s{i}",
            arrival_s=i / STREAMS,  # all 500 within the first second
            prompt_tokens=64,
            output_tokens=STREAM_OUTPUT_TOKENS,
            block_hashes=(i,),
            block_size=64,
        )
        for i in range(STREAMS)
    ]
    return Workload(requests, name="500-streams", block_size=64)


def _short_workload() -> Workload:
    requests = [
        Request(
            request_id=f"q{i}",
            arrival_s=i / SHORT_RATE_PER_S,
            prompt_tokens=16,
            output_tokens=2,
            block_hashes=(1,),
            block_size=16,
        )
        for i in range(SHORT_REQUESTS)
    ]
    return Workload(requests, name="short", block_size=16)


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process (Linux /proc), 0 where unavailable."""
    try:
        fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _twin_stats(url: str) -> dict:
    with urllib.request.urlopen(url + "/twin/stats", timeout=10) as response:
        return json.loads(response.read())


def bench_streams() -> list[dict]:
    extra = ["--max-num-seqs", "512"]
    with spawn_twins(
        1, "llama-3.1-8b", "h100", time_scale=STREAM_TIME_SCALE, extra_args=extra
    ) as twins:
        url = twins[0].url
        pid = twins[0].process.pid
        cpu_before_s = _cpu_s(pid)
        started = time.perf_counter()
        result = run_bench(url, _streams_workload(), progress=False)
        wall_s = time.perf_counter() - started
        twin_cpu_s = _cpu_s(pid) - cpu_before_s
        lag = _twin_stats(url)["lag"]
    summary = result.summary()
    tokens = summary["total_output_tokens"]
    # Streaming throughput over the span when all 500 streams are running.
    ends = [o.start_s + o.e2e_s for o in result.outcomes if o.ok]
    firsts = [o.start_s + o.ttft_s for o in result.outcomes if o.ok]
    span_s = max(ends) - min(firsts) if ends else wall_s
    exact = all(o.output_tokens == STREAM_OUTPUT_TOKENS for o in result.outcomes)
    return [
        {"name": "concurrent streams completed", "value": summary["completed"], "unit": "requests",
         "target": f">= {STREAMS}, exact lengths", "ok": summary["completed"] >= STREAMS and exact},
        {"name": "streamed tokens/s (one twin process)", "value": tokens / span_s, "unit": "tok/s",
         "target": ">= 2000", "ok": tokens / span_s >= 2000},
        {"name": "twin CPU per streamed token", "value": twin_cpu_s / max(1, tokens) * 1e6,
         "unit": "us", "target": "report (1e6/us = tok/s one core can stream)", "ok": None},
        {"name": "twin schedule lag p50", "value": lag["p50_s"] * 1000, "unit": "ms",
         "target": "report", "ok": None},
        {"name": "twin schedule lag p90", "value": lag["p90_s"] * 1000, "unit": "ms",
         "target": "report", "ok": None},
        {"name": "twin schedule lag p99", "value": lag["p99_s"] * 1000, "unit": "ms",
         "target": "< 50 ms (not falling behind)", "ok": lag["p99_s"] < 0.05},
        {"name": "twin schedule lag max", "value": lag["max_s"] * 1000, "unit": "ms",
         "target": "report", "ok": None},
    ]  # fmt: skip


_CANNED_BODY = (
    b'data: {"id":"c","object":"text_completion","created":0,"model":"m","choices":[{"index":0,'
    b'"text":" a","logprobs":null,"finish_reason":null,"stop_reason":null}]}\n\n'
    b'data: {"id":"c","object":"text_completion","created":0,"model":"m","choices":[{"index":0,'
    b'"text":" b","logprobs":null,"finish_reason":"length","stop_reason":null}]}\n\n'
    b'data: {"id":"c","object":"text_completion","created":0,"model":"m","choices":[],'
    b'"usage":{"prompt_tokens":16,"completion_tokens":2,"total_tokens":18}}\n\n'
    b"data: [DONE]\n\n"
)


def _serve_canned(port_pipe) -> None:
    """A minimal keep-alive HTTP server answering every POST with the same 2-token SSE
    stream: a target that costs next to nothing, so the figure measures the client."""
    import asyncio

    import uvloop

    response = (
        b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nContent-Length: %d\r\n\r\n"
        % len(_CANNED_BODY)
    ) + _CANNED_BODY

    class Canned(asyncio.Protocol):
        def connection_made(self, transport) -> None:
            self.transport = transport
            self.buffer = b""

        def data_received(self, data: bytes) -> None:
            self.buffer += data
            while True:
                end = self.buffer.find(b"\r\n\r\n")
                if end < 0:
                    return
                head = self.buffer[:end].lower()
                at = head.find(b"content-length:")
                length = int(head[at + 15 :].split(b"\r\n")[0]) if at >= 0 else 0
                if len(self.buffer) < end + 4 + length:
                    return
                self.buffer = self.buffer[end + 4 + length :]
                self.transport.write(response)

    async def main() -> None:
        server = await asyncio.get_running_loop().create_server(
            Canned, "127.0.0.1", 0, backlog=4096
        )
        port_pipe.send(server.sockets[0].getsockname()[1])
        await asyncio.Event().wait()

    uvloop.run(main())


def bench_request_rate() -> list[dict]:
    import multiprocessing

    receive, send = multiprocessing.Pipe(duplex=False)
    server = multiprocessing.get_context("fork").Process(
        target=_serve_canned, args=(send,), daemon=True
    )
    server.start()
    try:
        url = f"http://127.0.0.1:{receive.recv()}"
        cpu_started_s = time.process_time()
        result = run_bench(url, _short_workload(), progress=False, model="m")
        cpu_s = time.process_time() - cpu_started_s
    finally:
        server.terminate()
        server.join(5)
    summary = result.summary()
    return [
        {"name": "bench short requests/s (one process)", "value": summary["request_throughput_rps"],
         "unit": "req/s", "target": ">= 1000", "ok": summary["request_throughput_rps"] >= 1000},
        {"name": "bench CPU per request (client process)", "value": cpu_s / SHORT_REQUESTS * 1e6,
         "unit": "us", "target": "report (1e6/us = req/s one core can drive)", "ok": None},
        {"name": "bench failed requests", "value": summary["failed"], "unit": "requests",
         "target": "0", "ok": summary["failed"] == 0},
        {"name": "bench send lag p99", "value": summary["send_lag_s"]["p99"] * 1000, "unit": "ms",
         "target": "report", "ok": None},
    ]  # fmt: skip


def bench_fidelity() -> list[dict]:
    """Two minutes of the embedded Mooncake trace: 2 twins (llama-3.1-8b on B200, time
    scale 2) over HTTP vs the simulator, round-robin; relative differences (twin - sim)."""
    from selfserve.bench.fidelity import run_fidelity
    from selfserve.workload.embedded import load_embedded

    trace = load_embedded()
    requests = [r for r in trace if r.arrival_s - trace.start_s < FIDELITY_TRACE_S]
    report = run_fidelity(
        Workload(requests, name="mooncake-2min", block_size=trace.block_size),
        model="llama-3.1-8b",
        hardware="b200",
        replicas=2,
        time_scale=2.0,
    )
    diff = report.differences()
    rows = [
        {"name": "fidelity requests completed", "value": report.completed, "unit": "requests",
         "target": f"{report.requests}", "ok": report.completed == report.requests},
        {"name": "fidelity TTFT p50 sim / twin", "value": f"{report.ttft_sim.p50:.3f} / {report.ttft_twin.p50:.3f}",
         "unit": "s", "target": "report", "ok": None},
        {"name": "fidelity TTFT p90 sim / twin", "value": f"{report.ttft_sim.p90:.3f} / {report.ttft_twin.p90:.3f}",
         "unit": "s", "target": "report", "ok": None},
        {"name": "fidelity TPOT p50 sim / twin", "value": f"{report.tpot_sim.p50 * 1e3:.2f} / {report.tpot_twin.p50 * 1e3:.2f}",
         "unit": "ms", "target": "report", "ok": None},
        {"name": "fidelity TPOT p90 sim / twin", "value": f"{report.tpot_sim.p90 * 1e3:.2f} / {report.tpot_twin.p90 * 1e3:.2f}",
         "unit": "ms", "target": "report", "ok": None},
    ]  # fmt: skip
    for key in ("ttft_p50_rel", "ttft_p90_rel", "tpot_p50_rel", "tpot_p90_rel", "tpot_mean_rel"):
        rows.append(
            {
                "name": f"fidelity {key}",
                "value": diff[key] * 100,
                "unit": "%",
                "target": "report",
                "ok": None,
            }
        )
    rows.append(
        {
            "name": "fidelity cache hit twin - sim",
            "value": diff["cache_hit_abs"] * 100,
            "unit": "pp",
            "target": "report",
            "ok": None,
        }
    )
    rows.append(
        {
            "name": "fidelity pacing error (median, model s)",
            "value": report.pacing_error_s,
            "unit": "s",
            "target": "report",
            "ok": None,
        }
    )
    return rows


def run() -> list[dict]:
    return bench_streams() + bench_request_rate() + bench_fidelity()


if __name__ == "__main__":
    for row in run():
        print(row)
