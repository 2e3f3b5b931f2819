import json
import subprocess
import sys

import pytest

CONTRACT_SCENARIO_KEYS = {"batch", "prompt_len", "gen_len", "dtype", "tp", "fits_in_memory", "memory_required_bytes",
                          "ttft_floor_s", "tpot_floor_s", "total_latency_floor_s", "tps_ceiling", "decode_bound"}


def run(*args):
    return subprocess.run([sys.executable, "-m", "llmprobe", *args], capture_output=True, text=True, timeout=120)


def test_roofline_json_contract():
    r = run("roofline", "--gpu", "a100-sxm-80gb", "--model", "llama-2-70b", "--batch", "1,8", "--prompt-len", "256",
            "--gen-len", "256", "--dtype", "bf16", "--tp", "1,2,4", "--json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert {"name", "hbm_bytes_per_s", "memory_bytes", "peak_flops", "source"} <= doc["gpu"].keys()
    assert {"name", "total_params", "active_params_per_token", "weight_bytes"} <= doc["model"].keys()
    assert len(doc["scenarios"]) == 6
    for s in doc["scenarios"]:
        assert CONTRACT_SCENARIO_KEYS <= s.keys()
        assert s["decode_bound"] in ("memory", "compute")
    assert [s["fits_in_memory"] for s in doc["scenarios"] if s["tp"] == 1] == [False, False]


def test_roofline_config_path_and_catalogs(tmp_path):
    from llmprobe.models import load_catalog_model
    (tmp_path / "config.json").write_text(json.dumps(load_catalog_model("mistral-7b").config))
    r = run("roofline", "--gpu", "h100-sxm", "--model", str(tmp_path / "config.json"), "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["model"]["total_params"] == 7_241_732_096
    for cmd in ("models", "gpus"):
        r = run(cmd, "--json")
        assert r.returncode == 0 and json.loads(r.stdout)
    r = run("roofline", "--gpu", "h100-sxm", "--model", "mixtral")
    assert r.returncode == 0 and "TPS ceiling" in r.stdout


@pytest.mark.parametrize("args,needle", [
    (["--gpu", "h1000", "--model", "mixtral"], "closest known"),
    (["--gpu", "h100", "--model", "mixtrl"], "closest known: mixtral"),
    (["--gpu", "h100", "--model", "mixtral", "--batch", "0"], "positive"),
    (["--gpu", "h100", "--model", "mixtral", "--prompt-len", "-5"], "positive"),
    (["--gpu", "h100", "--model", "mixtral", "--tp", "3"], "does not divide"),
    (["--gpu", "h100", "--model", "mixtral", "--dtype", "fp5"], "unknown weight dtype"),
])
def test_bad_input_exits_2_without_traceback(args, needle):
    r = run("roofline", *args)
    assert r.returncode == 2
    assert needle in r.stderr and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) <= 3


def test_bad_config_files(tmp_path):
    (tmp_path / "config.json").write_text("nope")
    r = run("roofline", "--gpu", "h100", "--model", str(tmp_path))
    assert r.returncode == 2 and "not valid JSON" in r.stderr and "Traceback" not in r.stderr
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama", "hidden_size": 8}))
    r = run("roofline", "--gpu", "h100", "--model", str(tmp_path))
    assert r.returncode == 2 and "has no" in r.stderr


def test_engine_args_parse_as_json_where_they_can():
    from llmprobe.commands import parse_engine_args
    from llmprobe.errors import UserError
    args = parse_engine_args(("max_num_seqs=4", 'compilation_config={"cudagraph_capture_sizes": [1, 8]}',
                              "distributed_executor_backend=mp"))
    assert args == {"max_num_seqs": 4, "compilation_config": {"cudagraph_capture_sizes": [1, 8]},
                    "distributed_executor_backend": "mp"}
    with pytest.raises(UserError, match="KEY=VALUE"):
        parse_engine_args(("no-equals-sign",))
