import json
import math
import statistics
import subprocess
import sys
import time

import pytest

from llmprobe.timing import MAX_CALLS_PER_SAMPLE, SAMPLES_KEPT, HostClock, Timing, bench, relative_spread, summarize


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


class StepClock(FakeClock):
    """A fake clock that can also 'capture' a graph: its replay runs the captured calls, and it counts them."""
    graphs = True

    def __init__(self):
        super().__init__()
        self.captured, self.replays = [], 0

    def capture(self, fn, calls):
        self.captured.append(calls)

        def replay():
            self.replays += 1
            for _ in range(calls):
                fn()
        return replay


def _short_call(clock, seconds=5e-6):
    def fn():
        clock.t += seconds
    return fn


def test_microsecond_calls_are_timed_from_a_graph_where_the_clock_can_capture():
    clock = StepClock()
    flushes = []
    t = bench(_short_call(clock), clock, warmup_s=0.001, rep_s=0.02, flush=lambda: flushes.append(clock.t))
    # a 5 us call: 200 per sample (1 ms), from one graph replayed once per sample after an untimed upload
    assert (t.mode, t.calls_per_sample, clock.captured) == ("cuda_graph", 200, [200])
    assert clock.replays == len(t.samples_s) + 1 and len(flushes) == len(t.samples_s) >= 5
    assert all(x == pytest.approx(5e-6) for x in t.samples_s)      # the replay over its calls, per call


def test_microsecond_calls_without_a_graph_are_timed_back_to_back():
    for clock, graph in ((FakeClock(), None), (StepClock(), False)):
        rand = []
        t = bench(_short_call(clock), clock, warmup_s=0.001, rep_s=0.02, rerandomize=lambda: rand.append(1), graph=graph)
        assert (t.mode, t.calls_per_sample) == ("batch", 200) and len(rand) == len(t.samples_s)
        assert all(x == pytest.approx(5e-6) for x in t.samples_s)
        assert getattr(clock, "captured", []) == []
    # a call shorter than the timer's floor is bounded: at most MAX_CALLS_PER_SAMPLE per sample
    clock = FakeClock()
    assert bench(_short_call(clock, 1e-9), clock, warmup_s=1e-5, rep_s=0.001).calls_per_sample == MAX_CALLS_PER_SAMPLE


def test_graph_mode_is_asked_for_by_argument_and_only_on_a_clock_that_captures():
    clock = StepClock()
    t = bench(_short_call(clock, 2e-3), clock, warmup_s=0.01, rep_s=0.02, graph=True)
    assert (t.mode, t.calls_per_sample, clock.captured) == ("cuda_graph", 1, [1])   # a long call, captured alone
    t = bench(_short_call(clock, 2e-3), clock, warmup_s=0.01, rep_s=0.02)
    assert (t.mode, t.calls_per_sample) == ("per_call", 1)                           # long calls: one event pair each
    with pytest.raises(ValueError, match="CUDA clock"):
        bench(lambda: None, HostClock(), graph=True)


def test_ranks_agree_on_the_call_count():
    """A collective's ranks must make the same number of calls: the agreed estimate sets every count."""
    clock = FakeClock()
    seen = []

    def slowest(est):
        seen.append(est)
        return 4e-3                      # another rank took 4 ms a call
    t = bench(_short_call(clock, 2e-3), clock, warmup_s=0.02, rep_s=0.04, agree=slowest)
    assert seen == [pytest.approx(2e-3)] and (t.warmup_calls, len(t.samples_s)) == (5, 10)


def test_a_timing_keeps_named_statistics_and_a_bounded_rounded_sample():
    samples = [1e-3 + i * 1.234567e-7 for i in range(1000)]
    d = Timing(samples_s=samples, warmup_calls=3, calls_per_sample=4, mode="batch").to_dict()
    assert {"n", "median_s", "mean_s", "min_s", "max_s", "stdev_s", "p90_s", "p99_s", "median_ci",
            "relative_spread"} <= d.keys()
    assert d["n"] == 1000 and d["min_s"] == samples[0] and d["median_s"] == pytest.approx(statistics.median(samples))
    assert len(d["samples_s"]) <= SAMPLES_KEPT and d["samples_stride"] == 16     # every 16th, in time order
    assert d["samples_s"][1] == pytest.approx(samples[16], rel=1e-4) and d["samples_s"][1] == float(f"{samples[16]:.4g}")
    assert (d["calls_per_sample"], d["mode"], d["warmup_calls"]) == (4, "batch", 3)
    short = Timing(samples_s=[2e-3, 1e-3], warmup_calls=0).to_dict()
    assert short["samples_s"] == [2e-3, 1e-3] and short["samples_stride"] == 1


