import json
import math
import subprocess
import sys
import time

import pytest

from llmprobe.timing import HostClock, bench, relative_spread, summarize


def test_summarize_names_every_statistic():
    s = summarize([3.0, 1.0, 2.0, 10.0])
    # numpy.percentile([1, 2, 3, 10], 90) = 3 + 0.7 * 7 = 7.9; p99 = 3 + 0.97 * 7 = 9.79
    assert s == {"n": 4, "mean": 4.0, "median": 2.5, "min": 1.0, "max": 10.0, "stdev": pytest.approx(4.0825, abs=1e-4),
                 "p90": pytest.approx(7.9), "p99": pytest.approx(9.79),
                 "median_ci": {"low": 1.0, "high": 10.0, "level": 0.875}}
    assert summarize([])["median"] is None and summarize([5.0])["stdev"] == 0.0 and summarize([5.0])["median_ci"] is None
    # the interval of the median narrows with more runs (order statistics of binomial(n, 1/2)), min-max does not
    wide = summarize([float(i) for i in range(1, 31)])["median_ci"]
    assert (wide["low"], wide["high"]) == (10.0, 21.0) and wide["level"] == pytest.approx(0.9572, abs=1e-4)
    assert relative_spread(summarize([9.0, 10.0, 11.0])) == pytest.approx(0.2)


class FakeClock(HostClock):
    """A host clock whose calls each 'take' exactly 2 ms: the timer must report 2 ms."""

    def __init__(self):
        self.t = 0.0

    def event(self):
        return self.t


def test_bench_times_each_call_and_flushes_outside():
    clock = FakeClock()
    order = []

    def fn():
        clock.t += 0.002
        order.append("fn")

    def flush():
        clock.t += 1.0      # a flush costs time, but it happens before the start event
        order.append("flush")
    t = bench(fn, clock, warmup_s=0.01, rep_s=0.02, flush=flush, rerandomize=lambda: order.append("rand"))
    assert all(x == pytest.approx(0.002) for x in t.samples_s)
    assert len(t.samples_s) == 10 and t.warmup_calls == 5     # 20 ms / 2 ms and 10 ms / 2 ms
    timed = order[order.index("rand"):]
    assert timed[:3] == ["rand", "flush", "fn"]


def test_bench_on_real_host_clock():
    t = bench(lambda: time.sleep(0.001), warmup_s=0.005, rep_s=0.02)
    assert 0.0009 < t.median_s < 0.05 and t.stats["n"] >= 5


def test_cpu_ceilings_are_positive_and_physical(tmp_path, monkeypatch):
    pytest.importorskip("torch")
    monkeypatch.setenv("LLMPROBE_CACHE_DIR", str(tmp_path))
    r = subprocess.run([sys.executable, "-m", "llmprobe", "roofline", "--quick", "--model", "tiny-llama", "--json"],
                       capture_output=True, text=True, timeout=600, env={**__import__("os").environ,
                                                                          "LLMPROBE_CACHE_DIR": str(tmp_path)})
    assert r.returncode == 0, r.stderr[-2000:]
    doc = json.loads(r.stdout)
    m = doc["measured"]
    assert m["device"] == "cpu"
    assert 1e9 < m["bandwidth_bytes_per_s"] < 1e12          # DRAM: more than 1 GB/s, less than 1 TB/s
    assert 1e8 < m["flops"]["fp32"] < 1e14
    assert {"name", "kind", "dtype", "value", "valid"} <= set(m["methods"][0])
    assert all(x["valid"] for x in m["methods"])
    assert doc["gpu"]["kind"] == "measured" and doc["gpu"]["hbm_bytes_per_s"] == m["bandwidth_bytes_per_s"]
    assert doc["scenarios"] and all(math.isfinite(s["tps_ceiling"]) for s in doc["scenarios"])
    # the bf16 ceiling is the best layout, within 20% of F.linear (x @ W^T, what every linear layer
    # runs) timed here independently on an LLM-like shape
    mm = next(x for x in m["methods"] if x["name"] == "torch.matmul" and x["dtype"] == "bf16")
    assert {p["layout"] for p in mm["sweep"]} >= {"nt"} and mm["best_params"]["layout"] in ("nt", "nn")
    assert m["flops"]["bf16"] >= 0.8 * _linear_bf16_rate()
    # saved and reused: a second call measures nothing and returns the same figures
    t0 = time.perf_counter()
    r2 = subprocess.run([sys.executable, "-m", "llmprobe", "roofline", "--json"], capture_output=True, text=True,
                        timeout=600, env={**__import__("os").environ, "LLMPROBE_CACHE_DIR": str(tmp_path)})
    assert r2.returncode == 0 and json.loads(r2.stdout)["measured"]["bandwidth_bytes_per_s"] == m["bandwidth_bytes_per_s"]
    assert time.perf_counter() - t0 < 30


