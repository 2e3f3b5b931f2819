"""The analytic roofline model of LLM inference: per-step costs, scenario bounds, memory fit, sweeps.

Conventions (docs/model.md): 1 multiply-accumulate = 2 FLOPs; bytes are decimal; everything is per
GPU (rank) of a tensor-parallel group. A step's floor is

    max(FLOPs / peak FLOP/s, bytes / HBM bandwidth) + all-reduce time,

bytes being the weights streamed (embedding excluded: it is gathered), KV-cache entries read and
written. Pure Python on purpose: no torch, so it runs anywhere and a 100k-scenario sweep is fast.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass

from .dtypes import KV_DTYPES, WEIGHT_DTYPES, compute_dtype, nbytes, normalize
from .errors import UserError
from .hardware import Ceilings
from .models import ModelSpec, expected_experts_touched

GPU_MEMORY_UTILIZATION = 0.9  # vLLM's default share of GPU memory it may use
# Workspace allowance (docs/model.md, "Memory fit"): CUDA context, cuBLAS/NCCL workspaces and the
# CUDA-graph pool, plus the activations of the largest step and the fp32 logits.
WORKSPACE_FIXED_BYTES = float(1 << 30)
MAX_STEP_TOKENS = 8192  # vLLM chunks prefill to max_num_batched_tokens (8192 on GPU by default)
TP_DEGREES = (1, 2, 4, 8)


def validate_tp(model: ModelSpec, tp: int) -> None:
    if tp <= 0:
        raise UserError(f"--tp must be positive, got {tp}")
    if model.num_heads % tp:
        raise UserError(f"--tp {tp} does not divide the {model.num_heads} attention heads of {model.name}")
    if model.num_kv_heads % tp and tp % model.num_kv_heads:
        raise UserError(f"--tp {tp} and the {model.num_kv_heads} KV heads of {model.name}: one must divide the other")


def _attended_sum(cached: float, new: float, window: int | None) -> float:
    """sum over the step's new tokens i = 1..q of the positions each attends: min(c + i, window)."""
    if window is None:
        return new * cached + new * (new + 1) / 2
    m = min(max(window - cached, 0), new)
    return m * cached + m * (m + 1) / 2 + (new - m) * window


def _lin_sum(c0: float, c1: float, lo: int, hi: int) -> float:
    """sum_{j=lo..hi} (c0 + c1 j)."""
    n = hi - lo + 1
    return 0.0 if n <= 0 else n * c0 + c1 * (lo + hi) * n / 2


def _sum_max(a0: float, a1: float, b0: float, b1: float, lo: int, hi: int) -> float:
    """sum_{j=lo..hi} max(a0 + a1 j, b0 + b1 j), exactly, by splitting at the crossing."""
    if hi < lo:
        return 0.0
    if a1 == b1:
        return _lin_sum(max(a0, b0), a1, lo, hi)
    if a1 < b1:  # make `a` the line with the steeper slope
        a0, a1, b0, b1 = b0, b1, a0, a1
    k = math.floor((b0 - a0) / (a1 - b1))  # b dominates for j <= k, a for j > k
    k = min(max(k, lo - 1), hi)
    return _lin_sum(b0, b1, lo, k) + _lin_sum(a0, a1, k + 1, hi)


