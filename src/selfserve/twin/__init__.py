"""The engine twin: an HTTP server that behaves like one vLLM replica on the wire, with
token timing from the engine and performance models in real (or scaled) time.

`start_twin(TwinConfig(...), host=, port=) -> RunningTwin` (in a running event loop),
`spawn_twins(count, model, hardware, time_scale=...)` (child processes, for tests and
benchmarks), or the `selfserve twin` command.
"""

from selfserve.twin.launch import TwinProcess, TwinStartError, spawn_twins
from selfserve.twin.server import RunningTwin, TwinApp, TwinConfig, start_twin

__all__ = [
    "RunningTwin",
    "TwinApp",
    "TwinConfig",
    "TwinProcess",
    "TwinStartError",
    "spawn_twins",
    "start_twin",
]
