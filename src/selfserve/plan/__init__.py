"""Fleet planning: the cheapest card × TP × replica count that meets an SLO on a workload.

`plan_fleet` (in `fleet_plan`) is the entry point; `economics` holds the $/M-token and
tokens-per-MWh formulas, `search` the replica and headroom searches, `sweep` the
InferenceMAX curve arithmetic, `options` the fit checks, `prices` the price bases.
"""

from selfserve.plan.economics import cost_per_million_tokens, joules_per_token, tokens_per_mwh
from selfserve.plan.options import DeploymentOption, NoFitError

__all__ = [
    "DeploymentOption",
    "NoFitError",
    "cost_per_million_tokens",
    "joules_per_token",
    "tokens_per_mwh",
]
