"""Which card × TP options fit a model and a workload, and the error when none does."""

from __future__ import annotations

import pytest

from selfserve.plan.options import (
    DeploymentOption,
    NoFitError,
    check_fit,
    enumerate_options,
    require_some_fit,
)
from selfserve.plan.prices import PriceError, parse_price_overrides, price_for
from selfserve.plan.window import busiest_window
from selfserve.workload.request import Request, Workload


def test_llama_70b_does_not_fit_one_h100_but_fits_four():
    one = check_fit(DeploymentOption("h100", "llama-3.1-70b", 1), 10_000)
    four = check_fit(DeploymentOption("h100", "llama-3.1-70b", 4), 10_000)
    assert not one.fits and "70b" in one.reason
    assert one.memory_needed_gb > one.memory_available_gb
    assert four.fits and four.kv_capacity_tokens > 10_000


def test_a_request_longer_than_the_kv_room_makes_the_option_unfit():
    # qwen2.5-7b-instruct-1m at 1M tokens: the KV of one request (~57 GB) exceeds one H100.
    check = check_fit(DeploymentOption("h100", "qwen2.5-7b-instruct-1m", 1), 1_000_000)
    assert not check.fits
    assert "largest request" in check.reason
    big = check_fit(DeploymentOption("gb300", "qwen2.5-7b-instruct-1m", 1), 1_000_000)
    assert big.fits


def test_no_fit_error_names_model_cards_tps_and_memory():
    checks = [
        check_fit(option, 1000)
        for option in enumerate_options("llama-3.1-405b", ["h100", "mi300x"], [1, 2])
    ]
    with pytest.raises(NoFitError) as excinfo:
        require_some_fit("llama-3.1-405b", checks)
    message = str(excinfo.value)
    for part in ("llama-3.1-405b", "h100", "mi300x", "TP 1, 2", "needs", "has", "GB"):
        assert part in message


def test_tp_beyond_the_scale_up_domain_is_refused_with_the_reason():
    check = check_fit(DeploymentOption("h100", "llama-3.1-8b", 16), 1000)
    assert not check.fits and "scale-up domain" in check.reason


def test_prices_keep_their_basis_and_say_when_missing():
    price, reason = price_for("h100", "on-demand")
    assert price is not None and price.basis == "on-demand" and price.date
    missing, why = price_for("gb300", "on-demand")
    assert missing is None and "--price gb300=" in why
    tco, _ = price_for("gb300", "tco")
    assert tco is not None and tco.basis == "tco"
    user, _ = price_for("gb300", "on-demand", parse_price_overrides("gb300=6.5"))
    assert user.usd_per_gpu_hour == 6.5 and user.basis == "user"


@pytest.mark.parametrize("text", ["gb300", "gb300=abc", "=3", "h100=-1"])
def test_bad_price_override_names_the_item(text):
    with pytest.raises(PriceError, match="CARD=USD"):
        parse_price_overrides(text)


def test_busiest_window_picks_the_densest_run_of_arrivals():
    arrivals = [0, 10, 20, 30, 31, 32, 33, 50, 60]
    workload = Workload(
        [Request(f"r{i}", float(t), 100, 10) for i, t in enumerate(arrivals)], name="w"
    )
    window, choice = busiest_window(workload, 4)
    assert [r.request_id for r in window] == ["r3", "r4", "r5", "r6"]
    assert choice.span_s == 3.0 and not choice.is_whole
    whole, whole_choice = busiest_window(workload, 100)
    assert whole is workload and whole_choice.is_whole
