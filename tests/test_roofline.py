import math
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from llmprobe.errors import UserError
from llmprobe.hardware import Ceilings, gpu_catalog, resolve_gpu
from llmprobe.models import catalog_names, expected_experts_touched, load_catalog_model, resolve_model
from llmprobe.costs import Floors, RankCosts, decode_cost, decode_sum, prefill_cost, step_cost
from llmprobe.memory import memory_required
from llmprobe.bounds import Grid, bound, sweep

H100 = resolve_gpu("h100-sxm").ceilings()
REAL_MODELS = [n for n in catalog_names() if not n.startswith(("tiny", "small"))]


def test_expected_experts_matches_monte_carlo():
    rng = random.Random(0)
    for E, k, n in [(8, 2, 1), (8, 2, 3), (8, 2, 8), (60, 4, 5), (64, 8, 16)]:
        trials = 20000
        hits = 0
        for _ in range(trials):
            touched = set()
            for _ in range(n):
                touched.update(rng.sample(range(E), k))
            hits += len(touched)
        assert hits / trials == pytest.approx(expected_experts_touched(E, k, n), rel=0.01)


def test_llama2_70b_on_one_h100_golden():
    m = resolve_model("llama-2-70b")
    s = bound(m, H100, 1, 256, 256, advise=True)
    assert not s.fits_in_memory and "--tp 2" in s.fit_advice
    # 68,976,648,192 parameters (the checkpoint's own count); every weight but the embedding, bf16
    assert RankCosts.of(m).dense_streamed_bytes == (68_976_648_192 - 32000 * 8192) * 2
    # KV at 256-512 tokens adds ~0.1%: the ceiling stays about 24 tok/s
    assert s.tps_ceiling == pytest.approx(24.35, abs=0.05)
    assert s.decode_bound == "memory"


def test_hand_computed_step():
    """tiny-llama decode step, batch 2, context 9, every term written out."""
    m = resolve_model("tiny-llama")  # H=256, L=2, heads 4/2, hd 64, I=512, V=1024
    c = Ceilings(name="toy", hbm_bytes_per_s=1e9, peak_flops={"bf16": 1e12}, memory_bytes=1e12)
    step = decode_cost(Floors.of(m, c), batch=2, context=9)
    attn = 256 * 256 * 2 + 256 * 128 * 2
    mlp = 3 * 256 * 512
    assert step.weight_bytes == 2 * (2 * (attn + mlp) + (2 * 2 * 256 + 256) + 1024 * 256)
    kv_entry = 2 * 2 * 64 * 2 * 2  # K,V x kv_heads x head_dim x bytes x layers
    assert step.kv_read_bytes == 2 * 10 * kv_entry and step.kv_write_bytes == 2 * kv_entry
    assert step.linear_flops == 2 * 2 * (2 * (attn + mlp)) + 2 * 2 * 1024 * 256
    assert step.attention_flops == 2 * 10 * 4 * 4 * 64 * 2
    assert step.floor_s == pytest.approx(max(step.bytes / 1e9, step.flops / 1e12))
    parts = step.parts_s(1e9, 1e12)
    assert sum(parts.values()) == pytest.approx(step.floor_s)


@pytest.mark.parametrize("name", ["llama-2-7b", "mixtral-8x7b", "mistral-7b"])
@pytest.mark.parametrize("batch,prompt,gen", [(1, 256, 256), (8, 4000, 300), (256, 100, 50), (4096, 512, 64)])
def test_closed_form_decode_equals_step_sum(name, batch, prompt, gen):
    f = Floors.of(resolve_model(name), H100, tp=2)
    brute = sum(decode_cost(f, batch, prompt + j - 1).floor_s for j in range(1, gen))
    assert decode_sum(f, batch, prompt, gen)[0] == pytest.approx(brute, rel=1e-9)
    pre = step_cost(f, [(prompt, 0)] * batch)
    assert pre.floor_s == pytest.approx(prefill_cost(f, batch, prompt).floor_s, rel=1e-12)


def test_moe_bounds_bracket():
    m = resolve_model("mixtral")
    s = bound(m, H100, 8, 256, 256)
    assert s.tps_ceiling < s.tps_ceiling_optimistic
    # batch 1: uniform expectation is exactly k experts, the two bounds coincide in decode
    c = RankCosts.of(m)
    assert c.moe_bytes(1) == pytest.approx(c.moe_bytes(1, optimistic=True))


def test_tp_validation_and_allreduce():
    m = resolve_model("llama-2-70b")
    with pytest.raises(UserError, match="does not divide"):
        RankCosts.of(m, tp=3)
    one, two = decode_cost(Floors.of(m, H100, tp=1), 8, 300), decode_cost(Floors.of(m, H100, tp=2), 8, 300)
    assert two.weight_bytes == pytest.approx(one.weight_bytes / 2, rel=0.001)
    # 2L+1 all-reduces of 8 tokens x 8192 x 2 B and one all-gather of 8 x 32000 logits (2 B), ring factors,
    # each call 6 us (test_comm.py checks the count against vLLM's engine)
    ring = 2 * 161 * 8 * 8192 * 2 * (2 - 1) / 2 + 8 * 32000 * 2 * (2 - 1) / 2
    assert one.comm_s == 0 and two.comm_s == pytest.approx(162 * 6e-6 + ring / 450e9)


