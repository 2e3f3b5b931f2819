"""Calibrated prediction: the fit, its refusals, and a held-out scenario of the real engine."""

import json
import os
import subprocess
import sys

import pytest

from llmprobe.errors import UserError
from llmprobe.costs import StepCost
from llmprobe.predict import calibrate, fit_steps, predict
from llmprobe.records import RunRecord


def _cost(tokens, weights_s, kv_s, compute_s):
    """A step whose floors are weights_s (weights), kv_s (KV) and compute_s, at 1 GB/s."""
    return StepCost(tokens=tokens, weight_bytes=weights_s * 1e9, kv_read_bytes=kv_s * 1e9, kv_write_bytes=0,
                    linear_flops=0, attention_flops=0, comm_bytes=0, memory_s=weights_s + kv_s, compute_s=compute_s,
                    comm_s=0.0)


def test_fit_recovers_known_costs():
    costs = [_cost(t, w, kv, c) for t in (1, 8) for w in (0.01, 0.02) for kv in (0.001, 0.005) for c in (0.001, 0.004, 0.02)]
    times = [0.003 + 1.6 * c.weight_bytes / 1e9 + 2.5 * c.kv_read_bytes / 1e9 + 2.0 * c.compute_s for c in costs]
    f = fit_steps(costs, times, runs=[(c.tokens, i % 3) for i, c in enumerate(costs)])
    assert len(f.fits) == 1 and f.fits[0] == pytest.approx((0.003, 1.6, 2.5, 2.0), rel=1e-9)
    assert f.residual_rms == pytest.approx(0, abs=1e-12) and f.stderr() == pytest.approx((0, 0, 0, 0), abs=1e-9)
    assert len(f.replicates) == 200


def test_no_factor_beats_its_ceiling():
    """Steps measured at half their floors (a wrong ceiling, a wrong byte count): the factors stop at 1, so
    the model never prices a step under its floor; the residual says the fit is off."""
    costs = [_cost(8, w, 0.001, c) for w in (0.01, 0.02, 0.04) for c in (0.001, 0.01)]
    f = fit_steps(costs, [0.5 * (c.memory_s + c.compute_s) for c in costs])
    assert all(min(fx[1:]) >= 1.0 and fx[0] >= 0 for fx in f.fits)
    assert all(min(f.step_s(c)) >= max(c.memory_s, c.compute_s) for c in costs)
    assert f.residual_rms > 0.5


def test_terms_the_steps_cannot_separate_give_every_fit_and_a_spanning_interval():
    # the weights floor never varies (one dense model): a fixed cost and a weights factor explain the steps alike
    costs = [_cost(8, 0.02, kv, c) for kv in (0.001, 0.003) for c in (0.001, 0.004, 0.02)]
    f = fit_steps(costs, [0.01 + 0.02 + kv.kv_read_bytes / 1e9 + 2 * kv.compute_s for kv in costs])
    assert {(fx > 0, w > 1) for fx, w, _, _ in f.fits} == {(True, False), (False, True)}
    for fixed, w, kv, cmp in f.fits:
        assert cmp == pytest.approx(2.0) and kv == pytest.approx(1.0) and fixed + w * 0.02 == pytest.approx(0.03)
    # same floors: every fit agrees; half the weights floor: they part, by the fixed cost's share
    assert max(f.step_s(costs[0])) == pytest.approx(min(f.step_s(costs[0])))
    lo, hi = sorted(f.step_s(_cost(8, 0.01, 0.0, 0.001)))
    assert (lo, hi) == pytest.approx((0.015 + 0.002, 0.02 + 0.002))


@pytest.fixture(scope="module")
def tiny_runs(tmp_path_factory):
    """tiny-llama on the real vLLM CPU engine: batch 1 and 4 to calibrate on, batch 16 held out.

    Batch 16, not 8: on this VM one record's later scenarios can run 20% slower than its first ones, and batch 8
    then measures only 1.4x batch 4 (CI once saw 1.48x), too close for a tolerance that must pass the model and
    fail a batch-blind one; batch 16 measured 2.3-3.0x batch 4 with the model within 23% (3 records).

    A neighbour busy beside the runs slows the scenarios unevenly (one CPU hog put the model 40% off), and the
    record says so (`host_load.busy`): such a record is measured again, at most twice; the last one is tested."""
    pytest.importorskip("vllm")
    out = tmp_path_factory.mktemp("predict") / "run.json"
    for _ in range(3):
        r = subprocess.run([sys.executable, "-m", "llmprobe", "profile", "--model", "tiny-llama", "--batch", "1,4,16",
                            "--prompt-len", "32", "--gen-len", "12", "--runs", "3", "--enforce-eager", "--out", str(out),
                            "--json"], capture_output=True, text=True, timeout=900)
        assert r.returncode == 0, r.stderr[-2000:]
        doc = json.loads(r.stdout)
        if not any(s["host_load"].get("busy") for s in doc["scenarios"]):
            break
    held = next(s for s in doc["scenarios"] if s["batch"] == 16)
    doc["scenarios"] = [s for s in doc["scenarios"] if s["batch"] != 16]
    return doc, held, out


