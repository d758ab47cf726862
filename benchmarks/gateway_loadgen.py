"""Load generator for bench_gateway: short streaming chat requests, closed or open loop.

Run as a child process so its CPU use is not charged to the proxy under test:
    python gateway_loadgen.py --urls URL[,URL...] --mode closed --concurrency 32 --duration-s 5
    python gateway_loadgen.py --urls URL --mode open --rate 200 --duration-s 5 \
        [--baseline-urls TWIN1,TWIN2 --baseline-every 4]
Prints one JSON line: completed, errors, req_per_s, e2e p50/p99 in ms, and the rate the
requests were actually sent at (`sent_per_s`, with the p99 lag behind the schedule): on a
busy machine an open-loop generator can fall behind its nominal rate, and then its p99 is
not a p99 "at that rate". Latency is measured from each request's actual send; failures
are counted, not folded into the percentiles. Several URLs are used round-robin by the
client itself (the "direct to the engines" baseline). With `--baseline-urls`, every Nth tick
of the open loop also sends one request straight to the engines (`baseline_p50_ms`,
`baseline_p99_ms`): a baseline taken at the same moments as the proxied requests, so
"added latency" is not a comparison between two different minutes of a shared machine.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import sys
import time

import aiohttp
import numpy as np
import orjson


async def one(session: aiohttp.ClientSession, url: str, body: bytes, headers: dict) -> float | None:
    started = time.perf_counter()
    try:
        async with session.post(url, data=body, headers=headers) as response:
            if response.status != 200:
                await response.read()
                return None
            raw = await response.read()
            if b"[DONE]" not in raw or b'"error"' in raw:
                return None
    except (TimeoutError, aiohttp.ClientError, ConnectionError):
        return None
    return time.perf_counter() - started


async def main(args: argparse.Namespace) -> dict:
    urls = [u.rstrip("/") + "/v1/chat/completions" for u in args.urls.split(",")]
    cycle = itertools.cycle(urls)
    body = orjson.dumps(
        {
            "model": args.model,
            "messages": [{"role": "user", "content": "Say hi in a few words."}],
            "max_tokens": args.max_tokens,
            "stream": True,
        }
    )
    headers = {"Content-Type": "application/json", "Authorization": "Bearer sk-bench"}
    latencies: list[float] = []
    errors = 0
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(
        connector=connector, timeout=aiohttp.ClientTimeout(total=30)
    ) as session:
        for _ in range(args.warmup):  # open connections, warm the proxy's code paths
            await one(session, next(cycle), body, headers)
        deadline = time.perf_counter() + args.duration_s
        started = time.perf_counter()
        if args.mode == "closed":

            async def worker() -> None:
                nonlocal errors
                while time.perf_counter() < deadline:
                    latency = await one(session, next(cycle), body, headers)
                    if latency is None:
                        errors += 1
                    else:
                        latencies.append(latency)

            await asyncio.gather(*(worker() for _ in range(args.concurrency)))
        else:
            tasks = []
            baseline_tasks = []
            baseline_cycle = (
                itertools.cycle(
                    u.rstrip("/") + "/v1/chat/completions" for u in args.baseline_urls.split(",")
                )
                if args.baseline_urls
                else None
            )
            interval_s = 1.0 / args.rate
            n = int(args.duration_s * args.rate)
            lags: list[float] = []
            for i in range(n):
                scheduled = started + i * interval_s
                delay = scheduled - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                lags.append(max(0.0, time.perf_counter() - scheduled))
                tasks.append(asyncio.create_task(one(session, next(cycle), body, headers)))
                if baseline_cycle is not None and i % args.baseline_every == 0:
                    baseline_tasks.append(
                        asyncio.create_task(one(session, next(baseline_cycle), body, headers))
                    )
            sent_s = time.perf_counter() - started
            for latency in await asyncio.gather(*tasks):
                if latency is None:
                    errors += 1
                else:
                    latencies.append(latency)
            baseline = await asyncio.gather(*baseline_tasks)
        elapsed_s = time.perf_counter() - started
    values = np.array(latencies) * 1e3 if latencies else np.array([float("nan")])
    result = {
        "completed": len(latencies),
        "errors": errors,
        "req_per_s": len(latencies) / elapsed_s,
        "p50_ms": float(np.percentile(values, 50)),
        "p99_ms": float(np.percentile(values, 99)),
    }
    if args.mode == "open":
        # n requests span n - 1 intervals: the rate they were really sent at
        result["sent_per_s"] = (n - 1) / sent_s if n > 1 and sent_s > 0 else float("nan")
        result["send_lag_p99_ms"] = float(np.percentile(np.array(lags) * 1e3, 99))
        if baseline_cycle is not None:
            done = np.array([b for b in baseline if b is not None]) * 1e3
            result["baseline_completed"] = len(done)
            result["baseline_errors"] = len(baseline) - len(done)
            result["baseline_p50_ms"] = (
                float(np.percentile(done, 50)) if len(done) else float("nan")
            )
            result["baseline_p99_ms"] = (
                float(np.percentile(done, 99)) if len(done) else float("nan")
            )
    return result


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--urls", required=True)
    parser.add_argument("--model", default="llama-3.1-8b")
    parser.add_argument("--mode", choices=("closed", "open"), default="closed")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--rate", type=float, default=200.0)
    parser.add_argument("--duration-s", type=float, default=5.0)
    parser.add_argument("--max-tokens", type=int, default=4)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--baseline-urls", default="", help="engines for the interleaved baseline")
    parser.add_argument("--baseline-every", type=int, default=4)
    try:
        import uvloop

        runner = asyncio.Runner(loop_factory=uvloop.new_event_loop)
    except ImportError:
        runner = asyncio.Runner()
    with runner:
        result = runner.run(main(parser.parse_args()))
    sys.stdout.write(orjson.dumps(result).decode() + "\n")
