"""NVML fingerprint of a GPU and a background sampler of clocks, power and throttle reasons.

pynvml (nvidia-ml-py) is imported inside the functions: the package imports without it.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from .timing import summarize

# nvmlClocksEventReasons / nvmlClocksThrottleReasons bit -> name (nvml.h)
THROTTLE_REASONS = {
    0x1: "gpu_idle", 0x2: "applications_clocks_setting", 0x4: "sw_power_cap", 0x8: "hw_slowdown",
    0x10: "sync_boost", 0x20: "sw_thermal_slowdown", 0x40: "hw_thermal_slowdown", 0x80: "hw_power_brake_slowdown",
    0x100: "display_clock_setting",
}
# Reasons that mean the card ran slower than it could: a measurement under them is suspect.
HARMFUL_THROTTLE = {"sw_power_cap", "hw_slowdown", "sw_thermal_slowdown", "hw_thermal_slowdown",
                    "hw_power_brake_slowdown"}


class NvmlUnavailable(RuntimeError):
    """NVML cannot answer here: nvidia-ml-py missing, no driver, or no GPU it can see."""


def _nvml():
    try:
        import pynvml
    except ImportError as e:
        raise NvmlUnavailable(f"nvidia-ml-py not installed ({e}): pip install 'llmprobe[nvml]'") from None
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as e:
        raise NvmlUnavailable(f"NVML did not start: {e}") from None
    return pynvml


def _try(nv, fn, *args, default=None):
    try:
        v = fn(*args)
        return v.decode() if isinstance(v, bytes) else v
    except nv.NVMLError:  # NotSupported, NoPermission and friends, per field: record what exists
        return default


def describe_cuda(index: int = 0) -> dict[str, Any]:
    """The GPU's NVML fingerprint, or what torch alone can say of it when NVML cannot answer."""
    try:
        return fingerprint(index)
    except NvmlUnavailable as e:
        import torch
        p = torch.cuda.get_device_properties(index)
        return {"kind": "cuda", "name": p.name, "memory_bytes": p.total_memory, "sm_count": p.multi_processor_count,
                "capability": list(torch.cuda.get_device_capability(index)), "nvml": False, "nvml_error": str(e)}


def decode_throttle(mask: int | None) -> list[str] | None:
    """Reason names of a mask; None (unknown) when NVML could not say, never [] (not throttled)."""
    if mask is None:
        return None
    return [name for bit, name in THROTTLE_REASONS.items() if mask & bit]


def clock_event_mask(nv, handle) -> int | None:
    """The current clock-event (throttle) mask: NVML 12.4+ names it ClocksEventReasons and deprecates
    ClocksThrottleReasons; older bindings only have the latter. None when neither answers."""
    for fn in ("nvmlDeviceGetCurrentClocksEventReasons", "nvmlDeviceGetCurrentClocksThrottleReasons"):
        if hasattr(nv, fn):
            mask = _try(nv, getattr(nv, fn), handle)
            if mask is not None:
                return mask
    return None


def fingerprint(index: int = 0) -> dict[str, Any]:
    """Identity and state of GPU ``index``: what decides whether its numbers can be compared."""
    nv = _nvml()
    try:
        h = nv.nvmlDeviceGetHandleByIndex(index)
    except nv.NVMLError as e:
        raise NvmlUnavailable(f"NVML has no GPU {index}: {e}") from None
    name = _try(nv, nv.nvmlDeviceGetName, h)
    mem = _try(nv, nv.nvmlDeviceGetMemoryInfo, h)
    power_limit = _try(nv, nv.nvmlDeviceGetEnforcedPowerLimit, h)
    mig = _try(nv, nv.nvmlDeviceGetMigMode, h)
    procs = _try(nv, nv.nvmlDeviceGetComputeRunningProcesses, h, default=[]) or []
    ecc = _try(nv, nv.nvmlDeviceGetEccMode, h)
    cuda_drv = _try(nv, nv.nvmlSystemGetCudaDriverVersion)
    fp = {
        "kind": "cuda",
        "index": index,
        "name": name,
        "uuid": _try(nv, nv.nvmlDeviceGetUUID, h),
        "serial": _try(nv, nv.nvmlDeviceGetSerial, h),
        "memory_bytes": mem.total if mem else None,
        "memory_used_bytes": mem.used if mem else None,
        "driver_version": _try(nv, nv.nvmlSystemGetDriverVersion),
        "cuda_driver_version": f"{cuda_drv // 1000}.{cuda_drv % 1000 // 10}" if cuda_drv else None,
        "sm_clock_mhz": _try(nv, nv.nvmlDeviceGetClockInfo, h, nv.NVML_CLOCK_SM),
        "mem_clock_mhz": _try(nv, nv.nvmlDeviceGetClockInfo, h, nv.NVML_CLOCK_MEM),
        "max_sm_clock_mhz": _try(nv, nv.nvmlDeviceGetMaxClockInfo, h, nv.NVML_CLOCK_SM),
        "max_mem_clock_mhz": _try(nv, nv.nvmlDeviceGetMaxClockInfo, h, nv.NVML_CLOCK_MEM),
        "power_limit_w": power_limit / 1000 if power_limit else None,
        "power_draw_w": (_try(nv, nv.nvmlDeviceGetPowerUsage, h) or 0) / 1000 or None,
        "temperature_c": _try(nv, nv.nvmlDeviceGetTemperature, h, nv.NVML_TEMPERATURE_GPU),
        "ecc_enabled": bool(ecc[0]) if ecc else None,
        "mig_enabled": bool(mig[0]) if mig else False,
        "pcie_gen": _try(nv, nv.nvmlDeviceGetCurrPcieLinkGeneration, h),
        "pcie_width": _try(nv, nv.nvmlDeviceGetCurrPcieLinkWidth, h),
        "pcie_max_gen": _try(nv, nv.nvmlDeviceGetMaxPcieLinkGeneration, h),
        "pcie_max_width": _try(nv, nv.nvmlDeviceGetMaxPcieLinkWidth, h),
        "throttle_reasons": decode_throttle(clock_event_mask(nv, h)),
        "other_processes": len(procs),
    }
    fp["form_factor"] = form_factor(fp["name"] or "", fp["power_limit_w"])
    return fp


