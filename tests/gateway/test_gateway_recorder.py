"""The request log as the gateway writes it: rotated files are gzipped off the event loop
and reading the log back returns every record, in order."""

from __future__ import annotations

from selfserve.gateway.config import LogConfig
from selfserve.gateway.recorder import Outcome, RequestRecorder
from selfserve.workload.io import load_workload


def _outcome(i: int) -> Outcome:
    return Outcome(
        request_id=f"gw-{i}",
        arrival_unix_s=1000.0 + i,
        arrival_mono_s=float(i),
        endpoint="chat",
        model="m",
        prompt_tokens=40,
        block_hashes=(i, i + 1),
        backend="e0",
        arm="rr@1",
        first_token_mono_s=i + 0.01,
        last_token_mono_s=i + 0.05,
        usage_output_tokens=5,
    )


def test_rotated_logs_are_gzipped_and_every_record_reads_back(tmp_path):
    path = tmp_path / "requests.jsonl"
    recorder = RequestRecorder(LogConfig(path=str(path), rotate_bytes=2048))
    for i in range(200):
        recorder.write(_outcome(i))
    recorder.close()  # waits for the compressions still running
    rotated = sorted(p.name for p in tmp_path.iterdir() if p.name != "requests.jsonl")
    assert len(rotated) >= 5 and all(name.endswith(".jsonl.gz") for name in rotated), rotated
    assert rotated[0] == "requests.00001.jsonl.gz"
    back = load_workload(path)
    assert [r.request_id for r in back] == [f"gw-{i}" for i in range(200)]
    assert back[0].output_tokens == 5 and back[0].prompt_tokens == 40


def test_rotated_logs_stay_plain_when_gzip_is_off(tmp_path):
    path = tmp_path / "requests.jsonl"
    recorder = RequestRecorder(LogConfig(path=str(path), rotate_bytes=2048, gzip_rotated=False))
    for i in range(50):
        recorder.write(_outcome(i))
    recorder.close()
    rotated = [p.name for p in tmp_path.iterdir() if p.name != "requests.jsonl"]
    assert rotated and all(name.endswith(".jsonl") for name in rotated)
    assert len(load_workload(path)) == 50
