import json

import pytest

from llmprobe.errors import UserError
from llmprobe.models import catalog_names, from_hf_config, load_catalog_model, resolve_model

# Published totals (model cards / transformers' num_parameters()).
GOLDEN_TOTAL = {
    "llama-2-7b": 6_738_415_616,
    "llama-2-13b": 13_015_864_320,
    "llama-2-70b": 68_976_648_192,
    "llama-3-8b": 8_030_261_248,
    "llama-3-70b": 70_553_706_496,
    "mistral-7b": 7_241_732_096,
    "mixtral-8x7b": 46_702_792_704,
    "mixtral-8x22b": 140_620_634_112,
    "qwen2-7b": 7_615_616_512,
}


@pytest.mark.parametrize("name,total", GOLDEN_TOTAL.items())
def test_published_totals(name, total):
    assert load_catalog_model(name).total_params == total


def test_mixtral_active_params_include_embedding_and_lm_head():
    m = resolve_model("mixtral")
    assert m.active_params_per_token == 12_879_925_248
    assert resolve_model("llama-2-70b").active_params_per_token == 68_976_648_192


def test_aliases_and_paths(write_config):
    assert resolve_model("mixtral").name == "mixtral-8x7b"
    assert resolve_model("LLAMA2-70B").name == "llama-2-70b"
    cfg = json.loads(json.dumps(load_catalog_model("llama-2-7b").config))
    path = write_config(cfg, "my-llama")
    assert resolve_model(path).total_params == GOLDEN_TOTAL["llama-2-7b"]
    assert resolve_model(path + "/config.json").name == "my-llama"


@pytest.mark.parametrize("bad,msg", [
    ({"model_type": "gpt2", "architectures": ["GPT2LMHeadModel"]}, "not modelled"),
    ({"model_type": "llama", "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
      "vocab_size": 10}, "intermediate_size"),
    ({"model_type": "llama", "hidden_size": -1, "num_hidden_layers": 2, "num_attention_heads": 4,
      "intermediate_size": 8, "vocab_size": 10}, "positive integer"),
])
def test_refuses_what_it_cannot_count(bad, msg):
    with pytest.raises(UserError, match=msg):
        from_hf_config(bad, "x")


def test_bad_files(tmp_path):
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(UserError, match="not valid JSON"):
        resolve_model(str(tmp_path))
    with pytest.raises(UserError, match="no such file"):
        resolve_model(str(tmp_path / "missing" / "config.json"))
    with pytest.raises(UserError, match="closest known: mixtral"):
        resolve_model("mixtrall")


def test_with_layers():
    m = resolve_model("llama-2-70b").with_layers(8)
    assert m.num_layers == 8 and m.layers_note == "8 of 80 layers"
    assert m.config["num_hidden_layers"] == 8
    with pytest.raises(UserError):
        resolve_model("tiny-llama").with_layers(3)


# ---- against transformers' own modules -----------------------------------------------------------

transformers = pytest.importorskip("transformers")
torch = pytest.importorskip("torch")

EXTRA_CONFIGS = {
    "qwen2-tied-bias": {"model_type": "qwen2", "hidden_size": 64, "num_hidden_layers": 3, "num_attention_heads": 4,
                        "num_key_value_heads": 2, "intermediate_size": 96, "vocab_size": 300,
                        "tie_word_embeddings": True},
    "qwen2-moe-mixed": {"model_type": "qwen2_moe", "hidden_size": 64, "num_hidden_layers": 4, "num_attention_heads": 4,
                        "num_key_value_heads": 2, "intermediate_size": 160, "moe_intermediate_size": 32,
                        "shared_expert_intermediate_size": 96, "num_experts": 6, "num_experts_per_tok": 2,
                        "decoder_sparse_step": 2, "mlp_only_layers": [3], "vocab_size": 300},
    "llama-biases-headdim": {"model_type": "llama", "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
                             "num_key_value_heads": 1, "head_dim": 32, "intermediate_size": 96, "vocab_size": 300,
                             "attention_bias": True, "mlp_bias": True},
    "mistral-window": {"model_type": "mistral", "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
                       "num_key_value_heads": 2, "intermediate_size": 96, "vocab_size": 300, "sliding_window": 16},
}


def _transformers_count(cfg: dict) -> int:
    config = transformers.AutoConfig.for_model(**cfg)
    with torch.device("meta"):
        model = transformers.AutoModelForCausalLM.from_config(config)
    seen, n = set(), 0
    for p in model.parameters():  # tied weights are one tensor: count once
        if id(p) not in seen:
            seen.add(id(p))
            n += p.numel()
    return n


@pytest.mark.parametrize("name", [n for n in catalog_names() if not n.startswith("llama-3-70") and "8x22" not in n]
                         + list(EXTRA_CONFIGS))
def test_counts_equal_transformers(name, write_config):
    cfg = EXTRA_CONFIGS.get(name) or load_catalog_model(name).config
    path = write_config(cfg, name)
    assert resolve_model(path).total_params == _transformers_count(cfg)


def test_gemm_shapes_are_the_linear_layers_a_step_runs():
    from llmprobe.models import resolve_model
    # Llama-2-70B: 64 query heads and 8 KV heads of 128, hidden 8192, intermediate 28672, vocab 32000
    assert resolve_model("llama-2-70b").gemm_shapes(2048, tp=2) == [
        (2048, (64 + 16) * 128 // 2, 8192), (2048, 8192, 64 * 128 // 2), (2048, 2 * 28672 // 2, 8192),
        (2048, 8192, 28672 // 2), (2048, 32000 // 2, 8192)]
    # Mixtral: each expert's GEMMs see top-2 of 8 experts' share of the tokens
    assert resolve_model("mixtral").gemm_shapes(2048)[2] == (2048 * 2 // 8, 2 * 14336, 4096)