def form_factor(name: str, power_limit_w: float | None) -> str:
    """SXM vs PCIe: NVML has no field for it; the name says so for most cards, the power limit for the rest
    (H100/A100 SXM parts are set to 400-700 W, PCIe parts to 250-350 W)."""
    n = name.lower()
    if "pcie" in n or "nvl" in n:
        return "PCIe"
    if "sxm" in n or "hbm3" in n or "h200" in n:
        return "SXM"
    if power_limit_w:
        return "SXM" if power_limit_w >= 400 else "PCIe"
    return "unknown"


class Sampler:
    """Samples clocks, power, temperature, utilization and throttle reasons every ``interval_s``."""

    def __init__(self, index: int = 0, interval_s: float = 0.1):
        self.nv = _nvml()
        try:
            self.h = self.nv.nvmlDeviceGetHandleByIndex(index)
        except self.nv.NVMLError as e:
            raise NvmlUnavailable(f"NVML has no GPU {index}: {e}") from None
        self.interval_s = interval_s
        self.samples: list[dict[str, Any]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True, name="llmprobe-nvml")

    def _sample(self) -> dict[str, Any]:
        nv, h = self.nv, self.h
        util = _try(nv, nv.nvmlDeviceGetUtilizationRates, h)
        return {"t": time.perf_counter(), "sm_clock_mhz": _try(nv, nv.nvmlDeviceGetClockInfo, h, nv.NVML_CLOCK_SM),
                "mem_clock_mhz": _try(nv, nv.nvmlDeviceGetClockInfo, h, nv.NVML_CLOCK_MEM),
                "power_w": (_try(nv, nv.nvmlDeviceGetPowerUsage, h) or 0) / 1000 or None,
                "temperature_c": _try(nv, nv.nvmlDeviceGetTemperature, h, nv.NVML_TEMPERATURE_GPU),
                "gpu_util_pct": util.gpu if util else None, "mem_util_pct": util.memory if util else None,
                "throttle": clock_event_mask(nv, h)}

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.samples.append(self._sample())
            self._stop.wait(self.interval_s)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def summary(self) -> dict[str, Any]:
        return summarize_samples(self.samples, self.interval_s)


class EnergyMeter:
    """The energy the engine's GPUs consumed, from NVML's total-energy counter (mJ since the driver loaded;
    Volta and later), summed over ``indices``; ``read_mj`` is None where any GPU has no such counter."""

    def __init__(self, indices: list[int]):
        self.nv = _nvml()
        try:
            self.handles = [self.nv.nvmlDeviceGetHandleByIndex(i) for i in indices]
        except self.nv.NVMLError as e:
            raise NvmlUnavailable(f"NVML has no GPU among {indices}: {e}") from None

    def read_mj(self) -> int | None:
        got = [_try(self.nv, self.nv.nvmlDeviceGetTotalEnergyConsumption, h) for h in self.handles]
        return None if any(g is None for g in got) else sum(got)


def summarize_samples(samples: list[dict[str, Any]], interval_s: float) -> dict[str, Any]:
    reasons: dict[str, int] = {}
    known = 0
    for s in samples:
        names = decode_throttle(s.get("throttle"))
        if names is None:
            continue
        known += 1
        for r in names:
            reasons[r] = reasons.get(r, 0) + 1
    n = len(samples)
    harmful = {r: c / known for r, c in reasons.items() if r in HARMFUL_THROTTLE} if known else {}
    return {
        "interval_s": interval_s, "samples": n,
        **{k: summarize([s[k] for s in samples if s.get(k) is not None])
           for k in ("sm_clock_mhz", "mem_clock_mhz", "power_w", "temperature_c", "gpu_util_pct")},
        # fractions of the samples whose reasons NVML reported; None when it reported none at all
        "throttle_fraction": {r: c / known for r, c in reasons.items()} if known else None,
        "throttled": bool(harmful) if known else None,
    }
