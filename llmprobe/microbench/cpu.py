"""The CPU path: torch copy and read bandwidth and torch matmul FLOP/s, on the host clock.

It exists so the whole pipeline (ceilings, profile, explain) runs end to end on a machine without
a GPU, with honest figures for that machine.
"""

from __future__ import annotations

from collections.abc import Callable

from ..timing import HostClock, bench
from .result import MethodResult

SIZES_BYTES = {"quick": [128 << 20], "default": [128 << 20, 256 << 20], "full": [32 << 20, 64 << 20, 128 << 20, 256 << 20, 512 << 20]}
MATMUL_N = {"quick": [1024], "default": [1024, 2048], "full": [512, 1024, 1536, 2048, 3072]}
_BUDGET = {"quick": (0.05, 0.2), "default": (0.1, 0.5), "full": (0.2, 1.0)}


def copy_bandwidth(mode: str) -> MethodResult:
    """dst.copy_(src) on float32 arrays far larger than the last-level cache: bytes = 2 * n * 4."""
    import torch
    warm, rep = _BUDGET[mode]
    sweep, best = [], None
    for size in SIZES_BYTES[mode]:
        n = size // 4
        src = torch.randn(n)
        dst = torch.empty_like(src)
        dst.copy_(src)
        if not torch.equal(dst, src):
            return MethodResult("torch.copy_", "bandwidth", "fp32", None, False, "copy differs from its source")
        t = bench(lambda: dst.copy_(src), HostClock(), warmup_s=warm, rep_s=rep)
        bw = 2 * n * 4 / t.median_s
        sweep.append({"bytes_per_array": size, "value": bw, "spread": _spread(t)})
        best = max(best or 0.0, bw)
    top = max(sweep, key=lambda s: s["value"])
    return MethodResult("torch.copy_", "bandwidth", "fp32", best, True, best_params={"bytes_per_array": top["bytes_per_array"]},
                        sweep=sweep)


def read_bandwidth(mode: str) -> MethodResult:
    """src.sum() over float32 arrays past the last-level cache: bytes = n * 4 (weights are read, not copied)."""
    import torch
    warm, rep = _BUDGET[mode]
    sweep = []
    for size in SIZES_BYTES[mode]:
        n = size // 4
        src = torch.rand(n, dtype=torch.float64).float() + 0.5
        got, ref = src.sum().item(), src.double().sum().item()
        if abs(got / ref - 1) > 1e-3:
            return MethodResult("torch.sum", "bandwidth", "fp32", None, False, f"sum off by {abs(got / ref - 1):.1e}")
        t = bench(lambda: src.sum(), HostClock(), warmup_s=warm, rep_s=rep)
        sweep.append({"bytes_per_array": size, "value": n * 4 / t.median_s, "spread": _spread(t)})
    top = max(sweep, key=lambda s: s["value"])
    return MethodResult("torch.sum", "bandwidth", "fp32", top["value"], True,
                        best_params={"bytes_per_array": top["bytes_per_array"]}, sweep=sweep)


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
