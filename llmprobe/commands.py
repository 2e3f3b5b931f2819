"""What each command does: gather its inputs through the library, then print its view or one JSON document.

cli.py parses the command line; the keyword arguments here are click's parameter names.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import re
from typing import Any

from . import views
from .dtypes import torch_name
from .errors import UserError
from .hardware import Ceilings, resolve_gpu
from .models import ModelSpec, resolve_model
from .costs import Floors, RankCosts
from .bounds import Grid, ScenarioBound, operating_points, sweep
from .terminal import console, emit_json, err_console, progress, stdout_to_stderr


def models(*, as_json: bool) -> None:
    from .models import ALIASES, catalog_names, load_catalog_model
    specs = [load_catalog_model(n) for n in catalog_names()]
    if as_json:
        return emit_json({"models": [dict(s.summary(), aliases=sorted(a for a, t in ALIASES.items() if t == s.name))
                                     for s in specs]})
    views.print_models(specs, ALIASES)


def gpus(*, as_json: bool) -> None:
    from .hardware import gpu_catalog
    cat = gpu_catalog().values()
    if as_json:
        return emit_json({"gpus": [g.to_dict() for g in cat]})
    views.print_gpus(cat)


def model_doc(m: ModelSpec, dtypes: list[str], ceilings: Ceilings) -> dict[str, Any]:
    by_dtype = {d: RankCosts.of(m, dtype=d).resident_weight_bytes for d in dtypes}
    return dict(m.summary(), weight_bytes=by_dtype[dtypes[0]], weight_bytes_by_dtype=by_dtype,
                weight_dtype=dtypes[0], layers_note=m.layers_note)


def roofline(*, gpu: str, model_name: str | None, batch, prompt_len, gen_len, dtype, kv_dtype, tp,
             gpu_memory_utilization: float, mode: str | None, remeasure: bool, methods, plot: str | None,
             as_json: bool) -> None:
    batches, prompt_lens, gen_lens, dtypes, tp_degrees, mode = batch, prompt_len, gen_len, dtype, tp, mode or "default"
    model = resolve_model(model_name) if model_name else None
    measured = None
    if gpu == "auto":
        from .microbench import measure_or_load
        with progress("measuring ceilings") as say:
            shapes = tuple(s for t in tp for s in model.gemm_shapes(max(batch) * max(prompt_len), t)) if model else ()
            measured = measure_or_load(mode=mode, remeasure=remeasure, progress=say,
                                       methods=tuple(methods) if methods else None, model_shapes=shapes)
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
        from .plots import roofline_chart
        compute, points = dtypes[0], []
        if model is not None:
            f = Floors.of(model, ceilings, dtype=dtypes[0], kv_dtype=kv_dtype)
            compute, points = f.compute_dtype, operating_points(f, batches, prompt_lens[0])
        roofline_chart(plot, ceilings=ceilings, datasheet=datasheet if datasheet is not ceilings else None,
                       compute=compute, bound_points=points, title_model=model.name if model is not None else "")
    doc: dict[str, Any] = {"gpu": ceilings.to_dict()}
    if datasheet is not ceilings and datasheet is not None:
        doc["datasheet"] = datasheet.to_dict()
    if measured is not None:
        doc["measured"] = measured.to_dict()
    if model is not None:
        doc["model"] = model_doc(model, dtypes, ceilings)
        doc["scenarios"] = [b.to_dict() for b in bounds]
    if plot:
        doc["plot"] = plot
    if as_json:
        for w in (measured.warnings if measured is not None else []):
            err_console.print(f"warning: {w}")
        return emit_json(doc)
    if measured is not None:
        views.print_measurement(measured, datasheet)
    else:
        views.print_datasheet(ceilings)
    if model is not None:
        views.print_bounds(model, ceilings, bounds)
    if plot:
        console.print(f"roofline chart written to {plot}")


def profile(*, model_name: str, backend: str, batch, prompt_len, gen_len, scenario_specs: tuple[str, ...] = (),
            runs: int, warmup: int,
            layers: int | None, provider: str | None, out: str | None, as_json: bool, trace_steps: int = 0,
            no_ceilings: bool = False, distributed_executor_backend: str | None = None, engine_args: tuple[str, ...] = (),
            **engine: Any) -> None:
    """``engine``: the fields of engines.EngineOptions, as the command line gave them."""
    from .profiling import profile as run_profile, scenarios_from
    _refuse_quantized_dtype(engine.get("dtype", ""))
    if engine.get("weights") == "real" and not os.path.isdir(model_name):
        raise UserError("--weights real needs --model to be a local checkpoint folder")
    resolve_model(model_name)  # fail fast on a bad name, before any engine import
    extra = {"distributed_executor_backend": distributed_executor_backend} if distributed_executor_backend else {}
    extra.update(parse_engine_args(engine_args))
    if extra and backend != "vllm":
        raise UserError("--engine-arg and --distributed-executor-backend are vLLM engine arguments: use --backend vllm")
    engine_options = dict(engine, extra=extra)
    if "dtype" in engine:
        engine_options["dtype"] = torch_name(engine["dtype"])
    if out is None:
        stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
        out = os.path.join("results", f"{re.sub(r'[^A-Za-z0-9._-]+', '_', os.path.basename(model_name.rstrip('/')))}-{backend}-{stamp}.json")
    scenarios = [parse_scenario(x) for x in scenario_specs] or scenarios_from(batch, prompt_len, gen_len)
    with progress("llmprobe profile") as say, stdout_to_stderr():
        try:
            record = run_profile(model_name, scenarios, backend=backend, runs=runs, warmup=warmup, layers=layers,
                                 out=out, progress=say, provider=provider, engine_options=engine_options,
                                 trace_steps=trace_steps, measure_ceilings=not no_ceilings)
        except KeyboardInterrupt:
            err_console.print(f"interrupted: finished scenarios are kept in {out}")
            raise
    if as_json:
        err_console.print(f"run record: {out}")
        return emit_json(record.to_dict())
    views.print_profile(record)
    console.print(f"run record: {out}")


def parse_scenario(text: str):
    """BATCHxPROMPTxGEN, e.g. 8x1024x128."""
    from .profiling import Scenario
    parts = text.lower().split("x")
    if len(parts) != 3 or not all(p.strip().isdigit() and int(p) > 0 for p in parts):
        raise UserError(f"--scenario {text!r}: expected BATCHxPROMPTxGEN with positive integers, e.g. 8x1024x128")
    return Scenario(*(int(p) for p in parts))


def _refuse_quantized_dtype(dtype: str) -> None:
    if str(dtype).lower() in ("fp8", "int8", "int4", "float8"):
        raise UserError(f"--dtype is the activation format (bf16 or fp16); for {dtype} weights use "
                        f"--quantization (e.g. --quantization fp8)")


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


def serve(*, model_name: str, rates, concurrencies, arrivals: str, num_prompts: int, prompt_len: int, gen_len: int,
          range_ratio: float, dataset: str | None, slo: str | None, warmup: int, url: str | None,
          served_model: str | None, layers: int | None, dtype: str, quantization: str | None, kv_cache_dtype: str,
          max_model_len: int | None, gpu_memory_utilization: float, enforce_eager: bool, tp: int,
          engine_args: tuple[str, ...], seed: int,
          temperature: float, no_ceilings: bool, provider: str | None, out: str | None, plot: str | None,
          as_json: bool) -> None:
    from .serving import serve as run_serve
    from .workload import parse_slo
    limits = parse_slo(slo)   # before any engine starts: a bad key is one line, at once
    _refuse_quantized_dtype(dtype)
    resolve_model(model_name)
    if out is None:
        stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
        out = os.path.join("results", f"{re.sub(r'[^A-Za-z0-9._-]+', '_', os.path.basename(model_name.rstrip('/')))}"
                                      f"-serve-{stamp}.json")
    opts = {"dtype": torch_name(dtype), "quantization": quantization, "kv_cache_dtype": kv_cache_dtype,
            "max_model_len": max_model_len, "gpu_memory_utilization": gpu_memory_utilization,
            "enforce_eager": enforce_eager, "tp": tp, "seed": seed, "temperature": temperature,
            "extra": parse_engine_args(engine_args)}
    with progress("llmprobe serve") as say, stdout_to_stderr():
        try:
            record = run_serve(model_name, rates, concurrencies, arrivals, num_prompts, prompt_len, gen_len,
                               range_ratio, dataset, limits, layers, out, say, opts, warmup,
                               measure_ceilings=not no_ceilings, provider=provider, url=url,
                               served_model=served_model)
        except KeyboardInterrupt:
            err_console.print(f"interrupted: finished load points are kept in {out}")
            raise
    summaries = [p.summary(limits) for p in record.points]
    from .underload import explain_serve
    explained = explain_serve(record, serve_context(record), limits)
    if plot:
        from .plots import serve_chart
        where = record.config.get("url") or record.device.get("name", "?")
        serve_chart(plot, f"{record.config['model']} under load on {where}", summaries,
                    gpus=record.config["tp"] * record.config["pp"],
                    per="GPU" if record.device.get("kind") == "cuda" else "CPU")
    if as_json:
        err_console.print(f"serve record: {out}")
        return emit_json({"record": out, "points": summaries, "knee": explained.knee, "verdict": explained.verdict})
    views.print_serve(record, summaries)
    console.print(f"at the knee: {explained.verdict}")
    console.print(f"serve record: {out}" + (f"; chart: {plot}" if plot else "")
                  + f"\nwhy, per point: llmprobe explain {out}; $/Mtok in and out: llmprobe compare {out}")


def explain(*, records: list[str], report_dir: str | None, gpu: str | None, ceilings_path: str | None,
            slo: str | None, as_json: bool) -> None:
    from .context import RecordContext
    from .explain import explain as explain_context
    from .records import RunRecord, ServeRecord, load_json
    from .underload import explain_serve
    from .workload import parse_slo
    ceilings = _load_ceilings(ceilings_path) if ceilings_path else None
    limits = parse_slo(slo) if slo else None
    items, served = [], []
    for p in records:
        doc = load_json(p, "record")
        if isinstance(doc, dict) and doc.get("kind") == "llmprobe.serve":
            serve_record = ServeRecord.from_dict(doc, p)
            if not serve_record.points:
                raise UserError(f"{p}: the serve record has no finished load point to explain")
            served.append((p, explain_serve(serve_record, serve_context(serve_record, gpu, ceilings), limits),
                           serve_record))
            continue
        record = RunRecord.from_dict(doc, p)
        if not record.scenarios:
            raise UserError(f"{p}: the run record has no finished scenario to explain")
        ctx = RecordContext.of(record, gpu, ceilings)
        items.append((p, explain_context(ctx), ctx))
    files = []
    if report_dir and items:
        from .report import write_report
        files = write_report(report_dir, items)
    if report_dir and served:   # a serve record's report: its timeline per load point
        from .plots import serve_timeline
        os.makedirs(report_dir, exist_ok=True)
        for p, ex, rec in served:
            stem = re.sub(r"\.json(\.gz)?$", "", os.path.basename(p))
            if any(pt.steps for pt in rec.points):
                files.append(serve_timeline(os.path.join(report_dir, f"{stem}-timeline.png"),
                                            f"{ex.model} under load: the engine over time", rec.points))
    if as_json:
        docs = [(p, ex.to_dict()) for p, ex, _ in items]
        return emit_json({"scenarios": [dict(s, record=p) for p, ex in docs for s in ex["scenarios"]],
                          "records": [{k: v for k, v in ex.items() if k != "scenarios"} | {"path": p} for p, ex in docs],
                          "serve": [dict(ex.to_dict(), path=p) for p, ex, _ in served],
                          "report_files": files})
    views.print_explain(items)
    views.print_serve_explain([(p, ex) for p, ex, _ in served])
    for f in files:
        console.print(f"wrote {f}")


def serve_context(record, gpu: str | None = None, ceilings: Ceilings | None = None):
    """The serve record's floors where its ceilings are known, else None (its requests are still explained)."""
    from .context import RecordContext, record_gpu_id
    known = gpu or ceilings is not None or record.ceilings or record_gpu_id(record) not in (None, "cpu")
    return RecordContext.of(record, gpu, ceilings) if known and any(p.steps for p in record.points) else None


