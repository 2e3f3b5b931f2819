"""What one rank moves and computes in a forward step, and that step's roofline floor.

Conventions (docs/model.md): 1 multiply-accumulate = 2 FLOPs; bytes are decimal; everything is per
GPU (rank) of a tensor-parallel group. A step's floor is

    roofline(FLOPs, bytes, peak, bandwidth) + communication time (comm.py: vLLM's collectives, alpha-beta),

bytes being the weights streamed (embedding excluded: it is gathered), KV-cache entries read and
written. ``class_costs`` splits the same step into kernel classes (GEMMs, MoE experts, attention,
communication, sampling) that add up to it. Pure Python on purpose: no torch, so it runs anywhere
and a 100k-scenario sweep is fast.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from .dtypes import KV_DTYPES, WEIGHT_DTYPES, compute_dtype, nbytes, normalize
from .errors import UserError
from .comm import Collectives, Interconnect, collectives, step_comm_s
from .hardware import Ceilings
from .models import ModelSpec, expected_experts_touched


def roofline(flops: float, nbytes_: float, peak: float, bw: float) -> float:
    """The time a piece of work cannot beat: its FLOPs at peak or its bytes at bandwidth, whichever is longer."""
    return max(nbytes_ / bw, flops / peak)


def validate_tp(model: ModelSpec, tp: int) -> None:
    if tp <= 0:
        raise UserError(f"--tp must be positive, got {tp}")
    if model.num_heads % tp:
        raise UserError(f"--tp {tp} does not divide the {model.num_heads} attention heads of {model.name}")
    if model.num_kv_heads % tp and tp % model.num_kv_heads:
        raise UserError(f"--tp {tp} and the {model.num_kv_heads} KV heads of {model.name}: one must divide the other")


def tp_valid(model: ModelSpec, tp: int) -> bool:
    try:
        validate_tp(model, tp)
        return True
    except UserError:
        return False


@dataclass(frozen=True)
class RankCosts:
    """Bytes and FLOPs of one rank per unit of work (token, logits row, attended position): no hardware in it."""
    model: ModelSpec
    dtype: str
    activation_dtype: str
    kv_dtype: str
    tp: int
    expert_bytes: float                  # one expert, this rank's shard
    lm_head_bytes: float                 # read by the logits matmul even if tied to the embedding
    dense_streamed_bytes: float          # every non-expert weight a step reads (embedding excluded)
    resident_weight_bytes: float         # what this rank holds in memory
    linear_flops_per_token: float
    lm_head_flops_per_row: float
    attention_flops_per_position: float
    kv_entry_bytes: float                # one token's K and V on this rank, all layers
    allreduce_bytes_per_token: float     # one all-reduce's activations, per token
    allgather_bytes_per_row: float       # the logits all-gather's output, per logits row
    collectives: Collectives             # per step

    @classmethod
    def of(cls, model: ModelSpec, dtype: str = "bf16", kv_dtype: str | None = None, tp: int = 1,
           activation_dtype: str = "bf16") -> RankCosts:
        m, t = model, tp
        dtype = normalize(dtype, WEIGHT_DTYPES, "weight dtype")
        activation_dtype = normalize(activation_dtype, ("bf16", "fp16"), "activation dtype")
        kv_dtype = normalize(kv_dtype or activation_dtype, KV_DTYPES, "KV-cache dtype")
        validate_tp(model, tp)
        wb, ab = nbytes(dtype), nbytes(activation_dtype)
        # Quantization covers the attention and MLP/expert projections; embedding, lm_head, router
        # and norms stay in the activation format (as vLLM's fp8/GPTQ/AWQ paths keep them).
        quantized_dense = (m.num_layers * m.attention_params_per_layer + m.num_dense_layers * m.dense_mlp_params
                           + m.num_moe_layers * m.shared_expert_params)
        expert_bytes = m.expert_params * wb / t
        lm_head_bytes = m.vocab_size * m.hidden_size * ab / t
        dense_streamed = (quantized_dense * wb + m.num_moe_layers * m.router_params * ab) / t \
            + m.norm_params * ab + lm_head_bytes
        resident = (dense_streamed - lm_head_bytes + (m.embedding_params + m.lm_head_params) * ab / t
                    + m.num_moe_layers * m.num_experts * expert_bytes)
        active_linear = quantized_dense + m.num_moe_layers * (m.router_params + m.experts_per_token * m.expert_params)
        # KV heads are split across ranks, or replicated when there are fewer heads than ranks.
        kv_heads_rank = max(1, m.num_kv_heads // t)
        coll = collectives(m, t)
        return cls(model=m, dtype=dtype, activation_dtype=activation_dtype, kv_dtype=kv_dtype, tp=t,
                   expert_bytes=expert_bytes, lm_head_bytes=lm_head_bytes, dense_streamed_bytes=dense_streamed,
                   resident_weight_bytes=resident, linear_flops_per_token=2 * active_linear / t,
                   lm_head_flops_per_row=2 * m.vocab_size * m.hidden_size / t,
                   attention_flops_per_position=4 * (m.num_heads // t) * m.head_dim * m.num_layers,
                   kv_entry_bytes=m.kv_bytes_per_token(nbytes(kv_dtype)) * kv_heads_rank / m.num_kv_heads,
                   allreduce_bytes_per_token=m.hidden_size * ab, allgather_bytes_per_row=m.vocab_size * ab,
                   collectives=coll)

    def moe_bytes(self, tokens: float, optimistic: bool = False, touched: float | None = None) -> float:
        """Expert weights a step of ``tokens`` reads: the expected distinct experts under uniform
        routing, or exactly top-k (``optimistic``: the routing-independent lower bound), or the
        distinct experts the step measured, summed over its MoE layers (``touched``)."""
        m = self.model
        if not m.is_moe or tokens <= 0:
            return 0.0
        if touched is not None:
            return touched * self.expert_bytes
        per_layer = m.experts_per_token if optimistic else expected_experts_touched(m.num_experts, m.experts_per_token, tokens)
        return m.num_moe_layers * per_layer * self.expert_bytes


@dataclass(frozen=True, slots=True)
class StepCost:
    """One forward step on one rank. Bytes in B, FLOPs in FLOP, times in s."""
    tokens: int
    weight_bytes: float
    kv_read_bytes: float
    kv_write_bytes: float
    linear_flops: float
    attention_flops: float
    comm_bytes: float            # what this rank's collectives carry (all-reduced activations, gathered logits)
    memory_s: float
    compute_s: float
    comm_s: float                # collectives: latency per call + bytes over the bus bandwidth

    @property
    def floor_s(self) -> float:
        return max(self.memory_s, self.compute_s) + self.comm_s

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
        parts["comm_s"] = self.comm_s
        return parts

    def to_dict(self) -> dict[str, float]:
        d = {k: getattr(self, k) for k in self.__slots__}
        d.update(floor_s=self.floor_s, bound=self.bound)
        return d


@dataclass(frozen=True)
class Floors:
    """A rank's costs on a set of ceilings: the rates every floor divides by."""
    costs: RankCosts
    ceilings: Ceilings
    compute_dtype: str
    peak: float                     # FLOP/s in the format the linear layers run in
    bw: float                       # device-memory B/s
    link: Interconnect | None       # None without tensor parallelism

    @classmethod
    def on(cls, costs: RankCosts, ceilings: Ceilings) -> Floors:
        cdt = compute_dtype(costs.dtype, costs.activation_dtype, ceilings.peak_flops)
        t, ic = costs.tp, ceilings.interconnect_bytes_per_s
        link = None
        if t > 1:
            if not ic:
                raise UserError(f"{ceilings.name}: no interconnect bandwidth known, cannot model --tp {t}")
            link = Interconnect(ceilings.collective_latency_s or 0.0, ic)
        return cls(costs=costs, ceilings=ceilings, compute_dtype=cdt, peak=ceilings.flops_per_s(cdt),
                   bw=ceilings.hbm_bytes_per_s, link=link)

    def comm_s(self, tokens: float, rows: float) -> float:
        """One step's collectives (comm.py): all-reduced activations of ``tokens``, gathered logits of ``rows``."""
        c = self.costs
        if self.link is None or not tokens:
            return 0.0
        return step_comm_s(c.collectives, self.link, c.tp, c.allreduce_bytes_per_token * tokens,
                           c.allgather_bytes_per_row * rows)

    @classmethod
    def of(cls, model: ModelSpec, ceilings: Ceilings, dtype: str = "bf16", kv_dtype: str | None = None,
           tp: int = 1, activation_dtype: str = "bf16") -> Floors:
        return cls.on(RankCosts.of(model, dtype, kv_dtype, tp, activation_dtype), ceilings)

    @property
    def model(self) -> ModelSpec:
        return self.costs.model


