"""The transformers backend on CPU: same record, same invariants."""

import json
import subprocess
import sys

import pytest

from llmprobe.profiling import Scenario, profile

from .profile_checks import check_record

pytest.importorskip("transformers")


@pytest.mark.parametrize("model", ["tiny-llama", "tiny-mixtral"])
def test_hf_record(model, tmp_path):
    rec = profile(model, [Scenario(1, 16, 5), Scenario(3, 16, 4)], backend="hf", runs=2, warmup=1)
    check_record(rec, tmp_path)
    assert rec.engine["backend"] == "hf"
    # transformers' static-cache generate: one prefill forward, then gen_len - 1 decode forwards
    for sc in rec.scenarios:
        assert [s.phase for s in sc.runs[0].steps] == ["prefill"] + ["decode"] * (sc.gen_len - 1)


def test_hf_layers_are_reported(tmp_path):
    rec = profile("small-llama", [Scenario(1, 8, 3)], backend="hf", runs=1, warmup=0, layers=2,
                  out=str(tmp_path / "r.json"))
    assert rec.config["layers"] == 2 and rec.config["full_layers"] == 8
    assert rec.config["layers_note"] == "2 of 8 layers" and rec.model["num_layers"] == 2


def test_hf_cli_json(tmp_path):
    r = subprocess.run([sys.executable, "-m", "llmprobe", "profile", "--backend", "hf", "--model", "tiny-llama",
                        "--batch", "1,2", "--prompt-len", "8", "--gen-len", "3", "--runs", "1", "--out",
                        str(tmp_path / "x.json"), "--json"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert [s["batch"] for s in json.loads(r.stdout)["scenarios"]] == [1, 2]
    r = subprocess.run([sys.executable, "-m", "llmprobe", "profile", "--backend", "hf", "--model", "tiny-llama",
                        "--tp", "2"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and "one device" in r.stderr