def predict(*, records: list[str], batch, prompt_len, gen_len, gpu: str | None, ceilings_path: str | None, tp: int,
            model_name: str | None, as_json: bool) -> None:
    from .predict import calibrate, predict as predict_one
    from .records import load_run_record
    cal = calibrate([(p, load_run_record(p)) for p in records])
    target, label = None, None
    if ceilings_path:
        target = _load_ceilings(ceilings_path)
    elif gpu:
        spec = resolve_gpu(gpu)
        target, label = spec.ceilings(), spec.id
    model = resolve_model(model_name) if model_name else None
    preds = [predict_one(cal, b, p, g, ceilings=target, tp=tp, model=model, gpu_label=label)
             for b in batch for p in prompt_len for g in gen_len]
    if as_json:
        return emit_json({"predictions": preds})
    views.print_predictions(preds)


def _load_ceilings(path: str) -> Ceilings:
    from .microbench.result import ceilings_from_record
    from .records import load_json
    doc = load_json(path, "ceilings file")
    ceil_doc = doc.get("measured") if isinstance(doc, dict) and "measured" in doc else doc
    if not isinstance(ceil_doc, dict) or "ceilings" not in ceil_doc:
        raise UserError(f"{path}: not a `llmprobe roofline --json` output with measured ceilings")
    return ceilings_from_record(ceil_doc)