@dataclass(frozen=True, slots=True)
class StepCost:
    """One forward step on one rank. Bytes in B, FLOPs in FLOP, times in s."""
    tokens: int
    weight_bytes: float
    kv_read_bytes: float
    kv_write_bytes: float
    linear_flops: float
    attention_flops: float
    allreduce_bytes: float
    memory_s: float
    compute_s: float
    allreduce_s: float

    @property
    def floor_s(self) -> float:
        return max(self.memory_s, self.compute_s) + self.allreduce_s

    @property
    def bytes(self) -> float:
        return self.weight_bytes + self.kv_read_bytes + self.kv_write_bytes

    @property
    def flops(self) -> float:
        return self.linear_flops + self.attention_flops

    @property
    def bound(self) -> str:
        return "compute" if self.compute_s > self.memory_s else "memory"

    def parts_s(self, bw: float, peak: float) -> dict[str, float]:
        """The floor split into its named parts (seconds); they sum to floor_s.

        The bound resource's time is divided among its parts in proportion; the other resource
        overlaps and costs nothing on top.
        """
        if self.compute_s > self.memory_s:
            parts = {"linear_flops_s": self.linear_flops / peak, "attention_flops_s": self.attention_flops / peak}
        else:
            parts = {"weights_s": self.weight_bytes / bw, "kv_read_s": self.kv_read_bytes / bw,
                     "kv_write_s": self.kv_write_bytes / bw}
        parts["allreduce_s"] = self.allreduce_s
        return parts

    def to_dict(self) -> dict[str, float]:
        d = {k: getattr(self, k) for k in self.__slots__}
        d.update(floor_s=self.floor_s, bound=self.bound)
        return d


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


