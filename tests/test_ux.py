"""What a user meets: tables that fit without cutting, honest refusals, progress on stderr, plots that say why."""

import json
import os
import subprocess
import sys

import pytest

from llmprobe.explain import explain_record

from .test_explain import hand_record


def run(*args, columns=None, env=None):
    e = dict(os.environ, **(env or {}))
    if columns:
        e["COLUMNS"] = str(columns)
    return subprocess.run([sys.executable, "-m", "llmprobe", *args], capture_output=True, text=True, timeout=300, env=e)


@pytest.mark.parametrize("columns", [80, 100])
def test_narrow_tables_never_cut_an_id_or_a_number(columns):
    models = json.loads(run("models", "--json").stdout)["models"]
    text = run("models", columns=columns).stdout
    for m in models:
        assert m["name"] in text and f"{m['total_params']:,}" in text and f"{m['active_params_per_token']:,}" in text
    gpus = json.loads(run("gpus", "--json").stdout)["gpus"]
    text = run("gpus", columns=columns).stdout
    assert all(g["id"] in text for g in gpus)
    audit = json.loads(run("audit", "experiments/data/article_claims.csv", "--json").stdout)
    text = run("audit", "experiments/data/article_claims.csv", columns=columns).stdout
    assert all(c["model"] in text and c["gpu"] in text for c in audit["claims"])
    doc = json.loads(run("roofline", "--gpu", "h100-sxm", "--model", "mixtral", "--json").stdout)
    text = run("roofline", "--gpu", "h100-sxm", "--model", "mixtral", columns=columns).stdout
    for s in doc["scenarios"]:
        assert f"{s['tps_ceiling']:,.1f}" in text and f"{s['tps_ceiling_optimistic']:,.1f}" in text
    for out in (text, run("models", columns=columns).stdout):
        assert "…" not in out and max(len(line) for line in out.splitlines()) <= columns


def test_an_efficiency_above_one_is_refused_for_predictions_and_not_shown_as_a_result(tmp_path):
    rec = hand_record(scale=0.25)                      # every step at half its floor: TPS above the ceiling
    path = tmp_path / "fast.json"
    path.write_text(json.dumps(rec))
    ex = explain_record(rec).to_dict()["scenarios"][0]
    assert ex["tps"]["efficiency"] > 1
    r = run("compare", str(path), "--predict", "--model", "mixtral", "--gpus", "h100-sxm")
    assert r.returncode == 2 and "is not explained" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    r = run("compare", "--predict", "--model", "mixtral", "--gpus", "h100-sxm", "--efficiency", "1.5")
    assert r.returncode == 2 and "(0, 1]" in r.stderr
    text = run("explain", str(path)).stdout
    assert "n/a (not explained)" in text and "%" in text


def test_progress_goes_to_stderr_under_json(tmp_path):
    from llmprobe.microbench import current_device, store
    from llmprobe.microbench.result import Measurement, MethodResult
    from llmprobe.records import CEILINGS_METHODOLOGY
    fp = current_device()
    m = Measurement(device="cpu", fingerprint=fp, mode="quick", methodology=CEILINGS_METHODOLOGY,
                    provenance={"created_utc": "2026-11-27T00:00:00+00:00"},
                    warnings=["no CUDA GPU: these are CPU ceilings"], methods=[
                        MethodResult("torch.copy_", "bandwidth", "fp32", 2e10, True),
                        MethodResult("torch.matmul", "flops", "bf16", 5e11, True)])
    env = {"LLMPROBE_CACHE_DIR": str(tmp_path)}
    os.environ["LLMPROBE_CACHE_DIR"] = str(tmp_path)
    try:
        store.save(m.to_dict())
    finally:
        del os.environ["LLMPROBE_CACHE_DIR"]
    r = run("roofline", "--json", env=env)
    assert r.returncode == 0, r.stderr
    json.loads(r.stdout)                                # stdout: exactly one document
    assert "reusing ceilings from" in r.stderr and "--remeasure" in r.stderr and "ago" in r.stderr
    assert "warning" in r.stderr                        # the measurement's "no CUDA GPU" note, on stderr


def test_a_chart_of_nothing_explained_says_why(tmp_path):
    import matplotlib.image as mpimg
    from llmprobe.plots import breakdown_chart
    ex = explain_record(hand_record(scale=0.25))
    assert not ex.scenarios[0].breakdown
    path = breakdown_chart(str(tmp_path / "b.png"), ex)
    img = mpimg.imread(path)[..., :3]
    assert img.std() > 0.01                              # not an empty white frame: the reason is written on it


def test_help_explains_lists_and_shows_examples():
    h = " ".join(run("profile", "--help").stdout.split())   # help wraps lines: compare words
    assert "Prompt lengths in tokens, comma-separated" in h and "Examples:" in h and "one value, not a list" in h
    assert "model,gpu,batch,prompt_len,gen_len,tps" in run("audit", "--help").stdout
    assert "usd_per_hour" in run("prices", "--help").stdout
    commands = run("--help").stdout.split("Commands:")[1]
    assert "..." not in commands                         # no summary cut short


def test_small_truths():
    assert "80 GiB" in run("gpus", columns=160).stdout
    r = run("explain", "docs/measurements/cpu-xeon-2026-11-26/profile-small-llama-vllm.json", "--gpu", "h100-sxm",
            "--ceilings", "docs/measurements/cpu-xeon-2026-11-26/roofline.json")
    assert r.returncode == 2 and "give one" in r.stderr
    r = run("profile", "--model", "tiny-llama", "--dtype", "fp8")
    assert r.returncode == 2 and "--quantization" in r.stderr
    text = run("explain", "docs/measurements/cpu-xeon-2026-11-26/profile-small-llama-vllm.json", "--gpu",
               "h100-sxm").stdout
    assert "other device" in text