def prices(*, prices_file: str | None, as_json: bool) -> None:
    from .pricing import load_prices
    ps = load_prices(prices_file)
    if as_json:
        return emit_json({"prices": [p.to_dict() for p in ps]})
    views.print_prices(ps)


def compare(*, records: list[str], prices_file: str | None, provider: str | None, tokens: float | None, predict: bool,
            model_name: str | None, gpus, tp, batch, prompt_len: int, gen_len: int, dtype: str,
            efficiency: float | None, csv_out: str | None, md_out: str | None, plot: str | None, as_json: bool) -> None:
    from . import compare as cmp
    from .pricing import load_prices
    from .records import RunRecord, ServeRecord, atomic_write_text, load_json
    if tokens is not None and tokens <= 0:
        raise UserError("--tokens must be positive")
    price_list = load_prices(prices_file)
    batches, paths = batch, records
    docs = [(p, load_json(p, "record")) for p in paths]
    served = [(p, ServeRecord.from_dict(d, p)) for p, d in docs if isinstance(d, dict) and d.get("kind") == "llmprobe.serve"]
    if served:
        if len(served) < len(docs) or predict:
            raise UserError("serve records are compared among themselves (their load points, not batches): "
                            "give only serve records, without --predict")
        return _compare_serve(served, price_list, provider, csv_out, md_out, plot, as_json)
    records = [(p, RunRecord.from_dict(d, p)) for p, d in docs]
    rows: list[dict[str, Any]] = []
    if predict:
        if not model_name or not gpus:
            raise UserError("--predict needs --model and --gpus")
        if efficiency is not None and not 0 < efficiency <= 1:
            raise UserError(f"--efficiency must be in (0, 1], got {efficiency}")
        if efficiency is not None:   # by hand: the roofline ceiling times one efficiency
            effs = [{"batch": b, "efficiency": efficiency, "record": "--efficiency", "ceilings_source": "no"}
                    for b in batches]
            rows = cmp.predicted_rows(resolve_model(model_name), gpus, tp, batches, prompt_len, gen_len, dtype,
                                      price_list, effs, tokens)
        elif not records:
            raise UserError("--predict needs run records to calibrate on, or --efficiency")
        else:
            rows = cmp.calibrated_rows(records, resolve_model(model_name), gpus, tp, batches, prompt_len, gen_len,
                                       price_list, tokens)
    elif not records:
        raise UserError("give run records to compare, or --predict with --model and --gpus")
    else:
        rows = cmp.measured_rows(records, price_list, provider, tokens)
    best = cmp.cheapest(rows)
    if csv_out:
        _write_csv(csv_out, cmp.CSV_FIELDS, rows)
    if md_out:
        atomic_write_text(md_out, views.compare_markdown(rows, best, tokens))
    if plot and not any(r["usd_per_million_tokens"] is not None for r in rows):
        err_console.print(f"no chart written to {plot}: no row has both a TPS and a price "
                          "(add prices with --prices; `llmprobe prices --help` shows the format)")
        plot = None
    if plot:
        from .plots import cost_chart
        cost_chart(plot, rows)
    if as_json:
        return emit_json({"rows": rows, "cheapest": best, "tokens": tokens})
    views.print_compare(rows, best, tokens)
    if plot:
        console.print(f"cost chart written to {plot}")


