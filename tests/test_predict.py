"""Calibrated prediction: the fit, its refusals, and a held-out scenario of the real engine."""

import json
import os
import subprocess
import sys

import pytest

from llmprobe.errors import UserError
from llmprobe.predict import calibrate, fit_phase, predict
from llmprobe.records import RunRecord


def test_fit_recovers_known_costs():
    xs = [(m, c) for m in (0.01, 0.02, 0.05) for c in (0.001, 0.004, 0.02)]
    ys = [0.003 + 1.25 * m + 2.0 * c for m, c in xs]
    f = fit_phase(xs, ys)
    assert (f.fixed_s, f.memory_factor, f.compute_factor) == pytest.approx((0.003, 1.25, 2.0), rel=1e-9)
    assert f.rms_relative_residual == pytest.approx(0, abs=1e-12)
    # two distinct points identify one term, not three
    one = fit_phase([(0.01, 0.001), (0.01, 0.001), (0.02, 0.004)], [0.02, 0.02, 0.04])
    assert sum(v > 0 for v in (one.fixed_s, one.memory_factor, one.compute_factor)) == 1


@pytest.fixture(scope="module")
def tiny_runs(tmp_path_factory):
    """tiny-llama on the real vLLM CPU engine: batch 1 and 4 to calibrate on, batch 8 held out."""
    pytest.importorskip("vllm")
    out = tmp_path_factory.mktemp("predict") / "run.json"
    r = subprocess.run([sys.executable, "-m", "llmprobe", "profile", "--model", "tiny-llama", "--batch", "1,4,8",
                        "--prompt-len", "32", "--gen-len", "12", "--runs", "3", "--enforce-eager", "--out", str(out),
                        "--json"], capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-2000:]
    doc = json.loads(r.stdout)
    held = next(s for s in doc["scenarios"] if s["batch"] == 8)
    doc["scenarios"] = [s for s in doc["scenarios"] if s["batch"] != 8]
    return doc, held, out


@pytest.mark.vllm
@pytest.mark.slow
def test_held_out_batch_is_predicted_and_a_batch_blind_model_is_not(tiny_runs):
    doc, held, _ = tiny_runs
    cal = calibrate([("calibration", RunRecord.from_dict(doc))])
    p = predict(cal, 8, 32, 12)
    measured = held["summary"]["tps"]["median"]
    assert p["kind"] == "calibrated" and abs(p["tps"] / measured - 1) < 0.35, (p["tps"], measured)
    lo, hi = p["interval"]["tps"]
    assert lo < p["tps"] < hi
    blind = next(s for s in doc["scenarios"] if s["batch"] == 4)["summary"]["tps"]["median"]   # batch ignored
    assert abs(blind / measured - 1) > 0.35


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
        assert set(p["interval"]) == {"ttft_s", "tpot_s", "tps"} and p["calibration"]["parameters"]["decode"]
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
