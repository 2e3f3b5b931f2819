"""The CPU path: torch copy and read bandwidth and torch matmul FLOP/s, on the host clock.

It exists so the whole pipeline (ceilings, profile, explain) runs end to end on a machine without
a GPU, with honest figures for that machine.
"""

from __future__ import annotations

from collections.abc import Callable

from ..timing import HostClock, bench
from .result import MethodResult

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

MATMUL_N = {"quick": [1024], "default": [1024, 2048], "full": [512, 1024, 1536, 2048, 3072]}
_BUDGET = {"quick": (0.05, 0.2), "default": (0.1, 0.5), "full": (0.2, 1.0)}


def _stream(name: str, mode: str, make) -> MethodResult:
    """Time ``make(n)`` -> (call, validate, bytes per call) at each size; the ceiling counts only sizes past the LLC."""
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
        sweep.append({"bytes_per_array": size, "value": nbytes / t.median_s, "spread": _spread(t), "counts": size >= plateau})
        del src, call
    top = max((p for p in sweep if p["counts"]), key=lambda p: p["value"])
    return MethodResult(name, "bandwidth", "fp32", top["value"], True, best_params={"bytes_per_array": top["bytes_per_array"]},
                        sweep=sweep)


def copy_bandwidth(mode: str) -> MethodResult:
    """dst.copy_(src) on float32 arrays past the last-level cache: bytes = 2 * n * 4."""
    import torch

    def make(src):
        dst = torch.empty_like(src)
        dst.copy_(src)
        return (lambda: dst.copy_(src)), (lambda: None if torch.equal(dst, src) else "copy differs from its source"), \
            2 * src.numel() * 4
    return _stream("torch.copy_", mode, make)


def read_bandwidth(mode: str) -> MethodResult:
    """src.sum() over float32 arrays past the last-level cache: bytes = n * 4 (weights are read, not copied)."""
    def make(src):
        off = abs(src.sum().item() / src.double().sum().item() - 1)
        return (lambda: src.sum()), (lambda: f"sum off by {off:.1e}" if off > 1e-3 else None), src.numel() * 4
    return _stream("torch.sum", mode, make)


def matmul_flops(mode: str, dtype: str) -> MethodResult:
    """torch.matmul of n x n by n x n: FLOPs = 2 * n^3; validated against float64."""
    import torch
    tdt = {"fp32": torch.float32, "bf16": torch.bfloat16}[dtype]
    warm, rep = _BUDGET[mode]
    sweep = []
    for n in MATMUL_N[mode]:
        a, b = torch.randn(n, n, dtype=tdt), torch.randn(n, n, dtype=tdt)
        ref = a.double() @ b.double()
        err = ((a @ b).double() - ref).abs().max().item() / ref.abs().max().item()
        if err > (1e-4 if dtype == "fp32" else 3e-2):
            return MethodResult("torch.matmul", "flops", dtype, None, False, f"relative error {err:.2e} at n={n}")
        t = bench(lambda: torch.matmul(a, b), HostClock(), warmup_s=warm, rep_s=rep, min_reps=3)
        sweep.append({"shape": [n, n, n], "value": 2 * n ** 3 / t.median_s, "spread": _spread(t)})
    top = max(sweep, key=lambda s: s["value"])
    return MethodResult("torch.matmul", "flops", dtype, top["value"], True, best_params={"shape": top["shape"]},
                        sweep=sweep)


def _spread(t) -> float | None:
    s = t.stats
    return (s["max"] - s["min"]) / s["median"] if s["median"] else None


def run(mode: str, say: Callable[[str], None]) -> list[MethodResult]:
    out = []
    say("CPU: torch copy_ bandwidth")
    out.append(copy_bandwidth(mode))
    say("CPU: torch sum (read) bandwidth")
    out.append(read_bandwidth(mode))
    for dt in ("fp32", "bf16"):
        say(f"CPU: torch matmul {dt}")
        out.append(matmul_flops(mode, dt))
    return out