def _attended_sum(cached: float, new: float, window: int | None) -> float:
    """sum over the step's new tokens i = 1..q of the positions each attends: min(c + i, window)."""
    if window is None:
        return new * cached + new * (new + 1) / 2
    m = min(max(window - cached, 0), new)
    return m * cached + m * (m + 1) / 2 + (new - m) * window


def _cost(f: Floors, tokens: float, rows: float, attended: float, kv_read_entries: float, optimistic: bool,
          touched: float | None = None) -> StepCost:
    c = f.costs
    weight_bytes = c.dense_streamed_bytes + c.moe_bytes(tokens, optimistic, touched)
    kv_read = kv_read_entries * c.kv_entry_bytes
    kv_write = tokens * c.kv_entry_bytes
    lin = c.linear_flops_per_token * tokens + c.lm_head_flops_per_row * rows
    att = c.attention_flops_per_position * attended
    return StepCost(tokens=int(tokens), weight_bytes=weight_bytes, kv_read_bytes=kv_read, kv_write_bytes=kv_write,
                    linear_flops=lin, attention_flops=att,
                    comm_bytes=(c.collectives.allreduces * c.allreduce_bytes_per_token * tokens
                                + c.collectives.allgathers * c.allgather_bytes_per_row * rows),
                    memory_s=(weight_bytes + kv_read + kv_write) / f.bw, compute_s=(lin + att) / f.peak,
                    comm_s=f.comm_s(tokens, rows))


