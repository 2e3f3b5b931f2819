"""What each CLI command does: gather inputs through the library, then print a table or JSON."""

from __future__ import annotations

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
             gpu_memory_utilization: float, mode: str, remeasure: bool, plot: str | None, as_json: bool) -> None:
    model = resolve_model(model_name) if model_name else None
    measured = None
    if gpu == "auto":
        from .microbench import measure_or_load
        measured = measure_or_load(mode=mode, remeasure=remeasure, progress=not as_json)
        ceilings = measured.ceilings()
        datasheet = measured.datasheet_ceilings()
    else:
        if mode != "default" or remeasure:
            raise UserError("--quick/--full/--remeasure measure this machine: use them without --gpu (or --gpu auto)")
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


