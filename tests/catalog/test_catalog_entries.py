"""Catalog figures a user relies on: datasheet values with sources, derived model sizes, names."""

from __future__ import annotations

import pytest

from selfserve.catalog import (
    UnknownNameError,
    get_accelerator,
    get_model,
    list_accelerators,
    list_models,
)


def test_every_accelerator_named_in_the_contract_is_listed():
    assert list_accelerators() == ["h100", "h200", "b200", "gb200", "gb300", "mi300x"]


@pytest.mark.parametrize("name", ["h100", "h200", "b200", "gb200", "gb300", "mi300x"])
def test_accelerator_figures_are_dense_sourced_and_priced(name):
    hw = get_accelerator(name)
    assert hw.fp8_flops == pytest.approx(2 * hw.bf16_flops, rel=0.01)  # dense FP8 = 2x BF16
    assert hw.sources and all(hw.sources.values())
    assert hw.on_demand or hw.tco
    price = hw.on_demand or hw.tco
    assert price.date and price.source and price.basis in ("on-demand", "tco")
    assert 0 < hw.idle_w < hw.tdp_w
    assert hw.price_basis.startswith(price.basis)


def test_h200_matches_the_datasheet_and_the_measured_idle_power():
    hw = get_accelerator("H200")
    assert hw.bf16_flops == 989e12 and hw.hbm_bytes == 141e9 and hw.hbm_bytes_per_s == 4.8e12
    assert hw.idle_w == 124.0
    assert hw.tco is not None and hw.tco.usd_per_gpu_hour == 1.41


def test_gb300_has_no_on_demand_price_so_its_price_is_the_tco_figure():
    hw = get_accelerator("gb300")
    assert hw.on_demand is None
    assert hw.price_per_gpu_hour == 2.65 and hw.price_basis.startswith("tco")
    assert hw.fp4_flops == 15000e12 and hw.scaleup_domain_gpus == 72


def test_unknown_names_list_the_valid_ones():
    with pytest.raises(UnknownNameError, match="valid: h100, h200"):
        get_accelerator("a100")
    with pytest.raises(UnknownNameError, match="llama-3.1-8b"):
        get_model("llama-4")


@pytest.mark.parametrize(
    ("name", "total_b", "active_b"),
    [
        ("llama-3.1-8b", 8.03, 8.03),
        ("llama-3.1-70b", 70.55, 70.55),
        ("llama-3.1-405b", 405.8, 405.8),
        ("qwen2.5-7b", 7.62, 7.62),
        ("qwen2.5-14b", 14.77, 14.77),
        ("qwen2.5-32b", 32.76, 32.76),
        ("qwen2.5-72b", 72.7, 72.7),
        ("qwen3-30b-a3b", 30.5, 3.35),
    ],
)
def test_parameter_counts_derived_from_configs_match_the_model_cards(name, total_b, active_b):
    model = get_model(name)
    assert model.total_params / 1e9 == pytest.approx(total_b, rel=0.01)
    assert model.active_params / 1e9 == pytest.approx(active_b, rel=0.02)


def test_kv_bytes_per_token_match_the_roofline_anchors():
    assert get_model("llama-3.1-8b").kv_bytes_per_token() == 128 * 1024
    assert get_model("llama-3.1-70b").kv_bytes_per_token() == 320 * 1024


def test_moe_model_reports_experts_and_active_parameters():
    moe = get_model("qwen3-30b-a3b")
    assert moe.is_moe and moe.num_experts == 128 and moe.experts_per_token == 8
    assert moe.active_params < moe.total_params / 8


def test_long_context_model_takes_a_million_tokens():
    assert get_model("qwen2.5-7b-instruct-1m").max_model_len >= 1_000_000
    assert get_model("llama-3.1-8b").max_model_len == 131072


def test_model_lookup_ignores_case_and_an_org_prefix():
    assert get_model("Qwen/Qwen2.5-7B").name == "qwen2.5-7b"
    assert len(list_models()) == len(set(list_models()))
