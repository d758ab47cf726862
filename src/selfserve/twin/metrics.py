"""The twin's `/metrics`: vLLM v1's Prometheus metric names, labels and buckets.

Names follow vllm/v1/metrics/loggers.py (`PrometheusStatLogger`): labels `model_name` and
`engine`; counters are exposed with `_total` appended by prometheus-client, as on vLLM.
Scheduler state (running/waiting, KV usage) and the engine's cumulative counters
(prefix-cache queries/hits, preemptions) are read from the engine model at scrape time;
per-request latencies are observed by the server as requests finish. One registry per
twin: no process-global collectors, so several twins can live in one test process.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

TTFT_BUCKETS_S = (
    0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5,
    10.0, 20.0, 40.0, 80.0, 160.0, 640.0, 2560.0,
)  # fmt: skip
ITL_BUCKETS_S = (
    0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
    20.0, 40.0, 80.0,
)  # fmt: skip
REQUEST_LATENCY_BUCKETS_S = (
    0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0, 120.0,
    240.0, 480.0, 960.0, 1920.0, 7680.0,
)  # fmt: skip
LAG_BUCKETS_S = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0)


@dataclass(frozen=True, slots=True)
class SchedulerGauges:
    """What the engine model reports at scrape time."""

    num_running: int
    num_waiting: int
    kv_usage: float
    prefix_queries_tokens: int
    prefix_hits_tokens: int
    num_preemptions: int


def _buckets_1_2_5(max_value: int) -> list[float]:
    """vLLM's build_1_2_5_buckets: 1, 2, 5, 10, 20, 50, ... up to max_value."""
    out: list[float] = []
    exponent = 0
    while True:
        for mantissa in (1, 2, 5):
            value = mantissa * 10**exponent
            if value > max_value:
                return out
            out.append(float(value))
        exponent += 1


class TokenHistogram:
    """A histogram for per-token observations: a bisect and two adds, no lock.

    prometheus-client's Histogram takes a lock and walks every bucket per observation;
    at thousands of tokens per second that is a visible share of the twin's one core.
    The twin observes from its single event-loop thread, so no lock is needed.
    """

    __slots__ = ("name", "documentation", "bounds", "counts", "total")

    def __init__(self, name: str, documentation: str, bounds: Sequence[float]) -> None:
        self.name = name
        self.documentation = documentation
        self.bounds = tuple(bounds)
        self.counts = [0] * (len(self.bounds) + 1)
        self.total = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.total += value

    def family(self, labels: list[str]) -> HistogramMetricFamily:
        family = HistogramMetricFamily(
            self.name, self.documentation, labels=["model_name", "engine"]
        )
        cumulative, buckets = 0, []
        for bound, count in zip(self.bounds, self.counts, strict=False):
            cumulative += count
            buckets.append((repr(float(bound)), cumulative))
        cumulative += self.counts[-1]
        buckets.append(("+Inf", cumulative))
        family.add_metric(labels, buckets, self.total)
        return family


class _TokenHistogramCollector(Collector):
    def __init__(self, labels: list[str], histograms: Sequence[TokenHistogram]) -> None:
        self._labels = labels
        self._histograms = histograms

    def collect(self) -> Iterator:
        for histogram in self._histograms:
            yield histogram.family(self._labels)


class _EngineCollector(Collector):
    def __init__(self, labels: list[str], read: Callable[[], SchedulerGauges]) -> None:
        self._labels = labels
        self._read = read

    def collect(self) -> Iterator:
        stats = self._read()
        names = ["model_name", "engine"]
        gauges = (
            (
                "vllm:num_requests_running",
                "Number of requests in model execution batches.",
                stats.num_running,
            ),
            (
                "vllm:num_requests_waiting",
                "Number of requests waiting to be processed.",
                stats.num_waiting,
            ),
            (
                "vllm:kv_cache_usage_perc",
                "KV-cache usage. 1 means 100 percent usage.",
                stats.kv_usage,
            ),
        )
        for name, doc, value in gauges:
            family = GaugeMetricFamily(name, doc, labels=names)
            family.add_metric(self._labels, float(value))
            yield family
        counters = (
            (
                "vllm:prefix_cache_queries",
                "Prefix cache queries, in terms of number of queried tokens.",
                stats.prefix_queries_tokens,
            ),
            (
                "vllm:prefix_cache_hits",
                "Prefix cache hits, in terms of number of cached tokens.",
                stats.prefix_hits_tokens,
            ),
            (
                "vllm:num_preemptions",
                "Cumulative number of preemption from the engine.",
                stats.num_preemptions,
            ),
        )
        for name, doc, value in counters:
            family = CounterMetricFamily(name, doc, labels=names)
            family.add_metric(self._labels, float(value))
            yield family