def test_sweep_points_name_their_rates_and_the_method_takes_the_best_median():
    from llmprobe.microbench.result import from_sweep, sweep_point
    slow = sweep_point({"bytes_per_array": 1 << 20, "counts": True}, 2e6, "bandwidth", Timing([2e-3, 1e-3, 4e-3], 1))
    fast = sweep_point({"bytes_per_array": 1 << 10, "counts": False}, 2e6, "bandwidth", Timing([1e-4], 1))
    assert slow["bytes"] == 2e6 and slow["bytes_per_s_median"] == pytest.approx(1e9)
    assert slow["bytes_per_s_max"] == pytest.approx(2e9) and slow["samples_s"] == [2e-3, 1e-3, 4e-3]
    r = from_sweep("torch.copy_", "bandwidth", "fp32", [slow, fast], ("bytes_per_array",), eligible=lambda p: p["counts"])
    assert r.valid and r.value == slow["bytes_per_s_median"] and r.best_params == {"bytes_per_array": 1 << 20}
    assert r.sweep == [slow, fast]
    flops = sweep_point({"shape": [2, 2, 2]}, 16, "flops", Timing([1e-6], 1))
    assert flops["flops_per_s_median"] == pytest.approx(1.6e7) and "bytes_per_s_median" not in flops


def test_one_matmul_sweep_validates_first_rerandomizes_and_leaves_out_what_the_card_cannot_hold():
    """The helper torch.matmul, torch._scaled_mm (fp8) and triton.dot share, run here on CPU tensors."""
    torch = pytest.importorskip("torch")
    from llmprobe.microbench import gpu
    suite = object.__new__(gpu.Suite)       # its sweep logic only: no CUDA device behind it
    suite.budget_s = {"flops": 5.0}
    suite.l2 = 2 * (64 * 16 + 16 * 32 + 64 * 32) * 4    # the operands fit it: 4 copies outgrow twice of it
    timed, outs, ran = [], [], []

    def time_(call, rerandomize=None, graph=None):
        timed.append(rerandomize)
        return bench(call, HostClock(), warmup_s=0.001, rep_s=0.005, rerandomize=rerandomize)
    suite.time = time_

    class TooBig(Exception):
        pass

    def make(p):
        m, n, k = p["shape"]
        a, b, out = torch.randn(m, k), torch.randn(k, n), torch.zeros(m, n)
        copy = len(outs)
        outs.append(out)

        def call():
            if p["tile"] == "big":
                raise TooBig("out of shared memory")
            ran.append(copy)
            torch.matmul(a, b, out=out)
        return call, a, b, out
    points = [{"shape": [64, 32, 16], "tile": t} for t in ("big", "small")]
    r = suite.sweep_products("x.mm", "fp32", points, make, skip=(TooBig,))
    assert r.valid and r.best_params == {"shape": [64, 32, 16], "tile": "small"}
    assert r.sweep[0]["error"] == "out of shared memory" and r.value == r.sweep[1]["flops_per_s_median"]
    assert r.sweep[1]["flops"] == 2 * 64 * 32 * 16 and r.sweep[1]["samples_s"] and r.sweep[1]["operand_copies"] == 4
    # the timed calls take the copies in turn, and every output is re-randomized (never timed on zeros)
    rotated = outs[1:]
    assert len(rotated) == 4 and len(timed) == 1 and set(ran) == {1, 2, 3, 4}
    for o in rotated:
        o.zero_()
    timed[0]()
    assert all(bool((o != 0).any()) for o in rotated)
    timed.clear()

    def wrong(p):
        _, a, b, out = make(p)
        return (lambda: out.fill_(1.0)), a, b, out
    r = suite.sweep_products("x.mm", "fp32", points[1:], wrong)
    assert not r.valid and "relative error" in r.error and "64x32x16 tile=small" in r.error and timed == []
    assert not suite.sweep_products("x.mm", "fp32", points[:1], make, skip=(TooBig,)).valid


