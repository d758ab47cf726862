"""The gateway's Prometheus metrics, in a registry owned by one gateway instance.

Names start with `selfserve_gateway_`. TTFT and ITL histograms carry `backend` and `arm`
(the policy arm: incumbent or canary candidate) labels so a canary can be judged on a
dashboard as well as by the gateway itself.

The metrics touched on every request or token (requests, routing decisions, TTFT/ITL/E2E)
are plain tables rendered at scrape time (`CounterTable`, `HistogramTable`): the gateway
updates them from its one event-loop thread, so they need none of prometheus_client's
per-update locks and label lookups; the exposition is the same. The rare ones (errors,
retries, health, policy events) are ordinary prometheus_client metrics.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterator, Sequence

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily
from prometheus_client.utils import floatToGoString

_LATENCY_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
_ITL_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28)


class CounterTable:
    """A labelled counter whose children are plain floats (single-threaded updates)."""

    def __init__(self, name: str, documentation: str, labelnames: Sequence[str], registry) -> None:
        self.name = name
        self.documentation = documentation
        self.labelnames = list(labelnames)
        self.values: dict[tuple[str, ...], float] = {}
        registry.register(self)

    def inc(self, key: tuple[str, ...], amount: float = 1.0) -> None:
        self.values[key] = self.values.get(key, 0.0) + amount

    def collect(self) -> list[CounterMetricFamily]:
        family = CounterMetricFamily(self.name, self.documentation, labels=self.labelnames)
        for key, value in self.values.items():
            family.add_metric(list(key), value)
        return [family]


class HistogramChild:
    """One label set of a `HistogramTable`: per-bucket counts and the sum."""

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # the last one is +Inf
        self.sum = 0.0

    def observe(self, value: float) -> None:
        # Prometheus buckets are "less or equal": the first bound >= value
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value


class HistogramTable:
    """A labelled histogram with `HistogramChild` children (single-threaded updates)."""

    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: Sequence[str],
        buckets: tuple[float, ...],
        registry,
    ) -> None:
        self.name = name
        self.documentation = documentation
        self.labelnames = list(labelnames)
        self.bounds = tuple(float(b) for b in buckets)
        self.children: dict[tuple[str, ...], HistogramChild] = {}
        registry.register(self)

    def labels(self, *key: str) -> HistogramChild:
        child = self.children.get(key)
        if child is None:
            child = self.children[key] = HistogramChild(self.bounds)
        return child

    def collect(self) -> list[HistogramMetricFamily]:
        family = HistogramMetricFamily(self.name, self.documentation, labels=self.labelnames)
        for key, child in self.children.items():
            family.add_metric(list(key), list(_cumulative(child)), child.sum)
        return [family]


def _cumulative(child: HistogramChild) -> Iterator[tuple[str, float]]:
    total = 0
    for bound, count in zip((*child.bounds, float("inf")), child.counts, strict=True):
        total += count
        yield floatToGoString(bound), float(total)


class GatewayMetrics:
    def __init__(self, backend_names: list[str]) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = CounterTable(
            "selfserve_gateway_requests",
            "Requests finished, by endpoint, backend, policy arm and status",
            ["endpoint", "backend", "arm", "status"],
            r,
        )
        self.errors = Counter(
            "selfserve_gateway_errors",
            "Errors by kind (client, upstream, timeout, midstream, disconnect, internal)",
            ["kind"],
            registry=r,
        )
        self.ttft = HistogramTable(
            "selfserve_gateway_ttft_seconds",
            "Time to first token",
            ["backend", "arm"],
            _LATENCY_BUCKETS_S,
            r,
        )
        self.itl = HistogramTable(
            "selfserve_gateway_itl_seconds",
            "Gap between streamed chunks",
            ["backend", "arm"],
            _ITL_BUCKETS_S,
            r,
        )
        self.e2e = HistogramTable(
            "selfserve_gateway_e2e_seconds",
            "Arrival to last byte",
            ["backend", "arm"],
            _LATENCY_BUCKETS_S,
            r,
        )
        self.decisions = CounterTable(
            "selfserve_gateway_routing_decisions",
            "Routing decisions by policy arm and chosen backend",
            ["arm", "backend"],
            r,
        )
        self.retries = Counter(
            "selfserve_gateway_retries",
            "Requests retried on another backend after a failure before the first byte",
            ["backend"],
            registry=r,
        )
        self.backend_healthy = Gauge(
            "selfserve_gateway_backend_healthy",
            "1 when the backend is admitted, 0 when ejected",
            ["backend"],
            registry=r,
        )
        self.in_flight = Gauge(
            "selfserve_gateway_in_flight_requests", "Requests accepted and not finished", registry=r
        )
        self.policy_events = Counter(
            "selfserve_gateway_policy_events",
            "Policy swaps, canary starts, promotions and rollbacks",
            ["event"],
            registry=r,
        )
        for name in backend_names:
            self.backend_healthy.labels(name).set(1)
        self._latency_children: dict[tuple[str, str], tuple] = {}

    def count_request(self, endpoint: str, backend: str, arm: str, status: str) -> None:
        self.requests.inc((endpoint, backend, arm, status))

    def count_decision(self, arm: str, backend: str) -> None:
        self.decisions.inc((arm, backend))

    def latency_children(self, backend: str, arm: str) -> tuple:
        """(ttft, itl, e2e) histogram children for one backend and arm."""
        key = (backend, arm)
        children = self._latency_children.get(key)
        if children is None:
            children = self._latency_children[key] = (
                self.ttft.labels(backend, arm),
                self.itl.labels(backend, arm),
                self.e2e.labels(backend, arm),
            )
        return children

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
