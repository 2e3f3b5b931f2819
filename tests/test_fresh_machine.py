"""A new user's machine: nothing saved anywhere, `profile` then `explain` still works; the suite keeps its
state to itself."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import HOME_CACHE, cache_snapshot


def test_the_suite_saves_ceilings_in_its_own_temp_dir():
    from llmprobe.microbench.store import cache_dir
    here = cache_dir().resolve()
    assert not here.is_relative_to(HOME_CACHE.resolve()), here
    assert Path(os.environ["LLMPROBE_CACHE_DIR"]).resolve() in here.parents


def test_the_home_cache_guard_sees_a_change(tmp_path):
    (tmp_path / "ceilings").mkdir()
    before = cache_snapshot(tmp_path)
    (tmp_path / "ceilings" / "cpu-x.json").write_text("{}")
    assert cache_snapshot(tmp_path) != before
    assert cache_snapshot(tmp_path / "absent") == []


def _llmprobe(*args, cache):
    return subprocess.run([sys.executable, "-m", "llmprobe", *args], capture_output=True, text=True, timeout=600,
                          env={**os.environ, "LLMPROBE_CACHE_DIR": str(cache)})


@pytest.mark.vllm
@pytest.mark.slow
def test_profile_on_a_fresh_machine_measures_ceilings_once_and_explains(tmp_path):
    pytest.importorskip("vllm")
    cache, out = tmp_path / "cache", tmp_path / "r.json"
    r = _llmprobe("profile", "--model", "tiny-llama", "--batch", "1", "--prompt-len", "16", "--gen-len", "4",
                  "--runs", "1", "--warmup", "0", "--enforce-eager", "--out", str(out), cache=cache)
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stderr.count("measuring a quick pass") == 1 and "ceilings: measured in" in r.stderr
    rec = json.loads(out.read_text())
    assert rec["ceilings"]["mode"] == "quick" and rec["ceilings"]["partial"] and rec["ceilings"]["ceilings"]
    assert list((cache / "ceilings").glob("*.json"))                       # saved for the next run
    e = _llmprobe("explain", str(out), "--json", cache=cache)
    assert e.returncode == 0, e.stderr[-2000:]
    doc = json.loads(e.stdout)
    (s,) = doc["scenarios"]
    assert s["ceilings_source"] == "measured" and s["tps"]["measured"] > 0
    assert s["ceilings_mode"] == "quick" and s["bandwidth_method"] == "torch.sum"     # the read kernel
    # the code path that ran, read off the worker: vLLM's CPU build runs its own model runner and attention
    ex = doc["records"][0]["execution"]
    assert ex["model_runner"].endswith("ModelRunner") and ex["attention_backends"] and ex["moe_methods"] == []
    text = _llmprobe("explain", str(out), cache=cache)
    assert "code path: model runner" in text.stdout and "bandwidth of torch.sum" in " ".join(text.stdout.split())

    pytest.importorskip("transformers")    # the next run on this device reuses them, whatever the backend
    again = _llmprobe("profile", "--backend", "hf", "--model", "tiny-llama", "--batch", "1", "--prompt-len", "8",
                      "--gen-len", "2", "--runs", "1", "--warmup", "0", "--out", str(tmp_path / "r2.json"), cache=cache)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "measuring a quick pass" not in again.stderr and "ceilings: reusing" in again.stderr
    assert json.loads((tmp_path / "r2.json").read_text())["ceilings"] == rec["ceilings"]


def test_no_ceilings_skips_the_pass_and_explain_says_how_to_add_them(tmp_path):
    pytest.importorskip("transformers")
    out = tmp_path / "r.json"
    r = _llmprobe("profile", "--backend", "hf", "--model", "tiny-llama", "--batch", "1", "--prompt-len", "8",
                  "--gen-len", "2", "--runs", "1", "--warmup", "0", "--no-ceilings", "--out", str(out),
                  cache=tmp_path / "cache")
    assert r.returncode == 0, r.stderr[-2000:]
    assert "measuring" not in r.stderr and json.loads(out.read_text())["ceilings"] is None
    assert not (tmp_path / "cache").exists()
    e = _llmprobe("explain", str(out), cache=tmp_path / "cache")
    assert e.returncode == 2 and len(e.stderr.strip().splitlines()) == 1
    assert "without --no-ceilings" in e.stderr and "Traceback" not in e.stderr