def test_saved_ceilings_of_another_methodology_are_measured_again(tmp_path, monkeypatch):
    from llmprobe.microbench import store
    from llmprobe.records import CEILINGS_METHODOLOGIES, CEILINGS_METHODOLOGY
    assert CEILINGS_METHODOLOGY == "ceilings-3" and list(CEILINGS_METHODOLOGIES)[-1] == CEILINGS_METHODOLOGY
    monkeypatch.setenv("LLMPROBE_CACHE_DIR", str(tmp_path))
    fp = {"kind": "cpu", "name": "test cpu", "logical_cores": 2}
    store.save({"fingerprint": fp, "methodology": "ceilings-2"})
    assert store.load_for_device(fp) is None                       # at today's path, but of the old method
    key = store.device_key(fp)
    monkeypatch.setattr(store, "CEILINGS_METHODOLOGY", "ceilings-2")
    assert store.device_key(fp) != key                              # and an old one was saved under another key


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
    assert 1e8 < m["flops_per_s"]["fp32"] < 1e14 and m["methodology"] == "ceilings-3"
    assert {"name", "kind", "dtype", "value", "valid"} <= set(m["methods"][0])
    assert all(x["valid"] for x in m["methods"])
    # every sweep point keeps its raw samples and named statistics; stream bytes are the traffic table's
    from llmprobe.kernels.traffic import STREAM
    for x in m["methods"]:
        assert all(p["samples_s"] and 0 < p["min_s"] <= p["median_s"] <= p["max_s"] for p in x["sweep"]), x["name"]
    copy = next(x for x in m["methods"] if x["name"] == "torch.copy_")
    assert all(p["bytes"] == STREAM["copy"].bytes(p["bytes_per_array"] // 4) for p in copy["sweep"])
    assert len(r.stdout) < 200_000                                   # samples capped and rounded
    assert doc["gpu"]["kind"] == "measured" and doc["gpu"]["hbm_bytes_per_s"] == m["bandwidth_bytes_per_s"]
    assert doc["scenarios"] and all(math.isfinite(s["tps_ceiling"]) for s in doc["scenarios"])
    # the bf16 ceiling is the best layout, within 20% of F.linear (x @ W^T, what every linear layer
    # runs) timed here independently on an LLM-like shape
    mm = next(x for x in m["methods"] if x["name"] == "torch.matmul" and x["dtype"] == "bf16")
    assert {p["layout"] for p in mm["sweep"]} >= {"nt"} and mm["best_params"]["layout"] in ("nt", "nn")
    assert m["flops_per_s"]["bf16"] >= 0.8 * _linear_bf16_rate()
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
    assert m.device == "cuda" and m.bandwidth_bytes_per_s > 1e11 and m.flops_per_s.get("bf16", 0) > 1e13
    failed = [r.name for r in m.methods if not r.valid and "not installed" not in (r.error or "")]
    assert not failed, failed
    # raw samples and named statistics on every point, fp8 included (its output re-randomized like bf16's)
    for r in m.methods:
        assert all(p["samples_s"] and p["median_s"] > 0 for p in r.sweep if "error" not in p), r.name


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
    ex = explain_record(load_run_record("docs/measurements/h100-sxm-2026-11-27/vllm/profile-llama-2-70b.json")).to_dict()
    b1 = next(s for s in ex["scenarios"] if s["batch"] == 1)
    assert (b1["bandwidth_method"], b1["ceilings_mode"]) == ("triton.read", "quick")
    assert 0.86 < b1["tpot"]["efficiency"] < 0.90          # 83% against the write kernel before (issue 26)
    quick = [f for f in b1["flags"] if f["kind"] == "quick_ceiling"]
    assert quick and "prefill" in quick[0]["message"]       # its prefill is compute-bound, on a one-shape ceiling
