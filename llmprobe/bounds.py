"""Scenario bounds: a model's TTFT, TPOT, latency and TPS floors on a GPU, alone or as a sweep.

The per-step costs live in costs.py, the memory fit in memory.py; this module adds them up over a
whole request (one prefill, gen_len - 1 decode steps) and over grids of scenarios.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from .costs import Floors, decode_cost, decode_sum, prefill_cost, roofline, tp_valid
from .errors import UserError
from .hardware import Ceilings
from .memory import GPU_MEMORY_UTILIZATION, Card, card_of, fit_advice, memory_required
from .models import ModelSpec


@dataclass(frozen=True, slots=True)
class ScenarioBound:
    model: str
    gpu: str
    batch: int
    prompt_len: int
    gen_len: int
    dtype: str
    kv_dtype: str
    tp: int
    fits_in_memory: bool
    memory_required_bytes: float
    memory_available_bytes: float
    ttft_floor_s: float
    tpot_floor_s: float
    total_latency_floor_s: float
    tps_ceiling: float
    decode_bound: str
    prefill_bound: str
    # MoE: the routing-independent optimistic bound (exactly top-k experts touched per layer)
    tps_ceiling_optimistic: float
    tpot_floor_optimistic_s: float
    fit_advice: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def scenario(f: Floors, card: Card, batch: int, prompt_len: int, gen_len: int, advise: bool = True) -> ScenarioBound:
    """One request shape: a prefill of ``batch`` prompts, then ``gen_len - 1`` decode steps."""
    if batch <= 0 or prompt_len <= 0 or gen_len <= 0:
        raise UserError(f"batch, prompt and generation lengths must be positive (got {batch}, {prompt_len}, {gen_len})")
    c = f.costs
    pre = prefill_cost(f, batch, prompt_len)
    dec, mem_s, cmp_s = decode_sum(f, batch, prompt_len, gen_len)
    total = pre.floor_s + dec
    steps = gen_len - 1
    if f.model.is_moe:
        pre_o = prefill_cost(f, batch, prompt_len, optimistic=True)
        dec_o = decode_sum(f, batch, prompt_len, gen_len, optimistic=True)[0]
        tps_o, tpot_o = batch * gen_len / (pre_o.floor_s + dec_o), (dec_o / steps if steps else 0.0)
    else:
        tps_o, tpot_o = batch * gen_len / total, (dec / steps if steps else 0.0)
    required = memory_required(c, batch, prompt_len, gen_len)
    fits = required <= card.available_bytes
    return ScenarioBound(
        model=f.model.name, gpu=f.ceilings.gpu_id or f.ceilings.name, batch=batch, prompt_len=prompt_len,
        gen_len=gen_len, dtype=c.dtype, kv_dtype=c.kv_dtype, tp=c.tp, fits_in_memory=fits,
        memory_required_bytes=required, memory_available_bytes=card.available_bytes, ttft_floor_s=pre.floor_s,
        tpot_floor_s=dec / steps if steps else 0.0, total_latency_floor_s=total,
        tps_ceiling=batch * gen_len / total, decode_bound="compute" if cmp_s > mem_s else "memory",
        prefill_bound=pre.bound, tps_ceiling_optimistic=tps_o, tpot_floor_optimistic_s=tpot_o,
        fit_advice=None if fits or not advise else fit_advice(c, card, batch, prompt_len, gen_len))


def bound(model: ModelSpec, ceilings: Ceilings, batch: int, prompt_len: int, gen_len: int, dtype: str = "bf16",
          kv_dtype: str | None = None, tp: int = 1, gpu_memory_utilization: float = GPU_MEMORY_UTILIZATION,
          advise: bool = False) -> ScenarioBound:
    """One scenario from its names: the convenient entry point for scripts."""
    return scenario(Floors.of(model, ceilings, dtype, kv_dtype, tp), card_of(ceilings, gpu_memory_utilization),
                    batch, prompt_len, gen_len, advise=advise)


@dataclass(frozen=True)
class Grid:
    """A sweep: the product of every axis."""
    models: Sequence[ModelSpec]
    ceilings: Sequence[Ceilings]
    batches: Sequence[int] = (1, 8)
    prompt_lens: Sequence[int] = (256,)
    gen_lens: Sequence[int] = (256,)
    tp_degrees: Sequence[int] = (1,)
    dtypes: Sequence[str] = ("bf16",)
    kv_dtype: str | None = None


def sweep(grid: Grid, advise: bool = False, skip_invalid_tp: bool = True,
          gpu_memory_utilization: float = GPU_MEMORY_UTILIZATION) -> list[ScenarioBound]:
    """Evaluate every scenario of the grid; the floors of each (model, GPU, dtype, TP) are built once."""
    for v in itertools.chain(grid.batches, grid.prompt_lens, grid.gen_lens):
        if v <= 0:
            raise UserError(f"batch, prompt and generation lengths must be positive, got {v}")
    out = []
    for model, ceil, dtype, tp in itertools.product(grid.models, grid.ceilings, grid.dtypes, grid.tp_degrees):
        if skip_invalid_tp and not tp_valid(model, tp):
            continue
        f = Floors.of(model, ceil, dtype=dtype, kv_dtype=grid.kv_dtype, tp=tp)
        card = card_of(ceil, gpu_memory_utilization)
        for b, p, g in itertools.product(grid.batches, grid.prompt_lens, grid.gen_lens):
            out.append(scenario(f, card, b, p, g, advise=advise))
    return out


def to_table(bounds: Iterable[ScenarioBound]) -> list[dict]:
    """Plain rows (for pandas.DataFrame, csv.DictWriter or JSON)."""
    return [b.to_dict() for b in bounds]


def operating_points(f: Floors, batches: Sequence[int], prompt_len: int) -> list[dict[str, Any]]:
    """Where each batch's prefill (batch x prompt tokens) and a decode step at the prompt's context sit on the
    roofline: arithmetic intensity and the FLOP/s the step's floor implies (on the roof, by construction)."""
    out = []
    for b in batches:
        for phase, step in (("prefill", prefill_cost(f, b, prompt_len)), ("decode", decode_cost(f, b, prompt_len))):
            out.append({"phase": phase, "batch": b, "intensity": step.flops / step.bytes,
                        "flops_per_s": step.flops / roofline(step.flops, step.bytes, f.peak, f.bw)})
    return out
