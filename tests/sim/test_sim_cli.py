"""`selfserve simulate` and `selfserve capacity` end to end on a small Mooncake-format trace."""

from __future__ import annotations

import json

import orjson
import pytest

from selfserve.cli.main import main


@pytest.fixture()
def trace(tmp_path):
    path = tmp_path / "mini.jsonl"
    lines = []
    for i in range(120):
        n_blocks = 2 + i % 5
        lines.append(
            json.dumps(
                {
                    "timestamp": i * 100,
                    "input_length": 512 * n_blocks - 7,
                    "output_length": 20 + i % 50,
                    "hash_ids": [
                        0,
                        *range(1000 + 10 * (i % 7), 1000 + 10 * (i % 7) + n_blocks - 1),
                    ],
                }
            )
        )
    path.write_text("\n".join(lines) + "\n")
    return path


def test_simulate_prints_a_summary_and_writes_json(trace, tmp_path, capsys):
    out = tmp_path / "sim.json"
    code = main(
        ["simulate", "--trace", str(trace), "--cluster", "2xh100/llama-3.1-8b",
         "--policy", "least-loaded", "--slo", "ttft=1s,tpot=50ms", "--json", str(out), "--records"]
    )  # fmt: skip
    assert code == 0
    printed = capsys.readouterr().out
    assert "SLO attainment" in printed and "per replica" in printed
    payload = orjson.loads(out.read_bytes())
    assert payload["summary"]["completed"] == 120
    assert payload["summary"]["slo"]["ttft_s"] == 1.0
    assert len(payload["records"]) == 120
    assert payload["summary"]["prefix_hit_rate"] > 0  # hash id 0 is shared by every request


def test_capacity_reports_the_multiplier_and_curve(trace, tmp_path, capsys):
    out = tmp_path / "cap.json"
    code = main(
        ["capacity", "--trace", str(trace), "--cluster", "1xh100/llama-3.1-8b",
         "--slo", "ttft=0.3s,tpot=30ms", "--tol", "0.1", "--json", str(out)]
    )  # fmt: skip
    assert code == 0
    assert "capacity: ×" in capsys.readouterr().out
    payload = orjson.loads(out.read_bytes())
    curve = dict((m, a) for m, a in payload["attainment_curve"])
    assert curve[payload["multiplier"]] >= 0.9


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--cluster", "2xh100"], "--cluster"),
        (["--slo", "ttft=fast"], "--slo"),
        (["--policy", "no-such-policy"], "--policy"),
        (["--rate-scale", "0"], "--rate-scale"),
    ],
)
def test_bad_options_are_user_errors(trace, capsys, args, message):
    base = {"--cluster": "1xh100/llama-3.1-8b", "--policy": "round-robin"}
    argv = ["simulate", "--trace", str(trace)]
    given = dict(zip(args[::2], args[1::2], strict=True))
    for key, value in {**base, **given}.items():
        argv += [key, value]
    assert main(argv) == 2
    assert message in capsys.readouterr().out


def test_missing_trace_is_a_user_error(tmp_path, capsys):
    code = main(
        ["simulate", "--trace", str(tmp_path / "nope.jsonl"), "--cluster", "1xh100/llama-3.1-8b"]
    )
    assert code == 2
    assert "nope.jsonl" in capsys.readouterr().out
