"""MoE routing: experts counted per step and layer inside the engine, and routers set like a trained model's."""

import json

import pytest

from llmprobe.costs import Floors, class_costs, step_cost
from llmprobe.hardware import resolve_gpu
from llmprobe.models import expected_experts_touched, resolve_model
from llmprobe.records import ExpertLoad, Step

torch = pytest.importorskip("torch")

from llmprobe.engines.routing import (ExpertCounter, merge_rank_experts, moe_blocks,  # noqa: E402
                                      set_routing, trained_like_router)


class _Gate(torch.nn.Linear):
    """Returns (logits, None) like vLLM's router linear layers."""

    def forward(self, x):
        return super().forward(x), None


class _Block(torch.nn.Module):
    def __init__(self, hidden, experts):
        super().__init__()
        self.gate = _Gate(hidden, experts, bias=False)
        self.experts = torch.nn.Identity()

    def forward(self, x):
        self.gate(x)
        return x


class _Toy(torch.nn.Module):
    def __init__(self, layers=3, hidden=16, experts=4):
        super().__init__()
        self.layers = torch.nn.ModuleList(_Block(hidden, experts) for _ in range(layers))

    def forward(self, x):
        for layer in self.layers:
            x = layer(x)
        return x


def test_counter_counts_each_steps_experts_per_layer():
    model = _Toy()
    with torch.no_grad():
        for i, block in enumerate(model.layers):   # layer i routes every token to experts i and i+1 (of 4)
            w = torch.zeros(4, 16)
            w[i, 0] = w[(i + 1) % 4, 0] = 1.0
            block.gate.weight.copy_(w)
    counter = ExpertCounter(model, num_experts=4, top_k=2, num_layers=3)
    x = torch.ones(5, 16)
    model(x)
    counter.snapshot()
    model(x[:2])
    counter.snapshot()
    steps = counter.drain()
    assert steps == [{"distinct": [2, 2, 2], "max_load": [5, 5, 5], "routed_tokens": 5},
                     {"distinct": [2, 2, 2], "max_load": [2, 2, 2], "routed_tokens": 2}]
    assert counter.drain() == []
    model(x)
    counter.reset()   # forwards outside a step are no step's
    model(x[:1])
    counter.snapshot()
    assert counter.drain()[0]["routed_tokens"] == 1
    counter.set_tokens(3)   # CUDA-graph padding: rows past the step's real tokens are not counted
    model(x)
    counter.snapshot()
    assert counter.drain()[0] == {"distinct": [2, 2, 2], "max_load": [3, 3, 3], "routed_tokens": 3}
    counter.remove()
    model(x)
    counter.snapshot()
    assert counter.drain()[0]["distinct"] == [0, 0, 0]


def test_counter_distinct_experts_of_random_tokens():
    """Distinct experts touched by random tokens under orthonormal routers: near E(1 - ((E-k)/E)^n)."""
    model = _Toy(layers=2, hidden=64, experts=8)
    set_routing(model, "trained-like", seed=0)
    counter = ExpertCounter(model, num_experts=8, top_k=2, num_layers=2)
    g = torch.Generator().manual_seed(0)
    for _ in range(400):
        model(torch.randn(8, 64, generator=g))
        counter.snapshot()
    d = [x for s in counter.drain() for x in s["distinct"]]
    assert sum(d) / len(d) == pytest.approx(expected_experts_touched(8, 2, 8), rel=0.03)


def test_trained_like_routers_are_orthonormal_seeded_and_per_layer():
    w = trained_like_router(8, 64, layer=3, seed=5, row_norm=2.0).double()
    assert torch.allclose(w @ w.T, 4.0 * torch.eye(8, dtype=torch.float64), atol=1e-5)
    assert torch.equal(w, trained_like_router(8, 64, layer=3, seed=5, row_norm=2.0).double())
    assert not torch.allclose(w, trained_like_router(8, 64, layer=4, seed=5, row_norm=2.0).double())
    model = _Toy()
    before = [b.gate.weight.detach().clone() for b in model.layers]
    assert set_routing(model, "as-loaded", seed=0) == 0
    assert all(torch.equal(a, b.gate.weight) for a, b in zip(before, model.layers))
    assert set_routing(model, "trained-like", seed=0) == 3
    for a, b in zip(before, model.layers):   # the loader's scale is kept
        assert float(b.gate.weight.detach().norm(dim=1).mean()) == pytest.approx(float(a.norm(dim=1).mean()), rel=1e-3)


def test_set_routing_refuses_a_quantized_router():
    model = _Toy()
    model.layers[0].gate.weight = torch.nn.Parameter(torch.zeros(4, 16, dtype=torch.int8), requires_grad=False)
    with pytest.raises(ValueError, match="router"):
        set_routing(model, "trained-like", seed=0)


def test_moe_blocks_reads_layer_indices():
    assert [layer for layer, _ in moe_blocks(_Toy(layers=3))] == [0, 1, 2]


def test_ranks_merge_by_maximum():
    tp = {"distinct": [3, 2], "max_load": [4, 5], "routed_tokens": 8}
    assert merge_rank_experts([tp, dict(tp)]) == tp
    first = {"distinct": [3, 0], "max_load": [4, 0], "routed_tokens": 8}   # pipeline stages: disjoint layers
    second = {"distinct": [0, 2], "max_load": [0, 5], "routed_tokens": 8}
    assert merge_rank_experts([first, second]) == tp
    assert merge_rank_experts([None, None]) is None