class TwinMetrics:
    """Prometheus registry of one twin."""

    def __init__(
        self, model_name: str, max_model_len: int, read_engine: Callable[[], SchedulerGauges]
    ):
        self.registry = CollectorRegistry(auto_describe=True)
        labels = ["model_name", "engine"]
        values = [model_name, "0"]
        self.registry.register(_EngineCollector(values, read_engine))

        def counter(name: str, doc: str) -> Counter:
            return Counter(name, doc, labels, registry=self.registry).labels(*values)

        def histogram(name: str, doc: str, buckets) -> Histogram:
            return Histogram(name, doc, labels, buckets=buckets, registry=self.registry).labels(
                *values
            )

        self.prompt_tokens = counter("vllm:prompt_tokens", "Number of prefill tokens processed.")
        self.generation_tokens = counter(
            "vllm:generation_tokens", "Number of generation tokens processed."
        )
        success = Counter(
            "vllm:request_success",
            "Count of successfully processed requests.",
            labels + ["finished_reason"],
            registry=self.registry,
        )
        self.success = {
            reason: success.labels(*values, reason) for reason in ("stop", "length", "abort")
        }
        token_buckets = _buckets_1_2_5(max_model_len)
        self.request_prompt_tokens = histogram(
            "vllm:request_prompt_tokens", "Number of prefill tokens processed.", token_buckets
        )
        self.request_generation_tokens = histogram(
            "vllm:request_generation_tokens",
            "Number of generation tokens processed.",
            token_buckets,
        )
        self.ttft = histogram(
            "vllm:time_to_first_token_seconds",
            "Histogram of time to first token in seconds.",
            TTFT_BUCKETS_S,
        )
        self.itl = TokenHistogram(
            "vllm:inter_token_latency_seconds",
            "Histogram of inter-token latency in seconds.",
            ITL_BUCKETS_S,
        )
        # The pre-0.11 name, still scraped by many dashboards and routers.
        self.tpot_legacy = TokenHistogram(
            "vllm:time_per_output_token_seconds",
            "Histogram of time per output token in seconds.",
            ITL_BUCKETS_S,
        )
        self.registry.register(_TokenHistogramCollector(values, (self.itl, self.tpot_legacy)))
        self.request_tpot = histogram(
            "vllm:request_time_per_output_token_seconds",
            "Histogram of time_per_output_token_seconds per request.",
            ITL_BUCKETS_S,
        )
        self.e2e = histogram(
            "vllm:e2e_request_latency_seconds",
            "Histogram of e2e request latency in seconds.",
            REQUEST_LATENCY_BUCKETS_S,
        )
        self.schedule_lag = Histogram(
            "selfserve_twin_schedule_lag_seconds",
            "How late the twin delivered an engine step's tokens against its real-time schedule.",
            buckets=LAG_BUCKETS_S,
            registry=self.registry,
        )

    def observe_finished(
        self,
        *,
        reason: str,
        prompt_tokens: int,
        output_tokens: int,
        ttft_s: float,
        e2e_s: float,
    ) -> None:
        self.success[reason].inc()
        self.prompt_tokens.inc(prompt_tokens)
        self.request_prompt_tokens.observe(prompt_tokens)
        self.request_generation_tokens.observe(output_tokens)
        self.ttft.observe(ttft_s)
        self.e2e.observe(e2e_s)
        if output_tokens > 1:
            self.request_tpot.observe((e2e_s - ttft_s) / (output_tokens - 1))

    def render(self) -> bytes:
        return generate_latest(self.registry)
