"""The CPU path: torch copy and read bandwidth and torch matmul FLOP/s, on the host clock.

It exists so the whole pipeline (ceilings, profile, explain) runs end to end on a machine without
a GPU, with honest figures for that machine.
"""

from __future__ import annotations

import time

from ..kernels.traffic import STREAM, matmul_flops
from ..timing import HostClock, Timing, bench
from .result import MethodResult, Stages, from_sweep, matmul_error, sweep_point

GIB = 1 << 30
MAX_ARRAY = 4 * GIB


def llc_bytes() -> int:
    """Size of the largest CPU cache (sysfs); 64 MiB where it cannot be read."""
    import glob
    best = 0
    for d in glob.glob("/sys/devices/system/cpu/cpu0/cache/index*"):
        try:
            with open(f"{d}/size") as f:
                txt = f.read().strip()
        except OSError:
            continue
        mult = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(txt[-1:].upper(), 1)
        best = max(best, int(txt.rstrip("KMGkmg")) * mult)
    return best or 64 << 20


def stream_sizes(mode: str) -> tuple[list[int], int]:
    """Array sizes to time and the smallest that counts: 4x the LLC, so DRAM and not a cache is measured.
    --full adds sizes below it to show where the cache ends (kept in the sweep, never the ceiling)."""
    llc = llc_bytes()
    if mode == "quick":  # 2x the LLC still leaves most of every access to DRAM; a coarser, faster pass
        plateau = min(2 * llc, MAX_ARRAY)
        return [plateau], plateau
    plateau = min(4 * llc, MAX_ARRAY)
    if mode == "default":
        return [plateau], plateau
    return sorted({plateau // 16, plateau // 8, plateau // 4, plateau // 2, plateau, min(2 * plateau, MAX_ARRAY)}), plateau

# (m, n, k) per mode: square products and the shapes of an LLM step (few or many token rows against
# a hidden-size weight), each in both layouts. Small to large, so a slow layout shows on a cheap point.
MATMUL_SHAPES = {
    "quick": [(32, 2048, 2048), (512, 2048, 2048), (1024, 1024, 1024)],
    "default": [(32, 2048, 2048), (512, 2048, 2048), (1024, 1024, 1024), (2048, 2048, 2048)],
    "full": [(32, 2048, 2048), (256, 4096, 4096), (512, 2048, 2048), (2048, 4096, 4096)]
    + [(n, n, n) for n in (512, 1024, 1536, 2048, 3072)],
}
LAYOUTS = ("nt", "nn")   # nt: x @ W^T as F.linear (what every linear layer runs); nn: a @ b, both row-major
_BUDGET = {"quick": (0.05, 0.2), "default": (0.1, 0.5), "full": (0.2, 1.0)}
MATMUL_BUDGET_S = {"quick": 8.0, "default": 20.0, "full": 30.0}   # per dtype, every shape and layout


def _stream(name: str, mode: str, make) -> MethodResult:
    """Time ``make(src)`` -> (call, error, bytes per call) at each size; the ceiling counts only sizes past the LLC."""
    import torch
    warm, rep = _BUDGET[mode]
    sizes, plateau = stream_sizes(mode)
    sweep = []
    for size in sizes:
        n = size // 4
        src = torch.empty(n).uniform_(0.5, 1.5)   # one pass, never zeros
        call, error, nbytes = make(src)
        if error():
            return MethodResult(name, "bandwidth", "fp32", None, False, f"{error()} at {size} B")
        t = bench(call, HostClock(), warmup_s=warm, rep_s=rep)
        sweep.append(sweep_point({"bytes_per_array": size, "counts": size >= plateau}, nbytes, "bandwidth", t))
        del src, call
    return from_sweep(name, "bandwidth", "fp32", sweep, ("bytes_per_array",), eligible=lambda p: p["counts"])


def copy_bandwidth(mode: str) -> MethodResult:
    """dst.copy_(src) on float32 arrays past the last-level cache: bytes from STREAM["copy"]."""
    import torch

    def make(src):
        dst = torch.empty_like(src)
        dst.copy_(src)
        return (lambda: dst.copy_(src)), (lambda: None if torch.equal(dst, src) else "copy differs from its source"), \
            STREAM["copy"].bytes(src.numel(), src.element_size())
    return _stream("torch.copy_", mode, make)


def read_bandwidth(mode: str) -> MethodResult:
    """src.sum() over float32 arrays past the last-level cache: bytes from STREAM["read"] (weights are read, not copied)."""
    def make(src):
        off = abs(src.sum().item() / src.double().sum().item() - 1)
        return (lambda: src.sum()), (lambda: f"sum off by {off:.1e}" if off > 1e-3 else None), \
            STREAM["read"].bytes(src.numel(), src.element_size())
    return _stream("torch.sum", mode, make)


def matmul_ceiling(mode: str, dtype: str) -> MethodResult:
    """torch matmul over shapes and layouts: FLOPs = 2 m n k; validated against an fp32 product before timing.

    The ceiling is the best (shape, layout). Layouts differ by up to 50x on some CPUs (bf16 a @ b on
    an AVX2-only EPYC: 0.7 GFLOP/s; x @ W^T: 34), so a point predicted to outrun what is left of the
    dtype's budget (from the slowest rate seen so far in its layout) is skipped and said so.
    """
    import torch
    import torch.nn.functional as F
    tdt = {"fp32": torch.float32, "bf16": torch.bfloat16}[dtype]
    warm, rep = _BUDGET[mode]
    budget = MATMUL_BUDGET_S[mode]
    t0 = time.perf_counter()
    sweep, skipped = [], []
    s_per_flop: dict[str, float] = {}
    for lay in LAYOUTS:
        for m, n, k in MATMUL_SHAPES[mode]:
            flops = matmul_flops(m, n, k)
            left = budget - (time.perf_counter() - t0)
            # about 10 calls per point: the first, an estimate, a warm-up and the timed repeats
            if lay in s_per_flop and 10 * flops * s_per_flop[lay] > left or left <= 0:
                skipped.append(f"{m}x{n}x{k} {lay}")
                continue
            a = torch.randn(m, k, dtype=tdt)
            w = torch.randn(n, k, dtype=tdt) if lay == "nt" else torch.randn(k, n, dtype=tdt)
            call = (lambda: F.linear(a, w)) if lay == "nt" else (lambda: torch.matmul(a, w))
            c0 = time.perf_counter()
            out = call()
            first = time.perf_counter() - c0
            s_per_flop[lay] = max(s_per_flop.get(lay, 0.0), first / flops)
            bad = matmul_error(out, a, w.t() if lay == "nt" else w, dtype, rows=64)
            if bad:
                return MethodResult("torch.matmul", "flops", dtype, None, False, f"{bad} at {m}x{n}x{k} {lay}")
            if 10 * first > budget - (time.perf_counter() - t0):   # the first call is its one sample
                t = Timing(samples_s=[first], warmup_calls=0)
            else:
                t = bench(call, HostClock(), warmup_s=warm, rep_s=rep, min_reps=3)
                s_per_flop[lay] = t.median_s / flops
            sweep.append(sweep_point({"shape": [m, n, k], "layout": lay}, flops, "flops", t))
    note = (f"skipped by its {budget:.0f} s budget (predicted too slow): {', '.join(skipped)}" if skipped else None)
    return from_sweep("torch.matmul", "flops", dtype, sweep, ("shape", "layout"), note=note)


STREAM_BUDGET_S = {"quick": 3.0, "default": 6.0, "full": 20.0}   # about, per bandwidth method (sizes x repeats)


def plan(mode: str) -> list[tuple[str, float]]:
    return ([("CPU: torch copy_ bandwidth", STREAM_BUDGET_S[mode]), ("CPU: torch sum (read) bandwidth", STREAM_BUDGET_S[mode])]
            + [(f"CPU: torch matmul {dt}", MATMUL_BUDGET_S[mode]) for dt in ("fp32", "bf16")])


def run(mode: str, stages: Stages) -> list[MethodResult]:
    out = []
    stages.next()
    out.append(copy_bandwidth(mode))
    stages.next()
    out.append(read_bandwidth(mode))
    for dt in ("fp32", "bf16"):
        stages.next()
        out.append(matmul_ceiling(mode, dt))
    return out
