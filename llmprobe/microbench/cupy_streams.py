"""Launchers for kernels/*.cu through CuPy RawModule; traffic comes from the sources' declarations."""

from __future__ import annotations

import re
from importlib import resources

from ..errors import MissingDependency

_DECL = re.compile(r"llmprobe:\s*kernel=(\w+)\s+(.*)$", re.M)


def source(name: str) -> str:
    return (resources.files("llmprobe.kernels") / name).read_text()


def declarations(name: str) -> dict[str, dict[str, str]]:
    """{"copy_v4": {"reads": "1", "writes": "1", "flops": "0"}, ...} from `// llmprobe: kernel=...` lines."""
    out = {}
    for kernel, rest in _DECL.findall(source(name)):
        out[kernel] = dict(kv.split("=", 1) for kv in rest.split())
    return out


def stream_bytes(kernel: str, n4: int) -> int:
    """Bytes a stream kernel moves over n4 float4 elements (16 B each), from its declaration."""
    d = declarations("stream.cu")[kernel]
    return (int(d["reads"]) + int(d["writes"])) * n4 * 16


def stream_flops(kernel: str, n4: int) -> int:
    return int(declarations("stream.cu")[kernel]["flops"]) * n4


def fma_flops(threads: int, iters: int, chains: int = 8) -> int:
    """2 FLOPs per FMA x chains x iters per thread (kernels/fma.cu declaration)."""
    assert declarations("fma.cu")["fma_chain_fp32"]["flops_per_thread"] == "2*CHAINS*iters"
    return 2 * chains * iters * threads


def module(name: str, options: tuple[str, ...] = ()):
    try:
        import cupy
    except ImportError as e:
        raise MissingDependency("CuPy", "cupy12", "cupy13", cause=e) from None
    return cupy.RawModule(code=source(name), options=("-std=c++17",) + options)
