"""Are published tokens/s figures physically possible?

For each claim (model, GPU, batch, prompt/generation lengths, TPS, optional TP, precision,
provider and price) the roofline model answers, at bf16, 8-bit (fp8 where the card has it, else
int8) and int4 weights: does the model fit, and what share of the TPS ceiling is the claim?

Verdicts:
  plausible    possible as stated, at most ACHIEVABLE_SHARE of the ceiling (uniform MoE routing)
  conditional  possible only under something the claim does not state: narrower weights than
               bf16 (when no precision is given), or MoE routing more concentrated than uniform
  impossible   no stated or allowed precision fits and stays under its ceiling

ACHIEVABLE_SHARE is what a pure read-streaming kernel reaches of datasheet bandwidth, measured by
``llmprobe roofline --full`` on an H100 SXM (80GB HBM3, 2026-11-27): llmprobe's Triton read kernel,
3.140 of 3.35 TB/s (docs/measurements/h100-sxm-2026-11-27). Decoding reads weights; an inference
engine, which also computes, cannot stream them faster than that. (The same run's triad, which also
writes, gave 2.94 TB/s.) docs/model.md, "Ceilings", says the same.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from typing import Any

from .dtypes import WEIGHT_DTYPES, normalize
from .errors import UserError
from .hardware import resolve_gpu
from .models import resolve_model
from .pricing import tps_per_dollar_hour, usd_per_million_tokens
from .bounds import bound

ACHIEVABLE_SHARE = 3.140 / 3.35
COLUMNS = ("model", "gpu", "batch", "prompt_len", "gen_len", "tps", "tp", "dtype", "provider", "price_per_hour")
OPTIONAL = ("tp", "dtype", "provider", "price_per_hour", "tps_per_dollar")
ARITHMETIC_TOLERANCE = 0.01


@dataclass(frozen=True)
class Claim:
    line: int
    model: str
    gpu: str
    batch: int
    prompt_len: int
    gen_len: int
    tps: float
    tp: int
    dtype: str | None
    provider: str | None
    price_per_hour: float | None
    tps_per_dollar: float | None


def _num(row: dict, key: str, kind, required: bool = True):
    raw = (row.get(key) or "").strip()
    if not raw:
        if required:
            raise UserError(f"{key} is empty")
        return None
    try:
        v = kind(raw)
    except ValueError:
        raise UserError(f"{key} {raw!r} is not a {'whole ' if kind is int else ''}number") from None
    if (isinstance(v, float) and not math.isfinite(v)) or v <= 0:
        raise UserError(f"{key} must be positive, got {raw}")
    return v


def parse_claims(path: str) -> tuple[list[Claim], list[dict[str, Any]]]:
    """Claims and per-line errors; lines starting with '#' are comments. Line numbers are the file's."""
    try:
        with open(path, newline="") as f:
            lines = ["\n" if ln.lstrip().startswith("#") else ln for ln in f]
    except OSError as e:
        raise UserError(f"{path}: {e.strerror}") from None
    except UnicodeDecodeError:
        raise UserError(f"{path}: not a text (CSV) file") from None
    reader = csv.reader(lines)
    header: list[str] | None = None
    claims, errors = [], []
    for fields in reader:
        line = reader.line_num
        if not any(x.strip() for x in fields):
            continue
        if header is None:
            header = [h.strip() for h in fields]
            missing = [c for c in COLUMNS if c not in header and c not in OPTIONAL]
            if missing:
                raise UserError(f"{path}: line {line}: missing column(s) {', '.join(missing)}; "
                                f"expected header {','.join(COLUMNS)}")
            continue
        try:
            if len(fields) > len(header):
                raise UserError(f"{len(fields)} fields, the header has {len(header)}")
            row = dict(zip(header, fields))
            dtype = (row.get("dtype") or "").strip()
            claims.append(Claim(
                line=line, model=resolve_model((row.get("model") or "").strip()).name,
                gpu=resolve_gpu((row.get("gpu") or "").strip()).id, batch=_num(row, "batch", int),
                prompt_len=_num(row, "prompt_len", int), gen_len=_num(row, "gen_len", int),
                tps=_num(row, "tps", float), tp=_num(row, "tp", int, required=False) or 1,
                dtype=normalize(dtype, WEIGHT_DTYPES, "dtype") if dtype else None,
                provider=(row.get("provider") or "").strip() or None,
                price_per_hour=_num(row, "price_per_hour", float, required=False),
                tps_per_dollar=_num(row, "tps_per_dollar", float, required=False)))
        except UserError as e:
            errors.append({"line": line, "message": str(e)})
    if header is None:
        raise UserError(f"{path}: empty: expected the header {','.join(COLUMNS)}")
    return claims, errors


