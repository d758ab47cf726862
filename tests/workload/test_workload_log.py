"""The selfserve request log: lossless round trip, rotation, gzip, bad lines."""

from __future__ import annotations

import gzip
from types import MappingProxyType

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from selfserve.workload.errors import TraceFormatError
from selfserve.workload.io import detect_format, load_workload
from selfserve.workload.log import (
    RequestLogRecord,
    RequestLogWriter,
    iter_log_records,
    read_request_log,
    write_request_log,
)
from selfserve.workload.request import MediaPart, Request

hashes = st.integers(min_value=-(2**63), max_value=2**63 - 1)
media = st.builds(
    MediaPart,
    kind=st.sampled_from(["image", "audio", "video"]),
    tokens=st.integers(0, 100_000),
    content_hash=hashes,
    pixels=st.integers(0, 10**8),
    seconds=st.floats(0, 3600, allow_nan=False),
    frames=st.integers(0, 1000),
)
requests = st.builds(
    Request,
    request_id=st.text(min_size=1, max_size=20),
    arrival_s=st.floats(0, 1e7, allow_nan=False),
    prompt_tokens=st.integers(0, 2_000_000),
    output_tokens=st.integers(0, 100_000),
    block_hashes=st.lists(hashes, max_size=20).map(tuple),
    block_size=st.integers(1, 1024),
    session_id=st.one_of(st.none(), st.text(max_size=10)),
    turn=st.integers(0, 1000),
    think_time_s=st.floats(0, 1e4, allow_nan=False),
    media=st.lists(media, max_size=3).map(tuple),
    tags=st.dictionaries(st.text(max_size=8), st.text(max_size=8), max_size=3).map(
        MappingProxyType
    ),
)


def normalised(r: Request) -> Request:
    # A session-less request writes no turn; everything else must come back identical.
    return r if r.session_id is not None else Request(**{**_fields(r), "turn": 0})


def _fields(r: Request) -> dict:
    return {name: getattr(r, name) for name in Request.__dataclass_fields__}


@settings(max_examples=60, deadline=None)
@given(st.lists(requests, min_size=1, max_size=15))
def test_request_log_round_trip_is_lossless(tmp_path_factory, items):
    items = sorted(items, key=lambda r: r.arrival_s)
    path = tmp_path_factory.mktemp("log") / "requests.jsonl"
    write_request_log(path, items)
    back = read_request_log(path).requests
    assert back == [normalised(r) for r in items]


def test_outcomes_round_trip_and_unserved_requests_have_none(tmp_path):
    path = tmp_path / "r.jsonl"
    served = RequestLogRecord(
        Request("a", 1.0, 100, 10, (1, 2), 16),
        backend="http://127.0.0.1:9000",
        policy_arm="canary",
        ttft_s=0.25,
        e2e_s=1.5,
        itl_mean_s=0.02,
        tpot_s=0.021,
        cached_tokens=32,
        status="ok",
    )
    failed = RequestLogRecord(Request("b", 2.0, 5, 0), status="error", error="upstream 503")
    with RequestLogWriter(path) as writer:
        writer.write(served)
        writer.write(failed)
        writer.write(Request("c", 3.0, 7, 1))
    back = list(iter_log_records(path))
    assert back[0] == served and back[1] == failed
    assert back[2].status is None and back[2].ttft_s is None
    assert detect_format(path) == "selfserve-log"


def test_rotation_gzips_old_files_and_reading_the_log_returns_every_record(tmp_path):
    path = tmp_path / "gateway.jsonl"
    items = [Request(f"r{i}", float(i), 1000, 10, tuple(range(i, i + 8)), 16) for i in range(300)]
    with RequestLogWriter(path, rotate_bytes=4096) as writer:
        writer.write_many(items)
        assert writer.rotations >= 5
    rotated = sorted(p.name for p in tmp_path.iterdir() if p.name != "gateway.jsonl")
    assert rotated[0] == "gateway.00001.jsonl.gz" and all(n.endswith(".gz") for n in rotated)
    assert [r.request_id for r in load_workload(path)] == [r.request_id for r in items]
    assert len(load_workload(tmp_path)) == 300  # the folder reads the same set


def test_gzip_log_written_and_read(tmp_path):
    path = tmp_path / "r.jsonl.gz"
    write_request_log(path, [Request("a", 0.0, 10, 1)])
    assert path.read_bytes()[:2] == b"\x1f\x8b"
    assert load_workload(path)[0].request_id == "a"
    assert gzip.decompress(path.read_bytes()).count(b"\n") == 1


def test_bad_log_line_names_the_field(tmp_path):
    path = tmp_path / "r.jsonl"
    path.write_text(
        '{"request_id": "a", "arrival_s": 0, "prompt_tokens": 5, "output_tokens": 1}\n'
        '{"request_id": "b", "arrival_s": 1, "prompt_tokens": 5, "output_tokens": 1, '
        '"media": [{"kind": "smell", "tokens": 1, "content_hash": 3}]}\n'
    )
    with pytest.raises(TraceFormatError) as caught:
        load_workload(path)
    assert (caught.value.line, caught.value.field) == (2, "media[0].kind")


def test_half_written_last_line_of_a_live_log_is_ignored_with_a_warning(tmp_path):
    path = tmp_path / "r.jsonl"
    path.write_text(
        '{"request_id": "a", "arrival_s": 0, "prompt_tokens": 5, "output_tokens": 1}\n'
        '{"request_id": "b", "arrival_s": 1, "prompt_tok'
    )
    workload = load_workload(path)
    assert len(workload) == 1 and "incomplete last line" in workload.warnings[0]


def test_analyze_of_a_gateway_log_reports_outcomes_per_arm(tmp_path, capsys):
    from selfserve.cli.main import main

    path = tmp_path / "gw.jsonl"
    with RequestLogWriter(path) as writer:
        for i in range(20):
            arm = "canary" if i % 4 == 0 else "baseline"
            failed = i == 1
            writer.write(
                RequestLogRecord(
                    Request(f"r{i}", float(i), 1000, 50, tuple(range(i % 3, i % 3 + 60)), 16),
                    backend="http://127.0.0.1:1",
                    policy_arm=arm,
                    ttft_s=None if failed else 0.1 * (1 + i % 5),
                    e2e_s=None if failed else 2.0,
                    tpot_s=None if failed else 0.02,
                    cached_tokens=None if failed else 500,
                    status="error" if failed else "ok",
                    error="boom" if failed else None,
                )
            )
    out = tmp_path / "a.json"
    assert main(["analyze", str(path), "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "served (request log outcomes)" in printed and "canary" in printed
    import orjson

    arms = {o["arm"]: o for o in orjson.loads(out.read_bytes())["extra"]["outcomes"]}
    assert arms["canary"]["requests"] == 5 and arms["baseline"]["requests"] == 15
    assert arms["baseline"]["error_rate"] == pytest.approx(1 / 15)
    assert arms["canary"]["prefix_hit_rate"] == pytest.approx(0.5)
