"""Memory fit: what a scenario needs on one rank, what the card offers, and what would make it fit."""

from __future__ import annotations

from dataclasses import dataclass

from .costs import RankCosts, tp_valid
from .dtypes import nbytes
from .errors import UserError

GPU_MEMORY_UTILIZATION = 0.9  # vLLM's default share of GPU memory it may use
# Workspace allowance (docs/model.md, "Memory fit"): CUDA context, cuBLAS/NCCL workspaces and the
# CUDA-graph pool, plus the activations of the largest step and the fp32 logits.
WORKSPACE_FIXED_BYTES = float(1 << 30)
MAX_STEP_TOKENS = 8192  # vLLM chunks prefill to max_num_batched_tokens (8192 on GPU by default)
TP_DEGREES = (1, 2, 4, 8)


def memory_required(c: RankCosts, batch: int, prompt_len: int, gen_len: int) -> float:
    """Bytes one rank needs: resident weights, the KV cache of every sequence at full length, workspace."""
    m, ab = c.model, nbytes(c.activation_dtype)
    ctx = prompt_len + gen_len
    kv = batch * (min(ctx, m.sliding_window) if m.sliding_window else ctx) * c.kv_entry_bytes
    step_tokens = min(batch * prompt_len, MAX_STEP_TOKENS)
    width = max(m.intermediate_size if m.num_dense_layers else 0,
                m.experts_per_token * m.moe_intermediate_size + m.shared_expert_intermediate_size)
    activations = step_tokens * (3 * m.hidden_size + 2 * width) * ab / c.tp + batch * m.vocab_size * 4
    return c.resident_weight_bytes + kv + WORKSPACE_FIXED_BYTES + activations


@dataclass(frozen=True)
class Card:
    """What a memory question needs of the hardware: capacity, the usable share, and whether TP can be modelled."""
    memory_bytes: float
    gpu_memory_utilization: float = GPU_MEMORY_UTILIZATION
    has_interconnect: bool = True

    def __post_init__(self):
        if not 0 < self.gpu_memory_utilization <= 1:
            raise UserError(f"--gpu-memory-utilization must be in (0, 1], got {self.gpu_memory_utilization}")

    @property
    def available_bytes(self) -> float:
        return self.memory_bytes * self.gpu_memory_utilization


def fits(c: RankCosts, card: Card, batch: int, prompt_len: int, gen_len: int) -> bool:
    return memory_required(c, batch, prompt_len, gen_len) <= card.available_bytes


def _variant(c: RankCosts, **kw) -> RankCosts:
    args = dict(model=c.model, dtype=c.dtype, kv_dtype=c.kv_dtype, tp=c.tp, activation_dtype=c.activation_dtype)
    args.update(kw)
    return RankCosts.of(**args)


def fit_options(c: RankCosts, card: Card, batch: int, prompt_len: int, gen_len: int) -> dict[str, object]:
    """Smallest TP degree, then cheapest weight precision, then most layers that would fit."""
    out: dict[str, object] = {"tp": None, "dtype": None, "max_layers": None}
    for t in TP_DEGREES:
        if t > c.tp and tp_valid(c.model, t) and card.has_interconnect \
                and fits(_variant(c, tp=t), card, batch, prompt_len, gen_len):
            out["tp"] = t
            break
    for d in ("fp8", "int8", "int4"):
        if nbytes(d) < nbytes(c.dtype) and fits(_variant(c, dtype=d), card, batch, prompt_len, gen_len):
            out["dtype"] = d
            break
    lo, hi = 0, c.model.num_layers - 1
    while lo < hi:  # memory grows with layers: bisect for the largest count that fits
        mid = (lo + hi + 1) // 2
        if fits(_variant(c, model=c.model.with_layers(mid)), card, batch, prompt_len, gen_len):
            lo = mid
        else:
            hi = mid - 1
    out["max_layers"] = lo or None
    return out


def fit_advice(c: RankCosts, card: Card, batch: int, prompt_len: int, gen_len: int) -> str:
    o = fit_options(c, card, batch, prompt_len, gen_len)
    opts = []
    if o["tp"]:
        opts.append(f"--tp {o['tp']}")
    if o["dtype"]:
        opts.append(f"{o['dtype']} weights" + ("" if c.tp == 1 else f" at --tp {c.tp}"))
    if o["max_layers"]:
        opts.append(f"--layers {o['max_layers']} (of {c.model.num_layers})")
    return ("would fit with " + ", or ".join(opts)) if opts else "does not fit even with one layer: lower --batch or lengths"


def card_of(ceilings, gpu_memory_utilization: float = GPU_MEMORY_UTILIZATION) -> Card:
    return Card(ceilings.memory_bytes, gpu_memory_utilization, bool(ceilings.interconnect_bytes_per_s))

