"""What each CLI command does: gather inputs through the library, then print a table or JSON."""

from __future__ import annotations

import contextlib
import datetime as _dt
import os
import re
import sys
from typing import Any

from . import render
from .errors import UserError
from .hardware import Ceilings, resolve_gpu
from .models import ModelSpec, resolve_model
from .roofline import CostModel, Grid, ScenarioBound, sweep


def gpu_doc(c: Ceilings) -> dict[str, Any]:
    return {"name": c.name, "id": c.gpu_id, "hbm_bytes_per_s": c.hbm_bytes_per_s, "memory_bytes": c.memory_bytes,
            "peak_flops": dict(c.peak_flops), "interconnect_bytes_per_s": c.interconnect_bytes_per_s,
            "source": c.source, "kind": c.kind}


def model_doc(m: ModelSpec, dtypes: list[str], ceilings: Ceilings) -> dict[str, Any]:
    by_dtype = {d: CostModel(m, ceilings, dtype=d).resident_weight_bytes for d in dtypes}
    return dict(m.summary(), weight_bytes=by_dtype[dtypes[0]], weight_bytes_by_dtype=by_dtype,
                weight_dtype=dtypes[0], layers_note=m.layers_note)


def roofline(*, gpu: str, model_name: str | None, batches, prompt_lens, gen_lens, dtypes, kv_dtype, tps,
             gpu_memory_utilization: float, mode: str, remeasure: bool, methods, plot: str | None,
             as_json: bool) -> None:
    model = resolve_model(model_name) if model_name else None
    measured = None
    if gpu == "auto":
        from .microbench import measure_or_load
        measured = measure_or_load(mode=mode, remeasure=remeasure, progress=not as_json,
                                   methods=tuple(methods) if methods else None)
        ceilings = measured.ceilings()
        datasheet = measured.datasheet_ceilings()
    else:
        if mode != "default" or remeasure or methods:
            raise UserError("--quick/--full/--remeasure/--methods measure this machine: use them without --gpu")
        ceilings = resolve_gpu(gpu).ceilings()
        datasheet = ceilings
    bounds: list[ScenarioBound] = []
    if model is not None:
        for t in tps:  # validate every TP degree up front: a bad one is a user error, not a skipped row
            CostModel(model, ceilings, dtype=dtypes[0], kv_dtype=kv_dtype, tp=t,
                      gpu_memory_utilization=gpu_memory_utilization)
        bounds = sweep(Grid(models=[model], ceilings=[ceilings], batches=batches, prompt_lens=prompt_lens,
                            gen_lens=gen_lens, tps=tps, dtypes=dtypes, kv_dtype=kv_dtype), advise=True,
                       gpu_memory_utilization=gpu_memory_utilization)
    if plot:
        from .report import roofline_chart
        roofline_chart(plot, ceilings=ceilings, datasheet=datasheet if datasheet is not ceilings else None,
                       model=model, batches=batches, prompt_len=prompt_lens[0], dtype=dtypes[0], kv_dtype=kv_dtype)
    doc: dict[str, Any] = {"gpu": gpu_doc(ceilings)}
    if datasheet is not ceilings and datasheet is not None:
        doc["datasheet"] = gpu_doc(datasheet)
    if measured is not None:
        doc["measured"] = measured.to_dict()
    if model is not None:
        doc["model"] = model_doc(model, dtypes, ceilings)
        doc["scenarios"] = [b.to_dict() for b in bounds]
    if plot:
        doc["plot"] = plot
    if as_json:
        return render.emit_json(doc)
    if measured is not None:
        render.print_measurement(measured, datasheet)
    else:
        render.console.print(render.table(
            f"{ceilings.name} — datasheet ceilings", ["memory", "HBM bandwidth", "bf16", "fp8", "interconnect/dir"],
            [[render.si(ceilings.memory_bytes, "B"), render.si(ceilings.hbm_bytes_per_s, "B/s"),
              render.si(ceilings.peak_flops.get("bf16"), "FLOP/s"), render.si(ceilings.peak_flops.get("fp8"), "FLOP/s"),
              render.si(ceilings.interconnect_bytes_per_s, "B/s")]], caption=ceilings.source))
    if model is not None:
        render.print_bounds(model, ceilings, bounds)
    if plot:
        render.console.print(f"roofline chart written to {plot}")




