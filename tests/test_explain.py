import json
import os
import subprocess
import sys

import pytest

from llmprobe.explain import explain_record
from llmprobe.hardware import Ceilings
from llmprobe.models import resolve_model
from llmprobe.costs import Floors, decode_cost, prefill_cost, step_cost

TOY = Ceilings(name="toy", hbm_bytes_per_s=1e9, peak_flops={"bf16": 1e12}, memory_bytes=1e12, kind="measured")


def _ceil_doc(c: Ceilings) -> dict:
    return {"ceilings": c.to_dict()}


def _step(index, seqs, t_start, host_ms, device_ms=None):
    pre = sum(q for _, q, _, k in seqs if k == "p")
    dec = sum(q for _, q, _, k in seqs if k == "d")
    return {"index": index, "t_start_s": t_start, "t_end_s": t_start + host_ms / 1e3, "gap_ms": None,
            "host_ms": host_ms, "device_ms": device_ms, "seqs": seqs, "prefill_tokens": pre, "decode_tokens": dec,
            "num_reqs": len(seqs), "prefill_reqs": sum(k == "p" for *_, k in seqs),
            "decode_reqs": sum(k == "d" for *_, k in seqs), "mixed": bool(pre and dec)}


def hand_record(scale: float = 1.0) -> dict:
    """tiny-llama, batch 1, prompt 4, gen 3 on toy ceilings; each step takes `scale` x 2 x its floor."""
    m = resolve_model("tiny-llama")
    f = Floors.of(m, TOY)
    layout = [[["r0", 4, 0, "p"]], [["r0", 1, 4, "d"]], [["r0", 1, 5, "d"]]]
    steps, t = [], 0.001                                   # 1 ms before the first step
    for i, seqs in enumerate(layout):
        floor = step_cost(f, [(q, c) for _, q, c, _ in seqs]).floor_s
        dev = 2 * floor * scale
        steps.append(_step(i, seqs, t, host_ms=dev * 1e3 + 0.5, device_ms=dev * 1e3))   # host: device + 0.5 ms
        t = steps[-1]["t_end_s"] + 0.0002                  # 0.2 ms between steps
    wall = steps[-1]["t_end_s"] + 0.0003                   # 0.3 ms after the last
    times = [steps[0]["t_end_s"], steps[1]["t_end_s"], steps[2]["t_end_s"]]
    run = {"wall_s": wall, "steps": steps,
           "requests": [{"id": "r0", "prompt_len": 4, "output_tokens": 3, "ttft_s": times[0], "latency_s": times[2],
                         "tpot_s": (times[2] - times[0]) / 2}]}
    stat = lambda v: {"n": 1, "mean": v, "median": v, "min": v, "max": v, "stdev": 0.0}  # noqa: E731
    sc = {"batch": 1, "prompt_len": 4, "gen_len": 3, "runs": [run], "warmup_runs": [],
          "summary": {"ttft_s": stat(times[0]), "tpot_s": stat((times[2] - times[0]) / 2),
                      "total_latency_s": stat(times[2]), "tps": stat(3 / wall)}}
    return {"schema_version": 1, "config": {"model": "tiny-llama", "backend": "vllm", "weight_dtype": "bf16", "tp": 1,
                                            "layers": 2, "full_layers": 2},
            "model_config": m.config, "ceilings": _ceil_doc(TOY), "provenance": {"device": {"name": "toy"}},
            "scenarios": [sc]}


