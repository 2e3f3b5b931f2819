"""Scenarios and methodology → a run record (the article's method, made exact).

For each scenario (batch, prompt_len, gen_len): warm-up run(s), then measured runs; every run
submits ``batch`` random token-id prompts at once and generates exactly ``gen_len`` tokens each.
Per run (``records.Run.metrics``): TTFT, TPOT and latency averaged over its requests, TPS = output
tokens / wall time. Per scenario (``records.ScenarioResult.of``): each metric's named statistics over
the measured runs.
The record is rewritten atomically after every scenario, so an interrupted sweep keeps what finished.
Also here: the preflight before an engine starts (a model that cannot fit is refused, with what
would), the traced steps (``--trace-steps``: profiler windows around steps of extra runs, held to
the untraced steps at the same index), the ceilings a record carries, and energy read around each run.
"""

from __future__ import annotations

import contextlib
import os
import random
import statistics
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from .engines import EngineOptions, check_options, create_engine, engine_device
from .engines.base import TraceSpec
from .dtypes import ACTIVATION_DTYPES, kv_dtype_of, normalize, quantized_weight_dtype
from .errors import DoesNotFit, UserError
from .hostload import HostLoad
from .models import ModelSpec, resolve_model
from .provenance import cpu_description, provenance
from .records import (PROFILE_METHODOLOGY, SCHEMA_VERSION, Run, RunRecord, ScenarioResult, TraceSummary,
                      atomic_write_json)

@dataclass(frozen=True)
class Scenario:
    batch: int
    prompt_len: int = 256
    gen_len: int = 256

    def __post_init__(self):
        if min(self.batch, self.prompt_len, self.gen_len) <= 0:
            raise UserError(f"batch, prompt and generation lengths must be positive, got {self}")


def scenarios_from(batches: Sequence[int], prompt_lens: Sequence[int], gen_lens: Sequence[int]) -> list[Scenario]:
    return [Scenario(b, p, g) for p in prompt_lens for g in gen_lens for b in batches]


def detect_provider() -> str | None:
    """The cloud a run happens on, where its environment says so."""
    env = os.environ
    if env.get("LLMPROBE_PROVIDER"):
        return env["LLMPROBE_PROVIDER"]
    if env.get("RUNPOD_POD_ID"):
        return "runpod"
    if env.get("VAST_CONTAINERLABEL") or env.get("CONTAINER_ID", "").startswith("C."):
        return "vast.ai"
    if os.path.exists("/etc/lambda-stack-version") or env.get("LAMBDA_INSTANCE_ID"):
        return "lambda"
    return None


# ---- the whole profile -----------------------------------------------------------------------------

def preflight(spec: ModelSpec, scenarios: Sequence[Scenario], device: dict[str, Any], tp: int, dtype: str,
              kv_dtype: str | None, gpu_memory_utilization: float) -> dict[str, Any] | None:
    """Refuse, before any engine starts, a model that cannot fit: say what would."""
    from .costs import RankCosts
    from .hardware import match_device_name
    from .memory import Card, fit_advice, memory_required
    worst = max(scenarios, key=lambda s: s.batch * (s.prompt_len + s.gen_len))
    if device.get("kind") == "cuda":
        gpu = match_device_name(device.get("name") or "", device.get("memory_bytes"))
        if gpu is None:
            return None
        card = Card(float(device.get("memory_bytes") or gpu.memory_bytes), gpu_memory_utilization,
                    has_interconnect=bool(gpu.interconnect_bytes_per_s))
        costs = RankCosts.of(spec, dtype=dtype, kv_dtype=kv_dtype, tp=tp)
        need, have = memory_required(costs, worst.batch, worst.prompt_len, worst.gen_len), card.available_bytes
        if need > have:
            raise DoesNotFit(f"{spec.name} does not fit on {gpu.name} at batch {worst.batch}: needs "
                             f"{need / 1e9:.1f} GB of {have / 1e9:.1f} GB",
                             fit_advice(costs, card, worst.batch, worst.prompt_len, worst.gen_len))
        return {"memory_required_bytes": need, "memory_available_bytes": have, "gpu_id": gpu.id}
    ram = device.get("memory_bytes")
    if ram:  # CPU: weights and KV live in RAM; keep 20% for everything else
        def ram_needed(model: ModelSpec) -> float:
            costs = RankCosts.of(model, dtype=dtype, kv_dtype=kv_dtype)  # every rank shares the one RAM
            return costs.resident_weight_bytes + worst.batch * (worst.prompt_len + worst.gen_len) * costs.kv_entry_bytes
        need = ram_needed(spec)
        if need > 0.8 * ram:
            fits = [n for n in range(spec.num_layers - 1, 0, -1) if ram_needed(spec.with_layers(n)) <= 0.8 * ram]
            hint = (f"try --layers {fits[0]} (of {spec.full_num_layers or spec.num_layers})" if fits
                    else "it does not fit even with one layer")
            raise UserError(f"{spec.name} needs {need / (1 << 30):.1f} GiB of RAM, this machine has "
                            f"{ram / (1 << 30):.1f} GiB (80% usable): {hint}")
        return {"memory_required_bytes": need, "memory_available_bytes": 0.8 * ram}
    return None


