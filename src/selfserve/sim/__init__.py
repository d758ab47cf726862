"""The cluster digital twin: replicas from a `ClusterSpec`, the shared `Router`, an event
loop with an explicit clock and seeded RNG, per-request records and aggregates (contract C).
"""

from selfserve.sim.capacity import CapacityResult, capacity
from selfserve.sim.cluster import ClusterSpec, ClusterSpecError, ReplicaGroup
from selfserve.sim.environment import Environment
from selfserve.sim.result import ReplicaStats, RequestRecord, SimResult
from selfserve.sim.simulator import SimulationError, simulate
from selfserve.sim.slo import SLO, SLOError

__all__ = [
    "SLO",
    "CapacityResult",
    "ClusterSpec",
    "ClusterSpecError",
    "Environment",
    "ReplicaGroup",
    "ReplicaStats",
    "RequestRecord",
    "SLOError",
    "SimResult",
    "SimulationError",
    "capacity",
    "simulate",
]
