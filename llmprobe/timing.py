"""One timer for all device work, in the manner of triton.testing.do_bench, and named statistics.

The timer compiles/validates nothing itself: callers validate results before timing. It warms up
for a time budget (not a count), flushes L2 before each timed call (outside the timed region),
calls an optional re-randomizer between calls, records one start/stop pair per call and
synchronizes once. A ``HostClock`` backend makes the same loop run on the CPU (and in tests).
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


@dataclass
class Timing:
    samples_s: list[float]
    warmup_calls: int
    stats: dict[str, Any] = field(init=False)

    def __post_init__(self):
        self.stats = summarize(self.samples_s)

    @property
    def median_s(self) -> float:
        return self.stats["median"]

    @property
    def best_s(self) -> float:
        return self.stats["min"]


def bench(fn: Callable[[], Any], clock=None, warmup_s: float = 0.05, rep_s: float = 0.2, min_reps: int = 5,
          max_reps: int = 1000, flush: Callable[[], Any] | None = None,
          rerandomize: Callable[[], Any] | None = None) -> Timing:
    """Time ``fn`` per call: warm up for ``warmup_s``, then repeat for about ``rep_s``.

    The first call (compilation, allocation) is discarded. The call count for warm-up and
    measurement is derived from a timed estimate, so short kernels get many calls and long ones few.
    """
    clock = clock or HostClock()
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
    n_warm = max(1, int(warmup_s / per_call))
    n_rep = min(max_reps, max(min_reps, int(rep_s / per_call)))
    for _ in range(n_warm):
        fn()
    pairs = []
    for _ in range(n_rep):
        if rerandomize is not None:
            rerandomize()
        if flush is not None:
            flush()
        s = clock.event()
        fn()
        e = clock.event()
        pairs.append((s, e))
    clock.synchronize()
    return Timing(samples_s=[clock.elapsed_s(s, e) for s, e in pairs], warmup_calls=n_warm)
