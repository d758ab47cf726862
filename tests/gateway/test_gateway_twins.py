"""The gateway in front of real selfserve twins (subprocesses): kill one mid-run, lose nothing."""

from __future__ import annotations

import asyncio
import signal

import openai
from gateway_harness import run
from twin_procs import twin_processes

from selfserve.gateway.app import Gateway
from selfserve.gateway.config import parse_gateway_config

MODEL = "llama-3.1-8b"


def test_killing_a_twin_mid_run_loses_no_request(tmp_path):
    log_path = tmp_path / "requests.jsonl"
    with twin_processes(2, time_scale=20.0) as twins:

        async def body():
            config = parse_gateway_config(
                {
                    "listen": {"port": 0},
                    "backends": [
                        {"name": f"twin{i}", "url": url, "models": [MODEL]}
                        for i, (url, _) in enumerate(twins)
                    ],
                    "policy": "round-robin",
                    "health": {"interval_s": 0.2, "timeout_s": 3.0, "eject_after_failures": 1},
                    "log": {"path": str(log_path)},
                }
            )
            gateway = Gateway(config)
            await gateway.start()
            client = openai.AsyncOpenAI(
                base_url=f"http://127.0.0.1:{gateway.port}/v1", api_key="x", max_retries=0
            )
            outcomes: list[str] = []

            async def one(i: int) -> None:
                try:
                    stream = await client.chat.completions.create(
                        model=MODEL,
                        messages=[{"role": "user", "content": f"question number {i} " * 20}],
                        max_tokens=64,
                        stream=True,
                        user=f"user-{i % 5}",
                    )
                    text = "".join(
                        [c.choices[0].delta.content or "" async for c in stream if c.choices]
                    )
                    outcomes.append("ok" if text else "empty")
                except (
                    openai.APIError
                ) as exc:  # an explicit error: stream error event or HTTP error
                    outcomes.append(f"error:{type(exc).__name__}")

            tasks = [asyncio.create_task(one(i)) for i in range(40)]
            await asyncio.sleep(0.3)
            twins[1][1].send_signal(signal.SIGKILL)
            await asyncio.gather(*tasks)
            tasks = [asyncio.create_task(one(i)) for i in range(40, 60)]
            await asyncio.gather(*tasks)
            await client.close()
            await gateway.stop()
            return outcomes, gateway

        outcomes, gateway = run(body(), timeout_s=60)
    seen = {o: outcomes.count(o) for o in set(outcomes)}
    assert len(outcomes) == 60, seen
    assert "empty" not in outcomes, seen
    # after the kill the dead twin is ejected: every later request succeeds on the other
    assert outcomes.count("ok") >= 20, seen
    assert gateway.pool.healthy[1] is False, gateway.pool.health
    assert gateway.router.num_in_flight == 0
    assert gateway.recorder.num_written == 60
    from selfserve.workload.io import load_workload

    workload = load_workload(log_path)
    assert len(workload) == 60
    # every record carries its outcome; the failures are the explicit errors the clients saw
    statuses = [
        line.split('"status":"')[1].split('"')[0] for line in log_path.read_text().splitlines()
    ]
    assert statuses.count("error") == sum(o.startswith("error") for o in outcomes), (statuses, seen)
    assert all(r.prompt_tokens > 0 for r in workload)
    sessions = {r.session_id for r in workload}
    assert sessions == {f"user-{i}" for i in range(5)}
