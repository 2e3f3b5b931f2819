"""What each CLI command does: gather inputs through the library, then print a table or JSON."""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import os
import re
import sys
from typing import Any

from . import render
from .dtypes import torch_name
from .errors import UserError
from .hardware import Ceilings, resolve_gpu
from .models import ModelSpec, resolve_model
from .costs import Floors, RankCosts
from .roofline import Grid, ScenarioBound, sweep


def gpu_doc(c: Ceilings) -> dict[str, Any]:
    return {"name": c.name, "id": c.gpu_id, "hbm_bytes_per_s": c.hbm_bytes_per_s, "memory_bytes": c.memory_bytes,
            "peak_flops": dict(c.peak_flops), "interconnect_bytes_per_s": c.interconnect_bytes_per_s,
            "source": c.source, "kind": c.kind}


def model_doc(m: ModelSpec, dtypes: list[str], ceilings: Ceilings) -> dict[str, Any]:
    by_dtype = {d: RankCosts.of(m, dtype=d).resident_weight_bytes for d in dtypes}
    return dict(m.summary(), weight_bytes=by_dtype[dtypes[0]], weight_bytes_by_dtype=by_dtype,
                weight_dtype=dtypes[0], layers_note=m.layers_note)


def roofline(*, gpu: str, model_name: str | None, batches, prompt_lens, gen_lens, dtypes, kv_dtype, tp_degrees,
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
        from .memory import card_of
        card_of(ceilings, gpu_memory_utilization)
        for t in tp_degrees:  # validate every TP degree up front: a bad one is a user error, not a skipped row
            Floors.of(model, ceilings, dtype=dtypes[0], kv_dtype=kv_dtype, tp=t)
        bounds = sweep(Grid(models=[model], ceilings=[ceilings], batches=batches, prompt_lens=prompt_lens,
                            gen_lens=gen_lens, tp_degrees=tp_degrees, dtypes=dtypes, kv_dtype=kv_dtype), advise=True,
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


def profile(*, model_name: str, backend: str, batches, prompt_lens, gen_lens, runs: int, warmup: int,
            layers: int | None, weights: str, dtype: str, quantization: str | None, kv_cache_dtype: str,
            max_model_len: int | None, gpu_memory_utilization: float, enforce_eager: bool, tp: int, pp: int,
            distributed_executor_backend: str | None, device: str, seed: int, provider: str | None,
            out: str | None, as_json: bool, engine_args: tuple[str, ...] = ()) -> None:
    from .profiling import profile as run_profile, scenarios_from
    if weights == "real" and not os.path.isdir(model_name):
        raise UserError("--weights real needs --model to be a local checkpoint folder")
    resolve_model(model_name)  # fail fast on a bad name, before any engine import
    extra = {"distributed_executor_backend": distributed_executor_backend} if distributed_executor_backend else {}
    extra.update(parse_engine_args(engine_args))
    if extra and backend != "vllm":
        raise UserError("--engine-arg and --distributed-executor-backend are vLLM engine arguments: use --backend vllm")
    engine_options = dict(weights=weights, dtype=torch_name(dtype), quantization=quantization,
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


def parse_engine_args(items: tuple[str, ...]) -> dict[str, Any]:
    """KEY=VALUE pairs for vLLM's engine; VALUE is JSON where it parses (numbers, lists, objects), else text."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.isidentifier():
            raise UserError(f"--engine-arg {item!r}: expected KEY=VALUE with KEY an engine argument name")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


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
        if (ex.get("compute") or {}).get("gemm"):
            render.console.print(f"compute: {ex['compute']['gemm']}; floors use the measured {ex['compute']['ceiling']} ceiling")
        for title, cols, rows in explain_sections(ex):
            render.console.print(render.table(title, cols, rows))
    for f in files:
        render.console.print(f"wrote {f}")


def prices(*, prices_file: str | None, as_json: bool) -> None:
    from .pricing import load_prices
    ps = load_prices(prices_file)
    if as_json:
        return render.emit_json({"prices": [p.to_dict() for p in ps]})
    render.console.print(render.table("Prices (USD per GPU-hour)", ["provider", "gpu", "$/h", "date", "source"],
                                      [[p.provider, p.gpu, f"{p.usd_per_hour:.2f}", p.date, p.source] for p in ps]))


def compare(*, paths: list[str], prices_file: str | None, provider: str | None, tokens: float | None, predict: bool,
            model_name: str | None, gpus, tp_degrees, batches, prompt_len: int, gen_len: int, dtype: str,
            efficiency: float | None, csv_out: str | None, md_out: str | None, plot: str | None, as_json: bool) -> None:
    from . import compare as cmp
    from .pricing import load_prices
    from .records import atomic_write_text, load_run_record
    if tokens is not None and tokens <= 0:
        raise UserError("--tokens must be positive")
    price_list = load_prices(prices_file)
    records = [(p, load_run_record(p)) for p in paths]
    rows: list[dict[str, Any]] = []
    if predict:
        if not model_name or not gpus:
            raise UserError("--predict needs --model and --gpus")
        if efficiency is not None and not 0 < efficiency <= 1:
            raise UserError(f"--efficiency must be in (0, 1], got {efficiency}")
        effs = ([{"batch": b, "efficiency": efficiency, "record": "--efficiency", "ceilings_source": "no"} for b in batches]
                if efficiency is not None else cmp.efficiency_by_batch(records))
        rows = cmp.predicted_rows(resolve_model(model_name), gpus, tp_degrees, batches, prompt_len, gen_len, dtype,
                                  price_list, effs, tokens)
    elif not records:
        raise UserError("give run records to compare, or --predict with --model and --gpus")
    else:
        rows = cmp.measured_rows(records, price_list, provider, tokens)
    best = cmp.cheapest(rows)
    if csv_out:
        import csv
        import io
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=cmp.CSV_FIELDS, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
        atomic_write_text(csv_out, buf.getvalue())
    if md_out:
        atomic_write_text(md_out, render.compare_markdown(rows, best, tokens))
    if plot:
        cmp.cost_chart(plot, rows)
    if as_json:
        return render.emit_json({"rows": rows, "cheapest": best, "tokens": tokens})
    render.print_compare(rows, best, tokens)


def audit(*, path: str, as_json: bool) -> None:
    from .audit import audit_file
    doc = audit_file(path)
    if as_json:
        render.emit_json(doc)
    else:
        _print_audit(path, doc)
    if doc["errors"]:  # the good rows were judged and printed; the exit code still says some were not
        raise SystemExit(2)


def _print_audit(path: str, doc: dict[str, Any]) -> None:
    rows = [[c["line"], c["model"], c["gpu"], c["batch"], f"{c['tps']:g}", c["tp"], c["dtype"] or "any",
             f"{c['precisions']['bf16']['share_of_ceiling']:.0%}", c["verdict"], c["reason"]] for c in doc["claims"]]
    render.console.print(render.table(f"Audit of {path}", ["line", "model", "gpu", "batch", "TPS", "TP", "dtype",
                                                           "of bf16 ceiling", "verdict", "reason"], rows,
                                      caption=f"plausible: at most {doc['achievable_share']:.0%} of the ceiling "
                                              "(what a streaming kernel reaches of datasheet bandwidth)"))
    for e in doc["errors"]:
        render.err_console.print(f"line {e['line']}: {e['message']}")
