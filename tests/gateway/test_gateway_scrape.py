"""Engine metrics pages (vLLM and SGLang names) become the EngineMetrics the Router reads."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from selfserve.gateway.engine_scrape import MetricsParseError, parse_engine_metrics

VLLM = """# HELP vllm:num_requests_running Number of requests in model execution batches.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{engine="0",model_name="llama"} 3.0
vllm:num_requests_running{engine="1",model_name="llama"} 2.0
vllm:num_requests_waiting{engine="0",model_name="llama"} 4.0
vllm:kv_cache_usage_perc{engine="0",model_name="llama"} 0.5
vllm:kv_cache_usage_perc{engine="1",model_name="llama"} 0.75
vllm:prompt_tokens_total{model_name="llama"} 12345.0
"""

SGLANG = """sglang:num_running_reqs{model_name="q",tp_rank="0"} 7
sglang:num_queue_reqs{model_name="q",tp_rank="0"} 1
sglang:token_usage{model_name="q",tp_rank="0"} 0.3
"""


def test_vllm_counts_are_summed_over_engines_and_usage_is_the_max():
    m = parse_engine_metrics(VLLM, scraped_at_s=5.0)
    assert (m.num_requests_running, m.num_requests_waiting, m.kv_cache_usage, m.scraped_at_s) == (
        5,
        4,
        0.75,
        5.0,
    )


def test_sglang_names_are_understood():
    m = parse_engine_metrics(SGLANG, scraped_at_s=0.0)
    assert (m.num_requests_running, m.num_requests_waiting, m.kv_cache_usage) == (7, 1, 0.3)


def test_a_page_without_engine_metrics_is_an_error():
    with pytest.raises(MetricsParseError, match="vllm:num_requests_running"):
        parse_engine_metrics("process_cpu_seconds_total 1.0\n", 0.0)


@given(st.lists(st.tuples(st.integers(0, 500), st.integers(0, 500)), min_size=1, max_size=8))
def test_running_and_waiting_are_totals_over_label_sets(rows):
    page = "".join(
        f'vllm:num_requests_running{{engine="{i}"}} {r}\nvllm:num_requests_waiting{{engine="{i}"}} {w}\n'
        for i, (r, w) in enumerate(rows)
    )
    m = parse_engine_metrics(page, 0.0)
    assert m.num_requests_running == sum(r for r, _ in rows)
    assert m.num_requests_waiting == sum(w for _, w in rows)
