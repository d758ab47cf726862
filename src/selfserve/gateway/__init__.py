"""The live gateway: OpenAI-compatible proxy that routes with selfserve policies, records
its traffic, canaries new policies and rolls them back (`selfserve serve`).

Public API: `Gateway(config)` with `await start() -> port` / `await stop()`,
`load_gateway_config(path)`, `parse_gateway_config(doc, source=..., base_dir=...)`.
"""

from selfserve.gateway.app import Gateway
from selfserve.gateway.config import (
    GatewayConfig,
    GatewayConfigError,
    load_gateway_config,
    parse_gateway_config,
)

__all__ = [
    "Gateway",
    "GatewayConfig",
    "GatewayConfigError",
    "load_gateway_config",
    "parse_gateway_config",
]
