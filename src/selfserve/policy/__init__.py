"""Routing policies: the snapshot, the Router, the filter/scorer/picker framework, the
anchor baselines and policy files. Entry points: `make_policy(spec)`, `list_anchors()`,
`selfserve.policy.router.Router`."""

from selfserve.policy.framework import PolicyConfigError
from selfserve.policy.loader import list_anchors, make_policy

__all__ = ["PolicyConfigError", "list_anchors", "make_policy"]
