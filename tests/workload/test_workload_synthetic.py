"""Synthetic generators: seeded, arrival-ordered, with the prefix and media structure asked for."""

from __future__ import annotations

import numpy as np
import pytest

from selfserve.cli.main import main
from selfserve.workload.analysis import analyze_workload
from selfserve.workload.arrivals import ArrivalProcess, parse_arrival
from selfserve.workload.embedded import load_embedded
from selfserve.workload.io import load_workload
from selfserve.workload.lengths import LengthDist, fit_lengths
from selfserve.workload.synthetic import (
    SessionShape,
    SystemPrompts,
    chat,
    sessions,
    to_workload,
    with_long_context,
)
from selfserve.workload.synthetic_media import MediaMix, with_media


def test_gamma_arrivals_have_the_requested_rate_and_burstiness():
    rng = np.random.default_rng(0)
    for process in (ArrivalProcess(4.0), ArrivalProcess(4.0, "gamma", cv=3.0)):
        gaps = process.gaps_s(rng, 200_000)
        assert 1 / gaps.mean() == pytest.approx(4.0, rel=0.03)
        assert gaps.std() / gaps.mean() == pytest.approx(process.cv, rel=0.05)
    assert parse_arrival("gamma:cv=2.5", 1.0).cv == 2.5
    with pytest.raises(ValueError, match="poisson"):
        parse_arrival("uniform", 1.0)


def test_chat_is_seeded_ordered_and_shares_the_system_prompt():
    make = lambda seed: to_workload(  # noqa: E731
        chat(rate_per_s=10, count=500, system=SystemPrompts(1024, 1), seed=seed, block_size=64)
    )
    a, b, c = make(1), make(1), make(2)
    assert [r.prompt_tokens for r in a] == [r.prompt_tokens for r in b]
    assert [r.prompt_tokens for r in a] != [r.prompt_tokens for r in c]
    assert [r.arrival_s for r in a] == sorted(r.arrival_s for r in a)
    assert len({r.block_hashes[:16] for r in a}) == 1  # 1024 shared tokens = 16 blocks
    analysis = analyze_workload(a)
    assert analysis.mean_rate_per_s == pytest.approx(10, rel=0.15)


def test_session_turns_extend_the_previous_prompt():
    w = to_workload(sessions(session_rate_per_s=1.0, num_sessions=50, seed=3))
    assert [r.arrival_s for r in w] == sorted(r.arrival_s for r in w)
    by_session: dict[str, list] = {}
    for r in w:
        by_session.setdefault(r.session_id, []).append(r)
    multi = [turns for turns in by_session.values() if len(turns) > 1]
    assert multi
    for turns in multi:
        for before, after in zip(turns, turns[1:], strict=False):
            assert after.turn == before.turn + 1
            assert after.prompt_tokens > before.prompt_tokens + before.output_tokens
            assert after.block_hashes[: len(before.block_hashes)] == before.block_hashes
            assert after.arrival_s >= before.arrival_s + after.think_time_s


def test_agentic_loops_have_long_growing_contexts_short_outputs_and_high_reuse():
    w = to_workload(
        sessions(session_rate_per_s=0.1, num_sessions=12, shape=SessionShape.agentic(), seed=0)
    )
    a = analyze_workload(w)
    assert a.prompt_tokens.p50 > 15_000
    assert a.output_tokens.mean < 600
    assert a.prefix.infinite_block_hit_rate > 0.8


def test_long_context_fraction_and_range():
    w = to_workload(with_long_context(chat(rate_per_s=5, count=4000, seed=1), 0.05, seed=1))
    long = [r for r in w if r.tags.get("class") == "long-context"]
    assert abs(len(long) / len(w) - 0.05) < 0.015
    assert all(131_072 <= r.prompt_tokens <= 1_048_576 + 200 for r in long)
    # a pool of documents: some long requests share their document's prefix
    assert len({r.block_hashes[0] for r in long}) < len(long)


def test_omnimodal_media_use_the_models_rules_and_repeat_by_content_hash():
    stream = with_media(
        chat(rate_per_s=5, count=1500),
        MediaMix(image_fraction=0.5, audio_fraction=0.2, video_fraction=0.1, repeat_prob=0.4),
        model="qwen2.5-omni-7b",
    )
    w = to_workload(stream)
    from selfserve.catalog import get_model

    spec = get_model("qwen2.5-omni-7b")
    parts = [m for r in w for m in r.media]
    kinds = {m.kind for m in parts}
    assert kinds == {"image", "audio", "video"}
    for m in parts[:50]:
        assert m.tokens == spec.media_tokens(m.kind, m.pixels, m.seconds, m.frames)
    hashes = [m.content_hash for m in parts]
    assert len(set(hashes)) < len(hashes)  # repeats share hashes
    assert {m.tokens for m in parts if m.content_hash == hashes[0]} == {parts[0].tokens}


def test_fitted_lengths_follow_the_trace():
    prompt, output = fit_lengths(load_embedded())
    rng = np.random.default_rng(0)
    assert np.median(prompt.sample(rng, 50_000)) == pytest.approx(8038, rel=0.2)
    empirical, _ = fit_lengths(load_embedded(), "empirical")
    assert empirical.sample(rng, 10).max() <= 123_192
    with pytest.raises(ValueError, match="mean > 0"):
        LengthDist.lognormal(0)


def test_cli_generate_streams_a_log_that_analyze_reads(tmp_path, capsys):
    out = tmp_path / "syn.jsonl.gz"
    code = main(
        [
            "generate",
            "sessions",
            "--requests",
            "800",
            "--rate",
            "2",
            "--images",
            "0.3",
            "--seed",
            "5",
            "--out",
            str(out),
            "--json",
            str(tmp_path / "s.json"),
        ]
    )
    assert code == 0
    assert "wrote 800 sessions requests" in capsys.readouterr().out
    w = load_workload(out)
    assert len(w) == 800 and any(r.media for r in w) and any(r.turn > 0 for r in w)
    assert main(["generate", "chat", "--out", str(tmp_path / "x.jsonl")]) == 2
    assert "--requests" in capsys.readouterr().out
