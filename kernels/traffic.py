"""What each benchmark kernel reads and writes per element, and the FLOPs of the compute kernels: the one
table launchers and tests use.

Modelled on BabelStream's benchmark.h. An element is one float32 (the CUDA _v4 kernels move four
per access, which changes nothing per element): bytes moved = (reads + writes) x elements x 4.
Pure Python: importing it needs neither triton nor cupy.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Traffic:
    reads: int    # arrays read, one element each
    writes: int   # arrays written

    def bytes(self, elements: int, element_size: int = 4) -> int:
        return (self.reads + self.writes) * elements * element_size


STREAM = {
    "read": Traffic(reads=1, writes=0),    # + one float32 partial sum per program/thread
    "write": Traffic(reads=0, writes=1),
    "copy": Traffic(reads=1, writes=1),
    "triad": Traffic(reads=2, writes=1),   # c = a + s * b
}

# fma.cu: independent FMA chains per thread, enough to hide the FMA latency on every scheduler
# (4 cycles x 4 schedulers per SM); compiled in as -DCHAINS so the source and the count agree.
FMA_CHAINS = 8


def fma_flops(threads: int, iters: int) -> int:
    """2 FLOPs per FMA x chains x iterations x threads."""
    return 2 * FMA_CHAINS * iters * threads


def matmul_flops(m: int, n: int, k: int) -> int:
    """C[m, n] = A[m, k] @ B[k, n]: m x n x k multiply-accumulates of 2 FLOPs."""
    return 2 * m * n * k
