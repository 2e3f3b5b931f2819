"""Provider comparisons: tokens/s per $/h and $ per million output tokens, measured or predicted.

Measured rows come from run records (TPS = median over the record's runs). Predicted rows are the
roofline TPS ceiling x an efficiency (measured TPS / ceiling) taken from a real run at the nearest
batch size: always labelled "predicted", with the run they lean on.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .context import RecordContext, record_gpu_id
from .errors import DoesNotFit, UserError
from .hardware import resolve_gpu
from .models import ModelSpec
from .records import RunRecord, sampling_label
from .pricing import Price, price_for, tps_per_dollar_hour, usd_per_million_tokens, workload_cost_usd
from .costs import Floors
from .memory import card_of
from .bounds import scenario


def _cost_fields(tps: float | None, price: Price | None, gpus: int, tokens: float | None) -> dict[str, Any]:
    if price is None or not tps:
        return {"usd_per_hour": None, "tps_per_dollar": None, "usd_per_million_tokens": None, "workload_usd": None,
                "price_source": None, "price_date": None}
    per_hour = price.usd_per_hour * gpus
    return {"usd_per_hour": per_hour, "tps_per_dollar": tps_per_dollar_hour(tps, per_hour),
            "usd_per_million_tokens": usd_per_million_tokens(tps, per_hour),
            "workload_usd": workload_cost_usd(tokens, tps, per_hour) if tokens else None,
            "price_source": price.source, "price_date": price.date}


def measured_rows(records: Sequence[tuple[str, RunRecord]], prices: list[Price], provider: str | None = None,
                  tokens: float | None = None) -> list[dict[str, Any]]:
    rows = []
    for path, rec in records:
        cfg = rec.config
        gpu = record_gpu_id(rec) or rec.device.get("name") or "unknown"
        prov = provider or cfg.get("provider")
        gpus = cfg.get("tp", 1) * cfg.get("pp", 1)
        matches = price_for(prices, prov, gpu) or [None]
        for sc in rec.scenarios:
            tps = sc.summary["tps"].median
            for price in matches:
                rows.append({"kind": "measured", "model": cfg["model"], "layers_note": cfg.get("layers_note"),
                             "gpu": gpu, "tp": cfg.get("tp", 1), "gpus": gpus,
                             "provider": prov or (price.provider if price else None),
                             "provider_ran": prov, "batch": sc.batch, "prompt_len": sc.prompt_len,
                             "gen_len": sc.gen_len, "sampling": sampling_label(cfg.get("temperature")), "tps": tps,
                             "record": path,
                             **_cost_fields(tps, price, gpus, tokens)})
    return rows


def _refuse_faster_than_ceiling(contexts: Sequence[tuple[str, RecordContext]]) -> None:
    """A record that ran faster than its TPS ceiling explains nothing (doubt its ceilings): no prediction from it."""
    for path, ctx in contexts:
        for sc in ctx.record.scenarios:
            eff = ctx.tps_efficiency(sc)
            if eff is not None and eff > 1:
                raise UserError(f"{path}: batch {sc.batch} ran at {eff:.0%} of its TPS ceiling: a run faster than "
                                "its ceiling is not explained (doubt the ceilings), so it cannot scale a prediction")


def predicted_rows(model: ModelSpec, gpus: Sequence[str], tp_degrees: Sequence[int], batches: Sequence[int],
                   prompt_len: int, gen_len: int, dtype: str, prices: list[Price],
                   efficiencies: list[dict[str, Any]], tokens: float | None = None) -> list[dict[str, Any]]:
    if not efficiencies:
        raise UserError("--predict needs an efficiency measured on a real run: pass run records or --efficiency")
    rows = []
    for gid in gpus:
        spec = resolve_gpu(gid)
        for tp in tp_degrees:
            f = Floors.of(model, spec.ceilings(), dtype=dtype, tp=tp)
            for b in batches:
                eff = min(efficiencies, key=lambda e: (abs(e["batch"] - b), -e["batch"]))
                s = scenario(f, card_of(f.ceilings), b, prompt_len, gen_len, advise=True)
                tps = s.tps_ceiling * eff["efficiency"] if s.fits_in_memory else None
                for price in price_for(prices, None, spec.id) or [None]:
                    rows.append({"kind": "predicted", "model": model.name, "layers_note": None, "gpu": spec.id, "tp": tp,
                                 "gpus": tp, "provider": price.provider if price else None, "provider_ran": None,
                                 "batch": b, "prompt_len": prompt_len, "gen_len": gen_len, "tps": tps, "dtype": dtype,
                                 "fits_in_memory": s.fits_in_memory, "fit_advice": s.fit_advice,
                                 "tps_ceiling": s.tps_ceiling, "efficiency": eff["efficiency"],
                                 "efficiency_from": ("--efficiency" if eff["record"] == "--efficiency" else
                                                     f"{eff['record']} (batch {eff['batch']}, {eff['ceilings_source']} ceilings)"),
                                 "record": None, **_cost_fields(tps, price, tp, tokens)})
    return rows


def calibrated_rows(records: Sequence[tuple[str, RunRecord]], model: ModelSpec | None, gpus: Sequence[str],
                    tp_degrees: Sequence[int], batches: Sequence[int], prompt_len: int, gen_len: int,
                    prices: list[Price], tokens: float | None = None) -> list[dict[str, Any]]:
    """Predicted rows from a model calibrated on the records' steps (predict.py), each with its interval."""
    from .predict import calibrate, predict
    contexts = [(p, RecordContext.of(rec)) for p, rec in records]
    _refuse_faster_than_ceiling(contexts)
    cal = calibrate(contexts)
    target = model or cal.model
    rows = []
    for gid in gpus:
        spec = resolve_gpu(gid)
        for tp in tp_degrees:
            for b in batches:
                try:
                    pred = predict(cal, b, prompt_len, gen_len, ceilings=spec.ceilings(), tp=tp, model=model,
                                   gpu_label=spec.id)
                    fits, advice, iv, how = True, None, pred["interval"]["tps"], pred["kind"]
                    ok = pred["predictable"]["tps"]
                    tps = pred["tps"] if ok else None   # an interval wider than x2 is no figure to price

                except DoesNotFit as e:
                    fits, advice, tps, iv, how, ok = False, e.advice, None, None, None, None
                for price in price_for(prices, None, spec.id) or [None]:
                    cost = _cost_fields(tps, price, tp, tokens)
                    rows.append({"kind": "predicted", "model": target.name, "layers_note": None, "gpu": spec.id,
                                 "tp": tp, "gpus": tp, "provider": price.provider if price else None,
                                 "provider_ran": None, "batch": b, "prompt_len": prompt_len, "gen_len": gen_len,
                                 "tps": tps, "tps_interval": iv, "prediction": how, "predictable": ok,
                                 "fits_in_memory": fits,
                                 "fit_advice": advice, "efficiency": None,
                                 "efficiency_from": "calibrated on " + ", ".join(p for p, _ in records),
                                 "usd_per_million_tokens_interval": (
                                     [usd_per_million_tokens(iv[1], cost["usd_per_hour"]),
                                      usd_per_million_tokens(iv[0], cost["usd_per_hour"])]
                                     if iv and cost["usd_per_hour"] else None),
                                 "record": None, **cost})
    return rows


