"""Measured ceilings: bandwidth and FLOP/s of this machine's GPU (or CPU), saved for reuse."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable

from ..errors import MissingDependency, UserError
from ..provenance import cpu_description, provenance
from ..records import CEILINGS_METHODOLOGY
from .result import Measurement, MethodResult, Stages, ceilings_from_record

GPU_METHODS = ("torch", "triton", "cupy")


def _has_cuda() -> bool:
    try:
        import torch
    except ImportError as e:
        raise MissingDependency("torch (needed to measure this machine)", "torch", cause=e) from None
    return torch.cuda.is_available()


def _available(name: str) -> bool:
    import importlib.util
    return importlib.util.find_spec({"triton": "triton", "cupy": "cupy"}[name]) is not None


COLLECTIVES_BUDGET_S = 10.0   # about: process start and init, then the size sweep


def _collectives_stage(world: int, backend: str) -> tuple[str, float]:
    return f"all-reduce and all-gather over {world} {backend} ranks", COLLECTIVES_BUDGET_S


def _collectives(world: int, backend: str, mode: str) -> list[MethodResult]:
    """All-reduce and all-gather across ``world`` ranks; a failure is a failed method, never a crash."""
    from .collective import collective_methods
    try:
        return collective_methods(world, backend, mode)
    except (RuntimeError, OSError, ValueError) as e:
        return [MethodResult(f"torch.distributed.{op} ({backend}, {world} ranks)", "collective", "fp32", None, False,
                             str(e)) for op in ("all_reduce", "all_gather")]


MODES = ("quick", "default", "full")


def measure(mode: str = "default", methods: tuple[str, ...] | None = None,
            say: Callable[[str], None] = lambda m: None, device: str | None = None,
            collectives: bool = True, model_shapes: tuple[tuple[int, int, int], ...] = ()) -> Measurement:
    """``device``: "cpu" measures the CPU even where a GPU is present (an engine running on the CPU);
    ``collectives``: False leaves out the all-reduce/all-gather stage (a one-rank run does not use it);
    ``model_shapes``: a model's own GEMMs (m, n, k), swept first by the GPU matmul methods."""
    if mode not in MODES:
        raise UserError(f"unknown measurement mode {mode!r}")
    t0 = time.perf_counter()
    warnings: list[str] = []
    if device == "cpu" or not _has_cuda():
        if methods and set(methods) - {"torch"}:
            extra = sorted(set(methods) - {"torch"})
            raise UserError(f"--methods {','.join(extra)} measure a CUDA GPU and this machine has none "
                            f"(install with pip install 'llmprobe[gpu]' on a GPU machine)")
        say("no CUDA GPU: measuring the CPU instead")
        from . import cpu
        fp = cpu_description()
        stages = Stages(cpu.plan(mode) + ([_collectives_stage(2, "gloo")] if collectives else []), say)
        results = cpu.run(mode, stages)
        if collectives:
            stages.next()
            results += _collectives(2, "gloo", mode)
        return Measurement(device="cpu", fingerprint=fp, methods=results, mode=mode, methodology=CEILINGS_METHODOLOGY,
                           provenance=provenance(fp), warnings=["no CUDA GPU: these are CPU ceilings"],
                           duration_s=time.perf_counter() - t0)
    from ..hardware import match_device_name
    from . import gpu
    wanted = set(methods or GPU_METHODS)
    unknown = wanted - set(GPU_METHODS)
    if unknown:
        raise UserError(f"unknown --methods {', '.join(sorted(unknown))}; choose from {', '.join(GPU_METHODS)}")
    for m in sorted(wanted - {"torch"}):
        if not _available(m):
            missing = MissingDependency("Triton", "triton") if m == "triton" else MissingDependency("CuPy", "cupy12", "cupy13")
            if methods:  # asked for by name: say how to get it
                raise missing
            warnings.append(f"{m} methods skipped: {missing}")
            wanted.discard(m)
    from ..telemetry import NvmlUnavailable, Sampler, describe_cuda
    fp = describe_cuda()
    try:
        sampler = Sampler(interval_s=0.1)
    except NvmlUnavailable as e:  # measure anyway, without clocks and throttle reasons
        sampler = None
        warnings.append(f"no NVML telemetry: {e}")
    if fp.get("mig_enabled"):
        warnings.append("MIG is enabled: these are the ceilings of a MIG slice, not of the whole card")
    if fp.get("other_processes"):
        warnings.append(f"{fp['other_processes']} other process(es) use this GPU: figures may be low")
    say(f"measuring {fp.get('name')}")
    import torch
    suite = gpu.suite(mode, wanted, model_shapes)
    planned = suite.stages()
    n_gpus = torch.cuda.device_count() if collectives else 1
    stages = Stages([(label, budget) for label, budget, _ in planned]
                    + ([_collectives_stage(n_gpus, "nccl")] if n_gpus >= 2 else []), say)
    with sampler if sampler is not None else contextlib.nullcontext():
        for _, _, run_stage in planned:
            stages.next()
            run_stage()
    results, telemetry = suite.results, sampler.summary() if sampler is not None else None
    if telemetry and telemetry.get("throttled"):
        warnings.append(f"the card throttled during measurement: {telemetry['throttle_fraction']}")
    if n_gpus >= 2:
        stages.next()
        results += _collectives(n_gpus, "nccl", mode)
    for r in results:
        if not r.valid:
            warnings.append(f"{r.name} ({r.dtype}) failed: {r.error}")
    return Measurement(device="cuda", fingerprint=fp, methods=results, mode=mode, methodology=CEILINGS_METHODOLOGY,
                       provenance=provenance(fp), telemetry=telemetry,
                       datasheet=match_device_name(fp.get("name") or "", fp.get("memory_bytes")),
                       warnings=warnings, duration_s=time.perf_counter() - t0)


