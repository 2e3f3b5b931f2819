"""Mixture-of-Experts routing, measured and controlled inside the engine.

Measured: a forward hook on every MoE block's router (``gate``) takes the top-k of its logits and adds one
to each chosen expert's counter, per layer, on the device (``ExpertCounter``). The step hooks snapshot the
counters after each step without a sync; the snapshots are read back once per run. Per step and layer that
gives the number of distinct experts the step's tokens touched and the most tokens one expert got — what a
decode step's expert bytes depend on (docs/model.md, "Expert coverage").

Top-k of the logits is the routing of Mixtral and Qwen2-MoE (softmax then top-k: the same order);
models with grouped or biased routing are not in the catalog.

Controlled: random ("dummy") weights make every token pick the same experts (``set_trained_like``
explains why and what it sets instead). Real checkpoints are never touched.

With vLLM both happen inside the worker's loader (``patch_vllm_loader``): the router weights must be set
before vLLM repacks them, and the hooks must exist before the model is compiled (Dynamo traces them into
the graph, CUDA graphs capture their kernels; a hook added later never runs).
"""

from __future__ import annotations

import json
import re
from typing import Any

# set in the environment of an engine's workers: what their loader does to a MoE model (worker_settings)
ENV_MOE = "LLMPROBE_MOE"


def moe_blocks(model) -> list[tuple[int, Any]]:
    """(layer index, router module) of each MoE block: a module with a ``gate`` and ``experts`` beside it."""
    out = []
    for name, mod in model.named_modules():
        gate = getattr(mod, "gate", None)
        if gate is None or getattr(mod, "experts", None) is None:
            continue
        m = re.search(r"layers\.(\d+)\.", name + ".")
        if m:
            out.append((int(m.group(1)), gate))
    return sorted(out, key=lambda t: t[0])


