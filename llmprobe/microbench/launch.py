"""Host launchers for the kernels in kernels/, one shape for both toolchains.

A stream launcher returns a StreamCall: launch runs the kernel once, validate checks its output
against torch, bytes come from kernels/traffic.py, output is the array the kernel writes. The CUDA C++
kernels go through CuPy's RawModule (NVRTC), the Triton kernels through their JIT.
"""

from __future__ import annotations

from importlib import resources
from typing import Any, NamedTuple

from ..errors import MissingDependency

TRITON_STREAM_BLOCK = 4096
CUDA_BLOCK = 256


class StreamCall(NamedTuple):
    launch: Any
    validate: Any
    nbytes: int
    output: Any


def _traffic():
    from ..kernels import traffic
    return traffic


def _stream_check(kernel: str, a, b, c, s: float, partial):
    """What a correct run of each stream kernel leaves behind (all inputs are > 0, so sums are exact enough)."""
    import torch
    return {"read": lambda: abs(partial.double().sum().item() / a.double().sum().item() - 1) < 1e-3,
            "write": lambda: bool((c == s).all()),
            "copy": lambda: bool(torch.equal(c, a)),
            "triad": lambda: bool(torch.allclose(c, a + s * b))}[kernel]


# ---- Triton -------------------------------------------------------------------------------------

def _triton_kernels():
    try:
        from ..kernels import triton_matmul, triton_stream
    except ImportError as e:
        raise MissingDependency("Triton", "triton", cause=e) from None
    return triton_stream, triton_matmul


def triton_stream_call(kernel: str, a, b, c, s: float) -> StreamCall:
    """One stream kernel over float32 tensors a, b (inputs) and c (output)."""
    import torch
    ts, _ = _triton_kernels()
    n = a.numel()
    grid = ((n + TRITON_STREAM_BLOCK - 1) // TRITON_STREAM_BLOCK,)
    partial = torch.empty(grid[0], dtype=torch.float32, device=a.device) if kernel == "read" else None
    launch = {"read": lambda: ts.read_kernel[grid](a, partial, n, BLOCK=TRITON_STREAM_BLOCK),
              "write": lambda: ts.write_kernel[grid](c, s, n, BLOCK=TRITON_STREAM_BLOCK),
              "copy": lambda: ts.copy_kernel[grid](a, c, n, BLOCK=TRITON_STREAM_BLOCK),
              "triad": lambda: ts.triad_kernel[grid](a, b, c, s, n, BLOCK=TRITON_STREAM_BLOCK)}[kernel]
    return StreamCall(launch, _stream_check(kernel, a, b, c, s, partial),
                      _traffic().STREAM[kernel].bytes(n, a.element_size()), c if partial is None else partial)


def triton_matmul(a, b, out=None, BLOCK_M=128, BLOCK_N=128, BLOCK_K=64, GROUP_M=8, num_warps=4, num_stages=3):
    import torch
    _, tm = _triton_kernels()
    m, k = a.shape
    k2, n = b.shape
    if k != k2:
        raise ValueError(f"inner dimensions differ: {a.shape} @ {b.shape}")
    c = out if out is not None else torch.empty(m, n, device=a.device, dtype=a.dtype)
    grid = (((m + BLOCK_M - 1) // BLOCK_M) * ((n + BLOCK_N - 1) // BLOCK_N),)
    tm.matmul_kernel[grid](a, b, c, m, n, k, a.stride(0), a.stride(1), b.stride(0), b.stride(1), c.stride(0), c.stride(1),
                           BLOCK_M=BLOCK_M, BLOCK_N=BLOCK_N, BLOCK_K=BLOCK_K, GROUP_M=GROUP_M,
                           num_warps=num_warps, num_stages=num_stages)
    return c


# ---- CUDA C++ through CuPy ----------------------------------------------------------------------

def cuda_source(name: str) -> str:
    return (resources.files("llmprobe.kernels") / name).read_text()


def cuda_options() -> tuple[str, ...]:
    """The compile options every .cu file gets (also what the nvcc/NVRTC tests pass)."""
    return ("-std=c++17", f"-DCHAINS={_traffic().FMA_CHAINS}")


def cuda_function(name: str, kernel: str):
    try:
        import cupy
    except ImportError as e:
        raise MissingDependency("CuPy", "cupy12", "cupy13", cause=e) from None
    return cupy.RawModule(code=cuda_source(name), options=cuda_options()).get_function(kernel)


def cuda_stream_call(kernel: str, fn, grid: int, a, b, c, s: float) -> StreamCall:
    """One ``<kernel>_v4`` stream kernel (compiled ``fn``) over float32 torch tensors whose length is a multiple of 4."""
    import cupy
    import torch
    n4 = a.numel() // 4
    partial = torch.empty(grid * CUDA_BLOCK, device=a.device) if kernel == "read" else None
    ca, cb, cc = (cupy.asarray(x) for x in (a, b, c))
    cs, cn = cupy.float32(s), cupy.int64(n4)
    args = {"read": lambda: (ca, cupy.asarray(partial), cn), "write": lambda: (cc, cs, cn),
            "copy": lambda: (ca, cc, cn), "triad": lambda: (ca, cb, cc, cs, cn)}[kernel]()
    return StreamCall((lambda: fn((grid,), (CUDA_BLOCK,), args)), _stream_check(kernel, a, b, c, s, partial),
                      _traffic().STREAM[kernel].bytes(4 * n4), c if partial is None else partial)
