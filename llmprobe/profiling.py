"""Scenarios and methodology → a run record (the article's method, made exact).

For each scenario (batch, prompt_len, gen_len): warm-up run(s), then measured runs; every run
submits ``batch`` random token-id prompts at once and generates exactly ``gen_len`` tokens each.
Per run: TTFT, TPOT and latency averaged over its requests, TPS = output tokens / wall time.
Per scenario: each metric as {mean, median, min, max, stdev} over the measured runs.
The record is rewritten atomically after every scenario, so an interrupted sweep keeps what finished.
"""

from __future__ import annotations

import contextlib
import os
import random
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from .engines import EngineOptions, check_options, create_engine, engine_device
from .dtypes import ACTIVATION_DTYPES, kv_dtype_of, normalize, quantized_weight_dtype
from .errors import UserError
from .hostload import HostLoad
from .models import ModelSpec, resolve_model
from .records import METRICS, PROFILE_METHODOLOGY, SCHEMA_VERSION, atomic_write_json, cpu_description, provenance
from .timing import summarize

CROSS_CHECK_TOLERANCE = 0.05


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


# ---- one scenario's numbers --------------------------------------------------------------------

def run_metrics(run: dict[str, Any]) -> dict[str, float | None]:
    reqs = run["requests"]

    def mean(key):
        vals = [r[key] for r in reqs if r.get(key) is not None]
        return sum(vals) / len(vals) if vals else None
    tokens = sum(r["output_tokens"] for r in reqs)
    out = {"ttft_s": mean("ttft_s"), "tpot_s": mean("tpot_s"), "total_latency_s": mean("latency_s"),
           "tps": tokens / run["wall_s"] if run["wall_s"] > 0 else None, "output_tokens": tokens}
    if run.get("energy_j") is not None and tokens:   # the whole run's energy (prefill included) per generated token
        out["joules_per_token"] = run["energy_j"] / tokens
    return out


def step_phase(step: dict[str, Any]) -> str:
    if step["prefill_tokens"] and step["decode_tokens"]:
        return "mixed"
    return "prefill" if step["prefill_tokens"] else "decode"


def phase_totals(run: dict[str, Any]) -> dict[str, Any]:
    """Per phase: step count, summed device and host time; and the time outside every step."""
    out: dict[str, Any] = {p: {"steps": 0, "device_s": 0.0, "host_s": 0.0, "tokens": 0}
                           for p in ("prefill", "decode", "mixed")}
    has_device = bool(run["steps"]) and all(s["device_ms"] is not None for s in run["steps"])
    for s in run["steps"]:
        ph = out[step_phase(s)]
        ph["steps"] += 1
        ph["host_s"] += s["host_ms"] / 1e3
        ph["tokens"] += s["prefill_tokens"] + s["decode_tokens"]
        if has_device:
            ph["device_s"] += s["device_ms"] / 1e3
    for ph in out.values():
        if not has_device:
            ph["device_s"] = None
    in_steps = sum(s["host_ms"] for s in run["steps"]) / 1e3
    n = len(run["steps"])
    out["outside_steps_s"] = run["wall_s"] - in_steps
    out["overhead_per_step_ms"] = (run["wall_s"] - in_steps) / n * 1e3 if n else None
    return out


