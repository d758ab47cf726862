"""The one place where policy parts are registered, by kebab-case type name.

`ANCHORS` maps a builtin policy name to its class (a dataclass whose fields are the
parameters a policy file may override); `FILTERS`, `SCORERS` and `PICKERS` map the type
names a `kind: profile` file may use. The maps are read-only.
"""

from __future__ import annotations

from types import MappingProxyType

from selfserve.policy import anchors_cache as cache
from selfserve.policy import anchors_dynamo as dynamo
from selfserve.policy import anchors_llmd as llmd
from selfserve.policy import anchors_simple as simple
from selfserve.policy import anchors_stack as stack
from selfserve.policy import filters, pickers, scorers


def _by_type(*classes: type) -> MappingProxyType:
    return MappingProxyType({c.type_name: c for c in classes})


def _by_name(*classes: type) -> MappingProxyType:
    return MappingProxyType({c.name: c for c in classes})


ANCHORS = _by_name(
    simple.RandomPolicy,
    simple.RoundRobinPolicy,
    simple.LeastLoadedPolicy,
    simple.LeastRequestPolicy,
    simple.PowerOfTwoPolicy,
    simple.LeastKVPolicy,
    simple.LiteLLMLeastBusyPolicy,
    llmd.LlmdPolicy,
    cache.SGLangCacheAwarePolicy,
    dynamo.DynamoKVPolicy,
    stack.ProductionStackPrefixAwarePolicy,
    stack.ProductionStackSessionPolicy,
    cache.AIBrixPrefixCachePolicy,
    cache.RayPrefixAffinityPolicy,
    stack.LiteLLMLatencyPolicy,
    stack.LMetricPolicy,
)

SCORERS = _by_type(
    scorers.QueueScorer,
    scorers.KVCacheUtilizationScorer,
    scorers.PrefixHitScorer,
    scorers.LoadAwareScorer,
    scorers.ActiveRequestScorer,
    scorers.InFlightScorer,
    scorers.QueuedPrefillTokensScorer,
    scorers.DecodeTokensScorer,
    scorers.RecentTTFTScorer,
    llmd.ApproxPrefixCacheScorer,
    llmd.SessionAffinityScorer,
)

FILTERS = _by_type(
    filters.FreshMetricsFilter,
    filters.PrefixAffinityFilter,
    filters.QueueLimitFilter,
)

PICKERS = _by_type(
    pickers.MaxScorePicker,
    pickers.FirstMaxPicker,
    pickers.SoftmaxPicker,
    pickers.RandomPicker,
)
