"""The closed loop's pieces: the real `selfserve serve` process records a log that `selfserve
tune` reads, and the demo's window/time conversions and table are right."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import openai
import yaml
from twin_procs import twin_processes

from selfserve.cli.demo import comparison_rows
from selfserve.gateway.arms import LiveStats, PolicyArms
from selfserve.gateway.closed_loop import to_model_time, window
from selfserve.gateway.config import CanaryConfig
from selfserve.gateway.process import gateway_process
from selfserve.workload.request import Request, Workload

MODEL = "llama-3.1-8b"


def test_serve_records_a_log_that_tune_learns_from(tmp_path):
    log_path = tmp_path / "requests.jsonl"
    with twin_processes(2, time_scale=50.0) as twins:
        config = {
            "backends": [
                {"name": f"t{i}", "url": url, "models": [MODEL]} for i, (url, _) in enumerate(twins)
            ],
            "policy": "least-loaded",
            "log": {"path": str(log_path)},
        }
        (tmp_path / "gateway.yaml").write_text(yaml.safe_dump(config))
        with gateway_process(
            tmp_path / "gateway.yaml", extra_args=["--json", str(tmp_path / "serve.json")]
        ) as url:
            client = openai.OpenAI(base_url=url + "/v1", api_key="x", max_retries=0)
            shared = "You are a helpful assistant for the billing team. " * 8
            for i in range(24):
                client.chat.completions.create(
                    model=MODEL,
                    messages=[
                        {"role": "system", "content": shared},
                        {"role": "user", "content": f"ticket {i}: " + "why " * (i % 5 + 1)},
                    ],
                    max_tokens=8,
                    user=f"team-{i % 3}",
                )
                time.sleep(0.02)
    summary = json.loads((tmp_path / "serve.json").read_text())  # written after the drain
    assert summary["requests_by_status"] == {"ok": 24.0} and summary["logged_records"] == 24
    lines = [json.loads(line) for line in log_path.read_text().splitlines()]
    assert len(lines) == 24 and all(
        rec["status"] == "ok" and rec["backend"] in ("t0", "t1") for rec in lines
    )
    assert all(
        "content" not in line and "ticket" not in line for line in log_path.read_text().splitlines()
    )
    # the shared system prompt gives every request the same leading block hashes
    assert len({tuple(rec["block_hashes"][:4]) for rec in lines}) == 1
    policy_path = tmp_path / "learned.yaml"
    command = [
        sys.executable,
        "-m",
        "selfserve.cli.main",
        "tune",
        "--trace",
        str(log_path),
        "--cluster",
        f"2xh100/{MODEL}",
        "--budget",
        "2s",
        "--anchors",
        "round-robin,least-loaded",
        "--workers",
        "1",
        "--bootstrap-windows",
        "2",
        "--curve-points",
        "2",
        "--out",
        str(policy_path),
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    learned = yaml.safe_load(policy_path.read_text())
    assert learned["evidence"]["trace"]["requests"] == 24
    from selfserve.gateway.arms import build_policy

    assert build_policy(
        {k: v for k, v in learned.items() if k != "evidence"}
    ).choose  # the gateway accepts it


def _stats(ttft_s: float, tpot_s: float, n: int = 10, errors: int = 0) -> LiveStats:
    stats = LiveStats()
    stats.ttft_s.extend([ttft_s] * n)
    stats.tpot_s.extend([tpot_s] * n)
    stats.num_ok, stats.num_errors = n, errors
    return stats


def test_canary_tolerates_a_slower_figure_within_the_good_enough_level():
    slower = _stats(ttft_s=0.30, tpot_s=0.006)
    incumbent = _stats(ttft_s=0.30, tpot_s=0.004)
    strict = CanaryConfig(policy="random", tpot_margin=0.25)
    assert PolicyArms.compare(slower, incumbent, strict) == [
        "median TPOT 6.0 ms > incumbent 4.0 ms x 1.25"
    ]
    lenient = CanaryConfig(policy="random", tpot_margin=0.25, tpot_ok_s=0.025)
    assert PolicyArms.compare(slower, incumbent, lenient) == []
    failing = _stats(ttft_s=0.30, tpot_s=0.004, errors=3)
    assert "error rate" in PolicyArms.compare(failing, incumbent, lenient)[0]


def _request(i: int, arrival_s: float) -> Request:
    return Request(request_id=str(i), arrival_s=arrival_s, prompt_tokens=10, output_tokens=5)


def test_window_restarts_the_clock_and_model_time_stretches_arrivals():
    workload = Workload([_request(i, 100.0 + 2 * i) for i in range(10)])
    second = window(workload, 4, 3)
    assert [r.request_id for r in second] == ["4", "5", "6"] and [r.arrival_s for r in second] == [
        0.0,
        2.0,
        4.0,
    ]
    recorded = Workload([_request(i, 1_700_000_000.0 + 0.5 * i) for i in (2, 0, 1)])
    model = to_model_time(recorded, time_scale=4.0)
    assert [(r.request_id, r.arrival_s) for r in model] == [("0", 0.0), ("1", 2.0), ("2", 4.0)]


def test_comparison_rows_say_which_way_is_better():
    def summary(rps, ttft_p99, attainment):
        return {
            "request_throughput_rps": rps,
            "output_throughput_tps": rps * 100,
            "ttft_s": {"p50": 1.0, "p99": ttft_p99},
            "tpot_s": {"mean": 0.02},
            "slo_attainment": attainment,
            "prefix_cache_hit_rate": None,
            "failed": 0,
            "incomplete": 0,
            "send_lag_s": {"p99": 0.001},
        }

    rows = {r[0]: r for r in comparison_rows(summary(1.0, 4.0, 0.5), summary(1.5, 2.0, 0.75))}
    assert rows["throughput (req/s)"][3] == "1.50x better"
    assert rows["TTFT p99 (s)"][3] == "0.50x better"
    assert rows["SLO attainment"][1:] == ("50.0%", "75.0%", "1.50x better")
    assert rows["prefix cache hit rate"][3] == "–"
