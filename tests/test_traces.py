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
