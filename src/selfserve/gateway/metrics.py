"""The gateway's Prometheus metrics, in a registry owned by one gateway instance.

Names start with `selfserve_gateway_`. TTFT and ITL histograms carry `backend` and `arm`
(the policy arm: incumbent or canary candidate) labels so a canary can be judged on a
dashboard as well as by the gateway itself.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

_LATENCY_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
_ITL_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28)


class GatewayMetrics:
    def __init__(self, backend_names: list[str]) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "selfserve_gateway_requests",
            "Requests finished, by endpoint, backend, policy arm and status",
            ["endpoint", "backend", "arm", "status"],
            registry=r,
        )
        self.errors = Counter(
            "selfserve_gateway_errors",
            "Errors by kind (client, upstream, timeout, midstream, disconnect, internal)",
            ["kind"],
            registry=r,
        )
        self.ttft = Histogram(
            "selfserve_gateway_ttft_seconds",
            "Time to first token",
            ["backend", "arm"],
            buckets=_LATENCY_BUCKETS_S,
            registry=r,
        )
        self.itl = Histogram(
            "selfserve_gateway_itl_seconds",
            "Gap between streamed chunks",
            ["backend", "arm"],
            buckets=_ITL_BUCKETS_S,
            registry=r,
        )
        self.e2e = Histogram(
            "selfserve_gateway_e2e_seconds",
            "Arrival to last byte",
            ["backend", "arm"],
            buckets=_LATENCY_BUCKETS_S,
            registry=r,
        )
        self.decisions = Counter(
            "selfserve_gateway_routing_decisions",
            "Routing decisions by policy arm and chosen backend",
            ["arm", "backend"],
            registry=r,
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
        self._ttft_children: dict[tuple[str, str], tuple] = {}
        self._request_children: dict[tuple[str, str, str, str], object] = {}
        self._decision_children: dict[tuple[str, str], object] = {}

    def count_request(self, endpoint: str, backend: str, arm: str, status: str) -> None:
        key = (endpoint, backend, arm, status)
        child = self._request_children.get(key)
        if child is None:
            child = self._request_children[key] = self.requests.labels(*key)
        child.inc()

    def count_decision(self, arm: str, backend: str) -> None:
        key = (arm, backend)
        child = self._decision_children.get(key)
        if child is None:
            child = self._decision_children[key] = self.decisions.labels(*key)
        child.inc()

    def latency_children(self, backend: str, arm: str) -> tuple:
        """(ttft, itl, e2e) histogram children, cached because `.labels()` is not free."""
        key = (backend, arm)
        children = self._ttft_children.get(key)
        if children is None:
            children = (
                self.ttft.labels(backend, arm),
                self.itl.labels(backend, arm),
                self.e2e.labels(backend, arm),
            )
            self._ttft_children[key] = children
        return children

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
