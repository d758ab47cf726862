"""`selfserve profile` on the CPU at a tiny shape: writes a profile `calibrate` can read."""

from __future__ import annotations

import pytest

from selfserve.catalog import get_model
from selfserve.cli.main import main
from selfserve.perf.profile_io import read_profile

torch = pytest.importorskip("torch", reason="the gpu extra (torch) is not installed")


def test_profile_tiny_on_cpu_writes_a_readable_profile(tmp_path, capsys):
    out = tmp_path / "tiny.jsonl"
    assert (
        main(
            [
                "profile",
                "--model",
                "llama-3.1-8b",
                "--device",
                "cpu",
                "--shapes",
                "tiny",
                "--reps",
                "3",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    records = read_profile(out)
    assert [r.kind for r in records].count("prefill") == 3 and [r.kind for r in records].count(
        "decode"
    ) == 4
    assert all(r.ms_median > 0 and r.ms_min <= r.ms_median for r in records)
    assert {r.model for r in records} == {"llama-3.1-8b:tiny"}
    assert any(r.prefix == 64 for r in records) and any(
        r.batch == 4 and r.context == 128 for r in records
    )
    assert "wrote 7 records" in capsys.readouterr().out


def test_prefix_mask_matches_causal_attention_when_there_is_no_prefix():
    from selfserve.perf.profiler import _Layers, tiny_shapes

    spec = tiny_shapes(get_model("qwen2.5-7b"))
    layers = _Layers(spec, "cpu", torch.float32)
    x = torch.randn(1, 12, spec.hidden_size)
    causal = layers.prefill(x, [None] * spec.num_layers, None)
    masked = layers.prefill(
        x, [None] * spec.num_layers, torch.ones(12, 12, dtype=torch.bool).tril(diagonal=0)
    )
    assert torch.allclose(causal, masked, atol=1e-5)


def test_profile_rejects_moe_and_missing_cuda(capsys):
    assert main(["profile", "--model", "qwen3-30b-a3b", "--device", "cpu", "--shapes", "tiny"]) == 2
    assert "mixture-of-experts" in capsys.readouterr().out
    if not torch.cuda.is_available():
        assert main(["profile", "--model", "llama-3.1-8b"]) == 2
        assert "--device cpu" in capsys.readouterr().out
