"""One timer for all device work, in the manner of triton.testing.do_bench, and named statistics.

The timer compiles/validates nothing itself: callers validate results before timing. It warms up
for a time budget (not a count), flushes L2 before each timed sample (outside the timed region),
calls an optional re-randomizer between samples, records one start/stop pair per sample and
synchronizes once. A sample is one call, or for microsecond calls many: replayed from a CUDA graph
(triton.testing.do_bench_cudagraph) where the clock can capture one, else launched back to back
(nccl-tests). A ``HostClock`` backend makes the same loop run on the CPU (and in tests).
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any


def summarize(values: Sequence[float]) -> dict[str, Any]:
    """What the peers report (vLLM's bench latency, AIPerf, guidellm): n, mean, median, min, max,
    stdev, p90 and p99 (linear interpolation between order statistics, numpy's default), and a
    confidence interval of the median (``median_ci``)."""
    v = sorted(float(x) for x in values if x is not None and not math.isnan(x))
    if not v:
        return {"n": 0, "mean": None, "median": None, "min": None, "max": None, "stdev": None, "p90": None,
                "p99": None, "median_ci": None}
    return {"n": len(v), "mean": statistics.fmean(v), "median": statistics.median(v), "min": v[0], "max": v[-1],
            "stdev": statistics.stdev(v) if len(v) > 1 else 0.0, "p90": percentile(v, 0.90),
            "p99": percentile(v, 0.99), "median_ci": median_ci(v)}


def percentile(v: Sequence[float], q: float) -> float:
    """``q``-quantile of sorted ``v`` by linear interpolation (numpy.percentile's default)."""
    pos = q * (len(v) - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, len(v) - 1)
    return v[lo] + (v[hi] - v[lo]) * (pos - lo)


def median_ci(v: Sequence[float], level: float = 0.95) -> dict[str, float] | None:
    """Distribution-free confidence interval of the median from sorted ``v``: the order statistics
    x_(j) and x_(n+1-j), with j the largest rank such that the binomial(n, 1/2) tails outside them
    hold at most 1 - ``level``. With few runs that level is out of reach: the widest interval
    (min, max) is returned with the confidence it does have (5 runs: 93.8%); one run has none."""
    n = len(v)
    if n < 2:
        return None
    cdf = 0.0   # P(Binomial(n, 1/2) <= k)
    j = 0
    for k in range(n):
        cdf += math.comb(n, k) / 2 ** n
        if 2 * cdf > 1 - level:
            break
        j = k + 1
    j = max(j, 1)
    achieved = 1 - 2 * sum(math.comb(n, k) for k in range(j)) / 2 ** n
    return {"low": v[j - 1], "high": v[n - j], "level": achieved}


def relative_spread(s: dict[str, Any]) -> float | None:
    """(max - min) / median: the run-to-run spread explain flags above 5%."""
    if not s.get("n") or not s.get("median"):
        return None
    return (s["max"] - s["min"]) / s["median"]


class HostClock:
    """Backend on the host clock: the CPU path, and the test double of the CUDA backend."""
    name = "host"
    graphs = False   # nothing to capture on the host: short calls are timed back to back

    def event(self) -> float:
        return time.perf_counter()

    def synchronize(self) -> None:
        pass

    def elapsed_s(self, start: float, end: float) -> float:
        return end - start


class CudaClock:
    """CUDA events on the current stream; resolved only after one synchronize. The benchmarks and the
    engines' step timers both record through it."""
    name = "cuda"
    graphs = True

    def __init__(self):
        import torch
        self.torch = torch

    def event(self):
        ev = self.torch.cuda.Event(enable_timing=True)
        ev.record()
        return ev

    def synchronize(self) -> None:
        self.torch.cuda.synchronize()

    def elapsed_s(self, start, end) -> float:
        return start.elapsed_time(end) / 1e3

    def capture(self, fn: Callable[[], Any], calls: int) -> Callable[[], None]:
        """``calls`` calls of ``fn`` captured into one CUDA graph; returns its replay (on the current stream).

        Warmed up on the capture's own side stream first, as torch's CUDA-graph notes do: what a library sets
        up lazily on a stream's first use (cuBLAS's workspace) is then set up outside the capture."""
        torch = self.torch
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(CAPTURE_WARMUP_CALLS):
                fn()
        torch.cuda.current_stream().wait_stream(side)
        g = torch.cuda.CUDAGraph()
        with torch.cuda.graph(g, stream=side):
            for _ in range(calls):
                fn()
        torch.cuda.synchronize()
        return g.replay


CAPTURE_WARMUP_CALLS = 3
# A call shorter than this is within an order of magnitude of what the host spends launching it and
# recording its events (5-20 us per torch op): one event pair per call would time the launch, not the
# kernel. Such calls are timed many per sample, SAMPLE_S long, so that overhead is a few percent at most.
SHORT_CALL_S = 100e-6
SAMPLE_S = 1e-3
MAX_CALLS_PER_SAMPLE = 1000      # bounds a captured graph's size (and its capture time)
SAMPLES_KEPT = 64                # raw samples a serialized Timing keeps (evenly spaced), 4 significant digits each


@dataclass
class Timing:
    samples_s: list[float]       # seconds per call, one per sample (a sample of several calls: their mean)
    warmup_calls: int
    calls_per_sample: int = 1
    mode: str = "per_call"       # per_call: one event pair per call; batch: calls back to back per pair;
                                 # cuda_graph: one replay of calls captured in a CUDA graph per pair
    stats: dict[str, Any] = field(init=False)

    def __post_init__(self):
        self.stats = summarize(self.samples_s)

    @property
    def median_s(self) -> float:
        return self.stats["median"]

    @property
    def best_s(self) -> float:
        return self.stats["min"]

    def to_dict(self) -> dict[str, Any]:
        """Every statistic by name (seconds per call), and the raw samples: at most SAMPLES_KEPT of them, every
        ``samples_stride``-th in time order (a drift still shows), rounded to 4 significant digits (the event
        timer resolves about 0.5 us; run-to-run spread is larger still), so a full GPU sweep stays a few
        hundred KB of JSON."""
        s = self.stats
        stride = max(1, math.ceil(len(self.samples_s) / SAMPLES_KEPT))
        return {"n": s["n"], **{f"{k}_s": s[k] for k in ("median", "mean", "min", "max", "stdev", "p90", "p99")},
                "median_ci": s["median_ci"], "relative_spread": relative_spread(s),
                "samples_s": [float(f"{x:.4g}") for x in self.samples_s[::stride]], "samples_stride": stride,
                "calls_per_sample": self.calls_per_sample, "mode": self.mode, "warmup_calls": self.warmup_calls}


def bench(fn: Callable[[], Any], clock=None, warmup_s: float = 0.05, rep_s: float = 0.2, min_reps: int = 5,
          max_reps: int = 1000, flush: Callable[[], Any] | None = None,
          rerandomize: Callable[[], Any] | None = None, graph: bool | None = None,
          agree: Callable[[float], float] | None = None) -> Timing:
    """Time ``fn`` per call: warm up for ``warmup_s``, then repeat for about ``rep_s``.

    The first call (compilation, allocation) is discarded. The call count for warm-up and
    measurement is derived from a timed estimate, so short kernels get many calls and long ones few.
    Calls under SHORT_CALL_S are timed many per sample (``flush`` and ``rerandomize`` then run once per
    sample, not per call): ``graph`` None captures them in a CUDA graph where the clock can, True
    captures even long calls (a clock without graphs refuses), False never captures (work the capture
    cannot hold: another library's stream, a collective) and launches them back to back.
    ``agree`` maps this process's per-call estimate to the one every process uses, so that ranks of a
    collective make the same number of calls.
    """
    clock = clock or HostClock()
    if graph and not clock.graphs:
        raise ValueError(f"CUDA-graph timing needs the CUDA clock, not the {clock.name} clock")
    fn()
    clock.synchronize()
    # estimate one call over a handful
    est_n = 5
    t0 = clock.event()
    for _ in range(est_n):
        fn()
    t1 = clock.event()
    clock.synchronize()
    per_call = max(clock.elapsed_s(t0, t1) / est_n, 1e-7)
    if agree is not None:
        per_call = agree(per_call)
    calls = 1 if per_call >= SHORT_CALL_S else min(MAX_CALLS_PER_SAMPLE, math.ceil(SAMPLE_S / per_call))
    n_warm = max(1, int(warmup_s / per_call))
    n_rep = min(max_reps, max(min_reps, int(rep_s / (per_call * calls))))
    for _ in range(n_warm):
        fn()
    captured = graph if graph is not None else (calls > 1 and clock.graphs)
    if captured:
        run = clock.capture(fn, calls)
        run()   # the first replay uploads the graph to the device: untimed
    elif calls == 1:
        run = fn
    else:
        def run():
            for _ in range(calls):
                fn()
    pairs = []
    for _ in range(n_rep):
        if rerandomize is not None:
            rerandomize()
        if flush is not None:
            flush()
        s = clock.event()
        run()
        e = clock.event()
        pairs.append((s, e))
    clock.synchronize()
    mode = "cuda_graph" if captured else "per_call" if calls == 1 else "batch"
    return Timing(samples_s=[clock.elapsed_s(s, e) / calls for s, e in pairs], warmup_calls=n_warm,
                  calls_per_sample=calls, mode=mode)
