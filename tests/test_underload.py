"""A serve record explained: a request's windows cut along a hand-built step timeline, $/Mtok in and out by hand,
the one-line verdict at the knee, and the same on a sweep of the real engine (vLLM's CPU build)."""

import json
import math
import subprocess
import sys

import pytest

from llmprobe.records import ServedRequest
from llmprobe.underload import (DECODE_PARTS, PointExplanation, TimedStep, token_costs, verdict, windows)


def _step(start, end, floor, share, rows):
    return TimedStep(start, end, floor, share, rows, None)


def test_a_requests_windows_cut_by_hand():
    """A: sent at 0, first token at 0.32 s, 4 tokens, last at 1.02 s. Its prefill runs alone (0.1-0.3); it decodes
    alone (0.35-0.45, floor 0.05), beside B's prefill (0.5-0.7, B's rows 75% of the floors, step floor 0.1), is left
    out of B's decode step (0.75-0.85), and decodes alone again (0.9-1.0, floor 0.05)."""
    steps = [_step(0.1, 0.3, 0.1, 1.0, {"A": "p"}), _step(0.35, 0.45, 0.05, 0.0, {"A": "d"}),
             _step(0.5, 0.7, 0.1, 0.75, {"A": "d", "B": "p"}), _step(0.75, 0.85, 0.05, 0.0, {"B": "d"}),
             _step(0.9, 1.0, 0.05, 0.0, {"A": "d"})]
    a = ServedRequest("A", 0.0, 0.0, 10, 4, 0.32, 1.02)
    w = windows(a, steps, [s.start_s for s in steps])
    assert w["ttft"] == pytest.approx({"own_prefill": 0.2, "queued": 0.0, "between_steps": 0.12})
    assert w["tpot"] == pytest.approx({"others_prefill": 0.15, "decode_floor": 0.05 + 0.025 + 0.05,
                                       "above_floor": 0.05 + 0.025 + 0.05, "left_out": 0.1, "between_steps": 0.2})
    assert sum(w["tpot"].values()) == pytest.approx(0.7) and set(w["tpot"]) == set(DECODE_PARTS)
    # B, sent at 0.2, first token at 0.72: it queued behind A's prefill (0.2-0.3) and A's decode step (0.35-0.45)
    b = ServedRequest("B", 0.2, 0.2, 10, 2, 0.52, 0.67)
    wb = windows(b, steps, [s.start_s for s in steps])
    assert wb["ttft"] == pytest.approx({"own_prefill": 0.2, "queued": 0.2, "between_steps": 0.12})
    assert wb["tpot"]["decode_floor"] == pytest.approx(0.05) and wb["tpot"]["above_floor"] == pytest.approx(0.05)


def test_costs_per_million_tokens_by_hand():
    """$3.60/h for 10 s = $0.01; the prefill rows took a quarter of the step time."""
    s = {"duration_s": 10.0, "input_tokens": 4000, "output_tokens": 1000, "good_output_tokens": 500, "completed": 10}
    c = token_costs(s, 0.25, 3.6)
    assert c["usd"] == pytest.approx(0.01)
    assert c["usd_per_mtok_input"] == pytest.approx(0.0025 / 4000 * 1e6)        # $0.625
    assert c["usd_per_mtok_output"] == pytest.approx(0.0075 / 1000 * 1e6)       # $7.50
    assert c["usd_per_mtok_output_all_in"] == pytest.approx(10.0)
    assert c["usd_per_mtok_output_at_slo"] == pytest.approx(20.0)
    assert token_costs(s, None, 3.6)["usd_per_mtok_input"] is None              # no steps: no split


def _point(load, good, missed, parts=None, engine=None):
    summary = {"good_fraction": good, "goodput": good * 4, "completed": 10, "failed": 0}
    return PointExplanation(load, summary, 10, engine, None, None, missed, {"ttft": None, "tpot": parts}, 0.2)


def test_the_verdict_at_the_knee():
    slo = {"ttft": 2.0, "tpot": 0.2}
    ok = _point("2 req/s", 1.0, {"ttft": 0, "tpot": 0})
    knee = _point("8 req/s", 0.6, {"ttft": 1, "tpot": 4},
                  {"others_prefill": 0.5, "decode_floor": 0.2, "above_floor": 0.1, "left_out": 0.0, "between_steps": 0.2},
                  {"batch_mean": 12.0, "preempted": 0, "kv_cache_usage_max": 0.31, "waiting_max": 3})
    line = verdict([ok, knee], knee, slo)
    assert line.startswith("at 8 req/s, 40% of requests miss tpot <= 200 ms (60% within the SLO)")
    assert "bound by prefill interrupting decode (50% of their decode time" in line and "KV cache up to 31%" in line
    assert verdict([ok], None, slo).startswith("every load point keeps at least 90%")
    http = _point("8 req/s", 0.6, {"ttft": 4, "tpot": 0})
    assert "an HTTP client sees the client side only" in verdict([http], http, slo)


