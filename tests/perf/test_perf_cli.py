"""`selfserve calibrate`: fit writes a usable file, --evaluate reports the error summary."""

from __future__ import annotations

import json

from selfserve.cli.main import main
from selfserve.perf import load_calibration
from selfserve.perf.calibration import CALIBRATION_DIR

PROFILE = str(CALIBRATION_DIR / "h200-llama-3.1-8b.jsonl")


def test_calibrate_then_evaluate_round_trip(tmp_path, capsys):
    cal_path = tmp_path / "cal.json"
    assert (
        main(
            [
                "calibrate",
                PROFILE,
                "--model",
                "llama-3.1-8b",
                "--hardware",
                "h200",
                "--out",
                str(cal_path),
            ]
        )
        == 0
    )
    assert load_calibration(cal_path).hardware == "h200"
    out_json = tmp_path / "eval.json"
    code = main([
        "calibrate", "--evaluate", PROFILE, "--model", "llama-3.1-8b", "--hardware", "h200",
        "--calibration", str(cal_path), "--json", str(out_json),
    ])  # fmt: skip
    assert code == 0
    printed = capsys.readouterr().out
    assert "median" in printed and "p90" in printed and "decode b=256 ctx=1024" in printed
    doc = json.loads(out_json.read_text())
    assert len(doc["records"]) == 26
    assert doc["median_abs_error"] <= 0.05 and doc["p90_abs_error"] <= 0.15


def test_calibrate_errors_are_user_errors(tmp_path, capsys):
    assert (
        main(["calibrate", PROFILE, "--model", "nope", "--hardware", "h200", "--out", "x.json"])
        == 2
    )
    assert "valid:" in capsys.readouterr().out
    assert main(["calibrate", PROFILE, "--model", "llama-3.1-8b", "--hardware", "h200"]) == 2
    assert "--out" in capsys.readouterr().out
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"kind": "decode", "batch": 1, "context": 5}\n')
    assert (
        main(["calibrate", "--evaluate", str(bad), "--model", "llama-3.1-8b", "--hardware", "h200"])
        == 2
    )
    assert "ms_median" in capsys.readouterr().out