@pytest.mark.vllm
@pytest.mark.slow
def test_held_out_batch_is_predicted_and_a_batch_blind_model_is_not(tiny_runs):
    doc, held, _ = tiny_runs
    cal = calibrate([("calibration", RunRecord.from_dict(doc))])
    p = predict(cal, 16, 32, 12)
    measured = held["summary"]["tps"]["median"]
    assert p["kind"] == "calibrated" and abs(p["tps"] / measured - 1) < 0.4, (p["tps"], measured, held["host_load"]["reasons"])
    lo, hi = p["interval"]["tps"]
    assert lo < p["tps"] < hi
    blind = next(s for s in doc["scenarios"] if s["batch"] == 4)["summary"]["tps"]["median"]   # batch ignored
    assert abs(blind / measured - 1) > 0.4, (blind, measured)
    # the calibration's own TP degree is not another card: a TP-2 record predicts TP 2 as "calibrated"
    # (the record's quick CPU pass measured no collectives at TP 1: the faked TP-2 record gets stored ceilings with
    # a link to price them, and no methods to derive them again from)
    ceil = {"ceilings": dict(doc["ceilings"]["ceilings"], interconnect_bytes_per_s=1e10, collective_latency_s=1e-5)}
    tp2 = calibrate([("tp2", RunRecord.from_dict(dict(doc, config=dict(doc["config"], tp=2), ceilings=ceil)))])
    assert predict(tp2, 16, 32, 12, tp=2)["kind"] == "calibrated"


@pytest.mark.vllm
@pytest.mark.slow
def test_predict_cli_json_and_refusals(tiny_runs, tmp_path):
    _, _, path = tiny_runs
    r = subprocess.run([sys.executable, "-m", "llmprobe", "predict", str(path), "--batch", "2,16", "--prompt-len", "64",
                        "--gen-len", "8", "--json"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    preds = json.loads(r.stdout)["predictions"]
    assert [p["batch"] for p in preds] == [2, 16]
    for p in preds:
        assert {"ttft_s", "tpot_s", "total_latency_s", "tps", "interval", "calibration", "kind", "gpu", "tp"} <= p.keys()
        assert set(p["interval"]) == {"ttft_s", "tpot_s", "tps"} and p["calibration"]["parameters"]["step"]["fits"]
    r = subprocess.run([sys.executable, "-m", "llmprobe", "predict", str(path), "--model", "tiny-mixtral"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "architecture family" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    r = subprocess.run([sys.executable, "-m", "llmprobe", "predict", str(path), "--gpu", "h100-sxm", "--json"],
                       capture_output=True, text=True, timeout=120, env=dict(os.environ))
    assert r.returncode == 0 and all(p["kind"] == "transferred" and p["assumptions"]
                                     for p in json.loads(r.stdout)["predictions"])


def test_calibration_needs_one_model_on_one_device():
    with pytest.raises(UserError, match="at least one"):
        calibrate([])


def test_each_record_is_priced_on_its_own_floors_whatever_the_order():
    from tests.test_explain import TOY, _ceil_doc, hand_record
    from llmprobe.hardware import Ceilings
    fast = Ceilings(name="toy", hbm_bytes_per_s=2e9, peak_flops={"bf16": 2e12}, memory_bytes=1e12, kind="measured")
    a = RunRecord.from_dict(hand_record())                                    # each step 2x its floor on TOY
    b = RunRecord.from_dict(dict(hand_record(0.5), ceilings=_ceil_doc(fast)))  # the same times... on twice the ceilings
    ab, ba = calibrate([("a", a), ("b", b)]), calibrate([("b", b), ("a", a)])
    flat = lambda cal: [x for fx in cal.fit.fits for x in fx]   # noqa: E731
    assert flat(ab) == pytest.approx(flat(ba), rel=1e-6, abs=1e-9)
    # both records ran every step at 2x its own floor: that is what the fit finds (the first record's floors
    # would put b at 1x on TOY's, or a at 4x on the fast ceilings')
    assert max(flat(ab)[1:3]) == pytest.approx(2.0, rel=0.05) and TOY.hbm_bytes_per_s < fast.hbm_bytes_per_s


def test_a_prediction_is_never_faster_than_its_floor():
    from tests.test_explain import hand_record
    cal = calibrate([("a", RunRecord.from_dict(hand_record()))])
    import dataclasses
    cal.fit = dataclasses.replace(cal.fit, fits=tuple(tuple(0.0 for _ in fx) for fx in cal.fit.fits))   # "free"
    p = predict(cal, 8, 64, 16)
    assert set(p["clamped_to_bound"]) >= {"ttft_s", "tpot_s", "tps"}
    from llmprobe.costs import Floors
    from llmprobe.memory import card_of
    from llmprobe.bounds import scenario
    b = scenario(Floors.of(cal.model, cal.ceilings), card_of(cal.ceilings), 8, 64, 16, advise=False)
    assert p["tpot_s"] >= b.tpot_floor_s and p["ttft_s"] >= b.ttft_floor_s and p["tps"] <= b.tps_ceiling
    assert p["interval"]["tps"][1] <= b.tps_ceiling and any("clamped" in a for a in p["assumptions"])
