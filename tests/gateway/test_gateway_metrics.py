"""The gateway's lock-free metric tables expose exactly what prometheus_client would."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Histogram

from selfserve.gateway.metrics import GatewayMetrics, HistogramTable

BUCKETS_S = (0.001, 0.01, 0.1, 1.0, 10.0)


def _samples(registry: CollectorRegistry, name: str) -> dict:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in registry.collect()
        for s in family.samples
        if s.name.startswith(name) and not s.name.endswith("_created")
    }


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(min_value=0, max_value=100, allow_nan=False), max_size=40))
def test_histogram_table_matches_prometheus_client_bucket_for_bucket(values):
    ours, reference = CollectorRegistry(), CollectorRegistry()
    table = HistogramTable("h_seconds", "doc", ["backend"], BUCKETS_S, ours)
    histogram = Histogram("h_seconds", "doc", ["backend"], buckets=BUCKETS_S, registry=reference)
    for value in values:
        table.labels("b0").observe(value)
        histogram.labels("b0").observe(value)
    expected = _samples(reference, "h_seconds")
    got = _samples(ours, "h_seconds")
    assert got.keys() == expected.keys()
    for key, value in expected.items():
        assert abs(got[key] - value) <= 1e-9 * max(1.0, abs(value)), key


def test_request_counts_and_latencies_appear_in_the_exposition():
    metrics = GatewayMetrics(["e0"])
    metrics.count_request("chat", "e0", "rr@1", "ok")
    metrics.count_request("chat", "e0", "rr@1", "ok")
    metrics.count_decision("rr@1", "e0")
    ttft, itl, e2e = metrics.latency_children("e0", "rr@1")
    ttft.observe(0.02)
    itl.observe(0.004)
    e2e.observe(0.3)
    text = metrics.exposition().decode()
    assert (
        'selfserve_gateway_requests_total{arm="rr@1",backend="e0",endpoint="chat",status="ok"} 2.0'
        in text
    )
    assert 'selfserve_gateway_routing_decisions_total{arm="rr@1",backend="e0"} 1.0' in text
    assert 'selfserve_gateway_ttft_seconds_bucket{arm="rr@1",backend="e0",le="0.025"} 1.0' in text
    assert 'selfserve_gateway_itl_seconds_count{arm="rr@1",backend="e0"} 1.0' in text
    assert 'selfserve_gateway_e2e_seconds_sum{arm="rr@1",backend="e0"} 0.3' in text
    assert metrics.latency_children("e0", "rr@1")[0] is ttft
