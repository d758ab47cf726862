"""`selfserve analyze`: published figures reproduced, LRU curve exact, CLI outputs."""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

import orjson
import pytest

from selfserve.cli.main import main
from selfserve.perf import PerfModel
from selfserve.workload.analysis import analyze_workload
from selfserve.workload.embedded import load_embedded
from selfserve.workload.io import load_workload
from selfserve.workload.prefix_reuse import prefix_reuse
from selfserve.workload.request import Request, Workload

SHARED = Path(__file__).resolve().parents[2] / ".." / "shared" / "traces"
MOONCAKE = SHARED / "mooncake-fast25" / "conversation_trace.jsonl"


def lru_block_hits(requests: list[Request], capacity: int) -> int:
    """A plain LRU prefix cache: look up the leading blocks, then touch tail first."""
    cache: OrderedDict[int, None] = OrderedDict()
    hits = 0
    for r in requests:
        for h in r.block_hashes:
            if h not in cache:
                break
            hits += 1
        for h in reversed(r.block_hashes):
            cache[h] = None
            cache.move_to_end(h)
            while len(cache) > capacity:
                cache.popitem(last=False)
    return hits


def test_embedded_mooncake_slice_figures():
    a = analyze_workload(load_embedded("mooncake-conversation-10min"))
    assert a.requests == 1750
    assert round(a.prompt_tokens.mean) == 13992
    assert round(a.output_tokens.mean) == 354
    assert round(100 * a.prefix.infinite_block_hit_rate, 1) == 28.4
    assert a.prefix.block_size == 512
    assert a.sessions is None and a.modality == ()


@pytest.mark.skipif(not MOONCAKE.exists(), reason="needs ../shared/traces (full Mooncake trace)")
def test_full_mooncake_trace_reproduces_the_published_figures():
    a = analyze_workload(load_workload(MOONCAKE))
    assert a.requests == 12031
    assert round(a.prompt_tokens.mean) == 12035
    assert round(a.output_tokens.mean) == 343
    assert round(100 * a.prefix.infinite_block_hit_rate, 1) == 36.6
    assert round(100 * a.prefix.infinite_token_hit_rate, 1) == 37.4
    assert (a.prefix.block_refs, a.prefix.distinct_blocks) == (288500, 182790)
    assert round(a.peak_minute_rate_per_s * 60) == 247


def test_lru_curve_matches_a_plain_lru_cache_at_every_reported_size():
    workload = load_embedded("kv-cache-tester-sessions")
    requests = workload.requests[:120]
    reuse = prefix_reuse(requests, num_points=8)
    for capacity, rate in zip(reuse.lru.capacity_blocks, reuse.lru.block_hit_rate, strict=True):
        assert rate == pytest.approx(lru_block_hits(requests, int(capacity)) / reuse.block_refs)
    assert reuse.lru.block_hit_rate[-1] == pytest.approx(reuse.infinite_block_hit_rate)


def test_shared_system_prompt_is_kept_by_a_one_block_cache():
    # Every request starts with the same block: even a 1-block LRU keeps it, because a
    # request's first block is touched last.
    requests = [
        Request(str(i), float(i), 64, 1, block_hashes=(7, 100 + i, 200 + i), block_size=16)
        for i in range(10)
    ]
    reuse = prefix_reuse(requests, num_points=4)
    assert reuse.hit_rate_at(1)[0] == pytest.approx(9 / 30)
    assert reuse.infinite_block_hit_rate == pytest.approx(9 / 30)


def test_multimodal_mix_and_sessions_are_reported():
    a = analyze_workload(load_embedded("servegen-mm-image-6clients"))
    (image,) = a.modality
    assert image.kind == "image" and image.requests_fraction > 0.9
    assert 0 < image.token_share < 1
    agentic = analyze_workload(load_embedded("kv-cache-tester-sessions"))
    assert agentic.sessions.sessions == 11  # 10 sessions + 1 sub-agent
    assert agentic.prefix.infinite_block_hit_rate > 0.8


def test_kv_gb_uses_the_models_bytes_per_token():
    w = Workload([Request("a", 0.0, 32, 1, (1, 2), 16)], block_size=16)
    a = analyze_workload(w, kv_bytes_per_token=1_000_000)
    assert a.kv_gb(1000) == pytest.approx(16.0)


def test_cli_analyze_prints_summary_and_writes_json_and_html(tmp_path, capsys):
    out_json, out_html = tmp_path / "a.json", tmp_path / "a.html"
    code = main(
        [
            "analyze",
            "embedded:mooncake-conversation-10min",
            "--json",
            str(out_json),
            "--html",
            str(out_html),
        ]
    )
    assert code == 0
    printed = capsys.readouterr().out
    assert "1,750" in printed and "28.4% of blocks" in printed
    data = orjson.loads(out_json.read_bytes())
    assert data["requests"] == 1750
    assert len(data["prefix"]["lru"]["capacity_gb"]) == len(
        data["prefix"]["lru"]["capacity_blocks"]
    )
    page = out_html.read_text()
    assert page.count("<svg") == 4 and "hit rate vs cache size" in page


def test_cli_bad_trace_reports_line_and_suggests_skip_bad(tmp_path, capsys):
    trace = tmp_path / "t.jsonl"
    trace.write_text(
        '{"timestamp": 0, "input_length": 10, "output_length": 1, "hash_ids": [0]}\n'
        '{"timestamp": 1, "input_length": "many", "output_length": 1, "hash_ids": [0]}\n'
    )
    assert main(["analyze", str(trace)]) == 2
    message = capsys.readouterr().out
    assert "t.jsonl:2" in message and "input_length" in message and "--skip-bad" in message
    assert main(["analyze", str(trace), "--skip-bad"]) == 0
    assert "skipped 1 malformed" in capsys.readouterr().out


def test_cli_missing_and_empty_traces_are_user_errors(tmp_path, capsys):
    assert main(["analyze", str(tmp_path / "nope.jsonl")]) == 2
    assert "no such file" in capsys.readouterr().out
    empty = tmp_path / "e.jsonl"
    empty.write_text("")
    assert main(["analyze", str(empty), "--format", "mooncake"]) == 2
    assert "empty" in capsys.readouterr().out


def test_cli_analyze_bounds_what_routing_can_save_on_a_cluster(tmp_path, capsys):
    out_json = tmp_path / "a.json"
    cluster = "2xh200/llama-3.1-8b"
    assert main(["analyze", "embedded:mooncake-conversation-10min", "--cluster", cluster, "--json", str(out_json)]) == 0  # fmt: skip
    printed = capsys.readouterr().out
    bound = orjson.loads(out_json.read_bytes())["extra"]["cache_headroom"]
    pooled = 2 * PerfModel.create("llama-3.1-8b", "h200").kv_capacity_tokens(0.9)
    assert bound["cluster"] == cluster and abs(bound["capacity_tokens"] - pooled) <= 2 * 16
    # a 2-replica pool of ~1.7M tokens holds a fraction of the 10-minute working set
    assert 0 < bound["lru_token_hit_rate"] < bound["optimal_token_hit_rate"]
    assert bound["optimal_token_hit_rate"] <= bound["infinite_token_hit_rate"]
    assert "prefix-cache headroom" in printed and "Belady's MIN" in printed
    assert (
        main(["analyze", "embedded:mooncake-conversation-10min", "--cluster", "2xh200/nope"]) == 2
    )
