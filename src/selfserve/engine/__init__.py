"""The engine model of one replica: a vLLM-v1-style scheduler over a paged KV block ledger
with a prefix cache, timed by the perf model (contract C)."""

from selfserve.engine.blocks import BlockLedger, hash_units, rehash_blocks
from selfserve.engine.config import EngineConfig, EngineConfigError, RequestTooLarge
from selfserve.engine.outputs import EngineStats, StepOutput
from selfserve.engine.replica import EngineReplica
from selfserve.engine.request import EngineRequest

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
