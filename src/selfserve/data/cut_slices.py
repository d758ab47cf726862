"""Re-cut the trace slices vendored in `traces/` from the public traces in ../shared/traces.

Run from the repository root: `.venv/bin/python src/selfserve/data/cut_slices.py [SHARED]`.
Every slice keeps the upstream records byte-for-byte (whole lines, rows or files) and is
gzip-compressed; README.md beside this script says what each slice is and its license.
"""

from __future__ import annotations

import gzip
import shutil
import sys
from pathlib import Path

import orjson

HERE = Path(__file__).resolve().parent
OUT = HERE / "traces"
KV_SESSIONS = (
    "trace_0002",
    "trace_0007",
    "trace_0012",
    "trace_0014",  # has a sub-agent
    "trace_0016",
    "trace_0019",
    "trace_0021",
    "trace_0022",
    "trace_0026",
    "trace_0043",
)
SERVEGEN_CLIENTS = (0, 1, 5, 7, 11, 26)
RAGPULSE_TABLES = (
    ("1_sys_prompt.jsonl", "sys_prompt_id", "sys_prompt"),
    ("2_passages.jsonl", "passage_id", "passages_ids"),
    ("3_history.jsonl", "history_id", "history"),
    ("4_user_input.jsonl", "user_input_id", "user_input"),
    ("5_web_search.jsonl", "web_search_id", "web_search"),
)


def write_gz(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    # mtime=0 keeps the archive bytes reproducible.
    with open(path, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as handle:
        handle.write(data)


def cut_mooncake(shared: Path) -> None:
    lines = (shared / "mooncake-fast25/conversation_trace.jsonl").read_bytes().splitlines(True)
    kept = [line for line in lines if line.strip() and orjson.loads(line)["timestamp"] < 600_000]
    write_gz(OUT / "mooncake-conversation-10min.jsonl.gz", b"".join(kept))


def cut_azure(shared: Path) -> None:
    lines = (
        (shared / "azure-llm-2023/AzureLLMInferenceTrace_conv.csv").read_bytes().splitlines(True)
    )
    header, rows = lines[0], lines[1:]

    def clock_s(row: bytes) -> float:  # rows are "YYYY-MM-DD HH:MM:SS.fffffff,..." on one day
        hh, mm, ss = row.split(b",", 1)[0].split(b" ")[1].split(b":")
        return int(hh) * 3600 + int(mm) * 60 + float(ss)

    start = clock_s(rows[0])
    kept = [r for r in rows if r.strip() and clock_s(r) - start < 600.0]
    write_gz(OUT / "azure-conv-10min.csv.gz", header + b"".join(kept))


def cut_ragpulse(shared: Path) -> None:
    folder = shared / "ragpulse"
    lines = (folder / "0_trace.jsonl").read_bytes().splitlines(True)
    kept = [
        line for line in lines if line.strip() and int(orjson.loads(line)["timestamp"]) < 86_400
    ]
    used: set[int] = set()
    for line in kept:
        for ids in orjson.loads(line)["hash_ids"].values():
            used.update(ids)
    target = OUT / "ragpulse-day1"
    target.mkdir(parents=True, exist_ok=True)
    (target / "0_trace.jsonl").write_bytes(b"".join(kept))
    for file_name, id_key, _ in RAGPULSE_TABLES:
        rows = (folder / file_name).read_bytes().splitlines(True)
        (target / file_name).write_bytes(
            b"".join(r for r in rows if r.strip() and orjson.loads(r)[id_key] in used)
        )


def cut_kv_sessions(shared: Path) -> None:
    target = OUT / "kv-cache-tester-sessions"
    target.mkdir(parents=True, exist_ok=True)
    for session in KV_SESSIONS:
        data = (shared / "kv-cache-tester/traces" / f"{session}.json").read_bytes()
        write_gz(target / f"{session}.json.gz", data)


def cut_servegen(shared: Path) -> None:
    target = OUT / "servegen-mm-image-6clients"
    target.mkdir(parents=True, exist_ok=True)
    for client in SERVEGEN_CLIENTS:
        for suffix in ("trace.csv", "dataset.json"):
            name = f"chunk-{client}-{suffix}"
            shutil.copyfile(shared / "servegen-mm-image" / name, target / name)


def main() -> int:
    shared = (
        Path(sys.argv[1]) if len(sys.argv) > 1 else HERE.parents[2] / ".." / "shared" / "traces"
    )
    if not shared.is_dir():
        print(f"no public traces at {shared}", file=sys.stderr)
        return 2
    for cut in (cut_mooncake, cut_azure, cut_ragpulse, cut_kv_sessions, cut_servegen):
        cut(shared)
    return 0


if __name__ == "__main__":
    sys.exit(main())