def _write_csv(path: str, fields: list[str], rows: list[dict[str, Any]]) -> None:
    import csv
    import io
    from .records import atomic_write_text
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=fields, extrasaction="ignore")
    w.writeheader()
    w.writerows(rows)
    atomic_write_text(path, buf.getvalue())


def _compare_serve(served, price_list, provider: str | None, csv_out: str | None, md_out: str | None,
                   plot: str | None, as_json: bool) -> None:
    from . import compare as cmp
    from .records import atomic_write_text
    rows = cmp.serve_rows([(p, rec, serve_context(rec)) for p, rec in served], price_list, provider)
    if csv_out:
        _write_csv(csv_out, cmp.SERVE_CSV_FIELDS, rows)
    if md_out:
        atomic_write_text(md_out, views.serve_compare_markdown(rows))
    if plot:
        from .plots import frontier_chart
        frontier_chart(plot, rows)
    if as_json:
        return emit_json({"rows": rows})
    views.print_serve_compare(rows)
    if not any(r["usd_per_hour"] for r in rows):
        err_console.print("no price matched these records' devices: add one with --prices "
                          "(`llmprobe prices --help` shows the format; gpu = \"cpu\" prices a CPU instance)")
    if plot:
        console.print(f"frontier chart written to {plot}")


def audit(*, claims: str, as_json: bool) -> None:
    from .audit import audit_file
    doc = audit_file(claims)
    if as_json:
        emit_json(doc)
    else:
        views.print_audit(claims, doc)
    if doc["errors"]:  # the good rows were judged and printed; the exit code still says some were not
        raise SystemExit(2)