def describe_device(engine_device: str) -> dict[str, Any]:
    if engine_device == "cuda":
        from .telemetry import describe_cuda
        return describe_cuda()
    return cpu_description()


def profile(model: str | ModelSpec, scenarios: Sequence[Scenario] = (Scenario(1), Scenario(8)), backend: str = "vllm",
            runs: int = 5, warmup: int = 1, layers: int | None = None, out: str | None = None,
            progress: Callable[[str], None] | None = None, provider: str | None = None,
            engine_options: dict[str, Any] | None = None, trace_steps: int = 0,
            measure_ceilings: bool = True) -> RunRecord:
    """Profile ``model`` over ``scenarios`` and return the run record (also written to ``out``).
    ``trace_steps``: that many prefill and decode steps per scenario traced in extra runs (traces.py),
    their files in ``<out>.traces/``. The record carries this device's saved ceilings; where none are
    saved, ``measure_ceilings`` measures a quick pass first (so that `explain` works on any machine)."""
    if runs <= 0 or warmup < 0:
        raise UserError(f"--runs must be positive and --warmup non-negative (got {runs}, {warmup})")
    if trace_steps < 0:
        raise UserError(f"--trace-steps must be non-negative (got {trace_steps})")
    spec = resolve_model(model) if isinstance(model, str) else model
    if layers:
        spec = spec.with_layers(layers)
    eo = _engine_options(backend, spec, model if isinstance(model, str) and os.path.isdir(model) else None,
                         scenarios, dict(engine_options or {}), out if trace_steps else None, bool(trace_steps))
    say = progress or (lambda msg: None)
    weight_dtype = quantized_weight_dtype(eo.quantization) or normalize(eo.dtype, ACTIVATION_DTYPES, "--dtype")
    kind = engine_device(backend, eo.device)
    device = describe_device(kind)
    fit = preflight(spec, scenarios, device, eo.tp, weight_dtype, kv_dtype_of(eo.kv_cache_dtype),
                    eo.gpu_memory_utilization)
    ceilings = record_ceilings(kind, device, eo.tp, measure_ceilings, say)
    say(f"starting {backend} engine for {spec.name}" + (f" ({spec.layers_note})" if spec.layers_note else ""))
    engine = create_engine(backend, eo)
    record_dir = os.path.dirname(os.path.abspath(out)) if out else os.getcwd()
    record: RunRecord | None = None
    try:
        record = RunRecord(
            schema_version=SCHEMA_VERSION, methodology=PROFILE_METHODOLOGY, status="running",
            provenance=provenance(device),
            config={"model": spec.name, "model_source": spec.source, "layers": spec.num_layers,
                    "full_layers": spec.full_num_layers or spec.num_layers, "layers_note": spec.layers_note,
                    "backend": backend, "runs": runs, "warmup": warmup, "weights": eo.weights,
                    "routing": eo.routing if spec.is_moe else None, "expert_counts": eo.expert_counts and spec.is_moe,
                    "dtype": eo.dtype, "weight_dtype": weight_dtype, "quantization": eo.quantization,
                    "kv_cache_dtype": eo.kv_cache_dtype, "tp": eo.tp, "pp": eo.pp, "max_model_len": eo.max_model_len,
                    "gpu_memory_utilization": eo.gpu_memory_utilization, "enforce_eager": eo.enforce_eager,
                    "seed": eo.seed, "temperature": eo.temperature, "trace_steps": trace_steps,
                    "provider": provider or detect_provider(), "scenarios": [asdict(s) for s in scenarios]},
            model=spec.summary(), model_config=spec.config, engine=engine.describe(), memory_fit=fit,
            compute=compute_note(device, weight_dtype), ceilings=ceilings, scenarios=[])
        prompts = _Prompts(random.Random(eo.seed), spec.vocab_size)
        eta = _Eta(scenarios, warmup + runs)
        for si, sc in enumerate(scenarios):
            tag = f"[{si + 1}/{len(scenarios)}] batch {sc.batch}, prompt {sc.prompt_len}, gen {sc.gen_len}"
            result = _measure(engine, sc, prompts, warmup, runs, eo.tp * eo.pp, eta, tag, say)
            record.scenarios.append(result)
            record.engine = engine.describe()   # now with what the engine saw while running
            if out:   # written before any traced run: a tracing failure never costs the measured runs
                atomic_write_json(out, record.to_dict())
            if trace_steps:
                say(f"{tag}: traced runs ({trace_steps} prefill and {trace_steps} decode steps; not measured)")
                result.trace = _traced(engine, backend, sc, prompts, result.runs, trace_steps, record_dir,
                                       f"s{si + 1}", say, tag)
                if out:
                    atomic_write_json(out, record.to_dict())
        record.status = "complete"
    except KeyboardInterrupt:
        if record:
            record.status = "interrupted"
        raise
    except UserError:
        if record:
            record.status = "failed"
        raise
    except Exception as e:  # the engine died mid-run: keep what finished, say what failed
        if record:
            record.status = "failed"
            record.error = f"{type(e).__name__}: {e}"
        raise UserError(f"{backend} failed after {len(record.scenarios) if record else 0} finished scenario(s): "
                        f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}") from e
    finally:
        engine.close()
        if out and record:
            atomic_write_json(out, record.to_dict())
    return record