@contextlib.contextmanager
def stdout_to_stderr():
    """Engines and their child processes print to fd 1; keep stdout for our one document."""
    sys.stdout.flush()
    saved = os.dup(1)
    os.dup2(2, 1)
    try:
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


_DTYPES = {"bf16": "bfloat16", "bfloat16": "bfloat16", "fp16": "float16", "float16": "float16", "half": "float16",
           "fp32": "float32", "float32": "float32", "auto": "bfloat16"}


def profile(*, model_name: str, backend: str, batches, prompt_lens, gen_lens, runs: int, warmup: int,
            layers: int | None, weights: str, dtype: str, quantization: str | None, kv_cache_dtype: str,
            max_model_len: int | None, gpu_memory_utilization: float, enforce_eager: bool, tp: int, pp: int,
            distributed_executor_backend: str | None, device: str, seed: int, provider: str | None,
            out: str | None, as_json: bool) -> None:
    from .profiling import profile as run_profile, scenarios_from
    if dtype.lower() not in _DTYPES:
        raise UserError(f"unknown --dtype {dtype!r}; choose bf16, fp16 or fp32")
    if weights == "real" and not os.path.isdir(model_name):
        raise UserError("--weights real needs --model to be a local checkpoint folder")
    resolve_model(model_name)  # fail fast on a bad name, before any engine import
    extra = {"distributed_executor_backend": distributed_executor_backend} if distributed_executor_backend else {}
    engine_options = dict(weights=weights, dtype=_DTYPES[dtype.lower()], quantization=quantization,
                          kv_cache_dtype=kv_cache_dtype, tp=tp, pp=pp, max_model_len=max_model_len,
                          gpu_memory_utilization=gpu_memory_utilization, enforce_eager=enforce_eager, device=device,
                          seed=seed, extra=extra)
    if out is None:
        stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
        out = os.path.join("results", f"{re.sub(r'[^A-Za-z0-9._-]+', '_', os.path.basename(model_name.rstrip('/')))}-{backend}-{stamp}.json")
    scenarios = scenarios_from(batches, prompt_lens, gen_lens)
    with render.err_console.status("llmprobe profile") as status, stdout_to_stderr():
        def progress(msg: str) -> None:
            status.update(msg)
            render.err_console.log(msg)
        try:
            record = run_profile(model_name, scenarios, backend=backend, runs=runs, warmup=warmup, layers=layers,
                                 out=out, progress=progress, provider=provider, engine_options=engine_options)
        except KeyboardInterrupt:
            render.err_console.print(f"interrupted: finished scenarios are kept in {out}")
            raise
    if as_json:
        return render.emit_json(record)
    render.print_profile(record)
    render.console.print(f"run record: {out}")


def explain(*, paths: list[str], report_dir: str | None, gpu: str | None, ceilings_file: str | None,
            as_json: bool) -> None:
    from .explain import explain_record
    from .records import load_json, load_run_record
    ceil_doc = None
    if ceilings_file:
        doc = load_json(ceilings_file, "ceilings file")
        ceil_doc = doc.get("measured") if isinstance(doc, dict) and "measured" in doc else doc
        if not isinstance(ceil_doc, dict) or "ceilings" not in ceil_doc:
            raise UserError(f"{ceilings_file}: not a `llmprobe roofline --json` output with measured ceilings")
    items = []
    for p in paths:
        record = load_run_record(p)
        if not record["scenarios"]:
            raise UserError(f"{p}: the run record has no finished scenario to explain")
        items.append((p, explain_record(record, gpu=gpu, ceilings_file=ceil_doc), record))
    files = []
    if report_dir:
        from .report import write_report
        files = write_report(report_dir, items)
    if as_json:
        return render.emit_json({"scenarios": [dict(s, record=p) for p, ex, _ in items for s in ex["scenarios"]],
                                 "records": [{k: v for k, v in ex.items() if k != "scenarios"} | {"path": p}
                                             for p, ex, _ in items],
                                 "report_files": files})
    from .report import explain_sections
    for p, ex, _ in items:
        note = f" [{ex['layers_note']}]" if ex.get("layers_note") else ""
        render.console.rule(f"{ex['model']}{note} — {ex['backend']} on {ex['device']} — {p}")
        for title, cols, rows in explain_sections(ex):
            render.console.print(render.table(title, cols, rows))
    for f in files:
        render.console.print(f"wrote {f}")
