"""Host launchers for the Triton kernels in kernels/ (the kernels stay device code only)."""

from __future__ import annotations

from typing import Any

from ..errors import MissingDependency

STREAM_BLOCK = 4096


def _kernels():
    try:
        from ..kernels import triton_matmul, triton_stream
    except ImportError as e:
        raise MissingDependency("Triton", "triton", cause=e) from None
    return triton_stream, triton_matmul


def stream_bytes(kernel: str, n: int, element_size: int) -> int:
    ts, _ = _kernels()
    t = ts.TRAFFIC[kernel]
    return (t["reads"] + t["writes"]) * n * element_size


def stream_call(kernel: str, a, b, c, s: float) -> tuple[Any, Any, int]:
    """(launch, validate, bytes moved) for one stream kernel over tensors a, b (inputs) and c (output)."""
    import torch
    ts, _ = _kernels()
    n = a.numel()
    grid = ((n + STREAM_BLOCK - 1) // STREAM_BLOCK,)
    nbytes = stream_bytes(kernel, n, a.element_size())
    if kernel == "read":
        partial = torch.empty(grid[0], dtype=torch.float32, device=a.device)
        return ((lambda: ts.read_kernel[grid](a, partial, n, BLOCK=STREAM_BLOCK)),
                (lambda: abs(partial.double().sum().item() / a.double().sum().item() - 1) < 1e-3), nbytes)
    if kernel == "write":
        return ((lambda: ts.write_kernel[grid](c, s, n, BLOCK=STREAM_BLOCK)), (lambda: bool((c == s).all())), nbytes)
    if kernel == "copy":
        return ((lambda: ts.copy_kernel[grid](a, c, n, BLOCK=STREAM_BLOCK)), (lambda: bool(torch.equal(c, a))), nbytes)
    if kernel == "triad":
        return ((lambda: ts.triad_kernel[grid](a, b, c, s, n, BLOCK=STREAM_BLOCK)),
                (lambda: bool(torch.allclose(c, a + s * b))), nbytes)
    raise ValueError(kernel)


def matmul(a, b, out=None, BLOCK_M=128, BLOCK_N=128, BLOCK_K=64, GROUP_M=8, num_warps=4, num_stages=3):
    import torch
    _, tm = _kernels()
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
