"""Invariants every run record must satisfy, whatever the backend (shared by the engine tests)."""

import json

import pytest

from llmprobe.records import Run, RunRecord, load_run_record


def check_run(typed: Run, batch: int, prompt_len: int, gen_len: int) -> None:
    """Checked in the form a reader sees: the run as the record file holds it."""
    run = typed.to_dict()
    reqs = run["requests"]
    assert len(reqs) == batch
    per_req: dict[str, list] = {r["id"]: [] for r in reqs}
    for st in run["steps"]:
        assert st["prefill_tokens"] == sum(s[1] for s in st["seqs"] if s[3] == "p")
        assert st["decode_tokens"] == sum(s[1] for s in st["seqs"] if s[3] == "d")
        assert st["mixed"] == (st["prefill_tokens"] > 0 and st["decode_tokens"] > 0)
        assert st["num_reqs"] == len(st["seqs"])
        assert st["host_ms"] > 0
        for rid, new, cached, kind in st["seqs"]:
            per_req[rid].append((kind, new, cached))
    for r in reqs:
        rows = per_req[r["id"]]
        kinds = [k for k, _, _ in rows]
        # one prefill (possibly in chunks), then gen_len - 1 single-token decode steps
        assert kinds == ["p"] * kinds.count("p") + ["d"] * (gen_len - 1)
        assert sum(n for k, n, _ in rows if k == "p") == prompt_len
        assert all(n == 1 for k, n, _ in rows if k == "d")
        assert [c for k, _, c in rows if k == "d"] == list(range(prompt_len, prompt_len + gen_len - 1))
        assert r["output_tokens"] == gen_len
        assert 0 < r["ttft_s"] < r["latency_s"] <= run["wall_s"]
    assert run["metrics"]["tps"] == pytest.approx(batch * gen_len / run["wall_s"])
    starts = [s["t_start_s"] for s in run["steps"]]
    assert starts == sorted(starts)
    adm = run["admission"]
    assert adm["batch"] == batch and adm["first_step_requests"] == run["steps"][0]["num_reqs"]
    assert adm["together"] or adm["chunked_by_token_budget"], adm   # a batch starts as one batch


def check_record(typed: RunRecord, tmp_path) -> None:
    rec = typed.to_dict()
    assert rec["schema_version"] == 1 and rec["status"] == "complete"
    for sc, tsc in zip(rec["scenarios"], typed.scenarios):
        for run in tsc.runs + tsc.warmup_runs:
            check_run(run, sc["batch"], sc["prompt_len"], sc["gen_len"])
        for k in ("ttft_s", "tpot_s", "total_latency_s", "tps"):
            s = sc["summary"][k]
            assert s["n"] == rec["config"]["runs"] and s["min"] <= s["median"] <= s["max"]
        # within each run (across runs a noisy machine can make one run's TTFT outlast another's latency)
        assert all(r["metrics"]["ttft_s"] < r["metrics"]["total_latency_s"] for r in sc["runs"])
    path = tmp_path / "rec.json"
    path.write_text(json.dumps(rec))
    assert load_run_record(path) == RunRecord.from_dict(json.loads(json.dumps(rec))) == typed
