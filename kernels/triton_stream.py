"""Triton streaming kernels for HBM bandwidth. Imports triton: load it only where it is used.

What each reads and writes per element: kernels/traffic.py (STREAM).
"""

import triton
import triton.language as tl


@triton.jit
def read_kernel(a_ptr,            # input, n elements
                partial_ptr,      # one float32 sum per program (keeps the loads live)
                n,                # number of elements
                BLOCK: tl.constexpr):
    pid = tl.program_id(0)
    offs = pid * BLOCK + tl.arange(0, BLOCK)
    x = tl.load(a_ptr + offs, mask=offs < n, other=0.0, eviction_policy="evict_first")
    tl.store(partial_ptr + pid, tl.sum(x.to(tl.float32), axis=0))


@triton.jit
def write_kernel(c_ptr,           # output, n elements
                 value,           # non-zero scalar written everywhere
                 n,
                 BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    tl.store(c_ptr + offs, tl.full((BLOCK,), value, c_ptr.dtype.element_ty), mask=offs < n)


@triton.jit
def copy_kernel(a_ptr,            # input
                c_ptr,            # output
                n,
                BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    tl.store(c_ptr + offs, tl.load(a_ptr + offs, mask=mask, eviction_policy="evict_first"), mask=mask)


@triton.jit
def triad_kernel(a_ptr,           # input
                 b_ptr,           # input
                 c_ptr,           # output: c = a + s * b
                 s,               # scalar
                 n,
                 BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    a = tl.load(a_ptr + offs, mask=mask, eviction_policy="evict_first")
    b = tl.load(b_ptr + offs, mask=mask, eviction_policy="evict_first")
    tl.store(c_ptr + offs, a + s * b, mask=mask)