@pytest.mark.vllm
@pytest.mark.slow
def test_a_sweep_explained_and_priced(tmp_path, monkeypatch):
    """tiny-llama at 3 loads on hand-given ceilings: every completed request's windows add up, each point's engine
    view comes from its steps, explain gives one verdict line, and compare's $/Mtok in and out add up to the
    point's paid time."""
    pytest.importorskip("vllm")
    from llmprobe.context import RecordContext
    from llmprobe.hardware import Ceilings
    from llmprobe.serving import serve
    from llmprobe.underload import explain_serve, timed_steps
    monkeypatch.setenv("LLMPROBE_CACHE_DIR", str(tmp_path / "cache"))   # no ceilings an earlier run saved
    out = tmp_path / "serve.json"
    rec = serve("tiny-llama", rates=[4.0, math.inf], concurrencies=[2], num_prompts=8, prompt_len=32, gen_len=6,
                slo={"ttft": 2.0, "tpot": 0.2}, out=str(out), engine_options={"enforce_eager": True}, warmup=1,
                measure_ceilings=False)
    ceil = Ceilings("a test CPU", 20e9, {"bf16": 0.5e12}, 16e9, kind="measured")
    ctx = RecordContext.of(rec, ceilings=ceil)
    ex = explain_serve(rec, ctx, {"ttft": 2.0, "tpot": 1e-4})          # a TPOT nothing meets: every point is past it
    assert ex.knee == "4 req/s" and "tpot <= 0.1 ms" in ex.verdict and "bound by" in ex.verdict
    for p, pe in zip(sorted(rec.points, key=lambda p: (p.max_concurrency or 0, p.rate or math.inf)), ex.points):
        steps = timed_steps(ctx, p.steps)
        starts = [s.start_s for s in steps]
        for r in p.requests:
            w = windows(r, steps, starts)
            assert sum(w["ttft"].values()) == pytest.approx(r.ttft_s)
            assert sum(w["tpot"].values()) == pytest.approx(r.latency_s - r.ttft_s)
        assert pe.engine["batch_max"] >= 1 and pe.steps == len(p.steps) and 0 < pe.prefill_time_share < 1
        assert sum(pe.decode_parts.values()) == pytest.approx(1.0)
    assert max(p.engine["batch_max"] for p in ex.points if p.load == "2 in flight") <= 2
    roof = tmp_path / "ceilings.json"
    roof.write_text(json.dumps({"measured": {"ceilings": ceil.to_dict()}}))
    for extra, floors in (([], False), (["--ceilings", str(roof)], True)):
        r = subprocess.run([sys.executable, "-m", "llmprobe", "explain", str(out), "--slo", "tpot=0.1ms", "--json",
                            *extra], capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stderr[-2000:]
        doc = json.loads(r.stdout)["serve"][0]
        assert doc["knee"] == "4 req/s" and doc["verdict"].startswith("at 4 req/s, 100% of requests miss tpot")
        # no ceilings in the record: the requests' windows are not cut, and it says so
        assert bool(doc["warnings"]) is not floors and all((p["engine"] is not None) is floors for p in doc["points"])
    prices = tmp_path / "p.toml"
    prices.write_text('[[price]]\nprovider = "x"\ngpu = "cpu"\nusd_per_hour = 3.6\n')
    from llmprobe.compare import serve_rows
    from llmprobe.pricing import load_prices
    for row, p in zip(serve_rows([(str(out), rec, ctx)], load_prices(str(prices))), rec.points):
        s = p.summary(rec.config["slo"])
        paid = 3.6 * s["duration_s"] / 3600
        assert row["usd_per_mtok_input"] * s["input_tokens"] / 1e6 + row["usd_per_mtok_output"] * s["output_tokens"] / 1e6 \
            == pytest.approx(paid)
        assert row["usd_per_mtok_output_all_in"] == pytest.approx(paid / s["output_tokens"] * 1e6)
    r = subprocess.run([sys.executable, "-m", "llmprobe", "compare", str(out), str(out), "--prices", str(prices),
                        "--plot", str(tmp_path / "f.png"), "--json"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and (tmp_path / "f.png").stat().st_size > 10_000, r.stderr[-2000:]
    assert len(json.loads(r.stdout)["rows"]) == 2 * len(rec.points)