def step_cost(f: Floors, seqs: Sequence[tuple[int, int]], optimistic: bool = False,
              experts_touched: float | None = None) -> StepCost:
    """Cost of one forward over sequences given as (new_tokens, cached_tokens).

    A fresh prefill is (prompt_len, 0); a decode step is (1, context so far). Each sequence
    produces one row of logits; each attended KV entry is read once, each new one written once.
    ``experts_touched``: the distinct experts the step measured, summed over MoE layers (else the
    expected coverage, or top-k if ``optimistic``).
    """
    return _cost(f, *_work(f.model, seqs), optimistic, experts_touched)


def _work(m: ModelSpec, seqs: Sequence[tuple[int, int]]) -> tuple[int, int, float, float]:
    """(new tokens, logits rows, attended positions, KV entries read) of a step's sequences."""
    w = m.sliding_window
    return (sum(q for q, _ in seqs), len(seqs), sum(_attended_sum(c, q, w) for q, c in seqs),
            sum(min(c + q, w) if w else c + q for q, c in seqs))


@dataclass(frozen=True)
class ClassCost:
    """One kernel class's share of a step on one rank: its bytes, FLOPs and its own floor."""
    bytes: float
    flops: float
    floor_s: float
    bound: str                   # "memory" | "compute" | "communication"