def test_golden_breakdown():
    rec = hand_record()
    ex = explain_record(rec).to_dict()
    s = ex["scenarios"][0]
    f = Floors.of(resolve_model("tiny-llama"), TOY)
    floors = [prefill_cost(f, 1, 4).floor_s, decode_cost(f, 1, 4).floor_s, decode_cost(f, 1, 5).floor_s]
    pre, dec = s["breakdown"]["prefill"], s["breakdown"]["decode"]
    # floor parts: every step here is memory-bound on the toy card
    assert pre["weights_s"] + pre["kv_read_s"] + pre["kv_write_s"] == pytest.approx(floors[0])
    assert pre["above_floor_s"] == pytest.approx(floors[0])                 # measured = 2 x floor
    assert pre["host_in_step_s"] == pytest.approx(0.0005)
    assert pre["host_between_steps_s"] == pytest.approx(0.001)
    assert dec["above_floor_s"] == pytest.approx(floors[1] + floors[2])
    assert dec["host_in_step_s"] == pytest.approx(0.001)
    assert dec["host_between_steps_s"] == pytest.approx(0.0002 * 2 + 0.0003)
    assert s["phase_time_s"]["prefill"] == pytest.approx(sum(pre.values()))
    assert s["phase_time_s"]["prefill"] + s["phase_time_s"]["decode"] == pytest.approx(rec["scenarios"][0]["runs"][0]["wall_s"])
    assert s["explained"] and not [f for f in s["flags"] if f["kind"] == "faster_than_floor"]
    assert s["tps"]["efficiency"] == pytest.approx(s["tps"]["measured"] / s["tps"]["ceiling"])
    assert 0 < s["ttft"]["efficiency"] < 1 and 0 < s["tpot"]["efficiency"] < 1
    assert s["achieved"]["decode"]["bandwidth_fraction"] == pytest.approx(0.5, rel=1e-6)   # 2 x floor: half the roof


def test_incomplete_record_is_flagged():
    rec = hand_record()
    rec.update(status="interrupted")
    flags = explain_record(rec).to_dict()["scenarios"][0]["flags"]
    assert any(f["kind"] == "record_incomplete" and "interrupted" in f["message"] for f in flags)


def test_faster_than_floor_is_flagged_not_explained():
    ex = explain_record(hand_record(scale=0.25)).to_dict()            # every step at half its floor
    s = ex["scenarios"][0]
    assert not s["explained"] and s["breakdown"] is None
    flag = next(f for f in s["flags"] if f["kind"] == "faster_than_floor")
    assert "HBM bandwidth" in flag["message"]


