"""Tensor-parallel communication: vLLM's collective count, the alpha-beta cost, and the measured ceiling."""

import os

import pytest

from llmprobe.comm import collectives
from llmprobe.costs import Floors, decode_cost
from llmprobe.hardware import resolve_gpu
from llmprobe.models import resolve_model

H100 = resolve_gpu("h100-sxm").ceilings()


def _count_collectives(worker):
    """Run inside each vLLM worker: count every call into the tensor-parallel group's collectives."""
    from vllm.distributed import parallel_state as ps
    group = ps.get_tp_group()
    counts = {"all_reduce": 0, "all_gather": 0}
    for name in counts:
        original = getattr(group, name)

        def counted(*args, _original=original, _name=name, **kwargs):
            counts[_name] += 1
            return _original(*args, **kwargs)
        setattr(group, name, counted)
    worker._llmprobe_collectives = counts
    return True


def _read_counts(worker):
    return dict(worker._llmprobe_collectives)


@pytest.mark.vllm
@pytest.mark.slow
@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="one core per rank")
@pytest.mark.parametrize("model", ["tiny-llama", "tiny-mixtral"])
def test_collective_count_is_what_vllm_issues(model, monkeypatch):
    """The real engine at TP 2, eager (a Python wrapper sees every call): per step, 2L + 1 all-reduces
    and one all-gather of the logits, on every rank, for a dense and a MoE model."""
    pytest.importorskip("vllm")
    from llmprobe.engines import EngineOptions
    from llmprobe.engines.vllm_engine import VllmEngine
    monkeypatch.setenv("VLLM_CPU_OMP_THREADS_BIND", "0|1")
    monkeypatch.setenv("VLLM_ALLOW_INSECURE_SERIALIZATION", "1")   # to send the counting function to the workers
    spec = resolve_model(model)
    eng = VllmEngine(EngineOptions(model=spec, tp=2, enforce_eager=True, max_model_len=64))
    try:
        eng.llm.collective_rpc(_count_collectives)
        run = eng.run([[11 + j for j in range(12)], [40 + j for j in range(12)]], 4)
        counts = eng.llm.collective_rpc(_read_counts)
    finally:
        eng.close()
    steps = len(run.steps)
    expect = collectives(spec, tp=2)
    assert expect.allreduces == 2 * spec.num_layers + 1 and expect.allgathers == 1
    for rank in counts:
        assert rank == {"all_reduce": steps * expect.allreduces, "all_gather": steps * expect.allgathers}, (steps, counts)


def test_no_collectives_without_tensor_parallelism():
    f = Floors.of(resolve_model("llama-2-7b"), H100, tp=1)
    assert collectives(f.model, 1).allreduces == 0 and decode_cost(f, 8, 300).comm_s == 0.0


def test_alpha_beta_hand_check_llama2_70b_tp2_h100():
    """docs/model.md's example, term by term: 161 all-reduces + 1 all-gather at 6 us, plus the bytes."""
    m = resolve_model("llama-2-70b")
    step = decode_cost(Floors.of(m, H100, tp=2), batch=1, context=256)
    latency = (2 * 80 + 1 + 1) * 6e-6
    allreduce_bytes = (2 * 80 + 1) * 8192 * 2 * 2 * (2 - 1) / 2     # ring: 2(t-1)/t of 16 KiB each
    allgather_bytes = 32000 * 2 * (2 - 1) / 2
    assert step.comm_s == pytest.approx(latency + (allreduce_bytes + allgather_bytes) / 450e9, rel=1e-12)
    assert step.comm_s == pytest.approx(0.97793e-3, rel=1e-4)


def test_latency_dominates_small_models_at_high_tp():
    """Llama-2-7B at TP 8, batch 1: the collectives' latency is about as long as streaming the weights."""
    f = Floors.of(resolve_model("llama-2-7b"), H100, tp=8)
    step = decode_cost(f, 1, 256)
    assert step.comm_s > 0.6 * step.memory_s