def class_costs(f: Floors, seqs: Sequence[tuple[int, int]], experts_touched: float | None = None) -> dict[str, ClassCost]:
    """Each kernel class's bytes, FLOPs and floor for one step (docs/methodology.md, "Inside the step").

    dense_gemm: attention projections, dense MLPs and shared experts (weights once, 2 FLOPs per
    weight per token); lm_head: the logits matmul, one row per sequence; moe_experts: the expert
    weights the step's tokens touch (the measured coverage where given, else the expected under uniform
    routing) and top-k experts' FLOPs per token; moe_routing: the router; attention: KV entries read and written, QK and PV
    FLOPs; elementwise: what the norms, rotary, activation and residual adds must each read and
    write once per token (activations, unfused); communication: the collectives' alpha-beta time;
    sampling: reading the logits once (fp32). Copies and "other" have no floor.
    """
    c, m = f.costs, f.model
    tokens, rows, attended, kv_read = _work(m, seqs)
    wb, ab = nbytes(c.dtype), nbytes(c.activation_dtype)
    t = c.tp
    dense = (m.num_layers * m.attention_params_per_layer + m.num_dense_layers * m.dense_mlp_params
             + m.num_moe_layers * m.shared_expert_params)
    router = m.num_moe_layers * m.router_params

    def roof(nbytes_: float, flops: float) -> ClassCost:
        mem, cmp = nbytes_ / f.bw, flops / f.peak
        return ClassCost(nbytes_, flops, max(mem, cmp), "compute" if cmp > mem else "memory")
    inter = (m.num_dense_layers * m.intermediate_size
             + m.num_moe_layers * (m.experts_per_token * m.moe_intermediate_size + m.shared_expert_intermediate_size))
    per_token_act = (m.num_layers * (4 * m.hidden_size + 6 * m.hidden_size + 2 * (m.q_dim + m.kv_dim) / t)
                     + 3 * inter / t) * ab   # 2 norms r+w, 2 residual adds 2r+1w, rotary on q and k, SwiGLU 2r+1w
    out = {
        "dense_gemm": roof(dense * wb / t, 2 * tokens * dense / t),
        "lm_head": roof(c.lm_head_bytes, rows * c.lm_head_flops_per_row),
        "attention": roof((kv_read + tokens) * c.kv_entry_bytes, attended * c.attention_flops_per_position),
        "elementwise": roof(tokens * per_token_act, 0.0),
        "sampling": roof(rows * m.vocab_size * 4, 0.0),   # the gathered, full-vocabulary logits
    }
    if m.is_moe:
        out["moe_experts"] = roof(c.moe_bytes(tokens, touched=experts_touched), 2 * tokens * m.num_moe_layers * m.experts_per_token
                                  * m.expert_params / t)
        out["moe_routing"] = roof(router * ab / t, 2 * tokens * router / t)
    comm = f.comm_s(tokens, rows)
    if comm:
        out["communication"] = ClassCost(c.collectives.allreduces * c.allreduce_bytes_per_token * tokens
                                         + c.collectives.allgathers * c.allgather_bytes_per_row * rows, 0.0, comm,
                                         "communication")
    return out


def prefill_cost(f: Floors, batch: int, prompt_len: int, optimistic: bool = False) -> StepCost:
    w = f.model.sliding_window
    return _cost(f, batch * prompt_len, batch, batch * _attended_sum(0, prompt_len, w),
                 batch * (min(prompt_len, w) if w else prompt_len), optimistic)


def decode_cost(f: Floors, batch: int, context: int, optimistic: bool = False) -> StepCost:
    """One decode step of ``batch`` sequences that each hold ``context`` cached tokens."""
    w = f.model.sliding_window
    att = min(context + 1, w) if w else context + 1
    return _cost(f, batch, batch, batch * att, batch * att, optimistic)


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


def decode_sum(f: Floors, batch: int, prompt_len: int, gen_len: int,
               optimistic: bool = False) -> tuple[float, float, float]:
    """Sum of the decode floors of steps j = 1..gen_len-1 (context grows by one per step).

    Step j attends min(prompt_len + j, window) positions per sequence, so memory and compute
    time are each linear in j on at most two segments; the sum of their max is exact.
    Returns (floor sum, memory-time sum, compute-time sum).
    """
    steps = gen_len - 1
    if steps <= 0:
        return 0.0, 0.0, 0.0
    c = f.costs
    b, p, w = batch, prompt_len, f.model.sliding_window
    fixed_bytes = c.dense_streamed_bytes + c.moe_bytes(b, optimistic) + b * c.kv_entry_bytes
    fixed_flops = c.linear_flops_per_token * b + c.lm_head_flops_per_row * b
    per_pos_s_mem = b * c.kv_entry_bytes / f.bw
    per_pos_s_cmp = b * c.attention_flops_per_position / f.peak
    m0, c0 = fixed_bytes / f.bw, fixed_flops / f.peak
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
        a, cc = m0 + per_pos_s_mem * w, c0 + per_pos_s_cmp * w
        total += rest * max(a, cc)
        mem += rest * a
        cmp += rest * cc
    total += steps * f.comm_s(b, b)
    return total, mem, cmp
