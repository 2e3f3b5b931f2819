"""Typed run records: committed records load, round-trip without losing a field, and bad files are refused."""

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from llmprobe.records import RecordError, RunRecord, SeqRow, load_json, load_run_record

ROOT = Path(__file__).resolve().parent.parent
def _run_records() -> list[str]:
    """Every run record committed under docs/measurements, plain or gzipped."""
    from llmprobe.records import load_json
    out = []
    for p in sorted((ROOT / "docs" / "measurements").rglob("*.json*")):
        if p.suffix in (".json", ".gz") and p.stat().st_size < 64 << 20:
            doc = load_json(p)
            if isinstance(doc, dict) and doc.get("kind") == "llmprobe.run":
                out.append(str(p.relative_to(ROOT)))
    return out


COMMITTED = _run_records()


def _contains(a, b, path="") -> None:
    """Every key and value of ``a`` is in ``b`` (floats to the last few digits: a run's metrics and phase totals
    are derived from its steps and requests, not read back, and older versions summed in another order)."""
    if isinstance(a, dict):
        for k in a:
            assert k in b, f"{path}/{k} lost"
            _contains(a[k], b[k], f"{path}/{k}")
    elif isinstance(a, list):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            _contains(x, y, f"{path}[{i}]")
    elif isinstance(a, float) and isinstance(b, float):   # metrics and phase totals are recomputed on load
        assert math.isclose(a, b, rel_tol=1e-12, abs_tol=1e-15), (path, a, b)
    else:
        assert a == b, (path, a, b)


@pytest.mark.parametrize("path", COMMITTED)
def test_committed_records_round_trip(path):
    rec = load_run_record(ROOT / path)
    doc = load_json(ROOT / path)
    _contains(doc, rec.to_dict())
    assert RunRecord.from_dict(rec.to_dict()) == rec
    st = rec.scenarios[0].runs[0].steps[0]
    assert isinstance(st.seqs[0], SeqRow) and st.work == [(r.new, r.cached) for r in st.seqs]


@pytest.mark.parametrize("doc,needle", [
    ({"hello": 1}, "not an llmprobe run record"),
    ({"schema_version": 9, "scenarios": [], "config": {"model": "m"}}, "schema 9"),
    ({"schema_version": 1, "scenarios": [{"batch": 1}], "config": {"model": "m"}}, "scenario 0: lacks"),
    ({"schema_version": 1, "config": {"model": "m"}, "scenarios": [
        {"batch": 1, "prompt_len": 2, "gen_len": 2, "summary": {k: {"median": 1} for k in
                                                              ("ttft_s", "tpot_s", "total_latency_s", "tps")},
         "runs": [{"wall_s": 1.0, "requests": [], "steps": [
             {"index": 0, "t_start_s": 0, "t_end_s": 1, "host_ms": 1, "device_ms": None, "seqs": [["r", 2, 0]]}]}]}]},
     "scenario 0 run 0 step 0: a sequence row must be"),
])
def test_malformed_records_are_refused_in_one_line(tmp_path, doc, needle):
    with pytest.raises(RecordError, match=needle):
        RunRecord.from_dict(doc)
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(doc))
    r = subprocess.run([sys.executable, "-m", "llmprobe", "explain", str(bad)], capture_output=True, text=True)
    assert r.returncode == 2 and needle.split(":")[0] in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_keys_a_step_does_not_type_survive_a_round_trip():
    """A tensor-parallel step carries every rank's times: loading and saving a record must not drop them."""
    from llmprobe.records import Step
    d = {"index": 0, "t_start_s": 0.0, "t_end_s": 0.01, "host_ms": 9.0, "device_ms": 8.5, "seqs": [["r0", 1, 7, "d"]],
         "rank_device_ms": [8.5, 8.1], "rank_host_ms": [9.0, 8.8], "sample_host_ms": 0.4}
    st = Step.from_dict(d, "test")
    assert st.extra == {"rank_device_ms": [8.5, 8.1], "rank_host_ms": [9.0, 8.8]} and st.sample_host_ms == 0.4
    back = st.to_dict()
    assert {k: back[k] for k in d} == d and "sample_device_ms" not in back