def _engine_options(backend: str, spec: ModelSpec, model_path: str | None, scenarios: Sequence[Scenario],
                    opts: dict[str, Any], out: str | None, traced: bool) -> EngineOptions:
    """The engine's options, checked against the scenarios: a trace folder beside ``out`` where steps are traced,
    routing resolved, the context long enough for the longest scenario."""
    if traced:
        opts["trace_dir"] = (os.path.splitext(os.path.abspath(out))[0] + ".traces" if out
                             else tempfile.mkdtemp(prefix="llmprobe-traces-"))
        os.makedirs(opts["trace_dir"], exist_ok=True)
    if opts.get("routing", "auto") == "auto":   # a checkpoint's own routing, else one like a trained model's
        opts["routing"] = "trained-like" if spec.is_moe and opts.get("weights", "dummy") == "dummy" else "as-loaded"
    max_len = max(s.prompt_len + s.gen_len for s in scenarios)
    if max_len > spec.max_position_embeddings:
        raise UserError(f"prompt + generation length {max_len} exceeds {spec.name}'s {spec.max_position_embeddings} positions")
    if opts.get("max_model_len") is None:
        opts["max_model_len"] = max_len
    elif opts["max_model_len"] < max_len:
        raise UserError(f"--max-model-len {opts['max_model_len']} is below prompt + generation length {max_len}")
    eo = EngineOptions(model=spec, model_path=model_path, **opts)
    check_options(backend, eo)
    return eo


class _Prompts:
    """Random token-id prompts from one seeded stream: a rerun with the same seed submits the same prompts."""

    def __init__(self, rng: random.Random, vocab: int):
        self.rng, self.vocab = rng, vocab

    def __call__(self, batch: int, length: int) -> list[list[int]]:
        low = min(10, self.vocab - 1)  # keep clear of the special ids at the bottom of most vocabularies
        return [[self.rng.randrange(low, self.vocab) for _ in range(length)] for _ in range(batch)]


def _measure(engine, sc: Scenario, prompts: _Prompts, warmup: int, runs: int, gpus: int, eta: _Eta, tag: str,
             say: Callable[[str], None]) -> ScenarioResult:
    """One scenario: its warm-up runs, then its measured runs with telemetry, energy and the host's load beside."""
    warm = []
    for w in range(warmup):
        say(f"{tag}: warm-up {w + 1}/{warmup}{eta.text()}")
        warm.append(eta.timed(sc, lambda: engine.run(prompts(sc.batch, sc.prompt_len), sc.gen_len)))
    measured = []
    sampler = _sampler(engine.device)
    meter = energy_meter(engine.device, gpus)
    load = HostLoad()
    with sampler if sampler is not None else contextlib.nullcontext(), load:
        for i in range(runs):
            say(f"{tag}: run {i + 1}/{runs}{eta.text()}")
            measured.append(eta.timed(sc, lambda: _metered(meter, lambda: engine.run(
                prompts(sc.batch, sc.prompt_len), sc.gen_len))))
    result = ScenarioResult.of(sc.batch, sc.prompt_len, sc.gen_len, measured, warm,
                               sampler.summary() if sampler is not None else None, load.result())
    for warning in result.warnings():
        say(f"{tag}: warning: {warning}")
    return result


