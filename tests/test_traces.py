"""Inside traced steps: the class tables, the trace reader, and --trace-steps on the real engines."""

import gzip
import json
from pathlib import Path

import pytest

from llmprobe.traces import CLASSES, classify, load, steps

DATA = Path(__file__).parent / "data"


def test_vllm_gpu_table_covers_the_kernels_of_vllms_sources():
    doc = json.loads((DATA / "vllm_gpu_kernel_names.json").read_text())
    wrong = [(name[:70], want, classify("vllm-gpu", name)) for name, want, _ in doc["kernels"]
             if classify("vllm-gpu", name) != want]
    wrong += [(name[:70], want, classify("vllm-gpu", name, tuple(scopes))) for name, scopes, want, _ in doc["scoped"]
              if classify("vllm-gpu", name, tuple(scopes)) != want]
    assert not wrong
    # every class a Llama or Mixtral step needs is reached by some real kernel name
    assert {"dense_gemm", "moe_experts", "moe_routing", "attention", "elementwise", "communication"} <= \
        {want for _, want, _ in doc["kernels"]}


def test_an_unknown_kernel_is_other_not_dropped():
    assert classify("vllm-gpu", "my_custom_kernel_v2") == "other"
    assert "other" in CLASSES


def _write(tmp_path, events, gz=True):
    p = tmp_path / ("t.json.gz" if gz else "t.json")
    data = json.dumps({"traceEvents": events})
    if gz:
        with gzip.open(p, "wt") as f:
            f.write(data)
    else:
        p.write_text(data)
    return p


def _x(name, cat, ts, dur, tid=1, **args):
    return {"ph": "X", "name": name, "cat": cat, "ts": ts, "dur": dur, "pid": 1, "tid": tid, "args": args}


def test_cpu_self_times_inside_each_step_window(tmp_path):
    ev = [
        _x("execute_context_1(8)_generation_0(0)", "user_annotation", 0, 100),
        _x("aten::linear", "cpu_op", 10, 50), _x("aten::mm", "cpu_op", 15, 40),     # linear's self time: 10
        _x("gpu_model_runner: postprocess", "user_annotation", 70, 25), _x("aten::mm", "cpu_op", 72, 20),
        _x("llmprobe::sample_tokens", "user_annotation", 110, 30), _x("aten::argmax", "cpu_op", 115, 5),
        _x("aten::add", "cpu_op", 150, 9),                                          # between steps: nobody's
        _x("execute_context_0(0)_generation_1(1)", "user_annotation", 200, 40), _x("aten::mm", "cpu_op", 205, 30),
    ]
    st = steps(load(_write(tmp_path, ev)))
    assert [s.tokens for s in st] == [(8, 0), (0, 1)]
    first = {(n, round(t * 1e6)) for n, _, t in st[0].items}
    assert first == {("aten::linear", 10), ("aten::mm", 40), ("aten::mm", 20), ("aten::argmax", 5)}
    logits = next(sc for n, sc, t in st[0].items if round(t * 1e6) == 20)
    assert classify("vllm-cpu", "aten::mm", logits) == "lm_head"
    assert [(n, round(t * 1e6)) for n, _, t in st[1].items] == [("aten::mm", 30)]


def test_gpu_kernels_go_to_the_step_that_launched_them(tmp_path):
    ev = [
        _x("execute_context_0(0)_generation_2(2)", "user_annotation", 0, 50),
        _x("aten::mm", "cpu_op", 5, 10), _x("cudaLaunchKernel", "cuda_runtime", 6, 3, correlation=7),
        _x("nvjet_tst_64x8", "kernel", 60, 25, tid=7, correlation=7),    # runs after the host window: still this step's
        _x("cudaLaunchKernel", "cuda_runtime", 100, 3, correlation=8),   # launched outside any step
        _x("rms_norm_kernel", "kernel", 120, 4, tid=7, correlation=8),
    ]
    st = steps(load(_write(tmp_path, ev, gz=False)))
    assert len(st) == 1 and [(n, round(t * 1e6)) for n, _, t in st[0].items] == [("nvjet_tst_64x8", 25)]
    assert "aten::mm" in st[0].items[0][1]


def test_a_file_that_is_not_a_trace_is_one_line(tmp_path):
    from llmprobe.errors import UserError
    p = tmp_path / "x.json"
    p.write_text("{not json")
    with pytest.raises(UserError, match="cannot read trace"):
        load(p)


def test_cpu_tables_give_the_names_of_real_traces_their_reviewed_class():
    doc = json.loads((DATA / "trace_names.json").read_text())
    for table in ("vllm-cpu", "hf"):
        wrong = [(n, sc, want, classify(table, n, tuple(sc))) for n, sc, want in doc[table]
                 if classify(table, n, tuple(sc)) != want]
        assert not wrong, (table, wrong[:5])