def current_device(device: str | None = None) -> dict:
    if device != "cpu" and _has_cuda():
        from ..telemetry import describe_cuda
        return describe_cuda()
    return cpu_description()


def _age(saved: dict) -> str:
    import datetime as dt
    try:
        then = dt.datetime.fromisoformat(saved["provenance"]["created_utc"])
    except (KeyError, TypeError, ValueError):
        return "at an unknown time"
    s = (dt.datetime.now(dt.timezone.utc) - then).total_seconds()
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if s >= size:
            n = int(s // size)
            return f"{n} {unit}{'s' if n > 1 else ''} ago"
    return "just now"


def measure_or_load(mode: str = "default", remeasure: bool = False,
                    progress: Callable[[str], None] | None = None,
                    methods: tuple[str, ...] | None = None,
                    model_shapes: tuple[tuple[int, int, int], ...] = ()) -> Measurement:
    """Saved ceilings of this device if there are any (same card, driver, methodology), else measure and save.

    ``progress`` receives one message per measurement stage.
    """
    from . import store
    say = progress or (lambda msg: None)
    if not remeasure and not methods:
        device = current_device()
        saved = store.load_for_device(device)
        if saved is not None and _serves(saved, mode):
            say(f"reusing ceilings from {store.path_for(device)}, measured {_age(saved)} ({saved.get('mode')} mode); "
                "--remeasure to measure again")
            return Measurement.from_dict(saved)
    m = measure(mode, methods, say, model_shapes=model_shapes)
    store.save(m.to_dict())
    return m


def _serves(saved: dict, mode: str) -> bool:
    """A saved measurement serves the default mode, or its own; never the partial pass `profile` measures."""
    return not saved.get("partial") and (mode == "default" or saved.get("mode") == mode)


def ceilings_for_profile(engine_device: str, tp: int, say: Callable[[str], None]) -> dict:
    """The ceilings a profile records: this device's saved ones (any mode), else a quick pass measured and
    saved now.

    The pass is the quick mode's torch baselines only (no Triton/CuPy compilation), with collectives only
    where the run has more than one rank, so it adds seconds before the engine starts (8-13 s on a 2-core
    Xeon, 2026-12-02) and never a compile; it is marked partial, so a later `llmprobe roofline` measures in full.
    """
    from . import store
    device = current_device(engine_device)
    saved = store.load_for_device(device)
    if saved is not None and saved.get("ceilings"):
        say(f"ceilings: reusing {store.path_for(device)}, measured {_age(saved)} ({saved.get('mode')} mode)")
        return saved
    say("ceilings: none saved for this device, measuring a quick pass before the engine starts "
        "(torch baselines; --no-ceilings skips it)")
    t0 = time.perf_counter()
    m = measure("quick", ("torch",), say, device=engine_device, collectives=tp > 1)
    d = dict(m.to_dict(), partial="torch baselines only (profile's quick pass)")
    path = store.save(d)
    say(f"ceilings: measured in {time.perf_counter() - t0:.0f} s, saved to {path} (reused by later runs)")
    return d


__all__ = ["Measurement", "MethodResult", "ceilings_from_record", "measure", "measure_or_load"]
