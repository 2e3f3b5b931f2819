"""The GPU path: every bandwidth and FLOP/s method, timed with CUDA events through one timer.

Methods (each validated against a reference before it is timed; a failed one keeps its error and
contributes no figure):
  bandwidth  torch.copy_ (baseline), cupy.{read,write,copy,triad}_v4, triton.{read,write,copy,triad}
  flops      torch.matmul bf16/fp16 best shape, torch._scaled_mm fp8 (sm_89+), triton.dot bf16,
             cupy.fma_chain_fp32 (CUDA cores)
Streams run on float32 arrays well past L2; the L2 is flushed (untimed) before every call with a
buffer twice its size; matmul outputs are re-randomized between calls so the card does real work.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from ..errors import MissingDependency
from ..timing import CudaClock, bench
from .result import MethodResult

GIB = 1 << 30
STREAM_BYTES = {"quick": [512 << 20], "default": [256 << 20, GIB], "full": None}  # full: a sweep from 4x L2
MATMUL_SHAPES = {
    "quick": [(8192, 8192, 8192)],
    "default": [(4096, 4096, 4096), (8192, 8192, 8192), (8192, 8192, 4096), (6144, 6144, 6144)],
    "full": [(n, n, n) for n in range(2048, 16385, 1024)] + [(8192, 8192, k) for k in (2048, 4096, 12288, 16384)],
}
TRITON_DOT_CONFIGS = (  # tile shapes tried for triton.dot; the best is kept (all fit sm_80 and sm_90 shared memory)
    {"BLOCK_M": 128, "BLOCK_N": 256, "BLOCK_K": 64, "GROUP_M": 8, "num_warps": 8, "num_stages": 3},
    {"BLOCK_M": 128, "BLOCK_N": 128, "BLOCK_K": 64, "GROUP_M": 8, "num_warps": 4, "num_stages": 4},
    {"BLOCK_M": 256, "BLOCK_N": 128, "BLOCK_K": 64, "GROUP_M": 8, "num_warps": 8, "num_stages": 3},
)
BUDGET = {"quick": (0.05, 0.15, 0.5), "default": (0.1, 0.3, 2.0), "full": (0.2, 0.5, 5.0)}  # warm-up, rep, card warm-up s


class Suite:
    def __init__(self, mode: str, say: Callable[[str], None], methods: set[str]):
        import torch
        self.torch, self.mode, self.say, self.methods = torch, mode, say, methods
        self.clock = CudaClock()
        props = torch.cuda.get_device_properties(0)
        self.props = props
        self.l2 = int(getattr(props, "L2_cache_size", 0) or 50 << 20)
        self.flush_buf = torch.empty(2 * self.l2 // 4, dtype=torch.float32, device="cuda")
        self.warm_s, self.rep_s, self.card_warm_s = BUDGET[mode]
        self.results: list[MethodResult] = []

    # ---- helpers ---------------------------------------------------------------------------------
    def flush(self) -> None:
        self.flush_buf.add_(1.0)  # touches every line, evicting the timed data from L2 (untimed)

    def time(self, fn, rerandomize=None):
        return bench(fn, self.clock, warmup_s=self.warm_s, rep_s=self.rep_s, flush=self.flush, rerandomize=rerandomize)

    def stream_sizes(self) -> list[int]:
        sizes = STREAM_BYTES[self.mode]
        if sizes is None:  # the plateau: from 4x L2 to 2 GiB per array, doubling
            sizes, s = [], 4 * self.l2
            while s <= 2 * GIB:
                sizes.append(s)
                s *= 2
        return sizes

    def guard(self, name: str, kind: str, dtype: str | None, fn: Callable[[], MethodResult]) -> None:
        self.say(f"{name} ({dtype})")
        try:
            r = fn()
        except MissingDependency as e:
            r = MethodResult(name, kind, dtype, None, False, str(e))
        except Exception as e:  # a method that crashes is reported as failed; the others still run
            r = MethodResult(name, kind, dtype, None, False, f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
        finally:
            self.torch.cuda.empty_cache()
        self.results.append(r)

    def sweep_stream(self, name: str, sizes: list[int], make: Callable[[int], tuple[Callable, Callable[[], bool], int]]) -> MethodResult:
        """``make(bytes_per_array)`` -> (kernel call, validator, bytes moved per call)."""
        pts = []
        for size in sizes:
            call, valid, nbytes = make(size)
            call()
            self.torch.cuda.synchronize()
            if not valid():
                return MethodResult(name, "bandwidth", "fp32", None, False, f"wrong result at {size} B per array")
            t = self.time(call)
            pts.append({"bytes_per_array": size, "value": nbytes / t.median_s, "best": nbytes / t.best_s,
                        "spread": (t.stats["max"] - t.stats["min"]) / t.median_s})
        top = max(pts, key=lambda p: p["value"])
        return MethodResult(name, "bandwidth", "fp32", top["value"], True, best_params={"bytes_per_array": top["bytes_per_array"]},
                            sweep=pts)

    def rand(self, n: int):
        return self.torch.rand(n, device="cuda", dtype=self.torch.float32) + 0.5  # never zeros

    # ---- methods ------------------------------------------------------------------------------------
    def warm_card(self) -> None:
        """A cold card boosts higher for a moment; measure it warm (mamf-finder's habit)."""
        torch = self.torch
        a = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
        t0 = time.perf_counter()
        while time.perf_counter() - t0 < self.card_warm_s:
            for _ in range(10):
                a @ a
            torch.cuda.synchronize()

    def torch_copy(self) -> MethodResult:
        def make(size):
            n = size // 4
            src, dst = self.rand(n), self.torch.empty(n, device="cuda")
            return (lambda: dst.copy_(src)), (lambda: bool(self.torch.equal(dst, src))), 2 * n * 4
        return self.sweep_stream("torch.copy_", self.stream_sizes(), make)

    def cupy_stream(self, kernel: str) -> MethodResult:
        import cupy
        from .cupy_streams import module, stream_bytes
        fn = module("stream.cu").get_function(kernel)
        sms = self.props.multi_processor_count
        block, grid = 256, sms * 8  # 8 resident blocks of 256 per SM: 2048 threads, full occupancy
        torch = self.torch

        def make(size):
            n4 = size // 16
            a, b, c = self.rand(n4 * 4), self.rand(n4 * 4), torch.empty(n4 * 4, device="cuda")
            partial = torch.empty(grid * block, device="cuda")
            ca, cb, cc, cp = (cupy.asarray(x) for x in (a, b, c, partial))
            s = cupy.float32(1.5)
            n = cupy.int64(n4)
            if kernel == "read_v4":
                return ((lambda: fn((grid,), (block,), (ca, cp, n))),
                        (lambda: abs(partial.double().sum().item() / a.double().sum().item() - 1) < 1e-3),
                        stream_bytes(kernel, n4))
            if kernel == "write_v4":
                return ((lambda: fn((grid,), (block,), (cc, s, n))), (lambda: bool((c == 1.5).all())),
                        stream_bytes(kernel, n4))
            if kernel == "copy_v4":
                return ((lambda: fn((grid,), (block,), (ca, cc, n))), (lambda: bool(torch.equal(c, a))),
                        stream_bytes(kernel, n4))
            return ((lambda: fn((grid,), (block,), (ca, cb, cc, s, n))),
                    (lambda: bool(torch.allclose(c, a + 1.5 * b))), stream_bytes(kernel, n4))
        return self.sweep_stream(f"cupy.{kernel}", self.stream_sizes(), make)

    def triton_stream(self, kernel: str) -> MethodResult:
        from .triton_launch import stream_call
        torch = self.torch

        def make(size):
            n = size // 4
            a, b, c = self.rand(n), self.rand(n), torch.empty(n, device="cuda")
            call, check, nbytes = stream_call(kernel, a, b, c, 1.5)
            return call, check, nbytes
        return self.sweep_stream(f"triton.{kernel}", self.stream_sizes(), make)

    def torch_matmul(self, dtype: str) -> MethodResult:
        torch = self.torch
        tdt = {"bf16": torch.bfloat16, "fp16": torch.float16}[dtype]
        pts = []
        for m, n, k in MATMUL_SHAPES[self.mode]:
            a = torch.randn(m, k, device="cuda", dtype=tdt)
            b = torch.randn(k, n, device="cuda", dtype=tdt)
            c = torch.empty(m, n, device="cuda", dtype=tdt)
            torch.matmul(a, b, out=c)
            ref = a[:256].float() @ b.float()
            err = ((c[:256].float() - ref).abs().max() / ref.abs().max()).item()
            if err > 2e-2:
                return MethodResult("torch.matmul", "flops", dtype, None, False, f"relative error {err:.2e} at {m}x{n}x{k}")
            t = self.time(lambda: torch.matmul(a, b, out=c), rerandomize=lambda: c.normal_())
            pts.append({"shape": [m, n, k], "value": 2 * m * n * k / t.median_s, "best": 2 * m * n * k / t.best_s})
        top = max(pts, key=lambda p: p["value"])
        return MethodResult("torch.matmul", "flops", dtype, top["value"], True, best_params={"shape": top["shape"]}, sweep=pts)

    def torch_fp8(self) -> MethodResult:
        torch = self.torch
        if torch.cuda.get_device_capability() < (8, 9) or not hasattr(torch, "float8_e4m3fn"):
            return MethodResult("torch._scaled_mm", "flops", "fp8", None, False, "no fp8 tensor cores on this card")
        pts = []
        for m, n, k in MATMUL_SHAPES[self.mode]:
            a = (torch.randn(m, k, device="cuda") / 4).to(torch.float8_e4m3fn)
            b = (torch.randn(n, k, device="cuda") / 4).to(torch.float8_e4m3fn).t()   # column-major, as cuBLASLt wants
            one = torch.ones((), device="cuda")
            out = torch._scaled_mm(a, b, scale_a=one, scale_b=one, out_dtype=torch.bfloat16)
            ref = a[:256].float() @ b.float()
            err = ((out[:256].float() - ref).abs().max() / ref.abs().max()).item()
            if err > 2e-2:
                return MethodResult("torch._scaled_mm", "flops", "fp8", None, False, f"relative error {err:.2e}")
            t = self.time(lambda: torch._scaled_mm(a, b, scale_a=one, scale_b=one, out_dtype=torch.bfloat16))
            pts.append({"shape": [m, n, k], "value": 2 * m * n * k / t.median_s, "best": 2 * m * n * k / t.best_s})
        top = max(pts, key=lambda p: p["value"])
        return MethodResult("torch._scaled_mm", "flops", "fp8", top["value"], True, best_params={"shape": top["shape"]}, sweep=pts)

    def triton_dot(self) -> MethodResult:
        from .triton_launch import matmul
        torch = self.torch
        m = n = k = 8192
        a = torch.randn(m, k, device="cuda", dtype=torch.bfloat16)
        b = torch.randn(k, n, device="cuda", dtype=torch.bfloat16)
        pts = []
        for cfg in TRITON_DOT_CONFIGS:
            try:
                c = matmul(a, b, **cfg)
            except Exception as e:  # a tile config that does not fit this card's shared memory
                pts.append({"config": cfg, "error": str(e).splitlines()[0] if str(e) else type(e).__name__})
                continue
            ref = a[:256].float() @ b.float()
            err = ((c[:256].float() - ref).abs().max() / ref.abs().max()).item()
            if err > 2e-2:
                return MethodResult("triton.dot", "flops", "bf16", None, False, f"relative error {err:.2e}")
            t = self.time(lambda: matmul(a, b, out=c, **cfg), rerandomize=lambda: c.normal_())
            pts.append({"config": cfg, "shape": [m, n, k], "value": 2 * m * n * k / t.median_s})
        ok = [p for p in pts if "value" in p]
        if not ok:
            return MethodResult("triton.dot", "flops", "bf16", None, False, pts[-1]["error"], sweep=pts)
        top = max(ok, key=lambda p: p["value"])
        return MethodResult("triton.dot", "flops", "bf16", top["value"], True, best_params=top, sweep=pts)

    def cupy_fma(self) -> MethodResult:
        import cupy
        import numpy as np
        from .cupy_streams import fma_flops, module
        fn = module("fma.cu").get_function("fma_chain_fp32")
        block, grid, iters = 256, self.props.multi_processor_count * 8, 4096
        out = cupy.empty(grid * block, dtype=cupy.float32)
        a, b = np.float32(0.999), np.float32(0.001)
        call = lambda: fn((grid,), (block,), (out, a, b, np.int32(iters)))  # noqa: E731
        call()
        cupy.cuda.runtime.deviceSynchronize()
        tid = np.arange(1024, dtype=np.int64)          # the first 1024 threads, emulated on the host in float32
        x = np.stack([(tid % 1024).astype(np.float32) * np.float32(1e-3) + np.float32(k) for k in range(8)])
        for _ in range(iters):
            x = x * a + b
        ref = x.sum(axis=0)
        got = cupy.asnumpy(out[:1024])
        if not np.allclose(got, ref, rtol=1e-3):
            return MethodResult("cupy.fma_chain_fp32", "flops", "fp32", None, False, "result differs from host emulation")
        t = self.time(call)
        flops = fma_flops(grid * block, iters)
        return MethodResult("cupy.fma_chain_fp32", "flops", "fp32", flops / t.median_s, True,
                            best_params={"threads": grid * block, "iters": iters})

    def run(self) -> list[MethodResult]:
        self.say("warming the card up")
        self.warm_card()
        self.guard("torch.copy_", "bandwidth", "fp32", self.torch_copy)
        if "cupy" in self.methods:
            for k in ("read_v4", "write_v4", "copy_v4", "triad_v4"):
                self.guard(f"cupy.{k}", "bandwidth", "fp32", lambda k=k: self.cupy_stream(k))
        if "triton" in self.methods:
            for k in ("read", "write", "copy", "triad"):
                self.guard(f"triton.{k}", "bandwidth", "fp32", lambda k=k: self.triton_stream(k))
        for dt in ("bf16", "fp16") if self.mode == "full" else ("bf16",):
            self.guard("torch.matmul", "flops", dt, lambda dt=dt: self.torch_matmul(dt))
        self.guard("torch._scaled_mm", "flops", "fp8", self.torch_fp8)
        if "triton" in self.methods:
            self.guard("triton.dot", "flops", "bf16", self.triton_dot)
        if "cupy" in self.methods:
            self.guard("cupy.fma_chain_fp32", "flops", "fp32", self.cupy_fma)
        return self.results


def run(mode: str, say: Callable[[str], None], methods: set[str]) -> list[MethodResult]:
    return Suite(mode, say, methods).run()


def describe() -> dict[str, Any]:
    import torch
    p = torch.cuda.get_device_properties(0)
    return {"kind": "cuda", "name": p.name, "memory_bytes": p.total_memory, "sm_count": p.multi_processor_count,
            "capability": list(torch.cuda.get_device_capability()), "nvml": False}
