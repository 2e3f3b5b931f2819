"""A load sweep on the real engine -> a serve record (``llmprobe serve``).

For each rate (or concurrency) of the sweep: the workload's requests (workload.py: the same lengths and prompts
at every point, arrivals seeded per rate) go to the in-process engine (engines/vllm_serving.py), one point after
another after a warm-up that is not kept. The record is rewritten atomically after every point, so an interrupted
sweep keeps the points that finished.
"""

from __future__ import annotations

import asyncio
import math
import random
from collections.abc import Callable, Sequence
from typing import Any

from .dtypes import ACTIVATION_DTYPES, normalize, quantized_weight_dtype
from .engines import EngineOptions, check_options, engine_device
from .errors import UserError
from .models import ModelSpec, resolve_model
from .profiling import describe_device, energy_meter, record_ceilings
from .provenance import provenance
from .records import SCHEMA_VERSION, SERVE_METHODOLOGY, ServeRecord, atomic_write_json
from .workload import RequestSpec, workload


def serve(model: str | ModelSpec, rates: Sequence[float] = (), concurrencies: Sequence[int] = (),
          arrivals: str = "poisson", num_prompts: int = 100, prompt_len: int = 256, gen_len: int = 256,
          range_ratio: float = 0.0, dataset: str | None = None, slo: dict[str, float] | None = None,
          layers: int | None = None, out: str | None = None, progress: Callable[[str], None] | None = None,
          engine_options: dict[str, Any] | None = None, warmup: int = 4, measure_ceilings: bool = True,
          provider: str | None = None, url: str | None = None, served_model: str | None = None) -> ServeRecord:
    """Sweep ``rates`` (requests/s; inf: all at once) and ``concurrencies`` (all at once, at most that many in
    flight) on ``model``, in this process, or on the server at ``url`` that serves it (as ``served_model``, else
    its first); return the serve record (also written to ``out``)."""
    points = [(float(r), None) for r in rates] + [(math.inf, int(c)) for c in concurrencies]
    if not points:
        raise UserError("give --rate and/or --concurrency: the load points to sweep")
    for r, c in points:
        if not r > 0 or (c is not None and c <= 0):
            raise UserError(f"rates and concurrencies must be positive, got {r if c is None else c:g}")
    spec = resolve_model(model) if isinstance(model, str) else model
    if layers:
        spec = spec.with_layers(layers)
    seed = (engine_options or {}).get("seed", 0)
    specs = {p: workload(num_prompts, p[0], arrivals, prompt_len, gen_len, range_ratio, seed, dataset) for p in points}
    longest = max(s.prompt_len + s.output_len for ss in specs.values() for s in ss)
    if longest > spec.max_position_embeddings:
        raise UserError(f"prompt + output length {longest} exceeds {spec.name}'s {spec.max_position_embeddings} positions")
    opts = dict(engine_options or {})
    if opts.get("max_model_len") is None:
        opts["max_model_len"] = longest
    elif opts["max_model_len"] < longest:
        raise UserError(f"--max-model-len {opts['max_model_len']} is below the longest prompt + output, {longest}")
    if opts.get("routing", "auto") == "auto":   # as profile: a checkpoint's own routing, else a trained model's
        opts["routing"] = "trained-like" if spec.is_moe and opts.get("weights", "dummy") == "dummy" else "as-loaded"
    eo = EngineOptions(model=spec, **opts)
    check_options("vllm", eo)
    say = progress or (lambda msg: None)
    rng = random.Random(f"{seed}-prompts")
    low = min(10, spec.vocab_size - 1)   # clear of the special ids at the bottom of most vocabularies
    base = next(iter(specs.values()))
    prompts = [[rng.randrange(low, spec.vocab_size) for _ in range(s.prompt_len)] for s in base]
    if url:   # the server's machine is not this one: nothing here describes it, no ceilings are measured
        device, ceilings = {"kind": "remote", "url": url}, None
    else:
        kind = engine_device("vllm", eo.device)
        device = describe_device(kind)
        ceilings = record_ceilings(kind, device, eo.tp, measure_ceilings, say)
    config = {"model": spec.name, "model_source": spec.source, "layers": spec.num_layers,
              "full_layers": spec.full_num_layers or spec.num_layers, "layers_note": spec.layers_note,
              "backend": "vllm", "client": "http" if url else "in-process", "url": url, "arrivals": arrivals, "num_prompts": num_prompts,
              "prompt_len": prompt_len, "gen_len": gen_len, "range_ratio": range_ratio, "dataset": dataset,
              "slo": dict(slo or {}), "seed": seed, "warmup": warmup, "rates": [None if math.isinf(p[0]) else p[0] for p in points],
              "concurrencies": [p[1] for p in points], "dtype": eo.dtype, "quantization": eo.quantization,
              "weight_dtype": quantized_weight_dtype(eo.quantization) or normalize(eo.dtype, ACTIVATION_DTYPES, "--dtype"),
              "kv_cache_dtype": eo.kv_cache_dtype, "tp": eo.tp, "pp": eo.pp,
              "max_model_len": eo.max_model_len, "temperature": eo.temperature, "weights": eo.weights,
              "routing": eo.routing if spec.is_moe else None, "provider": provider}
    record = ServeRecord(schema_version=SCHEMA_VERSION, config=config, points=[], methodology=SERVE_METHODOLOGY,
                         status="running", provenance=provenance(device), model=spec.summary(),
                         model_config=spec.config, ceilings=ceilings)
    try:
        asyncio.run(_sweep(eo, record, points, specs, prompts, warmup, out, say, url, served_model))
        record.status = "complete"
    except KeyboardInterrupt:
        record.status = "interrupted"
        raise
    except UserError:
        record.status = "failed"
        raise
    except Exception as e:   # the engine died mid-sweep: keep the finished points, say what failed
        record.status, record.error = "failed", f"{type(e).__name__}: {e}"
        raise UserError(f"vllm failed after {len(record.points)} finished load point(s): {type(e).__name__}: "
                        f"{str(e).splitlines()[0] if str(e) else ''}") from e
    finally:
        if out:
            atomic_write_json(out, record.to_dict())
    return record