def test_step_round_trips_its_expert_load():
    d = {"index": 0, "t_start_s": 0.0, "t_end_s": 1.0, "host_ms": 1.0, "device_ms": None, "seqs": [["r", 1, 5, "d"]],
         "experts": {"distinct": [3, 2], "max_load": [2, 3], "routed_tokens": 4}}
    st = Step.from_dict(json.loads(json.dumps(d)), "step")
    assert st.experts == ExpertLoad([3, 2], [2, 3], 4) and st.experts.touched() == 5
    assert Step.from_dict(st.to_dict(), "step") == st
    assert "experts" not in Step.from_dict({**d, "experts": None}, "step").to_dict()


def test_measured_coverage_prices_the_expert_bytes():
    """A decode step of 8 tokens that touched 5 experts per layer reads 5 experts' weights per layer; the
    default floor reads the expected 7.2, the optimistic one top-k = 2 (hand values)."""
    spec = resolve_model("mixtral")
    f = Floors.of(spec, resolve_gpu("h100-sxm").ceilings())
    seqs = [(1, 100)] * 8
    dense = step_cost(f, seqs, optimistic=True).weight_bytes - 32 * 2 * f.costs.expert_bytes
    assert step_cost(f, seqs, experts_touched=32 * 5).weight_bytes == pytest.approx(dense + 32 * 5 * f.costs.expert_bytes)
    assert step_cost(f, seqs).weight_bytes == pytest.approx(dense + 32 * expected_experts_touched(8, 2, 8)
                                                            * f.costs.expert_bytes)
    assert class_costs(f, seqs, experts_touched=32 * 5)["moe_experts"].bytes == pytest.approx(32 * 5 * f.costs.expert_bytes)


def _decode_layers(rec, scenario):
    return [st.experts for run in rec.scenarios[scenario].runs for st in run.steps if st.phase == "decode"]


@pytest.mark.vllm
@pytest.mark.slow
def test_vllm_trained_like_routing_reaches_the_expected_coverage(tmp_path):
    """The real engine, compiled as users run it (the counters are traced into vLLM's graph): at batch 1, 8 and 32
    the decode steps touch the experts uniform routing predicts, within 10%, and none runs under the floor priced
    on the experts it touched. Sampled at temperature 1, so that each step's tokens are fresh draws (greedy
    decoding of random weights repeats a short cycle of tokens, and with it a handful of routings)."""
    pytest.importorskip("vllm")
    from llmprobe.explain import explain_record
    from llmprobe.profiling import Scenario, profile
    rec = profile("tiny-mixtral", [Scenario(1, 32, 24), Scenario(8, 32, 24), Scenario(32, 32, 24)], backend="vllm",
                  runs=1, warmup=0, out=str(tmp_path / "r.json"), engine_options={"temperature": 1.0})
    assert rec.config["routing"] == "trained-like" and rec.engine["execution"]["compilation_level"] != "NONE"
    for sc in rec.scenarios:
        for st in sc.runs[0].steps:
            assert st.experts.routed_tokens == st.tokens
            assert len(st.experts.distinct) == 2
    ex = explain_record(rec).to_dict()
    for s, batch in zip(ex["scenarios"], (1, 8, 32)):
        cov = s["experts"]["decode"]
        assert cov["expected"] == pytest.approx(expected_experts_touched(8, 2, batch))
        assert cov["measured"] == pytest.approx(cov["expected"], rel=0.10), (batch, cov)
        assert s["explained"] and not any(f["kind"] in ("faster_than_floor", "low_expert_coverage") for f in s["flags"])
    layers_differ = [e.distinct[0] != e.distinct[1] or e.max_load[0] != e.max_load[1]
                     for e in _decode_layers(rec, 1)]
    assert any(layers_differ)   # each layer has its own router


@pytest.mark.vllm
@pytest.mark.slow
def test_vllm_as_loaded_routers_route_every_layer_alike():
    """vLLM's dummy loader seeds every tensor alike: all routers hold the same values and, with 1e-3 weights, every
    layer sees nearly the embedding, so every layer routes the same way. The run records it; nothing is set."""
    pytest.importorskip("vllm")
    from llmprobe.profiling import Scenario, profile
    rec = profile("tiny-mixtral", [Scenario(8, 32, 16)], backend="vllm", runs=1, warmup=0, measure_ceilings=False,
                  engine_options={"routing": "as-loaded", "temperature": 1.0, "enforce_eager": True})
    assert rec.config["routing"] == "as-loaded"
    loads = _decode_layers(rec, 0)
    assert loads and all(e.distinct[0] == e.distinct[1] and e.max_load[0] == e.max_load[1] for e in loads)


@pytest.mark.slow
def test_hf_counts_and_sets_routing():
    pytest.importorskip("transformers")
    from llmprobe.profiling import Scenario, profile
    rec = profile("tiny-mixtral", [Scenario(8, 16, 6)], backend="hf", runs=1, warmup=0, measure_ceilings=False)
    assert rec.config["routing"] == "trained-like"
    for st in rec.scenarios[0].runs[0].steps:
        assert st.experts.routed_tokens == st.tokens


@pytest.mark.parametrize("opts,needle", [({"routing": "trained-like", "weights": "real"}, "never touched"),
                                         ({"routing": "sideways"}, "unknown routing")])
def test_routing_bad_input(opts, needle):
    from llmprobe.engines import EngineOptions, check_options
    from llmprobe.errors import UserError
    with pytest.raises(UserError, match=needle):
        check_options("vllm", EngineOptions(model=resolve_model("tiny-mixtral"), **opts))
    with pytest.raises(UserError, match="no experts"):
        check_options("vllm", EngineOptions(model=resolve_model("tiny-llama"), routing="trained-like"))