def _traced(engine, backend: str, sc: Scenario, prompts: _Prompts, measured: list[Run], n: int, record_dir: str,
            prefix: str, say, tag) -> TraceSummary:
    """The scenario's traced runs; a failure is recorded and said, and never costs the measured runs."""
    table = "hf" if backend == "hf" else ("vllm-gpu" if engine.device == "cuda" else "vllm-cpu")
    try:
        return trace_scenario(lambda spec_: engine.run(prompts(sc.batch, sc.prompt_len), sc.gen_len, trace=spec_),
                              measured, n, table, record_dir, prefix, device=engine.device == "cuda")
    except KeyboardInterrupt:
        raise
    except Exception as e:   # any failure, the engine's own included: recorded, and the measured runs stand
        msg = str(e) if isinstance(e, UserError) else f"{type(e).__name__}: {e}"
        say(f"{tag}: warning: tracing failed ({msg}); the measured runs are kept")
        return TraceSummary(error=msg)


def trace_scenario(run: Callable[[TraceSpec], Run], measured: list[Run], n: int, table: str, record_dir: str,
                   tag: str, device: bool = False) -> TraceSummary:
    """Extra runs of a scenario under the profiler, after its measured runs: ``n`` prefill steps (the
    prefill of as many runs as needed) and ``n`` consecutive decode steps from the middle of one run's
    decode, so their context is the run's average. ``run(TraceSpec)`` runs the scenario once, traced;
    ``device``: the run is on a GPU (its traces must hold kernels). Nothing here feeds the timing summary.
    Traced decode steps of one batch must agree in how many kernels they replayed from CUDA graphs, else
    the trace is refused (a mis-correlated replay)."""
    from .traces import kernel_rows, load, steps
    steps0 = measured[0].steps
    p = next((k for k, st in enumerate(steps0) if not st.prefill_tokens), len(steps0))
    plan, done = [], 0
    while done < n and p:
        plan.append(TraceSpec(0, min(p, n - done), f"{tag}-prefill-{len(plan)}"))
        done += plan[-1].steps
    d = len(steps0) - p
    if d:
        k = min(n, d)
        plan.append(TraceSpec(p + (d - k) // 2, k, f"{tag}-decode"))
    traced = []
    files, meta, graphs = [], [], set()
    graph_counts: dict[tuple[str, str], set[int]] = {}
    for spec in plan:
        out = run(spec)
        files += out.trace_files
        graphs.update(w.get("cuda_graphs") for w in out.trace_windows)
        recorded = out.steps[spec.first:spec.first + spec.steps]
        for w in out.trace_windows:   # the profiler's start and stop belong to no timed step
            if recorded and not (w["started_s"] <= recorded[0].t_start_s and w["stopped_s"] >= recorded[-1].t_end_s):
                raise UserError(f"the profiler ran from {w['started_s']:.4f} s to {w['stopped_s']:.4f} s, inside the traced "
                                f"steps {recorded[0].t_start_s:.4f}-{recorded[-1].t_end_s:.4f} s: their times include it")
        if not out.trace_files:
            raise UserError(f"the traced run wrote no trace file for steps {spec.first}-{spec.first + spec.steps - 1}")
        for path in out.trace_files:
            seen = steps(load(path), device=device)
            if len(seen) != len(recorded):
                raise UserError(f"{path}: {len(seen)} traced steps, {len(recorded)} expected (steps {spec.first}-"
                                f"{spec.first + spec.steps - 1}); the trace and the step records disagree")
            for st, rec in zip(seen, recorded):
                if st.tokens is not None and st.tokens != (rec.prefill_tokens, rec.decode_tokens):
                    raise UserError(f"{path}: traced step {st.annotation} is not step {rec.index} "
                                    f"({rec.prefill_tokens} prefill, {rec.decode_tokens} decode tokens)")
                traced.append((rec.group, st))
                graph_counts.setdefault((rec.group, path), set()).add(st.graph_kernels)
        for rec in recorded:
            untraced = [m.steps[rec.index].time_s for m in measured if len(m.steps) > rec.index]
            meta.append({"phase": rec.group, "index": rec.index, "seqs": [[r.new, r.cached] for r in rec.seqs],
                         "time_s": rec.time_s, "untraced_time_s": statistics.median(untraced) if untraced else None})
    for (ph, path), counts in graph_counts.items():
        if ph == "decode" and len(counts) > 1:
            raise UserError(f"{path}: traced decode steps replayed {sorted(counts)} kernels from CUDA graphs; steps of "
                            "one batch replay the same graph, so the trace mis-attributes graph replays")
    phases = ("prefill", "decode")
    mean = {ph: [m for m in meta if m["phase"] == ph] for ph in phases}
    ranks = max(1, len(traced) // max(1, len(meta)))
    return TraceSummary(
        steps_traced={ph: len(mean[ph]) for ph in phases}, ranks=ranks, table=table, profiler_outside_steps=True,
        trace_files=[os.path.relpath(f, record_dir) for f in files], kernels=kernel_rows(traced, table), steps=meta,
        step_time_s={ph: statistics.fmean(m["time_s"] for m in v) if v else None for ph, v in mean.items()},
        overhead={ph: (statistics.fmean(m["time_s"] for m in v) / statistics.fmean(m["untraced_time_s"] for m in v))
                  if v and all(m["untraced_time_s"] for m in v) else None for ph, v in mean.items()},
        cuda_graphs=" / ".join(sorted(g for g in graphs if g)) or None)


class _Eta:
    """Time left in a profile: runs left x the seconds per generated token seen so far (a scenario's run
    costs about batch x gen_len of them; the first warm-up, which compiles, is left out of the rate)."""

    def __init__(self, scenarios: Sequence[Scenario], runs_each: int):
        self.left = {id(s): runs_each for s in scenarios}
        self.scenarios = list(scenarios)
        self.spent = self.tokens = 0.0
        self.seen = 0

    def timed(self, sc: Scenario, fn):
        import time
        t0 = time.perf_counter()
        out = fn()
        self.left[id(sc)] -= 1
        self.seen += 1
        if self.seen > 1:
            self.spent += time.perf_counter() - t0
            self.tokens += sc.batch * sc.gen_len
        return out

    def text(self) -> str:
        if not self.tokens:
            return ""
        rate = self.spent / self.tokens
        left = sum(self.left[id(s)] * s.batch * s.gen_len for s in self.scenarios) * rate
        return f" — about {left:.0f} s left"


def compute_note(device: dict[str, Any], weight_dtype: str) -> dict[str, Any]:
    """The format the step's arithmetic really runs in, and so which measured ceiling explains it.

    vLLM's CPU build keeps bf16 tensors on every x86 CPU and sends linear layers to oneDNN; without
    AVX512-BF16 or AMX the GEMM converts to fp32 and runs on the fp32 units. The bf16 ceiling
    ``llmprobe roofline`` measures is that same path (F.linear in bf16), so it is the one that applies.
    """
    act = weight_dtype if weight_dtype in ACTIVATION_DTYPES else "bf16"
    note = {"weights": weight_dtype, "activations": act, "ceiling": act}
    if device.get("kind") == "cpu" and device.get("bf16_gemm"):
        note["gemm"] = f"{act} GEMMs {device['bf16_gemm']}" if act == "bf16" else f"{act} GEMMs"
    return note


def energy_meter(device: str, gpus: int):
    """NVML's energy counter over the engine's GPUs (the first ``gpus`` visible), or None."""
    if device != "cuda":
        return None
    from .telemetry import EnergyMeter, NvmlUnavailable
    try:
        meter = EnergyMeter(list(range(gpus)))
    except NvmlUnavailable:
        return None
    return meter if meter.read_mj() is not None else None


def _metered(meter, run: Callable[[], Run]) -> Run:
    """``run()``, with the energy its GPUs consumed meanwhile (J) where a meter reads it."""
    before = meter.read_mj() if meter is not None else None
    out = run()
    after = meter.read_mj() if meter is not None else None
    if before is not None and after is not None:
        out.energy_j = (after - before) / 1e3
    return out


def _sampler(device: str):
    if device != "cuda":
        return None
    from .telemetry import NvmlUnavailable, Sampler
    try:
        return Sampler()
    except NvmlUnavailable:  # runs go on without telemetry, the record says null
        return None


def record_ceilings(kind: str, device: dict[str, Any], tp: int, measure: bool, say) -> dict[str, Any] | None:
    """Measured ceilings of this very device (explain prefers them): saved ones, else measured now unless
    ``measure`` is off."""
    if not measure:
        from .microbench.store import load_for_device
        saved = load_for_device(device)
        return saved if saved is not None and saved.get("ceilings") else None
    from .microbench import ceilings_for_profile
    return ceilings_for_profile(kind, tp, say)