def test_alpha_beta_fit_recovers_a_known_line():
    from llmprobe.microbench.collective import fit_alpha_beta
    alpha, bus = 7e-6, 300e9
    pts = [(x, alpha + x / bus) for x in (8.0, 1e3, 1e5, 1e7, 1e9)]
    a, b = fit_alpha_beta(pts)
    assert a == pytest.approx(alpha, rel=1e-9) and b == pytest.approx(bus, rel=1e-9)


def test_allreduce_microbenchmark_on_two_gloo_processes():
    """The code `llmprobe roofline` runs on 2+ GPUs (NCCL), here on 2 CPU processes (gloo): results checked,
    slowest rank's time per size, bus bandwidth by nccl-tests' factor, alpha and B fitted."""
    pytest.importorskip("torch")
    from llmprobe.microbench.collective import collective_methods
    from llmprobe.microbench.result import Measurement, MethodResult
    methods = collective_methods(2, "gloo", "quick")
    by_op = {m.best_params.get("op"): m for m in methods}
    ar, ag = by_op["all_reduce"], by_op["all_gather"]
    assert ar.valid and ag.valid, (ar.error, ag.error)
    assert ar.best_params["ranks"] == 2 and ar.best_params["latency_s"] > 0 and ar.value > 0
    for r in ar.sweep:
        assert r["busbw"] == pytest.approx(r["algbw"] * 2 * (2 - 1) / 2) and r["calls"] >= 3
    sizes = [r["bytes"] for r in ar.sweep]
    assert sizes == sorted(sizes) and sizes[0] <= 8 and sizes[-1] >= 1 << 20
    # the measured interconnect is what the ceilings carry, and it is no longer "not measured"
    m = Measurement(device="cpu", fingerprint={"name": "cpu", "memory_bytes": 1e10}, mode="quick", methodology="x",
                    provenance={}, methods=[MethodResult("torch.copy_", "bandwidth", "fp32", 1e10, True)] + methods)
    c = m.ceilings()
    assert c.interconnect_bytes_per_s == ar.value and c.collective_latency_s == ar.best_params["latency_s"]
    assert "interconnect_bytes_per_s" not in c.not_measured


PEER = __import__("json").loads((__import__("pathlib").Path(__file__).parent / "data" / "peer_llm_analysis.json").read_text())


@pytest.mark.parametrize("sc", PEER["scenarios"], ids=lambda s: f"{s['model']}-{s['gpu']}-tp{s['tp']}-b{s['batch']}")
def test_communication_agrees_with_llm_analysis_under_its_assumptions(sc):
    """llm-analysis 0.2.2 (tests/data, from experiments/peer_llm_analysis.py) prices a decode step's TP
    communication as 2L+1 all-reduces, each max(its latency, its ring transfer), no logits gather.
    Switched to those two assumptions, llmprobe's count and bytes give the peer's figure within 1%;
    with its own (latency + transfer, plus the logits all-gather vLLM issues) it is never below it."""
    from llmprobe.comm import Collectives, Interconnect, step_comm_s
    from llmprobe.costs import RankCosts
    c = RankCosts.of(resolve_model(sc["model"]), tp=sc["tp"])
    n, tokens = c.collectives, sc["batch"]
    peer_link = Interconnect(sc["latency_s"], sc["bus_bytes_per_s"], latency_hides_transfer=True)
    as_peer = step_comm_s(Collectives(n.allreduces, 0, 0), peer_link, c.tp, c.allreduce_bytes_per_token * tokens, 0)
    assert as_peer == pytest.approx(sc["decode_tp_comm_s"], rel=0.01)
    ours = step_comm_s(n, Interconnect(sc["latency_s"], sc["bus_bytes_per_s"]), c.tp,
                       c.allreduce_bytes_per_token * tokens, c.allgather_bytes_per_row * tokens)
    assert ours >= sc["decode_tp_comm_s"]