class ExpertCounter:
    """Tokens routed to each expert, per layer, since the last snapshot; one snapshot per step.

    In vLLM the hooks are traced into the compiled model: they stay for the engine's life (``remove`` is for
    eager models), so a run with the step timers uninstalled still counts."""

    def __init__(self, model, num_experts: int, top_k: int, num_layers: int):
        import torch
        self.blocks = moe_blocks(model)
        if not self.blocks:
            raise ValueError("the model has no MoE block with a router")
        # the config's count: vLLM's CPU build may repack a router's weight into another layout after loading
        self.num_experts, self.top_k = int(num_experts), int(top_k)
        device = getattr(self.blocks[0][1], "weight", next(model.parameters())).device   # the routers' own device
        # layers not on this rank (pipeline parallel) stay zero; merge_ranks takes the max over ranks
        self.counts = torch.zeros(num_layers, self.num_experts, dtype=torch.int32, device=device)
        self._experts = torch.arange(self.num_experts, device=device)
        # the step's real tokens: a CUDA graph pads a batch to its captured size, and padded rows (stale inputs)
        # would route to real experts; they come last, so rows at or past this count are not counted
        self._real = torch.full((), torch.iinfo(torch.int64).max, dtype=torch.int64, device=device)
        self._snaps: list[Any] = []
        self._handles = [gate.register_forward_hook(self._hook(layer)) for layer, gate in self.blocks]

    def _hook(self, layer: int):
        import torch
        counts, experts, real, k = self.counts, self._experts, self._real, self.top_k

        def count(module, args, out):
            # T = tokens, E = experts; comparisons instead of bincount/one_hot: no host sync, graph-safe
            logits = out[0] if isinstance(out, tuple) else out                          # [T, E]
            chosen = logits.topk(k, dim=-1).indices                                     # [T, k]
            keep = torch.arange(logits.shape[0], device=logits.device) < real           # [T]
            hit = (chosen.unsqueeze(-1) == experts) & keep.view(-1, 1, 1)               # [T, k, E]
            counts[layer] += hit.sum((0, 1), dtype=counts.dtype)                        # [E]
        return count

    def set_tokens(self, n: int) -> None:
        """Before a step's forward (outside its timers): how many of the rows the router sees are real."""
        self._real.fill_(int(n))

    def snapshot(self) -> None:
        """End of a step: keep its counts (a device copy, no sync) and start the next step from zero."""
        self._snaps.append(self.counts.clone())
        self.counts.zero_()

    def reset(self) -> None:
        """Forget forwards outside measured steps (warm-up, graph capture)."""
        self._snaps = []
        self.counts.zero_()

    def drain(self) -> list[dict[str, Any]]:
        """Per snapshot: distinct experts and the largest load per layer, and the tokens routed (one read)."""
        import torch
        if not self._snaps:
            return []
        c = torch.stack(self._snaps).cpu()                                     # [steps, L, E]
        self._snaps = []
        distinct = (c > 0).sum(-1).tolist()
        load = c.max(-1).values.tolist()
        routed = (c.sum(-1).max(-1).values // self.top_k).tolist()   # layer-summed rows / k; padding shows here
        return [{"distinct": d, "max_load": m, "routed_tokens": r} for d, m, r in zip(distinct, load, routed)]

    def remove(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []


def merge_rank_experts(per_rank: list[dict[str, Any] | None]) -> dict[str, Any] | None:
    """One step's coverage from every rank's: tensor-parallel ranks route the same tokens (equal counts),
    pipeline stages hold disjoint layers (zeros elsewhere), so the element-wise max is exact for both."""
    got = [e for e in per_rank if e]
    if not got:
        return None
    return {"distinct": [max(v) for v in zip(*(e["distinct"] for e in got))],
            "max_load": [max(v) for v in zip(*(e["max_load"] for e in got))],
            "routed_tokens": max(e["routed_tokens"] for e in got)}


ROUTINGS = ("trained-like", "as-loaded")


def trained_like_router(num_experts: int, hidden: int, layer: int, seed: int, row_norm: float):
    """Router rows for one layer: an orthonormal random basis of E directions, each scaled to ``row_norm``.

    A trained Mixtral spreads a batch's tokens near-uniformly over its experts, at every layer and on
    every domain measured (Jiang et al. 2024, "Mixtral of Experts", arXiv:2401.04088, section 5 and
    figure 7). With orthonormal rows, hidden states that vary in random directions (random
    embeddings do) give logits that are independent and identically distributed across experts, so
    each token's top-k is a uniform draw of k distinct experts: the routing the analytic model's
    expected coverage assumes (docs/model.md). vLLM's dummy loader instead fills every router with the
    same uniform values (one seed for every tensor), so all layers route alike and some experts win
    more often; each layer here gets its own basis (seeded by ``seed`` and the layer).
    """
    import torch
    g = torch.Generator(device="cpu").manual_seed(int(seed) * 1_000_003 + int(layer))
    q, _ = torch.linalg.qr(torch.randn(hidden, num_experts, generator=g, dtype=torch.float64))   # [H, E]
    return (q.T * row_norm).float()                                                               # [E, H]


def set_routing(model, routing: str, seed: int) -> int:
    """Give every MoE router of ``model`` (random weights only) the ``routing``; the number of routers set."""
    import torch
    if routing == "as-loaded":
        return 0
    n = 0
    for layer, gate in moe_blocks(model):
        w = getattr(gate, "weight", None)
        if w is None or w.dim() != 2 or not w.dtype.is_floating_point or w.element_size() < 2:
            raise ValueError(f"layer {layer}'s router has no plain weight matrix to set ({getattr(w, 'dtype', None)})")
        with torch.no_grad():
            norm = float(w.float().norm(dim=1).mean()) or 1.0   # the loader's scale: activations stay as they were
            w.copy_(trained_like_router(w.shape[0], w.shape[1], layer, seed, norm).to(w.device, w.dtype))
        n += 1
    return n


def worker_settings(count: bool, routing: str, seed: int) -> str:
    """What a vLLM worker's loader should do to a MoE model, as the value of ``ENV_MOE``."""
    return json.dumps({"count": count, "routing": routing, "seed": seed})


def _at_load(model, model_config) -> None:
    """In a vLLM worker, after the weights are loaded and before vLLM processes them into kernel layouts (the
    CPU build repacks a router's weight) and compiles the model: set the routing, install the counters."""
    import os
    raw = os.environ.get(ENV_MOE)
    if not raw or not moe_blocks(model):
        return
    want = json.loads(raw)
    set_routing(model, want["routing"], want["seed"])
    hf = model_config.hf_text_config
    experts, top_k = model_config.get_num_experts(), getattr(hf, "num_experts_per_tok", 0)   # both on 0.26 and 0.32
    if want["count"] and experts and top_k:
        model._llmprobe_experts = ExpertCounter(model, experts, top_k, hf.num_hidden_layers)


def patch_vllm_loader() -> None:
    """Wrap the ``process_weights_after_loading`` that vLLM's ``BaseModelLoader.load_model`` calls (every
    loader, dummy and real, on vLLM 0.26 and 0.32) so that ``_at_load`` runs first."""
    from vllm.model_executor.model_loader import base_loader
    original = base_loader.process_weights_after_loading
    if getattr(original, "_llmprobe", False):
        return

    def process_weights_after_loading(model, model_config, *args, **kwargs):
        _at_load(model, model_config)
        return original(model, model_config, *args, **kwargs)
    process_weights_after_loading._llmprobe = True
    base_loader.process_weights_after_loading = process_weights_after_loading