def _linear_bf16_rate() -> float:
    import torch
    import torch.nn.functional as F
    x, w = torch.randn(512, 2048, dtype=torch.bfloat16), torch.randn(2048, 2048, dtype=torch.bfloat16)
    F.linear(x, w)
    times = []
    for _ in range(7):
        t0 = time.perf_counter()
        F.linear(x, w)
        times.append(time.perf_counter() - t0)
    return 2 * 512 * 2048 * 2048 / sorted(times)[len(times) // 2]


def test_gpu_only_methods_without_gpu_name_the_install():
    pytest.importorskip("torch")
    import torch
    if torch.cuda.is_available():
        pytest.skip("has a GPU")
    r = subprocess.run([sys.executable, "-m", "llmprobe", "roofline", "--methods", "cupy"], capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 2 and "pip install" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.gpu
def test_gpu_measurement_meets_basic_sanity(tmp_path, monkeypatch):
    monkeypatch.setenv("LLMPROBE_CACHE_DIR", str(tmp_path))
    from llmprobe.microbench import measure
    m = measure("quick")
    assert m.device == "cuda" and m.bandwidth_bytes_per_s > 1e11 and m.flops.get("bf16", 0) > 1e13
    failed = [r.name for r in m.methods if not r.valid and "not installed" not in (r.error or "")]
    assert not failed, failed


def _measurement(methods, device="cuda", name="NVIDIA H100 80GB HBM3"):
    from llmprobe.hardware import gpu_catalog
    from llmprobe.microbench.result import Measurement
    return Measurement(device=device, fingerprint={"name": name, "memory_bytes": 85e9}, methods=methods, mode="quick",
                       methodology="ceilings-2", provenance={}, datasheet=gpu_catalog()["h100-sxm"])


def test_measured_ceilings_without_a_valid_bandwidth_are_refused():
    from llmprobe.errors import UserError
    from llmprobe.microbench.result import MethodResult, ceilings_from_record
    m = _measurement([MethodResult("torch.copy_", "bandwidth", "fp32", None, False, "wrong result"),
                      MethodResult("torch.matmul", "flops", "bf16", 7e14, True)])
    with pytest.raises(UserError, match="no bandwidth method gave a valid figure.*torch.copy_: wrong result"):
        m.ceilings()
    assert m.to_dict()["ceilings"] is None          # still saved, with its failures, but no ceilings
    with pytest.raises(UserError, match="no bandwidth method gave a valid figure"):
        ceilings_from_record(m.to_dict())


def test_figures_not_measured_are_labelled():
    from llmprobe.microbench.result import MethodResult, ceilings_from_record
    m = _measurement([MethodResult("triton.read", "bandwidth", "fp32", 3.1e12, True),
                      MethodResult("torch.matmul", "flops", "bf16", 7e14, True)])
    c = m.ceilings()
    assert c.peak_flops["fp16"] == 7e14 and "bf16" in c.not_measured["peak_flops.fp16"]
    assert "datasheet" in c.not_measured["interconnect_bytes_per_s"] and "memory_bytes" not in c.not_measured
    assert ceilings_from_record(m.to_dict()).not_measured == c.not_measured
    both = _measurement(m.methods + [MethodResult("torch.matmul", "flops", "fp16", 7.1e14, True)]).ceilings()
    assert "peak_flops.fp16" not in both.not_measured


def test_floors_use_the_best_read_kernel_not_the_best_stream():
    from llmprobe.microbench.result import MethodResult, ceilings_from_record
    streams = [MethodResult("triton.write", "bandwidth", "fp32", 3.29e12, True),
               MethodResult("triton.read", "bandwidth", "fp32", 3.14e12, True),
               MethodResult("cupy.read_v4", "bandwidth", "fp32", 3.10e12, True),
               MethodResult("torch.copy_", "bandwidth", "fp32", 3.06e12, True)]
    m = _measurement(streams)
    c = m.ceilings()
    assert (c.hbm_bytes_per_s, c.bandwidth_method, c.mode) == (3.14e12, "triton.read", "quick")
    assert "hbm_bytes_per_s" not in c.not_measured
    d = m.to_dict()
    assert d["best_stream_bytes_per_s"] == 3.29e12 and d["bandwidth_method"] == "triton.read"
    # a saved measurement is read by today's rule, whatever ceilings it stored
    d["ceilings"]["hbm_bytes_per_s"] = 3.29e12
    assert ceilings_from_record(d).hbm_bytes_per_s == 3.14e12
    # no read kernel: the best stream stands in, and the ceilings say so
    c = _measurement([streams[0], streams[3]]).ceilings()
    assert c.hbm_bytes_per_s == 3.29e12 and "no read kernel" in c.not_measured["hbm_bytes_per_s"]


def test_the_h100_llama_slice_is_explained_on_the_read_kernel_and_says_which_ceiling():
    from llmprobe.explain import explain_record
    from llmprobe.records import load_run_record
    ex = explain_record(load_run_record("docs/measurements/h100-sxm-2026-11-27/vllm/profile-llama-2-70b.json"))
    b1 = next(s for s in ex["scenarios"] if s["batch"] == 1)
    assert (b1["bandwidth_method"], b1["ceilings_mode"]) == ("triton.read", "quick")
    assert 0.86 < b1["tpot"]["efficiency"] < 0.90          # 83% against the write kernel before (issue 26)
    quick = [f for f in b1["flags"] if f["kind"] == "quick_ceiling"]
    assert quick and "prefill" in quick[0]["message"]       # its prefill is compute-bound, on a one-shape ceiling