def test_sliding_window_caps_attention():
    m = resolve_model("mistral-7b")  # window 4096
    f = Floors.of(m, H100)
    assert decode_cost(f, 1, 10_000).kv_read_bytes == decode_cost(f, 1, 5_000).kv_read_bytes


def test_batch1_decode_is_memory_bound_everywhere():
    for g in gpu_catalog().values():
        for name in REAL_MODELS:
            for dtype in ("bf16", "fp8", "int4"):
                s = bound(load_catalog_model(name), g.ceilings(), 1, 256, 256, dtype=dtype)
                assert s.decode_bound == "memory", (g.id, name, dtype)


# ---- properties -----------------------------------------------------------------------------------

models_st = st.sampled_from(REAL_MODELS)
gpus_st = st.sampled_from(sorted(gpu_catalog()))
lens_st = st.integers(1, 4096)


@settings(max_examples=60, deadline=None)
@given(models_st, gpus_st, st.integers(1, 512), st.integers(1, 512), lens_st, st.integers(2, 1024))
def test_more_batch_more_throughput_and_latency(name, gpu, b1, b2, prompt, gen):
    b1, b2 = sorted((b1, b2))
    m, c = load_catalog_model(name), gpu_catalog()[gpu].ceilings()
    s1, s2 = bound(m, c, b1, prompt, gen), bound(m, c, b2, prompt, gen)
    assert s2.tps_ceiling >= s1.tps_ceiling * (1 - 1e-12)
    assert s2.total_latency_floor_s >= s1.total_latency_floor_s * (1 - 1e-12)
    assert s2.memory_required_bytes >= s1.memory_required_bytes


@settings(max_examples=60, deadline=None)
@given(models_st, gpus_st, st.integers(1, 64), lens_st, lens_st, st.integers(2, 512))
def test_longer_context_slower(name, gpu, batch, p1, p2, gen):
    p1, p2 = sorted((p1, p2))
    m, c = load_catalog_model(name), gpu_catalog()[gpu].ceilings()
    s1, s2 = bound(m, c, batch, p1, gen), bound(m, c, batch, p2, gen)
    assert s2.ttft_floor_s >= s1.ttft_floor_s and s2.tpot_floor_s >= s1.tpot_floor_s * (1 - 1e-12)
    assert bound(m, c, batch, p1, gen + 7).total_latency_floor_s > s1.total_latency_floor_s


@settings(max_examples=60, deadline=None)
@given(models_st, gpus_st, st.integers(1, 64), st.floats(1.01, 4.0))
def test_faster_memory_and_fewer_bytes_never_slower(name, gpu, batch, factor):
    base = gpu_catalog()[gpu].ceilings()
    m = load_catalog_model(name)
    faster = Ceilings(**{**base.to_dict(), "hbm_bytes_per_s": base.hbm_bytes_per_s * factor})
    s0 = bound(m, base, batch, 256, 64)
    assert bound(m, faster, batch, 256, 64).tps_ceiling >= s0.tps_ceiling
    widths = [bound(m, base, batch, 256, 64, dtype=d) for d in ("bf16", "fp8", "int4")]
    # Narrower weights never lose to bf16. (int4 runs W4A16 in bf16 while fp8 runs W8A8 in fp8, so
    # int4 may lose to fp8 where prefill is compute-bound: no order between those two.)
    assert widths[0].tps_ceiling <= widths[1].tps_ceiling * (1 + 1e-12)
    assert widths[0].tps_ceiling <= widths[2].tps_ceiling * (1 + 1e-12)
    assert widths[0].memory_required_bytes > widths[1].memory_required_bytes > widths[2].memory_required_bytes
    fp8_kv = bound(m, base, batch, 256, 64, kv_dtype="fp8")
    assert fp8_kv.tps_ceiling >= s0.tps_ceiling


@settings(max_examples=40, deadline=None)
@given(models_st, st.sampled_from([2, 4, 8]))
def test_tp_shrinks_per_gpu_memory(name, tp):
    m = load_catalog_model(name)
    try:
        c = RankCosts.of(m, tp=tp)
    except UserError:
        return
    assert memory_required(c, 8, 256, 256) < memory_required(RankCosts.of(m), 8, 256, 256)


def test_sweep_shapes_and_speed():
    import time
    grid = Grid(models=[resolve_model(n) for n in ("llama-2-70b", "mixtral", "llama-3-8b", "mistral-7b")],
                ceilings=[g.ceilings() for g in gpu_catalog().values()], batches=list(range(1, 33)),
                prompt_lens=[128, 512], gen_lens=[128, 512], tp_degrees=[1, 2, 4], dtypes=["bf16", "int4"])
    t0 = time.perf_counter()
    rows = sweep(grid)
    elapsed = time.perf_counter() - t0
    assert len(rows) == 4 * 11 * 32 * 2 * 2 * 3 * 2
    # 33,792 scenarios; the budget is 2 s per 100,000 (see experiments/bench_sweep.py)
    assert elapsed < 2.0 * len(rows) / 100_000 * 3
    assert all(math.isfinite(r.tps_ceiling) and r.tps_ceiling > 0 for r in rows)
