"""Model specs: the architecture facts the cost model needs, and exact parameter counts.

A spec comes from a Hugging Face ``config.json`` (the catalog stores the published ones). Counts
follow the modules transformers builds for the same config, weight and bias by weight and bias:

  embedding        V*H                      (gathered per token, never streamed)
  attention/layer  H*q + 2*H*kv + q*H       q = heads*head_dim, kv = kv_heads*head_dim (+ biases)
  dense MLP/layer  3*H*I                    gate, up, down (+ biases)
  MoE/layer        E*3*H*I_e + H*E          experts + router (+ shared expert 3*H*I_s + H)
  norms            2*H per layer + H final
  lm_head          V*H unless tied to the embedding
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from functools import cached_property
from importlib import resources
from pathlib import Path
from typing import Any

from .errors import UserError, unknown_name

# model_type -> the architecture class name vLLM and transformers register for it.
SUPPORTED_ARCHITECTURES = {
    "llama": "LlamaForCausalLM",
    "mistral": "MistralForCausalLM",
    "mixtral": "MixtralForCausalLM",
    "qwen2": "Qwen2ForCausalLM",
    "qwen2_moe": "Qwen2MoeForCausalLM",
}
_ARCH_TO_TYPE = {v: k for k, v in SUPPORTED_ARCHITECTURES.items()}
_REQUIRED = ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "vocab_size")


@dataclass(frozen=True)
class ModelSpec:
    name: str
    model_type: str
    hidden_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    intermediate_size: int
    vocab_size: int
    tie_word_embeddings: bool = False
    qkv_bias: bool = False
    o_bias: bool = False
    mlp_bias: bool = False
    # Mixture of experts (num_experts == 0: dense)
    num_experts: int = 0
    experts_per_token: int = 0
    moe_intermediate_size: int = 0
    shared_expert_intermediate_size: int = 0
    moe_layer_ids: tuple[int, ...] = ()
    sliding_window: int | None = None
    max_position_embeddings: int = 4096
    source: str = ""
    full_num_layers: int | None = None  # set when layers were cut with with_layers()
    config: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    # ---- derived shapes -------------------------------------------------------------------
    @property
    def is_moe(self) -> bool:
        return self.num_experts > 0 and bool(self.moe_layer_ids)

    @property
    def architecture(self) -> str:
        return SUPPORTED_ARCHITECTURES[self.model_type]

    @property
    def num_moe_layers(self) -> int:
        return len(self.moe_layer_ids)

    @property
    def num_dense_layers(self) -> int:
        return self.num_layers - self.num_moe_layers

    @property
    def q_dim(self) -> int:
        return self.num_heads * self.head_dim

    @property
    def kv_dim(self) -> int:
        return self.num_kv_heads * self.head_dim

    # ---- parameter counts per module ------------------------------------------------------
    @property
    def embedding_params(self) -> int:
        return self.vocab_size * self.hidden_size

    @property
    def lm_head_params(self) -> int:
        """Parameters the lm_head owns (0 when tied: it reuses the embedding)."""
        return 0 if self.tie_word_embeddings else self.vocab_size * self.hidden_size

    @property
    def attention_params_per_layer(self) -> int:
        h, q, kv = self.hidden_size, self.q_dim, self.kv_dim
        n = h * q + 2 * h * kv + q * h
        if self.qkv_bias:
            n += q + 2 * kv
        if self.o_bias:
            n += h
        return n

    @property
    def dense_mlp_params(self) -> int:
        h, i = self.hidden_size, self.intermediate_size
        return 3 * h * i + ((2 * i + h) if self.mlp_bias else 0)

    @property
    def expert_params(self) -> int:
        return 3 * self.hidden_size * self.moe_intermediate_size

    @property
    def router_params(self) -> int:
        return self.hidden_size * self.num_experts

    @property
    def shared_expert_params(self) -> int:
        if not self.shared_expert_intermediate_size:
            return 0
        return 3 * self.hidden_size * self.shared_expert_intermediate_size + self.hidden_size

    @property
    def norm_params(self) -> int:
        return 2 * self.hidden_size * self.num_layers + self.hidden_size

    @cached_property
    def total_params(self) -> int:
        moe = self.num_moe_layers * (self.num_experts * self.expert_params + self.router_params
                                     + self.shared_expert_params)
        return (self.embedding_params + self.lm_head_params + self.norm_params
                + self.num_layers * self.attention_params_per_layer
                + self.num_dense_layers * self.dense_mlp_params + moe)

    @cached_property
    def active_params_per_token(self) -> int:
        """Non-expert parameters plus top-k experts per MoE layer (embedding and lm_head included)."""
        idle = self.num_moe_layers * (self.num_experts - self.experts_per_token) * self.expert_params
        return self.total_params - idle

    def kv_bytes_per_token(self, kv_bytes: float) -> float:
        """KV-cache bytes one token occupies across all layers: 2 (K and V) * kv_heads * head_dim."""
        return 2 * self.kv_dim * kv_bytes * self.num_layers

    def gemm_shapes(self, tokens: int, tp: int = 1) -> list[tuple[int, int, int]]:
        """(m, n, k) of each distinct linear layer a step of ``tokens`` tokens runs on one of ``tp`` ranks: the fused
        QKV, O, the (dense or per-expert) gate+up and down projections and the LM head. What a ceilings sweep
        measures so that the model's own shapes are among the ones the ceiling is the best of."""
        h, d = self.hidden_size, self.head_dim
        inter = self.moe_intermediate_size if self.is_moe and self.moe_intermediate_size else self.intermediate_size
        rows = max(1, tokens * self.experts_per_token // self.num_experts) if self.is_moe else tokens  # per expert
        shapes = [(tokens, (self.num_heads + 2 * self.num_kv_heads) * d // tp, h), (tokens, h, self.num_heads * d // tp),
                  (rows, 2 * inter // tp, h), (rows, h, inter // tp), (tokens, self.vocab_size // tp, h)]
        return list(dict.fromkeys(shapes))

    def with_layers(self, n: int) -> ModelSpec:
        """The same model with its first ``n`` layers (vLLM's ``hf_overrides``)."""
        if n <= 0:
            raise UserError(f"--layers must be positive, got {n}")
        full = self.full_num_layers or self.num_layers
        if n > full:
            raise UserError(f"--layers {n} is more than the {full} layers {self.name} has")
        cfg = dict(self.config, num_hidden_layers=n)
        return replace(self, num_layers=n, moe_layer_ids=tuple(i for i in self.moe_layer_ids if i < n),
                       full_num_layers=full, config=cfg)

    @property
    def layers_note(self) -> str | None:
        if self.full_num_layers and self.full_num_layers != self.num_layers:
            return f"{self.num_layers} of {self.full_num_layers} layers"
        return None

    def summary(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "architecture": self.architecture,
            "total_params": self.total_params,
            "active_params_per_token": self.active_params_per_token,
            "num_layers": self.num_layers,
            "full_num_layers": self.full_num_layers or self.num_layers,
            "hidden_size": self.hidden_size,
            "num_heads": self.num_heads,
            "num_kv_heads": self.num_kv_heads,
            "head_dim": self.head_dim,
            "num_experts": self.num_experts,
            "experts_per_token": self.experts_per_token,
            "vocab_size": self.vocab_size,
            "source": self.source,
        }


def _get(cfg: dict[str, Any], key: str, where: str) -> Any:
    if key not in cfg or cfg[key] is None:
        raise UserError(f"{where}: config.json has no {key!r}")
    value = cfg[key]
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise UserError(f"{where}: {key!r} must be a positive integer, got {value!r}")
    return value


def from_hf_config(cfg: dict[str, Any], name: str, source: str = "") -> ModelSpec:
    """Build a spec from a Hugging Face config dict; refuse architectures it cannot count exactly."""
    if not isinstance(cfg, dict):
        raise UserError(f"{name}: config.json is not a JSON object")
    model_type = cfg.get("model_type")
    if model_type not in SUPPORTED_ARCHITECTURES:
        archs = cfg.get("architectures") or []
        model_type = next((_ARCH_TO_TYPE[a] for a in archs if a in _ARCH_TO_TYPE), model_type)
    if model_type not in SUPPORTED_ARCHITECTURES:
        what = model_type or (cfg.get("architectures") or ["<none>"])[0]
        raise UserError(f"{name}: architecture {what!r} is not modelled; supported: "
                        + ", ".join(SUPPORTED_ARCHITECTURES.values()))
    h, layers, heads, inter, vocab = (_get(cfg, k, name) for k in _REQUIRED)
    kv_heads = cfg.get("num_key_value_heads") or heads
    head_dim = cfg.get("head_dim") or h // heads
    if heads % kv_heads:
        raise UserError(f"{name}: num_attention_heads {heads} is not a multiple of num_key_value_heads {kv_heads}")
    spec = dict(
        name=name, model_type=model_type, hidden_size=h, num_layers=layers, num_heads=heads,
        num_kv_heads=kv_heads, head_dim=head_dim, intermediate_size=inter, vocab_size=vocab,
        tie_word_embeddings=bool(cfg.get("tie_word_embeddings", False)),
        max_position_embeddings=int(cfg.get("max_position_embeddings") or 4096), source=source,
        config=dict(cfg),
    )
    if model_type in ("llama",):
        spec.update(qkv_bias=bool(cfg.get("attention_bias", False)), o_bias=bool(cfg.get("attention_bias", False)),
                    mlp_bias=bool(cfg.get("mlp_bias", False)))
    if model_type in ("qwen2",):
        spec.update(qkv_bias=True)
    if model_type in ("qwen2_moe",):
        spec.update(qkv_bias=bool(cfg.get("qkv_bias", True)))
    if model_type in ("mistral", "mixtral"):
        spec.update(sliding_window=cfg.get("sliding_window"))
    if model_type in ("qwen2", "qwen2_moe") and cfg.get("use_sliding_window"):
        spec.update(sliding_window=cfg.get("sliding_window"))
    if model_type == "mixtral":
        spec.update(num_experts=cfg.get("num_local_experts", 8), experts_per_token=cfg.get("num_experts_per_tok", 2),
                    moe_intermediate_size=inter, moe_layer_ids=tuple(range(layers)))
    if model_type == "qwen2_moe":
        experts = cfg.get("num_experts", 60)
        step = cfg.get("decoder_sparse_step", 1) or 1
        dense_only = set(cfg.get("mlp_only_layers") or [])
        moe_ids = tuple(i for i in range(layers) if experts > 0 and i not in dense_only and (i + 1) % step == 0)
        spec.update(num_experts=experts, experts_per_token=cfg.get("num_experts_per_tok", 4),
                    moe_intermediate_size=cfg.get("moe_intermediate_size", 1408),
                    shared_expert_intermediate_size=cfg.get("shared_expert_intermediate_size", 5632),
                    moe_layer_ids=moe_ids)
    if spec.get("num_experts") and not 0 < spec["experts_per_token"] <= spec["num_experts"]:
        raise UserError(f"{name}: num_experts_per_tok must be between 1 and the number of experts")
    return ModelSpec(**spec)


# ---- catalog ------------------------------------------------------------------------------

ALIASES = {
    "mixtral": "mixtral-8x7b", "mixtral-8x7b-instruct": "mixtral-8x7b", "mixtral-8x22": "mixtral-8x22b",
    "llama2-70b": "llama-2-70b", "llama2-13b": "llama-2-13b", "llama2-7b": "llama-2-7b",
    "llama3-8b": "llama-3-8b", "llama3-70b": "llama-3-70b", "mistral": "mistral-7b",
    "llama-70b": "llama-2-70b", "qwen2-moe": "qwen1.5-moe-a2.7b",
}


def _catalog_dir():
    return resources.files("llmprobe.data.models")


def catalog_names() -> list[str]:
    return sorted(p.name[:-5] for p in _catalog_dir().iterdir() if p.name.endswith(".json"))


def load_catalog_model(name: str) -> ModelSpec:
    entry = json.loads((_catalog_dir() / f"{name}.json").read_text())
    return from_hf_config(entry["config"], name=name, source=entry["source"])


def _load_config_path(path: Path) -> ModelSpec:
    file = path / "config.json" if path.is_dir() else path
    if not file.is_file():
        raise UserError(f"{path}: no config.json there")
    try:
        cfg = json.loads(file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"{file}: not valid JSON ({e.msg if hasattr(e, 'msg') else e})") from None
    name = path.name if path.is_dir() else (file.parent.name or file.stem)
    return from_hf_config(cfg, name=name, source=str(file))


def resolve_model(name: str) -> ModelSpec:
    """A catalog name, an alias, or a path to a config.json (file or folder)."""
    key = name.strip().lower()
    key = ALIASES.get(key, key)
    if key in catalog_names():
        return load_catalog_model(key)
    path = Path(name).expanduser()
    if path.exists() or name.endswith(".json") or "/" in name:
        if not path.exists():
            raise UserError(f"{name}: no such file or folder")
        return _load_config_path(path)
    raise unknown_name("model", name, catalog_names() + list(ALIASES))


def expected_experts_touched(num_experts: int, top_k: int, tokens: float) -> float:
    """Distinct experts a step of ``tokens`` touches under uniform top-k routing.

    Each token picks k of E experts; a given expert is missed by one token with probability
    (E-k)/E, so E[touched] = E * (1 - ((E-k)/E)**n).
    """
    if num_experts == 0 or tokens <= 0:
        return 0.0
    return num_experts * (1.0 - ((num_experts - top_k) / num_experts) ** tokens)


__all__ = ["ModelSpec", "from_hf_config", "resolve_model", "catalog_names", "expected_experts_touched",
           "ALIASES", "SUPPORTED_ARCHITECTURES"]