def _eight_bit(ceilings) -> str:
    return "fp8" if "fp8" in ceilings.peak_flops else "int8"


def _bounds(model, ceil, dtype: str, c: Claim) -> dict[str, Any]:
    s = bound(model, ceil, c.batch, c.prompt_len, c.gen_len, dtype=dtype, tp=c.tp)
    return {"fits": s.fits_in_memory, "memory_required_bytes": s.memory_required_bytes, "tps_ceiling": s.tps_ceiling,
            "share_of_ceiling": c.tps / s.tps_ceiling, "tps_ceiling_optimistic": s.tps_ceiling_optimistic,
            "share_of_optimistic": c.tps / s.tps_ceiling_optimistic}


def judge(c: Claim) -> dict[str, Any]:
    model, gpu = resolve_model(c.model), resolve_gpu(c.gpu)
    ceil = gpu.ceilings()
    precisions = ["bf16", _eight_bit(ceil), "int4"]
    allowed = [c.dtype] if c.dtype else precisions
    per = {d: _bounds(model, ceil, d, c) for d in dict.fromkeys(precisions + allowed)}

    def ok(d: str, key: str) -> bool:
        return per[d]["fits"] and per[d][key] <= ACHIEVABLE_SHARE
    tp_note = f" at TP {c.tp}" if c.tp > 1 else " on one GPU"
    first = allowed[0]
    if ok(first, "share_of_ceiling"):
        verdict = "plausible"
        reason = (f"{first} fits{tp_note}; the claim is {per[first]['share_of_ceiling']:.0%} of its "
                  f"{per[first]['tps_ceiling']:,.0f} tok/s ceiling")
    else:
        cond = next((d for d in allowed[1:] if ok(d, "share_of_ceiling")), None)
        routed = next((d for d in allowed if ok(d, "share_of_optimistic")), None) if model.is_moe else None
        if cond is not None:
            verdict = "conditional"
            why = ("does not fit" if not per[first]["fits"] else
                   f"would need {per[first]['share_of_ceiling']:.0%} of its ceiling")
            reason = (f"needs <={'8' if cond != 'int4' else '4'}-bit weights ({cond}): {first} {why}{tp_note}; "
                      f"at {cond} the claim is {per[cond]['share_of_ceiling']:.0%} of the "
                      f"{per[cond]['tps_ceiling']:,.0f} tok/s ceiling")
        elif routed is not None:
            verdict = "conditional"
            reason = (f"needs MoE routing more concentrated than uniform: at {routed} the claim is "
                      f"{per[routed]['share_of_ceiling']:.0%} of the uniform-routing ceiling, "
                      f"{per[routed]['share_of_optimistic']:.0%} of the top-k-only one")
        else:
            verdict = "impossible"
            fitting = [d for d in allowed if per[d]["fits"]]
            if not fitting:
                reason = f"does not fit{tp_note} at {', '.join(allowed)}"
            else:
                best = max(fitting, key=lambda d: per[d]["tps_ceiling_optimistic"])
                reason = (f"above what the card can stream: {per[best]['share_of_optimistic']:.0%} of the "
                          f"{per[best]['tps_ceiling_optimistic']:,.0f} tok/s ceiling at {best} "
                          f"(limit {ACHIEVABLE_SHARE:.0%})")
    out: dict[str, Any] = {"line": c.line, "model": c.model, "gpu": c.gpu, "batch": c.batch, "prompt_len": c.prompt_len,
                           "gen_len": c.gen_len, "tps": c.tps, "tp": c.tp, "dtype": c.dtype, "provider": c.provider,
                           "verdict": verdict, "reason": reason, "precisions": per,
                           "achievable_share": ACHIEVABLE_SHARE}
    if c.price_per_hour:
        cost = {"price_per_hour": c.price_per_hour, "gpus": c.tp, "tps_per_dollar": tps_per_dollar_hour(c.tps, c.price_per_hour),
                "usd_per_million_tokens": usd_per_million_tokens(c.tps, c.price_per_hour)}
        if c.tps_per_dollar:
            err = abs(c.tps_per_dollar - cost["tps_per_dollar"]) / cost["tps_per_dollar"]
            cost.update(published_tps_per_dollar=c.tps_per_dollar, arithmetic_ok=err <= ARITHMETIC_TOLERANCE)
            if err > ARITHMETIC_TOLERANCE:
                out["reason"] += (f"; published TPS/$ {c.tps_per_dollar:g} is off: {c.tps:g} / {c.price_per_hour:g} = "
                                  f"{cost['tps_per_dollar']:.2f}")
        out["cost"] = cost
    return out


def audit_file(path: str) -> dict[str, Any]:
    claims, errors = parse_claims(path)
    return {"claims": [judge(c) for c in claims], "errors": errors, "achievable_share": ACHIEVABLE_SHARE}
