"""`plan_fleet` and `selfserve plan` end to end on small synthetic workloads (CI-sized)."""

from __future__ import annotations

import random

import orjson
import pytest

from selfserve.cli.main import main
from selfserve.plan.fleet_plan import plan_fleet
from selfserve.plan.options import NoFitError
from selfserve.workload.request import Request, Workload


def chat_workload(num_requests: int = 160, rate_per_s: float = 8.0, seed: int = 1) -> Workload:
    """Poisson chat: ~1,500-token prompts sharing a 1,024-token system prefix, ~150 outputs."""
    rng = random.Random(seed)
    requests = []
    now_s = 0.0
    for i in range(num_requests):
        now_s += rng.expovariate(rate_per_s)
        prompt = rng.randint(1_100, 2_000)
        blocks = (1, 2) + tuple(rng.getrandbits(40) for _ in range(prompt // 512 - 2))
        requests.append(
            Request(f"r{i}", now_s, prompt, rng.randint(60, 240), blocks, block_size=512)
        )
    return Workload(requests, name="chat", block_size=512)


def plan_at(slo: str):
    return plan_fleet(
        chat_workload(200, rate_per_s=60.0),
        "llama-3.1-8b",
        hardware=["h100", "h200"],
        tps=[1],
        slo=slo,
        policy="least-loaded",
        sweep=False,
        jobs=1,
    )


def test_a_stricter_slo_never_lowers_the_cost():
    slos = ["ttft=2s,tpot=100ms", "ttft=0.3s,tpot=25ms", "ttft=0.1s,tpot=12ms"]
    plans = [plan_at(slo) for slo in slos]
    costs = [plan.cheapest.usd_per_hour for plan in plans]
    assert costs == sorted(costs)
    assert costs[-1] > costs[0]  # the strictest SLO really needs a bigger fleet here
    for looser, stricter in zip(plans, plans[1:], strict=False):
        for a, b in zip(looser.options, stricter.options, strict=True):
            assert b.replicas >= a.replicas, (a.option.label, a.replicas, b.replicas)


def test_plan_reports_every_option_with_a_fleet_or_a_reason():
    result = plan_fleet(
        chat_workload(),
        "llama-3.1-70b",
        hardware=["h100", "b200"],
        tps=[1, 4],
        slo="ttft=2s,tpot=100ms",
        policy="least-loaded",
        growth=2.0,
        jobs=1,
    )
    by_label = {p.option.label: p for p in result.options}
    assert not by_label["h100 tp1 bf16"].fit.fits
    assert "does not fit" in by_label["h100 tp1 bf16"].reason
    for label in ("h100 tp4 bf16", "b200 tp4 bf16"):
        plan = by_label[label]
        assert plan.meets_slo and plan.at_rate.attainment >= 0.9
        assert plan.at_rate.num_gpus == plan.replicas * 4
        econ = plan.at_rate.economics(plan.price.usd_per_gpu_hour)
        # the table's $/M is the hand formula on the fleet's own numbers
        per_gpu = plan.at_rate.output_tokens_per_s / plan.at_rate.num_gpus
        expected = plan.price.usd_per_gpu_hour / (per_gpu * 3600) * 1e6
        assert econ.usd_per_million_output_tokens == pytest.approx(expected)
        assert plan.headroom.multiplier >= 1.0
        assert plan.at_growth is None or plan.at_growth.num_gpus >= plan.at_rate.num_gpus
        assert len(plan.curve) >= 4  # InferenceMAX points from low load to past capacity
    assert result.cheapest is not None and result.cheapest.meets_slo
    assert result.matched, "options with curves must be compared at matched interactivity"


def test_a_model_that_fits_no_option_is_a_clear_error():
    with pytest.raises(NoFitError) as excinfo:
        plan_fleet(
            chat_workload(20),
            "llama-3.1-405b",
            hardware=["h100"],
            tps=[1, 2],
            slo="ttft=2s,tpot=100ms",
        )
    assert "llama-3.1-405b" in str(excinfo.value) and "h100" in str(excinfo.value)


def write_mooncake(path, workload: Workload) -> None:
    lines = [
        orjson.dumps(
            {
                "timestamp": int(r.arrival_s * 1000),
                "input_length": r.prompt_tokens,
                "output_length": r.output_tokens,
                "hash_ids": list(range(i * 10, i * 10 + (r.prompt_tokens + 511) // 512)),
            }
        )
        for i, r in enumerate(workload.requests)
    ]
    path.write_bytes(b"\n".join(lines) + b"\n")


def test_cli_plan_writes_json_and_html(tmp_path, capsys):
    trace = tmp_path / "trace.jsonl"
    write_mooncake(trace, chat_workload(80, rate_per_s=4.0))
    out_json = tmp_path / "plan.json"
    out_html = tmp_path / "plan.html"
    code = main(
        [
            "plan", "--trace", str(trace), "--model", "llama-3.1-8b",
            "--hardware", "h100,gb300", "--tp", "1", "--policy", "round-robin",
            "--json", str(out_json), "--html", str(out_html), "--jobs", "1",
        ]
    )  # fmt: skip
    assert code == 0
    printed = capsys.readouterr().out
    assert "cheapest meeting the SLO" in printed
    payload = orjson.loads(out_json.read_bytes())
    assert {o["hardware"] for o in payload["options"]} == {"h100", "gb300"}
    gb300 = next(o for o in payload["options"] if o["hardware"] == "gb300")
    assert gb300["price"] is None and "no on-demand price" in gb300["price_reason"]
    assert payload["cheapest"] == "h100 tp1 bf16"
    html = out_html.read_text()
    assert "<svg" in html and "Matched interactivity" in html


def test_cli_plan_rejects_bad_options_with_the_key(tmp_path, capsys):
    trace = tmp_path / "trace.jsonl"
    write_mooncake(trace, chat_workload(10))
    assert main(["plan", "--trace", str(trace), "--model", "nope"]) == 2
    assert "--model" in capsys.readouterr().out
    assert main(["plan", "--trace", str(trace), "--model", "llama-3.1-8b", "--tp", "x"]) == 2
    assert "--tp" in capsys.readouterr().out
    code = main(
        [
            "plan",
            "--trace",
            str(trace),
            "--model",
            "llama-3.1-405b",
            "--hardware",
            "h100",
            "--tp",
            "1",
        ]
    )
    assert code == 2
    assert "fits no option" in capsys.readouterr().out


def test_parallel_workers_give_the_same_plan_as_one_process():
    kwargs = dict(
        hardware=["h100", "mi300x"], tps=[1], slo="ttft=0.3s,tpot=25ms", policy="least-loaded"
    )
    workload = chat_workload(120, rate_per_s=40.0)
    one = plan_fleet(workload, "llama-3.1-8b", jobs=1, sweep=False, **kwargs)
    two = plan_fleet(workload, "llama-3.1-8b", jobs=2, sweep=False, **kwargs)
    assert [p.replicas for p in one.options] == [p.replicas for p in two.options]
    assert [p.at_rate.attainment for p in one.options] == [
        p.at_rate.attainment for p in two.options
    ]
