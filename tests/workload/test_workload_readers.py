"""Trace readers: formats detected from content, exact errors, chained hashes, embedded slices."""

from __future__ import annotations

import gzip
from pathlib import Path

import orjson
import pytest

from selfserve.workload.embedded import embedded_names, embedded_path, load_embedded
from selfserve.workload.errors import EmptyTraceError, TraceFormatError, UnknownFormatError
from selfserve.workload.hashing import chain
from selfserve.workload.io import detect_format, load_workload

SHARED = Path(__file__).resolve().parents[2] / ".." / "shared" / "traces"
needs_shared = pytest.mark.skipif(not SHARED.is_dir(), reason="needs ../shared/traces")


def mooncake_line(t_ms: int, prompt: int, output: int, ids: list[int]) -> bytes:
    return orjson.dumps(
        {"timestamp": t_ms, "input_length": prompt, "output_length": output, "hash_ids": ids}
    )


def write_lines(path: Path, lines: list[bytes]) -> Path:
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


@pytest.mark.parametrize("name", embedded_names())
def test_every_embedded_slice_loads_and_is_detected_from_content(name):
    workload = load_embedded(name)
    assert len(workload) > 100
    assert workload.name == f"embedded:{name}"
    assert (
        detect_format(embedded_path(name))
        == {
            "mooncake-conversation-10min": "mooncake",
            "azure-conv-10min": "azure",
            "ragpulse-day1": "ragpulse",
            "kv-cache-tester-sessions": "kv-cache-tester",
            "servegen-mm-image-6clients": "servegen",
        }[name]
    )
    arrivals = [r.arrival_s for r in workload]
    assert arrivals == sorted(arrivals)


def test_mooncake_hashes_are_chained_so_a_shared_id_after_a_different_prefix_differs(tmp_path):
    trace = write_lines(
        tmp_path / "t.jsonl",
        [mooncake_line(0, 1500, 10, [0, 1, 2]), mooncake_line(3000, 1100, 5, [0, 7, 2])],
    )
    first, second = load_workload(trace).requests
    assert first.block_size == 512
    assert first.block_hashes == chain([0, 1, 2])
    assert first.block_hashes[0] == second.block_hashes[0]
    assert first.block_hashes[2] != second.block_hashes[2]  # same raw id 2, other prefix
    assert second.arrival_s == 3.0


def test_malformed_line_names_file_line_field_and_what_was_expected(tmp_path):
    trace = write_lines(
        tmp_path / "bad.jsonl",
        [
            mooncake_line(0, 100, 1, [0]),
            b'{"timestamp": 5, "input_length": -3, "output_length": 1, "hash_ids": []}',
        ],
    )
    with pytest.raises(TraceFormatError) as caught:
        load_workload(trace, "mooncake")
    error = caught.value
    assert (error.line, error.field) == (2, "input_length")
    assert "bad.jsonl:2" in str(error) and "integer >= 0" in str(error)


def test_skip_bad_counts_skipped_lines_and_keeps_the_good_ones(tmp_path):
    trace = write_lines(
        tmp_path / "t.jsonl",
        [
            mooncake_line(0, 100, 1, [0]),
            b"not json",
            mooncake_line(10, 600, 2, [0, 1]),
            b'{"timestamp": 1}',
        ],
    )
    workload = load_workload(trace, "mooncake", skip_bad=True)
    assert len(workload) == 2
    assert workload.skipped_records == 2
    assert any("skipped 2 malformed" in w for w in workload.warnings)