def cheapest(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The lowest $ per million tokens per (model, batch, prompt, gen)."""
    best: dict[tuple, dict[str, Any]] = {}
    for r in rows:
        if r["usd_per_million_tokens"] is None:
            continue
        key = (r["model"], r["batch"], r["prompt_len"], r["gen_len"])
        if key not in best or r["usd_per_million_tokens"] < best[key]["usd_per_million_tokens"]:
            best[key] = r
    return [{"model": k[0], "batch": k[1], "prompt_len": k[2], "gen_len": k[3], "kind": r["kind"], "gpu": r["gpu"],
             "tp": r["tp"], "provider": r["provider"], "tps": r["tps"], "usd_per_million_tokens": r["usd_per_million_tokens"]}
            for k, r in best.items()]


CSV_FIELDS = ["kind", "model", "layers_note", "gpu", "tp", "gpus", "provider", "batch", "prompt_len", "gen_len", "sampling",
              "tps",
              "usd_per_hour", "tps_per_dollar", "usd_per_million_tokens", "workload_usd", "price_source", "price_date",
              "efficiency", "efficiency_from", "record"]


def serve_rows(records: Sequence[tuple[str, Any, RecordContext | None]], prices: list[Price],
               provider: str | None = None) -> list[dict[str, Any]]:
    """One row per load point of each serve record (per matching price): the frontier's two axes (output tokens/s
    per GPU, tokens/s per user), goodput, and $ per million input and output tokens (underload.token_costs)."""
    from .underload import explain_point, token_costs
    rows = []
    for path, rec, ctx in records:
        cfg = rec.config
        gpu = record_gpu_id(rec)
        prov = provider or cfg.get("provider")
        gpus = cfg.get("tp", 1) * cfg.get("pp", 1)
        matches = (price_for(prices, prov, gpu) if gpu else []) or [None]
        for p in rec.points:
            ex = explain_point(ctx, p, cfg.get("slo") or {})
            s = ex.summary
            for price in matches:
                costs = token_costs(s, ex.prefill_time_share, price.usd_per_hour * gpus) if price else {}
                rows.append({"kind": "measured load", "model": cfg["model"], "layers_note": cfg.get("layers_note"),
                             "gpu": gpu or (rec.device.get("url") and "remote") or "unknown", "tp": cfg.get("tp", 1),
                             "gpus": gpus, "provider": prov or (price.provider if price else None), "load": ex.load,
                             "rate": p.rate, "max_concurrency": p.max_concurrency,
                             "prompt_len": cfg.get("prompt_len"), "gen_len": cfg.get("gen_len"),
                             "output_throughput": s["output_throughput"],
                             "output_throughput_per_gpu": s["output_throughput"] / gpus if s["output_throughput"] else None,
                             "output_throughput_per_user": s["output_throughput_per_user"],
                             "goodput": s["goodput"], "good_fraction": s["good_fraction"], "slo": s["slo"],
                             "ttft_p99_s": (s["ttft"] or {}).get("p99_s"), "tpot_p99_s": (s["tpot"] or {}).get("p99_s"),
                             "usd_per_hour": costs.get("usd_per_hour"),
                             "usd_per_mtok_input": costs.get("usd_per_mtok_input"),
                             "usd_per_mtok_output": costs.get("usd_per_mtok_output"),
                             "usd_per_mtok_output_all_in": costs.get("usd_per_mtok_output_all_in"),
                             "usd_per_mtok_output_at_slo": costs.get("usd_per_mtok_output_at_slo"),
                             "price_source": price.source if price else None, "price_date": price.date if price else None,
                             "record": path})
    return rows


SERVE_CSV_FIELDS = ["kind", "model", "layers_note", "gpu", "tp", "gpus", "provider", "load", "rate", "max_concurrency",
                    "prompt_len", "gen_len", "output_throughput", "output_throughput_per_gpu",
                    "output_throughput_per_user", "goodput", "good_fraction", "ttft_p99_s", "tpot_p99_s", "usd_per_hour",
                    "usd_per_mtok_input", "usd_per_mtok_output", "usd_per_mtok_output_all_in",
                    "usd_per_mtok_output_at_slo", "price_source", "price_date", "record"]