class CostModel:
    """A model on a set of ceilings at one precision and tensor-parallel degree."""

    def __init__(self, model: ModelSpec, ceilings: Ceilings, dtype: str = "bf16", kv_dtype: str | None = None,
                 tp: int = 1, activation_dtype: str = "bf16",
                 gpu_memory_utilization: float = GPU_MEMORY_UTILIZATION):
        self.model, self.ceilings, self.tp = model, ceilings, tp
        self.dtype = normalize(dtype, WEIGHT_DTYPES, "weight dtype")
        self.activation_dtype = normalize(activation_dtype, ("bf16", "fp16"), "activation dtype")
        self.kv_dtype = normalize(kv_dtype or self.activation_dtype, KV_DTYPES, "KV-cache dtype")
        validate_tp(model, tp)
        if not 0 < gpu_memory_utilization <= 1:
            raise UserError(f"--gpu-memory-utilization must be in (0, 1], got {gpu_memory_utilization}")
        self.gpu_memory_utilization = gpu_memory_utilization
        m, t = model, tp
        wb, ab, kvb = nbytes(self.dtype), nbytes(self.activation_dtype), nbytes(self.kv_dtype)
        self.compute_dtype = compute_dtype(self.dtype, self.activation_dtype, ceilings.peak_flops)
        self.peak = ceilings.flops(self.compute_dtype)
        self.bw = ceilings.hbm_bytes_per_s
        # Quantization covers the attention and MLP/expert projections; embedding, lm_head, router
        # and norms stay in the activation format (as vLLM's fp8/GPTQ/AWQ paths keep them).
        quantized_dense = (m.num_layers * m.attention_params_per_layer + m.num_dense_layers * m.dense_mlp_params
                           + m.num_moe_layers * m.shared_expert_params)
        self.expert_bytes = m.expert_params * wb / t                     # one expert, this rank's shard
        self.lm_head_bytes = m.vocab_size * m.hidden_size * ab / t       # read by the logits matmul even if tied
        self.dense_streamed_bytes = (quantized_dense * wb + m.num_moe_layers * m.router_params * ab) / t \
            + m.norm_params * ab + self.lm_head_bytes
        self.resident_weight_bytes = (self.dense_streamed_bytes - self.lm_head_bytes
                                      + (m.embedding_params + m.lm_head_params) * ab / t
                                      + m.num_moe_layers * m.num_experts * self.expert_bytes)
        active_linear = quantized_dense + m.num_moe_layers * (m.router_params + m.experts_per_token * m.expert_params)
        self.linear_flops_per_token = 2 * active_linear / t
        self.lm_head_flops_per_row = 2 * m.vocab_size * m.hidden_size / t
        self.attention_flops_per_position = 4 * (m.num_heads // t) * m.head_dim * m.num_layers
        kv_heads_rank = max(1, m.num_kv_heads // t)
        self.kv_entry_bytes = 2 * kv_heads_rank * m.head_dim * kvb * m.num_layers  # one token, all layers
        self.allreduce_bytes_per_token = 2 * m.num_layers * m.hidden_size * ab if t > 1 else 0.0
        ic = ceilings.interconnect_bytes_per_s
        if t > 1 and not ic:
            raise UserError(f"{ceilings.name}: no interconnect bandwidth known, cannot model --tp {t}")
        self.allreduce_s_per_token = self.allreduce_bytes_per_token * 2 * (t - 1) / t / ic if t > 1 else 0.0

    # ---- one step -----------------------------------------------------------------------------
    def moe_bytes(self, tokens: float, optimistic: bool = False) -> float:
        m = self.model
        if not m.is_moe or tokens <= 0:
            return 0.0
        touched = m.experts_per_token if optimistic else expected_experts_touched(m.num_experts, m.experts_per_token, tokens)
        return m.num_moe_layers * touched * self.expert_bytes

    def step(self, seqs: Sequence[tuple[int, int]], optimistic: bool = False) -> StepCost:
        """Cost of one forward over sequences given as (new_tokens, cached_tokens).

        A fresh prefill is (prompt_len, 0); a decode step is (1, context so far). Each sequence
        produces one row of logits; each attended KV entry is read once, each new one written once.
        """
        w = self.model.sliding_window
        tokens = sum(q for q, _ in seqs)
        attended = sum(_attended_sum(c, q, w) for q, c in seqs)
        kv_read = sum(min(c + q, w) if w else c + q for q, c in seqs)
        return self._cost(tokens, len(seqs), attended, kv_read, optimistic)

    def _cost(self, tokens: float, rows: float, attended: float, kv_read_entries: float, optimistic: bool) -> StepCost:
        weight_bytes = self.dense_streamed_bytes + self.moe_bytes(tokens, optimistic)
        kv_read = kv_read_entries * self.kv_entry_bytes
        kv_write = tokens * self.kv_entry_bytes
        lin = self.linear_flops_per_token * tokens + self.lm_head_flops_per_row * rows
        att = self.attention_flops_per_position * attended
        return StepCost(tokens=int(tokens), weight_bytes=weight_bytes, kv_read_bytes=kv_read, kv_write_bytes=kv_write,
                        linear_flops=lin, attention_flops=att, allreduce_bytes=self.allreduce_bytes_per_token * tokens,
                        memory_s=(weight_bytes + kv_read + kv_write) / self.bw, compute_s=(lin + att) / self.peak,
                        allreduce_s=self.allreduce_s_per_token * tokens)

    def prefill(self, batch: int, prompt_len: int, optimistic: bool = False) -> StepCost:
        w = self.model.sliding_window
        return self._cost(batch * prompt_len, batch, batch * _attended_sum(0, prompt_len, w),
                          batch * (min(prompt_len, w) if w else prompt_len), optimistic)

    def decode(self, batch: int, context: int, optimistic: bool = False) -> StepCost:
        """One decode step of ``batch`` sequences that each hold ``context`` cached tokens."""
        w = self.model.sliding_window
        att = min(context + 1, w) if w else context + 1
        return self._cost(batch, batch, batch * att, batch * att, optimistic)

    # ---- a whole scenario, in closed form ------------------------------------------------------
    def decode_total_s(self, batch: int, prompt_len: int, gen_len: int, optimistic: bool = False) -> tuple[float, float, float]:
        """Sum of the decode floors of steps j = 1..gen_len-1 (context grows by one per step).

        Step j attends min(prompt_len + j, window) positions per sequence, so memory and compute
        time are each linear in j on at most two segments; the sum of their max is exact.
        Returns (floor sum, memory-time sum, compute-time sum).
        """
        steps = gen_len - 1
        if steps <= 0:
            return 0.0, 0.0, 0.0
        b, p, w = batch, prompt_len, self.model.sliding_window
        fixed_bytes = self.dense_streamed_bytes + self.moe_bytes(b, optimistic) + b * self.kv_entry_bytes
        fixed_flops = self.linear_flops_per_token * b + self.lm_head_flops_per_row * b
        per_pos_s_mem = b * self.kv_entry_bytes / self.bw
        per_pos_s_cmp = b * self.attention_flops_per_position / self.peak
        m0, c0 = fixed_bytes / self.bw, fixed_flops / self.peak
        last_linear = steps if w is None else min(steps, w - p)  # j beyond this attends the full window
        total = mem = cmp = 0.0
        if last_linear >= 1:  # attended = p + j
            a0, a1 = m0 + per_pos_s_mem * p, per_pos_s_mem
            b0, b1 = c0 + per_pos_s_cmp * p, per_pos_s_cmp
            total += _sum_max(a0, a1, b0, b1, 1, last_linear)
            mem += _lin_sum(a0, a1, 1, last_linear)
            cmp += _lin_sum(b0, b1, 1, last_linear)
        rest = steps - max(last_linear, 0)
        if rest > 0:  # attended = window
            a, c = m0 + per_pos_s_mem * w, c0 + per_pos_s_cmp * w
            total += rest * max(a, c)
            mem += rest * a
            cmp += rest * c
        total += steps * self.allreduce_s_per_token * b
        return total, mem, cmp

    def memory_required(self, batch: int, prompt_len: int, gen_len: int) -> float:
        m, ab = self.model, nbytes(self.activation_dtype)
        ctx = prompt_len + gen_len
        kv = batch * (min(ctx, m.sliding_window) if m.sliding_window else ctx) * self.kv_entry_bytes
        step_tokens = min(batch * prompt_len, MAX_STEP_TOKENS)
        width = max(m.intermediate_size if m.num_dense_layers else 0,
                    m.experts_per_token * m.moe_intermediate_size + m.shared_expert_intermediate_size)
        activations = step_tokens * (3 * m.hidden_size + 2 * width) * ab / self.tp + batch * m.vocab_size * 4
        return self.resident_weight_bytes + kv + WORKSPACE_FIXED_BYTES + activations

    def memory_available(self) -> float:
        return self.ceilings.memory_bytes * self.gpu_memory_utilization

    def scenario(self, batch: int, prompt_len: int, gen_len: int, advise: bool = True) -> ScenarioBound:
        if batch <= 0 or prompt_len <= 0 or gen_len <= 0:
            raise UserError(f"batch, prompt and generation lengths must be positive (got {batch}, {prompt_len}, {gen_len})")
        pre = self.prefill(batch, prompt_len)
        dec, mem_s, cmp_s = self.decode_total_s(batch, prompt_len, gen_len)
        total = pre.floor_s + dec
        steps = gen_len - 1
        if self.model.is_moe:
            pre_o = self.prefill(batch, prompt_len, optimistic=True)
            dec_o = self.decode_total_s(batch, prompt_len, gen_len, optimistic=True)[0]
            tps_o, tpot_o = batch * gen_len / (pre_o.floor_s + dec_o), (dec_o / steps if steps else 0.0)
        else:
            tps_o, tpot_o = batch * gen_len / total, (dec / steps if steps else 0.0)
        required = self.memory_required(batch, prompt_len, gen_len)
        available = self.memory_available()
        fits = required <= available
        return ScenarioBound(
            model=self.model.name, gpu=self.ceilings.gpu_id or self.ceilings.name, batch=batch, prompt_len=prompt_len,
            gen_len=gen_len, dtype=self.dtype, kv_dtype=self.kv_dtype, tp=self.tp, fits_in_memory=fits,
            memory_required_bytes=required, memory_available_bytes=available, ttft_floor_s=pre.floor_s,
            tpot_floor_s=dec / steps if steps else 0.0, total_latency_floor_s=total,
            tps_ceiling=batch * gen_len / total, decode_bound="compute" if cmp_s > mem_s else "memory",
            prefill_bound=pre.bound, tps_ceiling_optimistic=tps_o, tpot_floor_optimistic_s=tpot_o,
            fit_advice=None if fits or not advise else self.fit_advice(batch, prompt_len, gen_len))

    # ---- what would make it fit -----------------------------------------------------------------
    def _variant(self, **kw) -> CostModel:
        args = dict(model=self.model, ceilings=self.ceilings, dtype=self.dtype, kv_dtype=self.kv_dtype, tp=self.tp,
                    activation_dtype=self.activation_dtype, gpu_memory_utilization=self.gpu_memory_utilization)
        args.update(kw)
        return CostModel(**args)

    def _fits(self, cm: CostModel, b: int, p: int, g: int) -> bool:
        return cm.memory_required(b, p, g) <= cm.memory_available()

    def fit_options(self, batch: int, prompt_len: int, gen_len: int) -> dict[str, object]:
        """Smallest TP degree, then cheapest weight precision, then most layers that would fit."""
        out: dict[str, object] = {"tp": None, "dtype": None, "max_layers": None}
        for t in TP_DEGREES:
            if t > self.tp and not _tp_invalid(self.model, t) and (self.ceilings.interconnect_bytes_per_s or 0) > 0 \
                    and self._fits(self._variant(tp=t), batch, prompt_len, gen_len):
                out["tp"] = t
                break
        for d in ("fp8", "int8", "int4"):
            if nbytes(d) < nbytes(self.dtype) and self._fits(self._variant(dtype=d), batch, prompt_len, gen_len):
                out["dtype"] = d
                break
        lo, hi = 0, self.model.num_layers - 1
        while lo < hi:  # memory grows with layers: bisect for the largest count that fits
            mid = (lo + hi + 1) // 2
            if self._fits(self._variant(model=self.model.with_layers(mid)), batch, prompt_len, gen_len):
                lo = mid
            else:
                hi = mid - 1
        out["max_layers"] = lo or None
        return out

    def fit_advice(self, batch: int, prompt_len: int, gen_len: int) -> str:
        o = self.fit_options(batch, prompt_len, gen_len)
        opts = []
        if o["tp"]:
            opts.append(f"--tp {o['tp']}")
        if o["dtype"]:
            opts.append(f"{o['dtype']} weights" + ("" if self.tp == 1 else f" at --tp {self.tp}"))
        if o["max_layers"]:
            opts.append(f"--layers {o['max_layers']} (of {self.model.num_layers})")
        return ("would fit with " + ", or ".join(opts)) if opts else "does not fit even with one layer: lower --batch or lengths"


def _tp_invalid(model: ModelSpec, tp: int) -> bool:
    try:
        validate_tp(model, tp)
        return False
    except UserError:
        return True


@dataclass(frozen=True)
class Grid:
    """A sweep: the product of every axis."""
    models: Sequence[ModelSpec]
    ceilings: Sequence[Ceilings]
    batches: Sequence[int] = (1, 8)
    prompt_lens: Sequence[int] = (256,)
    gen_lens: Sequence[int] = (256,)
    tps: Sequence[int] = (1,)
    dtypes: Sequence[str] = ("bf16",)
    kv_dtype: str | None = None


def sweep(grid: Grid, advise: bool = False, skip_invalid_tp: bool = True,
          gpu_memory_utilization: float = GPU_MEMORY_UTILIZATION) -> list[ScenarioBound]:
    """Evaluate every scenario of the grid; one CostModel per (model, GPU, dtype, TP) is reused."""
    for v in itertools.chain(grid.batches, grid.prompt_lens, grid.gen_lens):
        if v <= 0:
            raise UserError(f"batch, prompt and generation lengths must be positive, got {v}")
    out = []
    for model, ceil, dtype, tp in itertools.product(grid.models, grid.ceilings, grid.dtypes, grid.tps):
        if skip_invalid_tp and _tp_invalid(model, tp):
            continue
        cm = CostModel(model, ceil, dtype=dtype, kv_dtype=grid.kv_dtype, tp=tp,
                       gpu_memory_utilization=gpu_memory_utilization)
        for b, p, g in itertools.product(grid.batches, grid.prompt_lens, grid.gen_lens):
            out.append(cm.scenario(b, p, g, advise=advise))
    return out


def to_table(bounds: Iterable[ScenarioBound]) -> list[dict]:
    """Plain rows (for pandas.DataFrame, csv.DictWriter or JSON)."""
    return [b.to_dict() for b in bounds]