def cross_check(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Our TTFT (token arrival at the caller) against vLLM's own first_token_latency."""
    pairs = [(r["ttft_s"], r["engine_ttft_s"]) for run in runs for r in run["requests"]
             if r.get("engine_ttft_s") and r.get("ttft_s")]
    if not pairs:
        return {"available": False}
    diffs = [abs(a - b) / b for a, b in pairs]
    bad = sum(d > CROSS_CHECK_TOLERANCE for d in diffs)
    return {"available": True, "requests": len(pairs), "max_rel_diff": max(diffs),
            "median_rel_diff": sorted(diffs)[len(diffs) // 2], "above_tolerance": bad,
            "tolerance": CROSS_CHECK_TOLERANCE,
            "note": "ours: first token received by the caller; vLLM's: engine-side, before output processing"}


def scenario_warnings(summary: dict[str, Any]) -> list[str]:
    """What makes a scenario's figures suspect, in words (also flagged by explain)."""
    out = list(summary["problems"])
    adm = summary.get("admission") or {}
    if adm.get("split_runs"):
        out.append(f"{len(adm['split_runs'])} run(s) did not start as one batch: their first step held "
                   f"{adm['first_step_requests']} of {adm['batch']} requests ({adm['method']})")
    load = summary.get("host_load") or {}
    out += [f"busy machine: {r}" for r in load.get("reasons", [])]
    return out


def summarize_scenario(sc: Scenario, warmups: list[dict], runs: list[dict], telemetry: dict | None,
                       host_load: dict | None = None) -> dict[str, Any]:
    per_run = [run_metrics(r) for r in runs]
    for r, m in zip(runs, per_run):
        r["metrics"] = m
        r["phases"] = phase_totals(r)
    for r in warmups:
        r["metrics"] = run_metrics(r)
        r["phases"] = phase_totals(r)
    problems = []
    for i, r in enumerate(runs):
        short = [q["id"] for q in r["requests"] if q["output_tokens"] != sc.gen_len]
        if short:
            problems.append(f"run {i}: {len(short)} request(s) did not produce {sc.gen_len} tokens")
    summary = {k: summarize([m[k] for m in per_run]) for k in METRICS}
    if per_run and all("joules_per_token" in m for m in per_run):
        summary["joules_per_token"] = summarize([m["joules_per_token"] for m in per_run])
    phases = {}
    for ph in ("prefill", "decode", "mixed"):
        phases[ph] = {k: summarize([r["phases"][ph][k] for r in runs if r["phases"][ph][k] is not None])
                      for k in ("steps", "device_s", "host_s")}
    phases["outside_steps_s"] = summarize([r["phases"]["outside_steps_s"] for r in runs])
    phases["overhead_per_step_ms"] = summarize([r["phases"]["overhead_per_step_ms"] for r in runs])
    return {**asdict(sc), "runs": runs, "warmup_runs": warmups, "summary": summary, "phases": phases,
            "cross_check": cross_check(runs), "telemetry": telemetry, "host_load": host_load,
            "admission": admission_summary(runs), "problems": problems}


def admission_summary(runs: list[dict[str, Any]]) -> dict[str, Any] | None:
    """Which measured runs did not start as one batch (unless the token budget chunked the prompts)."""
    adms = [r.get("admission") for r in runs]
    if not all(adms):
        return None
    return {"method": adms[0]["method"], "batch": adms[0]["batch"],
            "first_step_requests": [a["first_step_requests"] for a in adms],
            "split_runs": [i for i, a in enumerate(adms) if not a["together"] and not a["chunked_by_token_budget"]]}


# ---- the whole profile -----------------------------------------------------------------------------

def _prompts(rng: random.Random, batch: int, length: int, vocab: int) -> list[list[int]]:
    low = min(10, vocab - 1)  # keep clear of the special ids at the bottom of most vocabularies
    return [[rng.randrange(low, vocab) for _ in range(length)] for _ in range(batch)]


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
            raise UserError(f"{spec.name} does not fit on {gpu.name} at batch {worst.batch}: needs "
                            f"{need / 1e9:.1f} GB of {have / 1e9:.1f} GB; "
                            f"{fit_advice(costs, card, worst.batch, worst.prompt_len, worst.gen_len)}")
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
            measure_ceilings: bool = True) -> dict[str, Any]:
    """Profile ``model`` over ``scenarios`` and return the run record (also written to ``out``).
    ``trace_steps``: that many prefill and decode steps per scenario traced in extra runs (traces.py),
    their files in ``<out>.traces/``. The record carries this device's saved ceilings; where none are
    saved, ``measure_ceilings`` measures a quick pass first (so that `explain` works on any machine)."""
    if runs <= 0 or warmup < 0:
        raise UserError(f"--runs must be positive and --warmup non-negative (got {runs}, {warmup})")
    spec = resolve_model(model) if isinstance(model, str) else model
    model_path = model if isinstance(model, str) and os.path.isdir(model) else None
    if layers:
        spec = spec.with_layers(layers)
    opts = dict(engine_options or {})
    record_dir = os.path.dirname(os.path.abspath(out)) if out else os.getcwd()
    if trace_steps:
        if trace_steps < 0:
            raise UserError(f"--trace-steps must be non-negative (got {trace_steps})")
        opts["trace_dir"] = (os.path.splitext(os.path.abspath(out))[0] + ".traces" if out
                             else tempfile.mkdtemp(prefix="llmprobe-traces-"))
        os.makedirs(opts["trace_dir"], exist_ok=True)
    if opts.get("routing", "auto") == "auto":   # a checkpoint's own routing, else one like a trained model's
        opts["routing"] = "trained-like" if spec.is_moe and opts.get("weights", "dummy") == "dummy" else "as-loaded"
    eo = EngineOptions(model=spec, model_path=model_path, **opts)
    check_options(backend, eo)
    say = progress or (lambda msg: None)
    weight_dtype = quantized_weight_dtype(eo.quantization) or normalize(eo.dtype, ACTIVATION_DTYPES, "--dtype")
    kv_dtype = kv_dtype_of(eo.kv_cache_dtype)
    max_len = max(s.prompt_len + s.gen_len for s in scenarios)
    if eo.max_model_len is None:
        eo = EngineOptions(**{**eo.__dict__, "max_model_len": max_len})
    elif eo.max_model_len < max_len:
        raise UserError(f"--max-model-len {eo.max_model_len} is below prompt + generation length {max_len}")
    if max_len > spec.max_position_embeddings:
        raise UserError(f"prompt + generation length {max_len} exceeds {spec.name}'s {spec.max_position_embeddings} positions")

    kind = engine_device(backend, eo.device)
    device = describe_device(kind)
    fit = preflight(spec, scenarios, device, eo.tp, weight_dtype, kv_dtype, eo.gpu_memory_utilization)
    ceilings = _ceilings(kind, device, eo.tp, measure_ceilings, say)
    say(f"starting {backend} engine for {spec.name}" + (f" ({spec.layers_note})" if spec.layers_note else ""))
    engine = create_engine(backend, eo)
    record: dict[str, Any] = {}
    try:
        record = {
            "schema_version": SCHEMA_VERSION, "kind": "llmprobe.run", "methodology": PROFILE_METHODOLOGY,
            "status": "running", "provenance": provenance(device),
            "config": {"model": spec.name, "model_source": spec.source, "layers": spec.num_layers,
                       "full_layers": spec.full_num_layers or spec.num_layers, "layers_note": spec.layers_note,
                       "backend": backend, "runs": runs, "warmup": warmup, "weights": eo.weights,
                       "routing": eo.routing if spec.is_moe else None, "expert_counts": eo.expert_counts and spec.is_moe,
                       "dtype": eo.dtype, "weight_dtype": weight_dtype, "quantization": eo.quantization,
                       "kv_cache_dtype": eo.kv_cache_dtype, "tp": eo.tp, "pp": eo.pp, "max_model_len": eo.max_model_len,
                       "gpu_memory_utilization": eo.gpu_memory_utilization, "enforce_eager": eo.enforce_eager,
                       "seed": eo.seed, "temperature": eo.temperature, "trace_steps": trace_steps, "provider": provider or detect_provider(),
                       "scenarios": [asdict(s) for s in scenarios]},
            "model": spec.summary(), "model_config": spec.config, "engine": engine.describe(), "memory_fit": fit,
            "compute": compute_note(device, weight_dtype),
            "ceilings": ceilings, "scenarios": [],
        }
        rng = random.Random(eo.seed)
        eta = _Eta(scenarios, warmup + runs)
        for si, sc in enumerate(scenarios):
            tag = f"[{si + 1}/{len(scenarios)}] batch {sc.batch}, prompt {sc.prompt_len}, gen {sc.gen_len}"
            warm = []
            for w in range(warmup):
                say(f"{tag}: warm-up {w + 1}/{warmup}{eta.text()}")
                warm.append(eta.timed(sc, lambda: engine.run(_prompts(rng, sc.batch, sc.prompt_len, spec.vocab_size),
                                                            sc.gen_len)))
            measured = []
            sampler = _sampler(engine.device)
            meter = _energy_meter(engine.device, eo.tp * eo.pp)
            load = HostLoad()
            with sampler if sampler is not None else contextlib.nullcontext(), load:
                for i in range(runs):
                    say(f"{tag}: run {i + 1}/{runs}{eta.text()}")
                    measured.append(eta.timed(sc, lambda: _metered(meter, lambda: engine.run(
                        _prompts(rng, sc.batch, sc.prompt_len, spec.vocab_size), sc.gen_len))))
            telemetry = sampler.summary() if sampler is not None else None
            summary = summarize_scenario(sc, warm, measured, telemetry, load.result())
            for warning in scenario_warnings(summary):
                say(f"{tag}: warning: {warning}")
            record["scenarios"].append(summary)
            record["engine"] = engine.describe()   # now with what the engine saw while running
            if out:   # written before any traced run: a tracing failure never costs the measured runs
                atomic_write_json(out, record)
            if trace_steps:
                say(f"{tag}: traced runs ({trace_steps} prefill and {trace_steps} decode steps; not measured)")
                summary["trace"] = _traced(engine, backend, spec, sc, rng, measured, trace_steps, record_dir,
                                           f"s{si + 1}", say, tag)
                if out:
                    atomic_write_json(out, record)
        record["status"] = "complete"
    except KeyboardInterrupt:
        record["status"] = "interrupted"
        raise
    except UserError:
        if record:
            record["status"] = "failed"
        raise
    except Exception as e:  # the engine died mid-run: keep what finished, say what failed
        record["status"] = "failed"
        record["error"] = f"{type(e).__name__}: {e}"
        raise UserError(f"{backend} failed after {len(record.get('scenarios', []))} finished scenario(s): "
                        f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}") from e
    finally:
        engine.close()
        if out and record:
            atomic_write_json(out, record)
    return record


def _traced(engine, backend: str, spec, sc: Scenario, rng, measured, n: int, record_dir: str, prefix: str, say, tag):
    """The scenario's traced runs; a failure is recorded and said, and never costs the measured runs."""
    from .traces import trace_scenario
    table = "hf" if backend == "hf" else ("vllm-gpu" if engine.device == "cuda" else "vllm-cpu")
    try:
        return trace_scenario(lambda spec_: engine.run(_prompts(rng, sc.batch, sc.prompt_len, spec.vocab_size),
                                                       sc.gen_len, trace=spec_), measured, n, table, record_dir, prefix,
                              device=engine.device == "cuda")
    except KeyboardInterrupt:
        raise
    except Exception as e:   # any failure, the engine's own included: recorded, and the measured runs stand
        msg = str(e) if isinstance(e, UserError) else f"{type(e).__name__}: {e}"
        say(f"{tag}: warning: tracing failed ({msg}); the measured runs are kept")
        return {"error": msg}


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


def _energy_meter(device: str, gpus: int):
    """NVML's energy counter over the engine's GPUs (the first ``gpus`` visible), or None."""
    if device != "cuda":
        return None
    from .telemetry import EnergyMeter, NvmlUnavailable
    try:
        meter = EnergyMeter(list(range(gpus)))
    except NvmlUnavailable:
        return None
    return meter if meter.read_mj() is not None else None


def _metered(meter, run: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """``run()``, with the energy its GPUs consumed meanwhile (J) where a meter reads it."""
    before = meter.read_mj() if meter is not None else None
    out = run()
    after = meter.read_mj() if meter is not None else None
    if before is not None and after is not None:
        out["energy_j"] = (after - before) / 1e3
    return out


def _sampler(device: str):
    if device != "cuda":
        return None
    from .telemetry import NvmlUnavailable, Sampler
    try:
        return Sampler()
    except NvmlUnavailable:  # runs go on without telemetry, the record says null
        return None


def _ceilings(kind: str, device: dict[str, Any], tp: int, measure: bool, say) -> dict[str, Any] | None:
    """Measured ceilings of this very device (explain prefers them): saved ones, else measured now unless
    ``measure`` is off."""
    if not measure:
        from .microbench.store import load_for_device
        saved = load_for_device(device)
        return saved if saved is not None and saved.get("ceilings") else None
    from .microbench import ceilings_for_profile
    return ceilings_for_profile(kind, tp, say)