async def _sweep(eo: EngineOptions, record: ServeRecord, points, specs: dict, prompts: list[list[int]], warmup: int,
                 out: str | None, say: Callable[[str], None], url: str | None, served_model: str | None) -> None:
    if url:
        from .engines.http_client import HttpClient
        engine = HttpClient(url, served_model, eo.temperature)
        record.engine = await engine.check()
        device = "remote"
    else:
        from .engines.vllm_serving import ServingEngine
        say(f"starting vllm (AsyncLLM) for {eo.model.name}")
        engine = await ServingEngine.start(eo)
        record.engine = engine.describe()
        device = engine.device
    try:
        if warmup:   # compile and allocate outside every kept point
            say(f"warm-up: {warmup} request(s) at once (not kept)")
            first = next(iter(specs.values()))[:warmup]
            await engine.load_point([RequestSpec(0.0, s.prompt_len, s.output_len) for s in first],
                                    prompts[:warmup], math.inf, None)
        meter = energy_meter(device, eo.tp * eo.pp)
        for k, (rate, conc) in enumerate(points):
            what = f"concurrency {conc}" if conc else ("all at once" if math.isinf(rate) else f"rate {rate:g} req/s")
            tag = f"[{k + 1}/{len(points)}] {what}"
            say(f"{tag}: {len(specs[(rate, conc)])} requests")
            before = meter.read_mj() if meter is not None else None
            point = await engine.load_point(specs[(rate, conc)], prompts, rate, conc,
                                            say=lambda m, tag=tag: say(f"{tag}: {m}"))
            after = meter.read_mj() if meter is not None else None
            if before is not None and after is not None:
                point.energy_j = (after - before) / 1e3
            record.points.append(point)
            if out:
                atomic_write_json(out, record.to_dict())
    finally:
        engine.close()