def test_cli_explain_bad_inputs(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{}")
    r = subprocess.run([sys.executable, "-m", "llmprobe", "explain", str(bad)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "not an llmprobe run record" in r.stderr and "Traceback" not in r.stderr
    r = subprocess.run([sys.executable, "-m", "llmprobe", "explain", str(tmp_path / "none.json")], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 2 and "no such" in r.stderr
    partial = tmp_path / "partial.json"
    partial.write_text(json.dumps({"schema_version": 1, "scenarios": [
        {"batch": 1, "prompt_len": 1, "gen_len": 1, "runs": [], "summary": {}}]}))
    for cmd in ("explain", "compare"):
        r = subprocess.run([sys.executable, "-m", "llmprobe", cmd, str(partial)], capture_output=True, text=True, timeout=60)
        assert r.returncode == 2 and "has no config" in r.stderr and "Traceback" not in r.stderr
    r = subprocess.run([sys.executable, "-m", "llmprobe", "roofline", "--gpu", "h100", "--model", "mixtral", "--plot",
                        str(tmp_path / "missing" / "dir" / "x.png")], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "No such file or directory" in r.stderr and "Traceback" not in r.stderr


# ---- the real pipeline on CPU: ceilings measured, vLLM profiled, explained ------------------------

@pytest.fixture(scope="module")
def cpu_pipeline(tmp_path_factory):
    pytest.importorskip("vllm")
    d = tmp_path_factory.mktemp("pipeline")
    env = {**os.environ, "LLMPROBE_CACHE_DIR": str(d / "cache")}

    def cli(*args):
        r = subprocess.run([sys.executable, "-m", "llmprobe", *args], capture_output=True, text=True, timeout=900, env=env)
        assert r.returncode == 0, r.stderr[-3000:]
        return r
    # a neighbour busy beside the ceilings or the runs makes steps beat floors measured under a different load;
    # explain flags it (busy_host) and leaves the scenario unexplained, so such a pipeline is measured again,
    # at most twice, and the last one is tested
    for _ in range(3):
        cli("roofline", "--quick", "--remeasure", "--json")
        # small-llama: ~1 GB of bf16 weights, twice this machine's 480 MiB LLC, so DRAM bandwidth is the roof
        cli("profile", "--model", "small-llama", "--batch", "1,4", "--prompt-len", "32", "--gen-len", "8", "--runs", "2",
            "--enforce-eager", "--out", str(d / "run.json"))
        doc = json.loads(cli("explain", str(d / "run.json"), "--report", str(d / "report"), "--json").stdout)
        if not any(f["kind"] == "busy_host" for s in doc["scenarios"] for f in s["flags"]):
            break
    return d, doc


@pytest.mark.vllm
@pytest.mark.slow
def test_cpu_pipeline_explained(cpu_pipeline):
    d, doc = cpu_pipeline
    rec = json.loads((d / "run.json").read_text())
    assert rec["ceilings"]["device"] == "cpu"                      # the measured CPU ceilings travelled along
    for s, sc in zip(doc["scenarios"], rec["scenarios"]):
        assert s["ceilings_source"] == "measured"
        assert s["explained"], s["flags"]
        for key in ("ttft", "tpot"):
            assert 0 < s[key]["efficiency"] <= 1
        assert 0 < s["tps"]["efficiency"] <= 1
        wall = sum(r["wall_s"] for r in sc["runs"]) / len(sc["runs"])
        total = sum(sum(parts.values()) for parts in s["breakdown"].values())
        assert total == pytest.approx(wall, rel=1e-9)
        assert min(v for parts in s["breakdown"].values() for v in parts.values()) >= 0, s["breakdown"]
        assert 0 < s["achieved"]["decode"]["bandwidth_fraction"] <= 1
    files = doc["report_files"]
    # figures are named after their record
    assert {os.path.basename(f) for f in files} == {"report.md", "report.html", "run-roofline.png", "run-breakdown.png",
                                                    "run-steps.png"}
    assert all(os.path.getsize(f) > 1000 for f in files)


def test_layer_sampled_record_is_extrapolated():
    pytest.importorskip("transformers")
    from llmprobe.profiling import Scenario, profile
    rec = profile("small-llama", [Scenario(1, 8, 4)], backend="hf", runs=1, warmup=1, layers=3, measure_ceilings=False)
    ex = explain_record(rec, gpu="h100-sxm").to_dict()           # explained against a datasheet, and labelled so
    s = ex["scenarios"][0]
    assert s["ceilings_source"] == "datasheet" and any(f["kind"] == "datasheet_ceilings" for f in s["flags"])
    assert s["extrapolated"]["label"] == "extrapolated from 3 to 8 layers"
    assert s["extrapolated"]["tps"] < s["tps"]["measured"]   # twice the layers cannot be faster


def async_record() -> dict:
    """The record of an async GPU engine: each step's host interval ends long before its device work
    (host 0.2 ms, device 3 x floor), so device time runs into the gaps between steps."""
    rec = hand_record()
    f = Floors.of(resolve_model("tiny-llama"), TOY)
    run = rec["scenarios"][0]["runs"][0]
    t = 0.001
    for st in run["steps"]:
        floor = step_cost(f, [(q, c) for _, q, c, _ in st["seqs"]]).floor_s
        st.update(t_start_s=t, t_end_s=t + 0.0002, host_ms=0.2, device_ms=3 * floor * 1e3)
        t += 0.0003
    run["wall_s"] = run["steps"][0]["t_start_s"] + sum(s["device_ms"] for s in run["steps"]) / 1e3 + 0.0004
    return rec


def test_device_time_past_the_host_is_not_negative_host_time():
    rec = async_record()
    run = rec["scenarios"][0]["runs"][0]
    s = explain_record(rec).to_dict()["scenarios"][0]
    assert s["explained"]
    parts = [v for ph in s["breakdown"].values() for v in ph.values()]
    assert min(parts) >= 0, s["breakdown"]
    assert sum(parts) == pytest.approx(run["wall_s"])
    dec = s["breakdown"]["decode"]
    # device work ran back to back after the first 1 ms: nothing of it is counted as host time twice
    assert dec["host_between_steps_s"] == pytest.approx(0.0004)
    assert s["breakdown"]["prefill"]["host_between_steps_s"] == pytest.approx(0.001)


def test_timeline_clips_at_the_wall_time():
    from llmprobe.records import Run
    run = async_record()["scenarios"][0]["runs"][0]
    run["wall_s"] = run["steps"][-1]["t_end_s"]          # the device ran past the end of the run's clock
    spans = Run.from_dict(run, "run").timeline()
    assert all(v >= 0 for sp in spans for v in sp.values())
    assert sum(sp.get("gap_s", 0) + sp.get("span_s", 0) + sp.get("tail_s", 0) for sp in spans) == pytest.approx(run["wall_s"])


def test_hf_batched_mm_decode_is_flagged():
    rec = hand_record()
    rec["engine"] = {"backend": "hf", "args": {"experts_implementation": {"configured": "grouped_mm",
                                                                          "prefill": "grouped_mm", "decode": "batched_mm"}}}
    flags = explain_record(rec).to_dict()["scenarios"][0]["flags"]
    assert any(f["kind"] == "moe_implementation" and "batched_mm" in f["message"] for f in flags)


def test_batch_split_and_busy_host_are_flagged():
    rec = hand_record()
    sc = rec["scenarios"][0]
    sc["admission"] = {"method": "none", "batch": 8, "first_step_requests": [1], "split_runs": [0]}
    sc["host_load"] = {"wall_s": 10.0, "cores": 2, "own_cpu_s": 10.0, "other_cpu_s": 9.0, "other_cores": 0.9,
                       "steal_s": 0.0, "steal_share": 0.0, "busy": True,
                       "reasons": ["other processes used 0.90 of 2 core(s) during the runs"]}
    kinds = {f["kind"] for f in explain_record(rec).to_dict()["scenarios"][0]["flags"]}
    assert {"batch_split", "busy_host"} <= kinds


def test_moe_steps_between_the_topk_and_uniform_floors_are_explained():
    """Tokens that share experts touch fewer than uniform routing predicts: under the expected-experts
    floor is possible, under the top-k minimum is not."""
    m = resolve_model("tiny-mixtral")
    f = Floors.of(m, TOY)
    seqs = [[f"r{i}", 1, 8, "d"] for i in range(8)]
    rows = [(q, c) for _, q, c, _ in seqs]
    expected, low = step_cost(f, rows).floor_s, step_cost(f, rows, optimistic=True).floor_s
    assert low < expected
    rec = hand_record()
    rec["config"]["model"], rec["model_config"] = "tiny-mixtral", m.config
    run = rec["scenarios"][0]["runs"][0]
    t = (low + expected) / 2 if low * 1.05 < expected else expected * 0.99
    run["steps"] = [_step(0, seqs, 0.0, host_ms=t * 1e3 + 0.1, device_ms=t * 1e3)]
    run["wall_s"] = run["steps"][0]["t_end_s"] + 0.0001
    s = explain_record(rec).to_dict()["scenarios"][0]
    assert s["explained"] and any(f["kind"] == "routing_concentrated" for f in s["flags"])
    assert min(v for ph in s["breakdown"].values() for v in ph.values()) >= 0
    run["steps"][0]["device_ms"] = low * 0.5 * 1e3                  # under the top-k minimum: not explained
    assert not explain_record(rec).to_dict()["scenarios"][0]["explained"]


def test_extrapolated_ttft_averages_only_runs_that_have_one():
    """A run whose record holds no prefill step has no TTFT: it must not count as a TTFT of 0."""
    import copy
    rec = hand_record()
    rec["config"]["full_layers"] = 4                     # explained as 2 of 4 layers: extrapolated
    sc = rec["scenarios"][0]
    one = copy.deepcopy(sc["runs"][0])
    for st in one["steps"]:
        st["prefill_tokens"] = 0
    sc["runs"].append(one)
    ex = explain_record(rec).to_dict()["scenarios"][0]["extrapolated"]
    alone = explain_record(hand_record() | {"config": rec["config"]}).to_dict()["scenarios"][0]["extrapolated"]
    assert ex["ttft_s"] == pytest.approx(alone["ttft_s"])


def _mixtral_step_record(experts: dict | None, t_over_floor: float):
    """tiny-mixtral, one decode step of 8 tokens that touched `experts` per layer, taking `t_over_floor` x the
    floor priced on that coverage."""
    m = resolve_model("tiny-mixtral")
    f = Floors.of(m, TOY)
    seqs = [[f"r{i}", 1, 8, "d"] for i in range(8)]
    touched = sum(experts["distinct"]) if experts else None
    t = step_cost(f, [(1, 8)] * 8, experts_touched=touched).floor_s * t_over_floor
    rec = hand_record()
    rec["config"].update(model="tiny-mixtral", routing="as-loaded")
    rec["model_config"] = m.config
    run = rec["scenarios"][0]["runs"][0]
    run["steps"] = [{**_step(0, seqs, 0.0, host_ms=t * 1e3 + 0.1, device_ms=t * 1e3), "experts": experts}]
    run["wall_s"] = run["steps"][0]["t_end_s"] + 0.0001
    return rec


def test_moe_steps_are_priced_on_the_coverage_they_measured():
    """A step whose 8 tokens touched 3 experts per layer is explained against 3 experts' bytes: at 1.5x that
    floor it is explained, with no escape flag; at 0.5x it ran faster than physics and is not."""
    few = {"distinct": [3, 3], "max_load": [6, 6], "routed_tokens": 8}
    s = explain_record(_mixtral_step_record(few, 1.5)).to_dict()["scenarios"][0]
    assert s["explained"] and not any(f["kind"] == "routing_concentrated" for f in s["flags"])
    cov = s["experts"]["decode"]
    assert cov["measured"] == 3 and cov["expected"] == pytest.approx(8 * (1 - (6 / 8) ** 8))
    assert cov["top_k_minimum"] == 2 and cov["max_load"] == 6
    low = next(f for f in s["flags"] if f["kind"] == "low_expert_coverage")
    assert "3.00 of 8" in low["message"] and "--routing trained-like" in low["message"]
    assert not explain_record(_mixtral_step_record(few, 0.5)).to_dict()["scenarios"][0]["explained"]


def test_energy_per_token_is_reported():
    from llmprobe.records import Run, ScenarioResult
    rec = hand_record()
    sc = rec["scenarios"][0]
    run = sc["runs"][0]
    run["energy_j"] = 6.0                                        # 3 output tokens: 2 J each
    summary = ScenarioResult.of(1, 4, 3, [Run.from_dict(run, "run")], []).summary
    assert summary["joules_per_token"].median == pytest.approx(2.0)
    sc["summary"]["joules_per_token"] = summary["joules_per_token"].to_dict()
    rec["provenance"]["device"]["power_limit_w"] = 700.0
    en = explain_record(rec).to_dict()["scenarios"][0]["energy"]
    assert en["joules_per_output_token"] == pytest.approx(2.0) and en["power_limit_w"] == 700.0 and en["gpus"] == 1
    del run["energy_j"], sc["summary"]["joules_per_token"]
    assert "energy" not in explain_record(rec).to_dict()["scenarios"][0]
    assert "joules_per_token" not in ScenarioResult.of(1, 4, 3, [Run.from_dict(run, "run")], []).summary


def test_metered_run_carries_its_energy():
    from llmprobe.profiling import _metered
    from llmprobe.records import Run

    class Counter:   # NVML's total-energy counter, in mJ, as a sequence of readings
        def __init__(self, readings):
            self.readings = iter(readings)

        def read_mj(self):
            return next(self.readings)
    run = _metered(Counter([1_000, 4_500]), lambda: Run(wall_s=1.0, steps=[], requests=[]))
    assert run.energy_j == pytest.approx(3.5)
    assert Run.from_dict(run.to_dict(), "run").energy_j == pytest.approx(3.5)
    assert "energy_j" not in _metered(None, lambda: Run(wall_s=1.0, steps=[], requests=[])).to_dict()
    assert "energy_j" not in _metered(Counter([None, 5]), lambda: Run(wall_s=1.0, steps=[], requests=[])).to_dict()
