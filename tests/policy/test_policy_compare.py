"""`selfserve compare` end to end on a tiny trace, plus its argument parsing."""

from __future__ import annotations

import json

import orjson
import pytest

from selfserve.cli.common import UserError
from selfserve.cli.compare import parse_rate_scales, split_policies
from selfserve.cli.main import main


@pytest.fixture()
def tiny_trace(tmp_path):
    """60 requests over 30 s sharing a 4-block system prefix, Mooncake format."""
    lines = []
    for k in range(60):
        hashes = [0, 1, 2, 3] + [100 + 10 * k + j for j in range(k % 3)]
        lines.append(
            json.dumps(
                {
                    "timestamp": 500 * k,
                    "input_length": 512 * len(hashes),
                    "output_length": 20,
                    "hash_ids": hashes,
                }
            )
        )
    path = tmp_path / "tiny.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_compare_writes_one_row_per_policy_with_the_reported_metrics(tiny_trace, tmp_path):
    out = tmp_path / "cmp.json"
    html = tmp_path / "cmp.html"
    code = main(
        [
            "compare", "--trace", str(tiny_trace), "--cluster", "2xh100/llama-3.1-8b",
            "--policies", "round-robin,prodstack-prefixaware,sglang-cache-aware:cache_threshold=0.5",
            "--rate-scales", "1,4", "--workers", "1", "--capacity-hi", "4",
            "--json", str(out), "--html", str(html),
        ]
    )  # fmt: skip
    assert code == 0
    payload = orjson.loads(out.read_bytes())
    rows = {r["policy"]: r for r in payload["rows"]}
    assert set(rows) == {
        "round-robin",
        "prodstack-prefixaware",
        "sglang-cache-aware:cache_threshold=0.5",
    }
    for row in rows.values():
        assert row["errors"] == []
        assert [p["rate_scale"] for p in row["sweep"]] == [1.0, 4.0]
        assert 0 <= row["attainment"] <= 1 and row["ttft_p99_s"] >= row["ttft_p50_s"] > 0
        assert row["capacity"] is not None and row["capacity_curve"]
    # round-robin alternates; prefixaware pins the shared prefix to one replica
    assert rows["round-robin"]["imbalance"] < rows["prodstack-prefixaware"]["imbalance"]
    assert "SLO attainment against the rate multiplier" in html.read_text()


@pytest.mark.parametrize(
    "text, expected",
    [
        ("round-robin,llm-d", ["round-robin", "llm-d"]),
        ("power-of-two:load=tokens,llm-d", ["power-of-two:load=tokens", "llm-d"]),
        (
            "dynamo-kv:temperature=0.5,ttl_s=10,random",
            ["dynamo-kv:temperature=0.5,ttl_s=10", "random"],
        ),
    ],
)
def test_policy_list_keeps_overrides_with_their_policy(text, expected):
    assert split_policies(text) == expected


def test_all_means_every_anchor():
    assert "llm-d" in split_policies("all") and len(split_policies("all")) >= 16


def test_rate_scales_always_include_one_and_reject_nonsense():
    assert parse_rate_scales("2,0.5") == [0.5, 1.0, 2.0]
    with pytest.raises(UserError, match="--rate-scales"):
        parse_rate_scales("fast")
    with pytest.raises(UserError, match="finite number > 0"):
        parse_rate_scales("0,1")


def test_unknown_policy_is_a_user_error(tiny_trace, capsys):
    code = main(
        [
            "compare",
            "--trace",
            str(tiny_trace),
            "--cluster",
            "2xh100/llama-3.1-8b",
            "--policies",
            "nope",
        ]
    )
    assert code == 2
    assert "unknown policy 'nope'" in capsys.readouterr().out


def test_compress_makes_x1_the_trace_played_faster(tiny_trace):
    from selfserve.cli.compare import Job, run_job

    def job(rate_scale, compress):
        return Job("least-loaded", str(tiny_trace), None, "1xh100/llama-3.1-8b", "ttft=2s,tpot=100ms",
                   0, "fast", rate_scale, 4.0, 0.9, None, compress)  # fmt: skip

    fast = run_job(job(1.0, 8.0))["summary"]
    same = run_job(job(8.0, 1.0))["summary"]
    plain = run_job(job(1.0, 1.0))["summary"]
    assert fast["duration_s"] == same["duration_s"] < plain["duration_s"]
    assert fast["ttft_p99_s"] == same["ttft_p99_s"]