# ---- --trace-steps on the real engines ------------------------------------------------------------

# vLLM: batch 32 at prompt 256 so that on 2 cores the operators, not vLLM's per-step Python (~1.5 ms of
# input preparation and bookkeeping, "unattributed"), make up most of a tiny model's decode step
RUNS = {("vllm", "tiny-llama"): ["--batch", "32", "--prompt-len", "256"],
        ("vllm", "tiny-mixtral"): ["--batch", "32", "--prompt-len", "256"],
        ("hf", "tiny-llama"): ["--batch", "8", "--prompt-len", "64"],
        ("hf", "tiny-mixtral"): ["--batch", "8", "--prompt-len", "64"]}


def _traced(tmp_path_factory, backend, model):
    import subprocess
    import sys
    out = tmp_path_factory.mktemp(f"trace-{backend}-{model}") / "run.json"
    r = subprocess.run([sys.executable, "-m", "llmprobe", "profile", "--backend", backend, "--model", model,
                        *RUNS[(backend, model)], "--gen-len", "8", "--runs", "1", "--warmup", "1", "--trace-steps", "4",
                        "--out", str(out)], capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    e = subprocess.run([sys.executable, "-m", "llmprobe", "explain", str(out), "--json"], capture_output=True,
                       text=True, timeout=300)
    assert e.returncode == 0, e.stderr[-3000:]
    return out, json.loads(out.read_text()), json.loads(e.stdout)


@pytest.fixture(scope="module", params=[k for k in RUNS if k[0] == "vllm"], ids=lambda k: "-".join(k))
def vllm_traced(request, tmp_path_factory):
    pytest.importorskip("vllm")
    return request.param, _traced(tmp_path_factory, *request.param)


@pytest.fixture(scope="module", params=[k for k in RUNS if k[0] == "hf"], ids=lambda k: "-".join(k))
def hf_traced(request, tmp_path_factory):
    pytest.importorskip("transformers")
    return request.param, _traced(tmp_path_factory, *request.param)


def _check(key, traced):
    path, record, explained = traced
    (sc,) = record["scenarios"]
    tr = sc["trace"]
    assert tr["steps_traced"] == {"prefill": 4, "decode": 4}
    assert tr["trace_files"] and all((path.parent / f).is_file() for f in tr["trace_files"])
    assert all(o > 0 for o in tr["overhead"].values())          # traced / untraced step time, measured
    assert sc["summary"]["tps"]["n"] == 1                        # the traced runs are not in the summary
    k = explained["scenarios"][0]["kernels"]
    want = {"attention", "dense_gemm"} | ({"moe_experts"} if "mixtral" in key[1] else set())
    for ph in ("prefill", "decode"):
        rows = {r["class"]: r for r in k[ph]}
        assert want <= rows.keys(), (ph, sorted(rows))
        assert 0.5 <= k["coverage"][ph] <= 1.0, (ph, k["coverage"][ph])
        step = k["step_time_s"][ph]
        assert all(r["time_s"] <= step for r in k[ph]) and sum(r["time_s"] for r in k[ph]) == pytest.approx(step)
        for c in want:
            assert rows[c]["floor_s"] > 0 and 0 < rows[c]["efficiency"], (ph, c, rows[c])
        assert k["headline"][ph]
    # class floors follow each traced step's own work: a prefill's attention outweighs one decode step's
    pre = {r["class"]: r for r in k["prefill"]}["attention"]["floor_s"]
    dec = {r["class"]: r for r in k["decode"]}["attention"]["floor_s"]
    assert pre > dec


@pytest.mark.vllm
@pytest.mark.slow
def test_trace_steps_on_vllm_gives_classes_floors_and_coverage(vllm_traced):
    _check(*vllm_traced)


@pytest.mark.slow
def test_trace_steps_on_hf_gives_classes_floors_and_coverage(hf_traced):
    _check(*hf_traced)


@pytest.mark.vllm
@pytest.mark.slow
def test_explain_shows_the_classes_and_draws_them(vllm_traced, tmp_path):
    import subprocess
    import sys
    (_, model), (path, _, _) = vllm_traced
    r = subprocess.run([sys.executable, "-m", "llmprobe", "explain", str(path), "--report", str(tmp_path)],
                       capture_output=True, text=True, timeout=300, env={**__import__("os").environ, "COLUMNS": "120"})
    assert r.returncode == 0, r.stderr[-2000:]
    assert "Inside the decode step" in r.stdout and "attention" in r.stdout
    assert (tmp_path / "run-kernels.png").stat().st_size > 10_000
    assert "Inside the prefill step" in (tmp_path / "report.md").read_text()
