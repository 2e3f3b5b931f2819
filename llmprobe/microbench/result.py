"""Typed results of a ceilings measurement, its sweep points, and the check a matmul must pass before it is timed."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from ..errors import UserError
from ..hardware import Ceilings, GpuSpec
from ..timing import Timing


class Stages:
    """Progress through a measurement's planned stages: "[k/N] name", elapsed, and at most how long is
    left (the remaining stages' time budgets; a stage may finish under its budget, never far over)."""

    def __init__(self, plan: list[tuple[str, float]], say):
        import time
        self.plan, self.say, self.k, self.t0, self._time = plan, say, 0, time.perf_counter(), time.perf_counter

    def next(self) -> None:
        name = self.plan[self.k][0]
        left = sum(b for _, b in self.plan[self.k:])
        self.k += 1
        self.say(f"[{self.k}/{len(self.plan)}] {name} — {self._time() - self.t0:.0f} s elapsed, at most ~{left:.0f} s left")


@dataclass
class MethodResult:
    name: str                      # e.g. "cupy.copy_v4", "torch.matmul"
    kind: str                      # "bandwidth" | "flops"
    dtype: str | None              # element format (fp32 for streams, bf16/fp16/fp8 for matmul)
    value: float | None            # best median over sizes/shapes: B/s or FLOP/s
    valid: bool                    # validated against a reference before timing
    error: str | None = None       # why it failed or was skipped
    best_params: dict[str, Any] = field(default_factory=dict)   # size or shape of the best point
    sweep: list[dict[str, Any]] = field(default_factory=list)   # every size/shape: sweep_point()
    note: str | None = None        # e.g. a sweep cut short by its time budget

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


UNIT = {"bandwidth": "bytes", "flops": "flops"}   # what one call of a method of each kind does, counted


def sweep_point(params: dict[str, Any], work: float, kind: str, t: Timing) -> dict[str, Any]:
    """One size/shape of a sweep: its ``params``, the work of one call (``bytes`` moved or ``flops``), the
    rate at the median call (the figure) and at the fastest, and the timing's named statistics and raw
    samples (Timing.to_dict)."""
    unit = UNIT[kind]
    return {**params, unit: work, f"{unit}_per_s_median": work / t.median_s, f"{unit}_per_s_max": work / t.best_s,
            **t.to_dict()}


def from_sweep(name: str, kind: str, dtype: str | None, points: list[dict[str, Any]], params: tuple[str, ...],
               note: str | None = None, eligible: Callable[[dict[str, Any]], bool] = lambda p: True) -> MethodResult:
    """A method's result from its sweep: the best median rate over the timed (and ``eligible``) points,
    with that point's ``params`` as where it was reached; every point is kept."""
    rate = f"{UNIT[kind]}_per_s_median"
    top = max((p for p in points if rate in p and eligible(p)), key=lambda p: p[rate])
    return MethodResult(name, kind, dtype, top[rate], True, best_params={k: top[k] for k in params}, sweep=points,
                        note=note)


# max |error| / max |reference| a product may show and still count as computed: low-precision
# inputs accumulate rounding over k terms; fp32 should agree to a few ulps of the sum
MATMUL_TOLERANCE = {"fp32": 1e-4, "bf16": 3e-2, "fp16": 3e-2, "fp8": 3e-2}


def matmul_error(c, a, b, dtype: str, rows: int = 256) -> str | None:
    """Why ``c`` is not ``a @ b`` (its first ``rows`` rows against an fp32 product), or None if it is.

    fp32 is the widest format every input converts to on every device (fp8 included)."""
    ref = a[:rows].float() @ b.float()
    err = ((c[:rows].float() - ref).abs().max() / ref.abs().max()).item()
    return f"relative error {err:.2e}" if err > MATMUL_TOLERANCE[dtype] else None


@dataclass
class Measurement:
    device: str                                  # "cuda" | "cpu"
    fingerprint: dict[str, Any]
    methods: list[MethodResult]
    mode: str
    methodology: str
    provenance: dict[str, Any]
    telemetry: dict[str, Any] | None = None
    datasheet: GpuSpec | None = None
    warnings: list[str] = field(default_factory=list)
    duration_s: float | None = None

    def _valid(self, kind: str):
        return [m for m in self.methods if m.kind == kind and m.valid and m.value]

    @property
    def best_stream_bytes_per_s(self) -> float | None:
        """The best bandwidth of any stream kernel (write and copy included)."""
        vals = [m.value for m in self._valid("bandwidth")]
        return max(vals) if vals else None

    @property
    def floor_stream(self) -> MethodResult | None:
        """The stream the floors use: the best *read* kernel (decode reads weights and KV, it writes almost
        nothing), else the best of any where no read kernel gave a figure (said in the ceilings)."""
        valid = self._valid("bandwidth")
        reads = [m for m in valid if is_read(m)]
        return max(reads or valid, key=lambda m: m.value) if valid else None

    @property
    def bandwidth_bytes_per_s(self) -> float | None:
        """The floors' bandwidth (``floor_stream``)."""
        f = self.floor_stream
        return f.value if f is not None else None

    @property
    def flops_per_s(self) -> dict[str, float]:
        """The best FLOP/s of any valid method, per dtype."""
        out: dict[str, float] = {}
        for m in self._valid("flops"):
            out[m.dtype] = max(out.get(m.dtype, 0.0), m.value)
        return out

    def ceilings(self) -> Ceilings:
        """The measured ceilings; refused when no bandwidth method produced a valid figure."""
        fp = self.fingerprint
        ds = self.datasheet
        name = fp.get("name") or self.device
        if not self.bandwidth_bytes_per_s:
            failed = "; ".join(f"{m.name}: {m.error}" for m in self.methods if m.kind == "bandwidth" and not m.valid)
            raise UserError(f"no bandwidth method gave a valid figure on {name} ({failed or 'none ran'}): "
                            "there are no measured ceilings to use")
        peak = dict(self.flops_per_s)
        not_measured = {}
        stream = self.floor_stream
        if not is_read(stream):
            not_measured["hbm_bytes_per_s"] = f"no read kernel gave a figure: the best stream ({stream.name}) stands in"
        if "bf16" in peak and "fp16" not in peak:
            peak["fp16"] = peak["bf16"]
            not_measured["peak_flops.fp16"] = "copied from the measured bf16 (same tensor-core path; --full measures it)"
        ar = next((m for m in self._valid("collective") if m.best_params.get("op") == "all_reduce"), None)
        if ar is not None:
            interconnect, latency = ar.value, ar.best_params["latency_s"]
        else:
            interconnect = ds.interconnect_bytes_per_s if ds else None
            latency = ds.collective_latency_s if ds else None
            if ds:
                not_measured["interconnect_bytes_per_s"] = f"datasheet ({ds.id})"
                not_measured["collective_latency_s"] = f"catalog ({ds.id}): {ds.collective_latency_source}"
        memory = fp.get("memory_bytes")
        if not memory and ds:
            not_measured["memory_bytes"] = f"datasheet ({ds.id})"
        return Ceilings(name=name, hbm_bytes_per_s=self.bandwidth_bytes_per_s, peak_flops=peak,
                        memory_bytes=float(memory or (ds.memory_bytes if ds else 0.0)),
                        interconnect_bytes_per_s=interconnect, collective_latency_s=latency,
                        source=f"measured on this {self.device} ({self.methodology}, {self.mode}, "
                               f"{self.provenance.get('created_utc', '')})",
                        kind="measured", gpu_id=ds.id if ds else None, not_measured=not_measured,
                        bandwidth_method=stream.name, mode=self.mode)

    def usable(self) -> bool:
        return bool(self.bandwidth_bytes_per_s)

    def datasheet_ceilings(self) -> Ceilings | None:
        return self.datasheet.ceilings() if self.datasheet else None

    def to_dict(self) -> dict[str, Any]:
        return {"device": self.device, "bandwidth_bytes_per_s": self.bandwidth_bytes_per_s,
                "bandwidth_method": self.floor_stream.name if self.floor_stream else None,
                "best_stream_bytes_per_s": self.best_stream_bytes_per_s, "flops_per_s": self.flops_per_s,
                "methods": [m.to_dict() for m in self.methods], "fingerprint": self.fingerprint, "mode": self.mode,
                "methodology": self.methodology, "provenance": self.provenance, "telemetry": self.telemetry,
                "datasheet_id": self.datasheet.id if self.datasheet else None, "warnings": self.warnings,
                "duration_s": self.duration_s, "ceilings": self.ceilings().to_dict() if self.usable() else None}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Measurement:
        from ..hardware import gpu_catalog
        return cls(device=d["device"], fingerprint=d["fingerprint"], methods=[MethodResult(**m) for m in d["methods"]],
                   mode=d["mode"], methodology=d["methodology"], provenance=d["provenance"], telemetry=d.get("telemetry"),
                   datasheet=gpu_catalog().get(d.get("datasheet_id") or ""), warnings=d.get("warnings", []),
                   duration_s=d.get("duration_s"))


def is_read(m: MethodResult) -> bool:
    """A read-type stream kernel: torch.sum, cupy.read_v4, triton.read."""
    return m.kind == "bandwidth" and (m.name == "torch.sum" or m.name.rsplit(".", 1)[-1].startswith("read"))


def ceilings_from_record(d: dict[str, Any]) -> Ceilings:
    """Ceilings from a saved measurement dict (as embedded in run records): derived again from its methods
    where it keeps them, so a record saved before a rule changed (e.g. floors on the read kernel) gets the
    rule of today; else the ceilings it stored."""
    if d.get("methods") and d.get("fingerprint") is not None:
        return Measurement.from_dict(d).ceilings()
    c = d.get("ceilings")
    if not c or not c.get("hbm_bytes_per_s"):
        raise UserError("the measurement holds no valid bandwidth figure: it cannot be used as ceilings")
    return Ceilings.from_dict(c)
