"""GPU catalog (datasheet) and Ceilings: the limits the roofline divides by.

A Ceilings object is the only thing the cost model reads, so a datasheet entry and a measurement
(``llmprobe roofline`` on the card) are interchangeable.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from functools import lru_cache
from importlib import resources
from typing import Any

from .errors import UserError, unknown_name

import tomllib

GIB = 1 << 30


@dataclass(frozen=True)
class Ceilings:
    name: str
    hbm_bytes_per_s: float
    peak_flops: dict[str, float]           # dtype -> dense FLOP/s
    memory_bytes: float
    interconnect_bytes_per_s: float | None = None   # bus bandwidth of a collective (per direction, per GPU)
    collective_latency_s: float | None = None       # alpha: the time of one small collective
    source: str = ""
    kind: str = "datasheet"                # "datasheet" | "measured"
    gpu_id: str | None = None              # catalog id it was derived from or matched to
    # figures of a measured set that were not measured: {"peak_flops.fp16": "copied from the measured bf16 ..."}
    not_measured: dict[str, str] = field(default_factory=dict)
    bandwidth_method: str | None = None    # measured: the stream kernel hbm_bytes_per_s comes from (a read kernel)
    mode: str | None = None                # measured: the pass (quick: one matmul shape; default; full)

    def flops_per_s(self, dtype: str) -> float:
        """The peak FLOP/s in ``dtype``."""
        if dtype in self.peak_flops:
            return self.peak_flops[dtype]
        # fp16 and bf16 run on the same tensor-core path; fall back between them only.
        twin = {"bf16": "fp16", "fp16": "bf16"}.get(dtype)
        if twin in self.peak_flops:
            return self.peak_flops[twin]
        raise UserError(f"{self.name}: no {dtype} FLOP/s ceiling (has {', '.join(sorted(self.peak_flops))})")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["peak_flops"] = dict(self.peak_flops)
        d["not_measured"] = dict(self.not_measured)
        return d

    @classmethod
    def from_dict(cls, c: dict[str, Any]) -> Ceilings:
        """Ceilings as ``to_dict`` stored them. Saved before the collectives' latency was modelled: the catalog's
        latency for the card, and a note that it was not measured."""
        not_measured = dict(c.get("not_measured") or {})
        latency = c.get("collective_latency_s")
        if "collective_latency_s" not in c and c.get("gpu_id"):
            ds = gpu_catalog().get(c["gpu_id"])
            if ds is not None:
                latency = ds.collective_latency_s
                not_measured["collective_latency_s"] = f"catalog ({ds.id}): {ds.collective_latency_source}"
        return cls(**{k: c[k] for k in ("name", "hbm_bytes_per_s", "peak_flops", "memory_bytes",
                                        "interconnect_bytes_per_s", "source", "kind", "gpu_id")},
                   collective_latency_s=latency, not_measured=not_measured,
                   bandwidth_method=c.get("bandwidth_method"), mode=c.get("mode"))


@dataclass(frozen=True)
class GpuSpec:
    id: str
    name: str
    memory_bytes: float
    hbm_bytes_per_s: float
    peak_flops: dict[str, float]
    interconnect_bytes_per_s: float
    interconnect: str
    collective_latency_s: float
    collective_latency_source: str
    l2_bytes: int
    tdp_w: float
    form_factor: str
    source: str
    aliases: tuple[str, ...] = field(default=())

    def ceilings(self) -> Ceilings:
        return Ceilings(name=self.name, hbm_bytes_per_s=self.hbm_bytes_per_s, peak_flops=dict(self.peak_flops),
                        memory_bytes=self.memory_bytes, interconnect_bytes_per_s=self.interconnect_bytes_per_s,
                        collective_latency_s=self.collective_latency_s,
                        source=f"datasheet: {self.source}; collective latency: {self.collective_latency_source}",
                        kind="datasheet", gpu_id=self.id)

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "hbm_bytes_per_s": self.hbm_bytes_per_s,
                "memory_bytes": self.memory_bytes, "peak_flops": dict(self.peak_flops),
                "interconnect_bytes_per_s": self.interconnect_bytes_per_s, "interconnect": self.interconnect,
                "collective_latency_s": self.collective_latency_s,
                "collective_latency_source": self.collective_latency_source,
                "l2_bytes": self.l2_bytes, "tdp_w": self.tdp_w, "form_factor": self.form_factor,
                "source": self.source, "aliases": list(self.aliases)}


@lru_cache(maxsize=1)
def gpu_catalog() -> dict[str, GpuSpec]:
    raw = tomllib.loads((resources.files("llmprobe.data") / "gpus.toml").read_text())
    out = {}
    for gid, e in raw.items():
        out[gid] = GpuSpec(
            id=gid, name=e["name"], memory_bytes=e["memory_gib"] * GIB, hbm_bytes_per_s=e["hbm_tb_per_s"] * 1e12,
            peak_flops={k: v * 1e12 for k, v in e["tflops"].items()},
            interconnect_bytes_per_s=e["interconnect_gb_per_s"] * 1e9, interconnect=e["interconnect"],
            collective_latency_s=e["collective_latency_us"] * 1e-6,
            collective_latency_source=e["collective_latency_source"],
            l2_bytes=int(e["l2_mib"] * (1 << 20)), tdp_w=e["tdp_w"], form_factor=e["form_factor"],
            source=e["source"], aliases=tuple(e.get("aliases", ())))
    return out


def _alias_map() -> dict[str, str]:
    m = {}
    for gid, spec in gpu_catalog().items():
        m[gid] = gid
        for a in spec.aliases:
            m[a] = gid
    return m


def resolve_gpu(name: str) -> GpuSpec:
    key = name.strip().lower().replace("_", "-").replace(" ", "-")
    aliases = _alias_map()
    if key in aliases:
        return gpu_catalog()[aliases[key]]
    raise unknown_name("GPU", name, aliases)


def match_device_name(device_name: str, memory_bytes: float | None = None) -> GpuSpec | None:
    """The catalog entry for a name NVML/torch reports (e.g. 'NVIDIA H100 80GB HBM3')."""
    n = device_name.lower()
    cands = [g for g in gpu_catalog().values() if g.name.lower() == n]
    if not cands:
        fam = next((f for f in ("h200", "h100", "a100", "l40s", "l4", "4090") if f in n.replace(" ", "")), None)
        if fam is None:
            return None
        cands = [g for g in gpu_catalog().values() if fam in g.id.replace("rtx-", "")]
        if fam == "l4":
            cands = [g for g in cands if g.id == "l4"]
        pcie = "pcie" in n
        nvl = "nvl" in n
        cands = [g for g in cands if ("nvl" in g.id) == nvl and (g.form_factor == "PCIe") == (pcie or nvl)] or cands
    if memory_bytes and len(cands) > 1:
        cands.sort(key=lambda g: abs(g.memory_bytes - memory_bytes))
    return cands[0] if cands else None
