"""Issue #29's GPU sequence, the parts that hold without a GPU: the mamf-style grid, predictions scored against
a measurement by hand, --scenario, and the switch that runs traced steps without CUDA-graph replay."""

from types import SimpleNamespace

import pytest

from experiments.mamf_sweep import shapes
from experiments.score_predictions import score


def test_the_mamf_grid_has_hundreds_of_shapes_8192_cubed_among_them_and_a_seeded_order():
    g = shapes("bf16")
    assert len(g) == 16 * 4 * 4 * 2 and (8192, 8192, 8192, "nn") in g and g == shapes("bf16")
    assert len({(m, n, k) for m, n, k, _ in g[:40]}) == 40 and g[:4] != sorted(g)[:4]   # a spread, not a corner
    assert {lay for *_, lay in shapes("fp8")} == {"nt", "nt-fast"}


def _scenario(batch, tpot, tps, ttft):
    stat = lambda v: SimpleNamespace(median=v)   # noqa: E731
    return SimpleNamespace(batch=batch, prompt_len=256, gen_len=256,
                           summary={"tpot_s": stat(tpot), "tps": stat(tps), "ttft_s": stat(ttft)})


def _pred(batch, tpot, tps, ttft, width=1.2):
    return {"batch": batch, "prompt_len": 256, "gen_len": 256, "tpot_s": tpot, "tps": tps, "ttft_s": ttft,
            "interval": {k: [v / width, v * width] for k, v in (("tpot_s", tpot), ("tps", tps), ("ttft_s", ttft))},
            "predictable": {"tpot_s": True, "tps": True, "ttft_s": True}}


def test_predictions_scored_by_hand():
    record = SimpleNamespace(scenarios=[_scenario(2, 0.010, 200.0, 0.05), _scenario(4, 0.012, 330.0, 0.06)])
    # b2: TPOT +5%, TPS -5%; b4: TPOT +25% (outside x1.2), TPS -10%; b16 was not measured: not scored
    preds = [_pred(2, 0.0105, 190.0, 0.05), _pred(4, 0.015, 297.0, 0.06), _pred(16, 0.02, 800.0, 0.1)]
    rows, verdict = score(preds, record)
    assert len(rows) == 6
    assert abs(verdict["metrics"]["tpot_s"]["median_abs_error"] - 0.15) < 1e-9
    assert abs(verdict["metrics"]["tps"]["median_abs_error"] - 0.075) < 1e-9
    assert verdict["inside_fraction"] == 0.75 and verdict["pass"] is False     # TPOT's median error is over 10%
    _, ok = score(preds[:1], record)
    assert ok["pass"] is True and ok["inside_fraction"] == 1.0


def test_a_scenario_that_is_no_grid_and_bad_ones():
    import subprocess
    import sys
    from llmprobe.commands import parse_scenario
    assert (parse_scenario("8x1024x128").batch, parse_scenario("8x1024x128").prompt_len) == (8, 1024)
    r = subprocess.run([sys.executable, "-m", "llmprobe", "profile", "--model", "tiny-llama", "--scenario", "8x10"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "expected BATCHxPROMPTxGEN" in r.stderr and len(r.stderr.strip().splitlines()) == 1


@pytest.mark.vllm
def test_traced_steps_turn_cuda_graph_replay_off_through_the_runners_own_dispatch():
    """Model Runner V1's dispatcher (vLLM's own BatchDescriptor) and V2's manager: while the switch is off, a
    step the runner would replay from a graph runs without one (NONE, no request padding); otherwise untouched."""
    pytest.importorskip("vllm")
    import dataclasses
    from vllm.config import CUDAGraphMode
    from vllm.forward_context import BatchDescriptor
    from llmprobe.engines.vllm_hooks import _GraphSwitch

    @dataclasses.dataclass(frozen=True)
    class ExecutionDescriptor:   # V2's BatchExecutionDescriptor, as vLLM 0.26 defines it
        cg_mode: object
        num_tokens: int
        num_reqs: int | None
        uniform_token_count: int | None = None
        num_active_loras: int = 0

    full = BatchDescriptor(num_tokens=8, num_reqs=8, uniform=True)
    v1 = SimpleNamespace(dispatch=lambda *a, **k: (CUDAGraphMode.FULL, full))
    v2 = SimpleNamespace(dispatch=lambda *a, **k: ExecutionDescriptor(CUDAGraphMode.FULL, 8, 8, 1))
    switch = _GraphSwitch(SimpleNamespace(cudagraph_dispatcher=v1, cudagraph_manager=v2))
    assert switch.installed and v1.dispatch(8, True) == (CUDAGraphMode.FULL, full)
    switch.off = True
    mode, desc = v1.dispatch(8, True)
    assert mode == CUDAGraphMode.NONE and desc.num_tokens == 8 and desc.num_reqs is None and not desc.uniform
    d2 = v2.dispatch(8, 8, 1, 0)
    assert d2.cg_mode == CUDAGraphMode.NONE and (d2.num_tokens, d2.num_reqs, d2.uniform_token_count) == (8, None, None)
    switch.off = False
    assert v2.dispatch(8, 8, 1, 0).cg_mode == CUDAGraphMode.FULL
    assert not _GraphSwitch(SimpleNamespace()).installed      # a runner without graphs: nothing to switch