def test_a_tensor_parallel_record_round_trips_losslessly(tmp_path):
    """Every rank's step times, and keys a later version might add at any level, survive a load and a save: written
    again, the record is the file it was read from (bar the derived metrics and phase totals, recomputed)."""
    doc = load_json(ROOT / "docs/measurements/cpu-xeon-2026-11-26/profile-small-llama-vllm.json")
    doc["config"]["tp"] = 2
    doc["future_key"] = {"a": 1}
    for sc in doc["scenarios"]:
        sc["future_scenario_key"] = [1, 2]
        sc["phases"]["prefill"]["future_phase_key"] = 3
        for run in sc["runs"] + sc["warmup_runs"]:
            run["future_run_key"] = "x"
            for r in run["requests"]:
                r["future_request_key"] = None
            for st in run["steps"]:
                st["rank_device_ms"] = [st["host_ms"], st["host_ms"] * 0.9]
                st["rank_host_ms"] = [st["host_ms"], st["host_ms"] * 0.95]
    rec = RunRecord.from_dict(doc)
    back = rec.to_dict()
    _contains(doc, back)
    assert RunRecord.from_dict(json.loads(json.dumps(back))) == rec
    st = rec.scenarios[0].runs[0].steps[0]
    assert st.extra["rank_host_ms"] == [st.host_ms, st.host_ms * 0.95]
    assert rec.extra == {"future_key": {"a": 1}} and rec.scenarios[0].extra == {"future_scenario_key": [1, 2]}


def test_what_a_run_derives_is_recomputed_and_a_key_it_does_not_derive_is_refused():
    doc = load_json(ROOT / "docs/measurements/cpu-xeon-2026-11-26/profile-small-llama-vllm.json")
    run = doc["scenarios"][0]["runs"][0]
    run["metrics"]["tps"] = -1.0          # derived: recomputed from the steps and requests, not read back
    assert RunRecord.from_dict(doc).scenarios[0].runs[0].metrics.to_dict()["tps"] > 0
    run["metrics"]["future_metric"] = 1.0
    run["phases"]["decode"]["future_total"] = 2.0
    with pytest.raises(RecordError, match="scenario 0 run 0: holds metrics.future_metric, phases.decode.future_total, "
                                          "which this llmprobe does not derive"):
        RunRecord.from_dict(doc)


def test_expert_load_and_ceilings_keep_what_they_were_given():
    from llmprobe.hardware import Ceilings
    from llmprobe.records import ExpertLoad
    d = {"distinct": [3, 2], "max_load": [2, 3], "routed_tokens": 4, "future": [1]}
    assert ExpertLoad.from_dict(d, "test").to_dict() == d
    c = Ceilings("cpu", 3e10, {"bf16": 1e12}, 2e10, kind="measured", bandwidth_method="torch.sum", mode="quick")
    assert Ceilings.from_dict(c.to_dict()) == c


def test_a_typed_field_missing_from_a_nested_object_is_one_line():
    doc = load_json(ROOT / "docs/measurements/cpu-xeon-2026-11-26/profile-small-llama-vllm.json")
    del doc["scenarios"][0]["runs"][0]["requests"][0]["output_tokens"]
    with pytest.raises(RecordError, match="scenario 0 run 0 request 0: a request needs id and output_tokens"):
        RunRecord.from_dict(doc)
    doc = load_json(ROOT / "docs/measurements/cpu-xeon-2026-11-26/profile-small-llama-vllm.json")
    doc["scenarios"][0]["host_load"] = {"busy": True}
    with pytest.raises(RecordError, match="scenario 0 host_load: lacks cores, other_cores"):
        RunRecord.from_dict(doc)
