"""`bench` against a live twin: exact lengths, cache reuse, sessions, bounds, cancel, CLI."""

from __future__ import annotations

import asyncio
import json

import pytest

from selfserve.bench import arun_bench, run_bench
from selfserve.cli.main import main as cli_main
from selfserve.twin.launch import spawn_twins
from selfserve.workload.request import Request, Workload

MODEL = "llama-3.1-8b"


@pytest.fixture(scope="module")
def twin_url():
    with spawn_twins(1, MODEL, "h100", time_scale=4.0) as twins:
        yield twins[0].url


def _workload(n: int, spacing_s: float = 0.05) -> Workload:
    # Every request shares the first two 64-token blocks; each has one block of its own.
    requests = [
        Request(
            f"r{i}",
            i * spacing_s,
            64 * 3 + 10,
            5 + i % 3,
            block_hashes=(1, 2, 100 + i),
            block_size=64,
        )
        for i in range(n)
    ]
    return Workload(requests, name="tiny", block_size=64)


def test_replay_gets_exact_lengths_and_shared_prefix_hits(twin_url):
    result = run_bench(twin_url, _workload(12), progress=False, time_scale=4.0)
    summary = result.summary()
    assert summary["completed"] == 12 and summary["failed"] == 0
    assert [o.output_tokens for o in result.outcomes] == [5 + i % 3 for i in range(12)]
    # after the first request, the 128 shared tokens are cached (8 blocks of 16)
    assert [o.cached_tokens for o in result.outcomes[1:]] == [128] * 11
    assert all(len(o.itl_s) == o.output_tokens - 1 for o in result.outcomes)
    assert summary["ttft_s"]["p99"] > 0 and summary["tpot_s"]["mean"] > 0


@pytest.mark.parametrize("endpoint", ["completions", "chat"])
def test_server_counts_exactly_the_traced_prompt_tokens(twin_url, endpoint):
    result = run_bench(twin_url, _workload(3), progress=False, endpoint=endpoint)
    assert [o.server_prompt_tokens for o in result.outcomes] == [64 * 3 + 10] * 3


def test_session_turn_waits_for_previous_turn_and_think_time(twin_url):
    first = Request("s1", 0.0, 32, 40, session_id="s", turn=0)
    second = Request("s2", 0.0, 48, 2, session_id="s", turn=1, think_time_s=0.4)
    result = run_bench(twin_url, Workload([first, second]), progress=False)
    a, b = result.outcomes
    assert a.ok and b.ok
    # the second turn starts after the first turn's end plus the think time (wall s)
    assert b.start_s >= a.start_s + a.e2e_s + 0.4 - 0.01


def test_max_requests_and_duration_bound_the_run(twin_url):
    limited = run_bench(twin_url, _workload(50), progress=False, max_requests=7)
    assert len(limited.outcomes) == 7
    # requests every 0.25 s for 12.5 s, stopped after 1 s: about 4 sent, none failed
    timed = run_bench(twin_url, _workload(50, 0.25), progress=False, duration_s=1.0)
    summary = timed.summary()
    assert 3 <= len(timed.outcomes) <= 6
    assert summary["failed"] == 0


def test_stop_event_cancels_in_flight_requests_cleanly(twin_url):
    long = Workload([Request(f"l{i}", 0.0, 16, 5000) for i in range(3)])

    async def go():
        stop = asyncio.Event()
        asyncio.get_running_loop().call_later(0.5, stop.set)
        return await arun_bench(twin_url, long, progress=False, stop_event=stop)

    result = asyncio.run(go())
    assert result.cancelled
    summary = result.summary()
    assert summary["incomplete"] == 3 and summary["failed"] == 0


def test_unknown_model_is_reported_as_failed_requests(twin_url):
    result = run_bench(twin_url, _workload(2), progress=False, model="nope")
    assert result.summary()["failed"] == 2
    assert all(o.status == 404 for o in result.outcomes)


def test_cli_prints_table_and_writes_json_and_html(twin_url, tmp_path, capsys):
    trace = tmp_path / "trace.jsonl"
    with trace.open("w") as out:
        for i in range(6):
            row = {
                "timestamp": i * 100,
                "input_length": 600,
                "output_length": 4,
                "hash_ids": [0, i + 1],
            }
            out.write(json.dumps(row) + "\n")
    code = cli_main(
        [
            "bench", "--target", twin_url, "--trace", str(trace), "--time-scale", "4",
            "--slo", "ttft=2s,tpot=200ms", "--json", str(tmp_path / "b.json"),
            "--html", str(tmp_path / "b.html"), "--no-progress",
        ]
    )  # fmt: skip
    assert code == 0
    printed = capsys.readouterr().out
    assert "Serving Benchmark Result" in printed and "Request goodput" in printed
    data = json.loads((tmp_path / "b.json").read_text())
    assert data["summary"]["completed"] == 6
    assert len(data["requests"]) == 6
    html = (tmp_path / "b.html").read_text()
    assert html.count("<svg") >= 4


def test_cli_rejects_bad_options(tmp_path, capsys):
    code = cli_main(["bench", "--target", "http://127.0.0.1:9", "--trace", "no-such-trace"])
    assert code == 2
    assert "neither a file nor an embedded trace" in capsys.readouterr().out
