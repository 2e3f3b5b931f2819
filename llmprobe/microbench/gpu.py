"""The GPU path: every bandwidth and FLOP/s method, timed with CUDA events through one timer.

Methods (each validated against a reference before it is timed; a failed one keeps its error and
contributes no figure):
  bandwidth  torch.copy_ and torch.sum (read) baselines, cupy.{read,write,copy,triad}_v4,
             triton.{read,write,copy,triad}
  flops      torch.matmul bf16/fp16 best over shapes and layouts (NN: a @ b; NT: x @ W^T, what
             nn.Linear runs), torch._scaled_mm fp8 (sm_89+, with and without fast accumulation),
             triton.dot bf16, cupy.fma_chain_fp32 (CUDA cores)
Streams run on float32 arrays well past L2; the L2 is flushed (untimed) before every timed sample by
reading a buffer twice its size (a read leaves no dirty lines for the timed call to write back);
matmul outputs (fp8's included) are re-randomized between samples so the card does real work.
Microsecond calls (a model's small GEMMs) are timed from CUDA graphs (timing.bench). Every method
has a time budget: a sweep that would outrun it stops early and says so in its note.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable
from typing import Any

from ..errors import MissingDependency
from ..kernels.traffic import STREAM, matmul_flops
from ..timing import CudaClock, Timing, bench
from .result import MethodResult, from_sweep, matmul_error, sweep_point

GIB = 1 << 30
STREAM_BYTES = {"quick": [512 << 20], "default": [256 << 20, GIB], "full": None}  # full: a sweep from 4x L2
# (m, n, k): m rows of activations, n output features, k input features. The LLM rows are what a
# 70B-class step runs: 8 x 256 prompt tokens against the attention and MLP projections.
LLM_SHAPES = [(2048, 8192, 8192), (2048, 28672, 8192), (2048, 8192, 28672), (4096, 14336, 4096)]
MATMUL_SHAPES = {
    "quick": [(8192, 8192, 8192)],
    "default": [(4096, 4096, 4096), (8192, 8192, 8192), (8192, 8192, 4096), (6144, 6144, 6144)] + LLM_SHAPES[:2],
    "full": LLM_SHAPES + [(n, n, n) for n in range(2048, 16385, 2048)]
    + [(8192, 8192, k) for k in (2048, 4096, 12288, 16384)]
    # mamf-finder's lesson: the best is not always at a multiple of 2048; a strided grid off it
    + [(m, n, k) for m in (3328, 6912, 10496, 14080) for n in (4352, 9472) for k in (5376, 12544)],
}
LAYOUTS = ("nn", "nt")   # nn: a (m x k) @ b (k x n); nt: a @ w.t() with w (n x k) row-major, as F.linear
TRITON_DOT_CONFIGS = (  # tile shapes tried for triton.dot; the best is kept (all fit sm_80 and sm_90 shared memory)
    {"BLOCK_M": 128, "BLOCK_N": 256, "BLOCK_K": 64, "GROUP_M": 8, "num_warps": 8, "num_stages": 3},
    {"BLOCK_M": 128, "BLOCK_N": 128, "BLOCK_K": 64, "GROUP_M": 8, "num_warps": 4, "num_stages": 4},
    {"BLOCK_M": 256, "BLOCK_N": 128, "BLOCK_K": 64, "GROUP_M": 8, "num_warps": 8, "num_stages": 3},
)
# Operands under 1/128 of the L2 (about 0.4 MB on an H100) give a call bound by its launch latency,
# wherever they are read from: no more copies than that are made
MAX_OPERAND_COPIES = 256
BUDGET = {"quick": (0.05, 0.15, 0.5), "default": (0.1, 0.3, 2.0), "full": (0.1, 0.3, 2.0)}  # warm-up, rep, card warm-up s
# Seconds one method may spend on its sweep (per stream kernel; per matmul dtype); the acceptance
# run's whole --full measurement is sized from these (docs/methodology.md).
METHOD_BUDGET_S = {"quick": {"bandwidth": 3.0, "flops": 5.0}, "default": {"bandwidth": 5.0, "flops": 12.0},
                   "full": {"bandwidth": 6.0, "flops": 30.0}}


class Suite:
    def __init__(self, mode: str, methods: set[str], model_shapes: tuple[tuple[int, int, int], ...] = ()):
        import torch
        self.torch, self.mode, self.methods = torch, mode, methods
        # the model's own GEMMs first (a budget that runs out cuts the generic shapes), then the mode's grid
        self.matmul_shapes = list(dict.fromkeys([*model_shapes, *MATMUL_SHAPES[mode]]))
        self.clock = CudaClock()
        props = torch.cuda.get_device_properties(0)
        self.props = props
        self.l2 = l2_bytes(props)
        self.flush_buf = torch.ones(2 * self.l2 // 4, dtype=torch.float32, device="cuda")
        self.flush_out = torch.empty((), dtype=torch.float32, device="cuda")
        self.warm_s, self.rep_s, self.card_warm_s = BUDGET[mode]
        self.budget_s = METHOD_BUDGET_S[mode]
        self.results: list[MethodResult] = []

    # ---- helpers ---------------------------------------------------------------------------------
    def flush(self) -> None:
        # A read of twice the L2 evicts the timed data without dirtying lines (untimed).
        self.torch.sum(self.flush_buf, dim=0, out=self.flush_out)

    def time(self, fn, rerandomize=None, graph: bool | None = None) -> Timing:
        return bench(fn, self.clock, warmup_s=self.warm_s, rep_s=self.rep_s, flush=self.flush, rerandomize=rerandomize,
                     graph=graph)

    def stream_sizes(self) -> list[int]:
        sizes = STREAM_BYTES[self.mode]
        if sizes is None:  # the plateau: from 4x L2 to 2 GiB per array, doubling
            sizes, s = [], 4 * self.l2
            while s <= 2 * GIB:
                sizes.append(s)
                s *= 2
        return sizes

    def guard(self, name: str, kind: str, dtype: str | None, fn: Callable[[], MethodResult]) -> None:
        try:
            r = fn()
        except MissingDependency as e:
            r = MethodResult(name, kind, dtype, None, False, str(e))
        except Exception as e:  # a method that crashes is reported as failed; the others still run
            r = MethodResult(name, kind, dtype, None, False, f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
        finally:
            self.torch.cuda.empty_cache()
        self.results.append(r)

    def sweep_stream(self, name: str, sizes: list[int], make: Callable[[int], tuple], graph: bool | None = None) -> MethodResult:
        """``make(bytes_per_array)`` -> (kernel call, validator, bytes moved per call, output); ``graph``
        False for kernels launched outside torch's stream (CuPy), which a capture cannot hold."""
        pts = []
        budget = Budget(self.budget_s["bandwidth"], len(sizes))
        for size in sizes:
            if budget.spent():
                break
            call, valid, nbytes, _ = make(size)
            call()
            self.torch.cuda.synchronize()
            if not valid():
                return MethodResult(name, "bandwidth", "fp32", None, False, f"wrong result at {size} B per array")
            pts.append(sweep_point({"bytes_per_array": size}, nbytes, "bandwidth", self.time(call, graph=graph)))
        return from_sweep(name, "bandwidth", "fp32", pts, ("bytes_per_array",), note=budget.note(len(pts)))

    def sweep_products(self, name: str, dtype: str, points: list[dict[str, Any]], make: Callable[[dict], tuple],
                       skip: tuple[type[Exception], ...] = ()) -> MethodResult:
        """The FLOP/s sweep of every matmul method. ``points``: params of each point, its "shape" [m, n, k]
        among them; ``make(point)`` -> (call, a, b, out): call writes a @ b into out. Each point is validated
        against an fp32 product before it is timed and out is re-randomized between timed samples; a first
        call raising one of ``skip`` leaves the point out with its error (a tile the card cannot hold).

        A sample of a short call holds many calls (timing.bench) and the L2 is flushed once per sample, so
        operands that fit the L2 would be found there from the second call on: the calls cycle through
        enough copies of them (``rotation``) that together they outgrow the flush buffer, twice the L2."""
        budget = Budget(self.budget_s["flops"], len(points))
        pts: list[dict[str, Any]] = []
        for p in points:
            if budget.spent():
                break
            call, a, b, out = make(p)
            try:
                call()
            except skip as e:
                pts.append({**p, "error": str(e).splitlines()[0] if str(e) else type(e).__name__})
                continue
            bad = matmul_error(out, a, b, dtype)
            if bad:
                where = " ".join(["x".join(map(str, p["shape"]))] + [f"{k}={v}" for k, v in p.items() if k != "shape"])
                return MethodResult(name, "flops", dtype, None, False, f"{bad} at {where}")
            t, copies = self.time_rotated(call, out, self.rotation(a, b, out), lambda: make(p))
            pts.append({**sweep_point(p, matmul_flops(*p["shape"]), "flops", t), "operand_copies": copies})
            del call, a, b, out   # before the next point allocates its own
        if all("error" in q for q in pts):
            return MethodResult(name, "flops", dtype, None, False, pts[-1]["error"], sweep=pts)
        return from_sweep(name, "flops", dtype, pts, tuple(points[0]), note=budget.note(len(pts)))

    def rotation(self, *operands) -> int:
        """Copies of a call's operands that together outgrow twice the L2 (at most MAX_OPERAND_COPIES)."""
        size = sum(x.numel() * x.element_size() for x in operands)
        return max(1, min(MAX_OPERAND_COPIES, -(-2 * self.l2 // size)))

    def time_rotated(self, call, out, copies: int, make: Callable[[], tuple]) -> tuple[Timing, int]:
        """Time ``call`` (writing ``out``) and ``copies - 1`` more made by ``make()`` -> (call, a, b, out), in
        turn, every output re-randomized between samples; returns the timing and the number of copies."""
        rotation = [(call, out)]
        for _ in range(copies - 1):
            c, _, _, o = make()
            rotation.append((c, o))
        turn = itertools.cycle(c for c, _ in rotation)

        def rerandomize():
            for _, o in rotation:
                o.normal_()
        return self.time(call if copies == 1 else lambda: next(turn)(), rerandomize=rerandomize), len(rotation)

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
            return (lambda: dst.copy_(src)), (lambda: bool(self.torch.equal(dst, src))), STREAM["copy"].bytes(n), dst
        return self.sweep_stream("torch.copy_", self.stream_sizes(), make)

    def torch_read(self) -> MethodResult:
        """torch.sum over the array: the read baseline (what decode does to weights and KV) beside copy_."""
        def make(size):
            n = size // 4
            src, out = self.rand(n), self.torch.empty((), device="cuda")
            ref = src.double().sum().item()
            return ((lambda: self.torch.sum(src, out=out)), (lambda: abs(out.item() / ref - 1) < 1e-3),
                    STREAM["read"].bytes(n), out)
        return self.sweep_stream("torch.sum", self.stream_sizes(), make)

    def cupy_stream(self, kernel: str) -> MethodResult:
        from .launch import CUDA_BLOCK, cuda_function, cuda_stream_call
        fn = cuda_function("stream.cu", f"{kernel}_v4")
        grid = _grid(self.props, fn, CUDA_BLOCK)

        def make(size):
            n = size // 16 * 4
            return cuda_stream_call(kernel, fn, grid, self.rand(n), self.rand(n), self.torch.empty(n, device="cuda"), 1.5)
        r = self.sweep_stream(f"cupy.{kernel}_v4", self.stream_sizes(), make, graph=False)
        r.best_params.update(grid=grid, block=CUDA_BLOCK, registers=fn.num_regs)
        return r

    def triton_stream(self, kernel: str) -> MethodResult:
        from .launch import triton_stream_call

        def make(size):
            n = size // 4
            return triton_stream_call(kernel, self.rand(n), self.rand(n), self.torch.empty(n, device="cuda"), 1.5)
        return self.sweep_stream(f"triton.{kernel}", self.stream_sizes(), make)

    def torch_matmul(self, dtype: str) -> MethodResult:
        """cuBLAS through torch.matmul, over shapes and both layouts; the best (shape, layout) is the ceiling."""
        torch = self.torch
        tdt = {"bf16": torch.bfloat16, "fp16": torch.float16}[dtype]

        def make(p):
            (m, n, k), lay = p["shape"], p["layout"]
            a = torch.randn(m, k, device="cuda", dtype=tdt)
            w = torch.randn(k, n, device="cuda", dtype=tdt) if lay == "nn" else torch.randn(n, k, device="cuda", dtype=tdt)
            b = w if lay == "nn" else w.t()
            c = torch.empty(m, n, device="cuda", dtype=tdt)
            return (lambda: torch.matmul(a, b, out=c)), a, b, c
        return self.sweep_products("torch.matmul", dtype, [{"shape": list(s), "layout": lay} for s in self.matmul_shapes
                                                           for lay in LAYOUTS], make)

    def torch_fp8(self) -> MethodResult:
        """cuBLASLt fp8 (e4m3) through torch._scaled_mm, with and without fast accumulation (mamf-finder's sweep).

        cuBLASLt takes fp8 only as "TN": a row-major, b column-major, i.e. b = w.t() with w (n x k)
        row-major, the nn.Linear layout.
        """
        torch = self.torch
        if torch.cuda.get_device_capability() < (8, 9) or not hasattr(torch, "float8_e4m3fn"):
            return MethodResult("torch._scaled_mm", "flops", "fp8", None, False, "no fp8 tensor cores on this card")
        one = torch.ones((), device="cuda")

        def make(p):
            m, n, k = p["shape"]
            a = (torch.randn(m, k, device="cuda") / 4).to(torch.float8_e4m3fn)
            b = (torch.randn(n, k, device="cuda") / 4).to(torch.float8_e4m3fn).t()
            out = torch.empty(m, n, device="cuda", dtype=torch.bfloat16)
            return (lambda: torch._scaled_mm(a, b, scale_a=one, scale_b=one, out_dtype=torch.bfloat16,
                                             use_fast_accum=p["fast_accum"], out=out)), a, b, out
        return self.sweep_products("torch._scaled_mm", "fp8", [{"shape": list(s), "fast_accum": fast}
                                                               for s in self.matmul_shapes for fast in (False, True)], make)

    def triton_dot(self) -> MethodResult:
        """kernels/triton_matmul.py at 8192^3, over TRITON_DOT_CONFIGS; a config over this card's shared
        memory is left out with its error."""
        from triton.runtime.errors import OutOfResources

        from .launch import triton_matmul as matmul
        torch = self.torch
        m = n = k = 8192
        a = torch.randn(m, k, device="cuda", dtype=torch.bfloat16)
        b = torch.randn(k, n, device="cuda", dtype=torch.bfloat16)
        c = torch.empty(m, n, device="cuda", dtype=torch.bfloat16)

        def make(p):
            return (lambda: matmul(a, b, out=c, **p["config"])), a, b, c
        return self.sweep_products("triton.dot", "bf16", [{"shape": [m, n, k], "config": cfg} for cfg in TRITON_DOT_CONFIGS],
                                   make, skip=(OutOfResources,))

    def cupy_fma(self) -> MethodResult:
        import cupy
        import numpy as np
        from ..kernels.traffic import FMA_CHAINS, fma_flops
        from .launch import CUDA_BLOCK, cuda_function
        fn = cuda_function("fma.cu", "fma_chain_fp32")
        block, iters = CUDA_BLOCK, 4096
        grid = _grid(self.props, fn, block)
        out = cupy.empty(grid * block, dtype=cupy.float32)
        a, b = np.float32(0.999), np.float32(0.001)
        call = lambda: fn((grid,), (block,), (out, a, b, np.int32(iters)))  # noqa: E731
        call()
        cupy.cuda.runtime.deviceSynchronize()
        tid = np.arange(1024, dtype=np.int64)          # the first 1024 threads, emulated on the host in float32
        x = np.stack([(tid % 1024).astype(np.float32) * np.float32(1e-3) + np.float32(k) for k in range(FMA_CHAINS)])
        for _ in range(iters):
            x = x * a + b
        ref = x.sum(axis=0)
        got = cupy.asnumpy(out[:1024])
        if not np.allclose(got, ref, rtol=1e-3):
            return MethodResult("cupy.fma_chain_fp32", "flops", "fp32", None, False, "result differs from host emulation")
        point = sweep_point({"threads": grid * block, "iters": iters}, fma_flops(grid * block, iters), "flops",
                            self.time(call, graph=False))   # CuPy launches outside torch's stream: no capture
        return from_sweep("cupy.fma_chain_fp32", "flops", "fp32", [point], ("threads", "iters"))

    def stages(self) -> list[tuple[str, float, Callable[[], None]]]:
        """The planned stages: (label, time budget in s, what runs)."""
        bw, fl = self.budget_s["bandwidth"], self.budget_s["flops"]
        out = [("warming the card up", self.card_warm_s, self.warm_card),
               ("torch.copy_ (fp32)", bw, lambda: self.guard("torch.copy_", "bandwidth", "fp32", self.torch_copy)),
               ("torch.sum (fp32 read)", bw, lambda: self.guard("torch.sum", "bandwidth", "fp32", self.torch_read))]
        if "cupy" in self.methods:
            out += [(f"cupy.{k}_v4 (fp32)", bw, lambda k=k: self.guard(f"cupy.{k}_v4", "bandwidth", "fp32",
                                                                      lambda: self.cupy_stream(k))) for k in STREAM]
        if "triton" in self.methods:
            out += [(f"triton.{k} (fp32)", bw, lambda k=k: self.guard(f"triton.{k}", "bandwidth", "fp32",
                                                                     lambda: self.triton_stream(k))) for k in STREAM]
        out += [(f"torch.matmul ({dt})", fl, lambda dt=dt: self.guard("torch.matmul", "flops", dt,
                                                                     lambda: self.torch_matmul(dt)))
                for dt in (("bf16", "fp16") if self.mode != "quick" else ("bf16",))]
        out.append(("torch._scaled_mm (fp8)", fl, lambda: self.guard("torch._scaled_mm", "flops", "fp8", self.torch_fp8)))
        if "triton" in self.methods:
            out.append(("triton.dot (bf16)", fl, lambda: self.guard("triton.dot", "flops", "bf16", self.triton_dot)))
        if "cupy" in self.methods:
            out.append(("cupy.fma_chain_fp32 (fp32)", 2.0,
                        lambda: self.guard("cupy.fma_chain_fp32", "flops", "fp32", self.cupy_fma)))
        return out


class Budget:
    """A method's time budget over its sweep points: stop once spent, and say what was left out."""

    def __init__(self, seconds: float, points: int):
        self.seconds, self.points, self.t0 = seconds, points, time.perf_counter()

    def spent(self) -> bool:
        return time.perf_counter() - self.t0 > self.seconds

    def note(self, done: int) -> str | None:
        if done >= self.points:
            return None
        return f"cut short by its {self.seconds:.0f} s budget after {done} of {self.points} sweep points"


def l2_bytes(props) -> int:
    """The card's L2 from torch, else from the catalog entry its name matches, else 50 MiB (H100's)."""
    l2 = int(getattr(props, "L2_cache_size", 0) or 0)
    if l2:
        return l2
    from ..hardware import match_device_name
    spec = match_device_name(props.name, getattr(props, "total_memory", None))
    return int(spec.l2_bytes) if spec else 50 << 20


def resident_blocks(num_regs: int, block: int, regs_per_sm: int = 65536, threads_per_sm: int = 2048,
                    max_blocks_per_sm: int = 32, warp_reg_granularity: int = 256) -> int:
    """Blocks of ``block`` threads one SM holds at once for a kernel using ``num_regs`` registers per
    thread and no shared memory (registers are allocated per warp, in units of 256), so that a grid
    of SMs x this is exactly one full wave: a second, partial wave would run at low occupancy."""
    per_warp = -(-num_regs * 32 // warp_reg_granularity) * warp_reg_granularity
    warps = -(-block // 32)
    by_regs = regs_per_sm // (per_warp * warps) if per_warp else max_blocks_per_sm
    return max(1, min(threads_per_sm // block, by_regs, max_blocks_per_sm))


def _grid(props, fn, block: int) -> int:
    regs = fn.num_regs   # compiles the kernel on first use (CuPy caches it)
    blocks = resident_blocks(regs, block, getattr(props, "regs_per_multiprocessor", 65536),
                             getattr(props, "max_threads_per_multi_processor", 2048))
    return props.multi_processor_count * blocks


def suite(mode: str, methods: set[str], model_shapes: tuple[tuple[int, int, int], ...] = ()) -> Suite:
    return Suite(mode, methods, model_shapes)

