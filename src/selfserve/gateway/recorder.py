"""The request log: one `RequestLogRecord` per accepted request, through A's writer.

A record is the request as traffic (arrival, prompt and output tokens from the engine's
`usage`, prefix block hashes, media hashes, session) plus its outcome (backend, policy arm,
TTFT/ITL/TPOT/E2E, status, error). Prompt and output text never reach this module.
A rotated file is compressed on a worker thread, not in the event loop: gzipping a full
100 MiB log inline would stall every request in flight for seconds.
"""

from __future__ import annotations

import gzip
import os
import shutil
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

from selfserve.gateway.config import LogConfig
from selfserve.workload.request import MediaPart, Request


@dataclass(slots=True)
class Outcome:
    """Mutable per-request accounting, filled in as the request proceeds."""

    request_id: str
    arrival_unix_s: float
    arrival_mono_s: float
    endpoint: str = ""
    model: str = ""
    prompt_tokens: int = 0  # the gateway's own count; replaced by the engine's usage
    block_hashes: tuple[int, ...] = ()
    block_size: int = 16
    media: tuple[MediaPart, ...] = ()
    session_id: str | None = None
    backend: str = ""
    backend_index: int = -1
    routed_id: str | None = None  # the attempt the Router counts in flight, if any
    arm: str = ""
    status: str = "ok"
    error: str = ""
    http_status: int = 200
    retries: int = 0
    first_token_mono_s: float | None = None
    last_token_mono_s: float | None = None
    end_mono_s: float = 0.0
    token_events: int = 0
    usage_prompt_tokens: int | None = None
    usage_output_tokens: int | None = None
    cached_tokens: int = 0
    gap_sum_s: float = 0.0
    num_gaps: int = 0

    @property
    def output_tokens(self) -> int:
        return (
            self.usage_output_tokens if self.usage_output_tokens is not None else self.token_events
        )

    @property
    def ttft_s(self) -> float | None:
        return (
            None
            if self.first_token_mono_s is None
            else self.first_token_mono_s - self.arrival_mono_s
        )

    @property
    def e2e_s(self) -> float:
        end = self.last_token_mono_s if self.last_token_mono_s is not None else self.end_mono_s
        return max(0.0, end - self.arrival_mono_s)

    @property
    def tpot_s(self) -> float | None:
        ttft = self.ttft_s
        if ttft is None or self.output_tokens < 2:
            return None
        return max(0.0, (self.e2e_s - ttft) / (self.output_tokens - 1))

    @property
    def itl_mean_s(self) -> float | None:
        return self.gap_sum_s / self.num_gaps if self.num_gaps else None

    def to_request(self) -> Request:
        prompt = (
            self.usage_prompt_tokens if self.usage_prompt_tokens is not None else self.prompt_tokens
        )
        tags = {"model": self.model, "endpoint": self.endpoint}
        return Request(
            request_id=self.request_id,
            arrival_s=self.arrival_unix_s,
            prompt_tokens=prompt,
            output_tokens=self.output_tokens,
            block_hashes=self.block_hashes,
            block_size=self.block_size,
            session_id=self.session_id,
            media=self.media,
            tags=MappingProxyType(tags),
        )


class RequestRecorder:
    """Owns the `RequestLogWriter` (or nothing, when no log path is configured)."""

    def __init__(self, config: LogConfig) -> None:
        self._writer = None
        self.num_written = 0
        self._gzip_rotated = config.gzip_rotated
        self._rotations_seen = 0
        self._compressor: ThreadPoolExecutor | None = None
        self._compressions: list[Future] = []
        if config.path:
            from selfserve.workload.log import RequestLogRecord, RequestLogWriter

            self._record = RequestLogRecord
            # the writer only renames a full file; this recorder compresses it off-loop
            self._writer = RequestLogWriter(
                config.path, rotate_bytes=config.rotate_bytes, gzip_rotated=False
            )

    @property
    def enabled(self) -> bool:
        return self._writer is not None

    def write(self, outcome: Outcome) -> None:
        if self._writer is None:
            return
        record = self._record(
            request=outcome.to_request(),
            backend=outcome.backend,
            policy_arm=outcome.arm,
            ttft_s=outcome.ttft_s,
            e2e_s=outcome.e2e_s,
            itl_mean_s=outcome.itl_mean_s,
            tpot_s=outcome.tpot_s,
            cached_tokens=outcome.cached_tokens,
            status=outcome.status,
            error=outcome.error or None,
        )
        self._writer.write(record)
        self.num_written += 1
        if self._writer.rotations != self._rotations_seen:
            self._rotations_seen = self._writer.rotations
            if self._gzip_rotated:
                self._compress_newest_rotation()

    def _compress_newest_rotation(self) -> None:
        from selfserve.workload.log import rotated_files

        newest = rotated_files(self._writer.path)[-1][1]
        if newest.name.endswith(".jsonl"):
            if self._compressor is None:
                self._compressor = ThreadPoolExecutor(1, thread_name_prefix="log-gzip")
            self._compressions = [f for f in self._compressions if not f.done()]
            self._compressions.append(self._compressor.submit(gzip_file, newest))

    def flush(self) -> None:
        if self._writer is not None:
            self._writer.flush()

    def close(self) -> None:
        """Flush and close the log; waits for rotated files still being compressed."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        if self._compressor is not None:
            self._compressor.shutdown(wait=True)
            self._compressor = None
            for future in self._compressions:
                future.result()  # a failed compression is an error, not a silent loss
            self._compressions = []


def gzip_file(path: Path) -> Path:
    """`X.jsonl` → `X.jsonl.gz`, through a temporary name readers do not list."""
    partial = Path(f"{path}.gz.partial")
    with open(path, "rb") as src, gzip.open(partial, "wb", compresslevel=6) as dst:
        shutil.copyfileobj(src, dst, 1 << 20)
    target = Path(f"{path}.gz")
    os.replace(partial, target)
    path.unlink()
    return target
