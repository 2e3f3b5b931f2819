"""Per-kernel-class costs (costs.class_costs) by hand on a model small enough to count, and their reconciliation
with the step's floor (costs.step_cost): the classes split the same bytes and FLOPs, less the norm weights."""

import pytest

from llmprobe import resolve_gpu, resolve_model
from llmprobe.costs import Floors, class_costs, step_cost

# tiny-mixtral: hidden h=256, 2 layers, 4 query heads and 2 KV heads of 64 (q_dim 256, kv_dim 128), 8 experts of
# intermediate 512 with top-2, vocabulary 1024, untied LM head; bf16 (2 B) everywhere.
# One decode step of 2 sequences with 10 and 20 cached tokens, whose tokens touched 6 experts over both MoE layers.
SEQS = [(1, 10), (1, 20)]
TOUCHED = 6
ATTN_PARAMS = 2 * (256 * 256 + 256 * 128 + 256 * 128 + 256 * 256)     # q, k, v, o per layer, 2 layers: 393,216
EXPERT_PARAMS = 3 * 256 * 512                                         # gate, up, down: 393,216
ROUTER_PARAMS = 2 * 256 * 8                                           # 2 layers: 4,096
KV_ENTRY = 2 * 2 * 128 * 2                                            # layers x (K, V) x kv_dim x 2 B: 1,024
ATTENDED = 11 + 21                                                    # each new token attends its context + itself
PER_TOKEN_ACT = (2 * (10 * 256 + 2 * (256 + 128)) + 3 * 2 * 2 * 512) * 2   # norms, residuals, rotary; SwiGLU

HAND = {   # class: (bytes, FLOPs)
    "dense_gemm": (ATTN_PARAMS * 2, 2 * 2 * ATTN_PARAMS),
    "lm_head": (1024 * 256 * 2, 2 * 2 * 1024 * 256),
    "moe_experts": (TOUCHED * EXPERT_PARAMS * 2, 2 * 2 * 2 * 2 * EXPERT_PARAMS),   # 2 tokens x 2 layers x top-2
    "moe_routing": (ROUTER_PARAMS * 2, 2 * 2 * ROUTER_PARAMS),
    "attention": ((ATTENDED + 2) * KV_ENTRY, ATTENDED * 2 * 2 * 2 * 256),   # read + written; QK and PV per layer
    "elementwise": (2 * PER_TOKEN_ACT, 0),
    "sampling": (2 * 1024 * 4, 0),                                          # fp32 logits, one row per sequence
}


@pytest.fixture(scope="module")
def floors():
    return Floors.of(resolve_model("tiny-mixtral"), resolve_gpu("h100-sxm").ceilings())


def test_each_class_by_hand(floors):
    got = class_costs(floors, SEQS, experts_touched=TOUCHED)
    assert set(got) == set(HAND)
    for cls, (nbytes, flops) in HAND.items():
        assert (got[cls].bytes, got[cls].flops) == (nbytes, flops), cls
        assert got[cls].floor_s == pytest.approx(max(nbytes / floors.bw, flops / floors.peak))


def test_the_classes_reconcile_with_the_step_floor(floors):
    got = class_costs(floors, SEQS, experts_touched=TOUCHED)
    step = step_cost(floors, SEQS, experts_touched=TOUCHED)
    weights = sum(got[c].bytes for c in ("dense_gemm", "lm_head", "moe_experts", "moe_routing"))
    norms = (2 * 2 + 1) * 256 * 2      # two RMSNorms per layer and the final one: in the step's weights, no class's
    assert weights + norms == step.weight_bytes
    assert got["attention"].bytes == step.kv_read_bytes + step.kv_write_bytes
    assert sum(got[c].flops for c in ("dense_gemm", "lm_head", "moe_experts", "moe_routing")) == step.linear_flops
    assert got["attention"].flops == step.attention_flops
    # the step's floor reads everything once; its classes, each on its own roof, can only add up to more
    assert sum(c.floor_s for c in got.values()) >= step.floor_s
