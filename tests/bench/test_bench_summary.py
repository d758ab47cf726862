"""Bench summaries: SLO parsing, percentiles, goodput and model-time scaling."""

from __future__ import annotations

from array import array

import pytest

from selfserve.bench.result import BenchResult, RequestOutcome, SloFormatError, parse_slo


def test_slo_parses_seconds_and_milliseconds():
    assert parse_slo("ttft=2s, tpot=100ms") == {"ttft": 2.0, "tpot": 0.1}
    assert parse_slo("e2e=1.5") == {"e2e": 1.5}


@pytest.mark.parametrize("bad", ["ttft", "latency=2s", "ttft=fast", "tpot=-1ms"])
def test_bad_slo_names_the_item(bad):
    with pytest.raises(SloFormatError, match="SLO item"):
        parse_slo(bad)


def _outcome(i: int, ttft_s: float, gap_s: float, tokens: int) -> RequestOutcome:
    o = RequestOutcome(f"r{i}", scheduled_s=i, prompt_tokens=100, expected_output_tokens=tokens)
    o.start_s = float(i)
    o.ttft_s = ttft_s
    o.itl_s = array("d", [gap_s] * (tokens - 1))
    o.e2e_s = ttft_s + gap_s * (tokens - 1)
    o.output_tokens = tokens
    return o


def test_summary_percentiles_goodput_and_time_scale():
    outcomes = [_outcome(i, 0.1 * (i + 1), 0.01, 11) for i in range(10)]
    failed = RequestOutcome("bad", 0.0, 100, 11, status=500, error="boom")
    result = BenchResult("http://x", "m", [*outcomes, failed], duration_s=10.0, time_scale=2.0)
    summary = result.summary("ttft=1s,tpot=25ms")
    assert summary["completed"] == 10 and summary["failed"] == 1
    assert summary["errors"] == {"500: boom": 1}
    # model time = wall x 2: TTFTs 0.2 .. 2.0 s, TPOT 20 ms, duration 20 s
    assert summary["ttft_s"]["median"] == pytest.approx(1.1)
    assert summary["tpot_s"]["mean"] == pytest.approx(0.02)
    assert summary["duration_s"] == pytest.approx(20.0)
    assert summary["output_throughput_tps"] == pytest.approx(110 / 20.0)
    # TTFT <= 1 s model time: wall TTFT <= 0.5 s -> requests 0..4
    assert summary["slo_attainment"] == pytest.approx(5 / 11)
    assert summary["goodput_rps"] == pytest.approx(5 / 20.0)


def test_incomplete_requests_are_not_failures():
    cut = RequestOutcome("late", 0.0, 10, 5, error="incomplete: stopped before it finished")
    result = BenchResult("http://x", "m", [_outcome(0, 0.1, 0.01, 5), cut], duration_s=1.0)
    summary = result.summary()
    assert summary["failed"] == 0 and summary["incomplete"] == 1
