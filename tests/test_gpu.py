"""GPU-only checks: skipped without a CUDA GPU (the `gpu` marker), run on the GPU machine."""

import pytest

from llmprobe.explain import explain_record
from llmprobe.profiling import Scenario, profile

pytestmark = pytest.mark.gpu


def _check_device_times(rec):
    """Device time is real and physical: positive, never under the step's floor, and never longer than
    the wall time it could have run in (its host interval plus the gap to the next step's start)."""
    doc = rec.to_dict()     # profile returns the typed RunRecord; the checks read the document it writes
    run = doc["scenarios"][0]["runs"][0]
    steps = run["steps"]
    assert doc["provenance"]["device"]["kind"] == "cuda"
    assert all(s["device_ms"] is not None and s["device_ms"] > 0 for s in steps)
    for st, nxt in zip(steps, steps[1:] + [None]):
        window_s = (nxt["t_start_s"] if nxt else run["wall_s"]) - st["t_start_s"]
        assert st["device_ms"] / 1e3 <= window_s * 1.01 + 50e-6, st
    flags = explain_record(rec, gpu="h100-sxm").to_dict()["scenarios"][0]["flags"]
    assert not [f for f in flags if f["kind"] == "faster_than_floor"], flags


def test_hf_profile_has_device_timers(tmp_path):
    _check_device_times(profile("tiny-llama", [Scenario(2, 16, 4)], backend="hf", runs=1, warmup=1))


def test_vllm_profile_has_device_timers():
    pytest.importorskip("vllm")
    _check_device_times(profile("tiny-llama", [Scenario(2, 16, 4)], backend="vllm", runs=1, warmup=1,
                                engine_options={"enforce_eager": True, "gpu_memory_utilization": 0.3}))


def test_microsecond_kernels_are_timed_from_a_cuda_graph():
    """timing.bench's graph path on the real clock: a tiny kernel is captured, every replay runs each captured
    call once (the untimed upload, then one replay per sample), and the figure is no slower than eager launches."""
    import torch

    from llmprobe.timing import CudaClock, bench
    x = torch.zeros(1024, device="cuda")
    launched = 0

    def fn():
        nonlocal launched
        launched += 1
        x.add_(1.0)
    t = bench(fn, CudaClock(), warmup_s=0.01, rep_s=0.05)
    n = t.calls_per_sample
    assert t.mode == "cuda_graph" and n > 1
    # eager calls add when launched; the n captured at capture time add only when replayed
    assert x[0].item() == launched - n + (len(t.samples_s) + 1) * n
    again = bench(fn, CudaClock(), warmup_s=0.01, rep_s=0.05, rerandomize=x.zero_)
    assert x[0].item() == again.calls_per_sample       # reset before each replay: the last replay's calls remain
    eager = bench(fn, CudaClock(), warmup_s=0.01, rep_s=0.05, graph=False)
    assert eager.mode == "batch" and 0 < t.median_s <= 1.2 * eager.median_s


def test_a_models_small_gemms_are_timed_from_a_graph():
    """A decode-sized GEMM (16 rows) is a microsecond call: bf16 and fp8 time it from a CUDA graph, validated
    first and with the output re-randomized; the large square stays one event pair per call."""
    import torch

    from llmprobe.microbench.gpu import Suite
    suite = Suite("quick", {"torch"}, model_shapes=((16, 4096, 4096),))
    methods = [suite.torch_matmul("bf16")]
    if torch.cuda.get_device_capability() >= (8, 9):
        methods.append(suite.torch_fp8())
    for r in methods:
        assert r.valid, (r.name, r.error)
        small = [p for p in r.sweep if p["shape"] == [16, 4096, 4096]]
        big = [p for p in r.sweep if p["shape"] == [8192, 8192, 8192]]
        assert small and all(p["mode"] == "cuda_graph" and p["calls_per_sample"] > 1 for p in small), r.name
        assert all(p["mode"] == "per_call" for p in big) and all(p["samples_s"] for p in r.sweep), r.name
