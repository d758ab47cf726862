"""The engine model of one replica: a vLLM-v1-style scheduler over a paged KV block ledger
with a prefix cache, timed by the perf model (contract C)."""

from selfserve.native_build import check_build

# Before any compiled submodule loads: a stale one (sources edited since the build) would
# shadow its .py; this raises with the fix instead (see selfserve.native_build).
check_build()

from selfserve.engine.blocks import BlockLedger, hash_units, rehash_blocks  # noqa: E402
from selfserve.engine.config import EngineConfig, EngineConfigError, RequestTooLarge  # noqa: E402
from selfserve.engine.outputs import EngineStats, StepOutput  # noqa: E402
from selfserve.engine.replica import EngineReplica  # noqa: E402
from selfserve.engine.request import EngineRequest  # noqa: E402

__all__ = [
    "BlockLedger",
    "EngineConfig",
    "EngineConfigError",
    "EngineReplica",
    "EngineRequest",
    "EngineStats",
    "RequestTooLarge",
    "StepOutput",
    "hash_units",
    "rehash_blocks",
]