def test_empty_trace_is_an_error_that_says_so(tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_bytes(b"\n\n")
    with pytest.raises(EmptyTraceError, match="empty"):
        load_workload(empty, "mooncake")
    with pytest.raises(UnknownFormatError, match="empty"):
        load_workload(empty)


def test_out_of_order_arrivals_are_sorted_with_a_warning(tmp_path):
    trace = write_lines(
        tmp_path / "t.jsonl",
        [mooncake_line(5000, 10, 1, [0]), mooncake_line(1000, 10, 1, [0])],
    )
    workload = load_workload(trace)
    assert [r.arrival_s for r in workload] == [1.0, 5.0]
    assert "out of order" in workload.warnings[0]


def test_gzip_trace_is_read_like_the_plain_one(tmp_path):
    lines = [mooncake_line(0, 1024, 3, [0, 1]), mooncake_line(1, 512, 3, [0])]
    plain = write_lines(tmp_path / "p.jsonl", lines)
    zipped = tmp_path / "z.jsonl.gz"
    zipped.write_bytes(gzip.compress(plain.read_bytes()))
    assert [r.block_hashes for r in load_workload(zipped)] == [
        r.block_hashes for r in load_workload(plain)
    ]


def test_format_override_wins_over_detection(tmp_path):
    trace = write_lines(tmp_path / "t.jsonl", [mooncake_line(0, 1024, 3, [0, 1])])
    with pytest.raises(TraceFormatError, match="request_id"):
        load_workload(trace, "selfserve-log")


def test_azure_bad_timestamp_names_row_and_column(tmp_path):
    csv = tmp_path / "a.csv"
    csv.write_text(
        "TIMESTAMP,ContextTokens,GeneratedTokens\n"
        "2023-11-16 18:15:46.6805900,374,44\n"
        "yesterday,10,1\n"
    )
    with pytest.raises(TraceFormatError) as caught:
        load_workload(csv)
    assert (caught.value.line, caught.value.field) == (3, "TIMESTAMP")


def test_kv_cache_tester_sessions_do_not_share_hashes_and_start_from_the_seed():
    a = load_embedded("kv-cache-tester-sessions", seed=1)
    b = load_embedded("kv-cache-tester-sessions", seed=1)
    c = load_embedded("kv-cache-tester-sessions", seed=2)
    assert [r.arrival_s for r in a] == [r.arrival_s for r in b]
    assert [r.arrival_s for r in a] != [r.arrival_s for r in c]
    sessions: dict[str, set[int]] = {}
    for r in a:
        root = r.session_id.split("/")[0]
        sessions.setdefault(root, set()).update(r.block_hashes)
    roots = list(sessions)
    for i, x in enumerate(roots):
        for y in roots[i + 1 :]:
            assert not sessions[x] & sessions[y]  # local ids never collide across sessions
    assert any("/" in r.session_id for r in a)  # the sub-agent has its own session id
    # inside a session the prompt grows, so the next turn re-uses the previous prefix
    turns = [r for r in a if r.session_id == "trace_0002"]
    assert turns[1].block_hashes[: len(turns[0].block_hashes)] == turns[0].block_hashes


def test_ragpulse_requests_sharing_a_system_prompt_share_leading_blocks():
    workload = load_embedded("ragpulse-day1")
    assert sum(1 for r in workload if r.session_id) == len(workload)
    leading = {r.block_hashes[0] for r in workload if r.block_hashes}
    assert len(leading) < len(workload) / 10  # the system prompt dominates the first block
    for r in workload:
        assert len(r.block_hashes) <= r.prompt_tokens // r.block_size


def test_servegen_sampling_is_seeded_and_carries_image_parts():
    a = load_embedded("servegen-mm-image-6clients")
    b = load_embedded("servegen-mm-image-6clients")
    assert [r.prompt_tokens for r in a] == [r.prompt_tokens for r in b]
    with_images = [r for r in a if r.media]
    assert len(with_images) > 0.9 * len(a)
    assert all(
        p.kind == "image" and p.pixels == p.tokens * 784 for r in with_images for p in r.media
    )
    assert 0 <= a.requests[0].arrival_s and a.span_s <= 600


@needs_shared
def test_full_traces_match_their_published_counts():
    assert len(load_workload(SHARED / "mooncake-fast25/conversation_trace.jsonl")) == 12031
    assert len(load_workload(SHARED / "azure-llm-2023/AzureLLMInferenceTrace_conv.csv")) == 19366
    ragpulse = load_workload(SHARED / "ragpulse")
    assert len(ragpulse) == 7106 and len({r.session_id for r in ragpulse}) == 3990
    assert len(load_workload(SHARED / "kv-cache-tester/traces")) == 3330


def test_mooncake_spread_ties_spreads_quantised_timestamps_evenly(tmp_path):
    trace = write_lines(
        tmp_path / "t.jsonl",
        [mooncake_line(0, 10, 1, [0]) for _ in range(3)] + [mooncake_line(3000, 10, 1, [0])],
    )
    assert [r.arrival_s for r in load_workload(trace)] == [0.0, 0.0, 0.0, 3.0]
    spread = load_workload(trace, spread_ties=True)
    assert [r.arrival_s for r in spread] == pytest.approx([0.0, 1.0, 2.0, 3.0])
