"""The peer's numbers for the cross-check: llm-analysis 0.2.2's TP communication per decode step.

Run in an environment that has the peer (it is not a dependency of llmprobe):

    python -m venv /tmp/la && /tmp/la/bin/pip install llm-analysis==0.2.2
    /tmp/la/bin/python experiments/peer_llm_analysis.py > tests/data/peer_llm_analysis.json

Model shapes are given by hand (the peer would fetch them from the Hugging Face hub); its GPU
configs are its own. tests/test_comm.py compares llmprobe, with the peer's assumptions switched on,
against this file; docs/model.md lists where the two models differ and why.
"""

import json
import logging

from llm_analysis.analysis import LLMAnalysis
from llm_analysis.config import ModelConfig, ParallelismConfig, get_dtype_config_by_name, get_gpu_config_by_name

logging.disable(logging.CRITICAL)
SHAPES = {  # the checkpoints' config.json values (llmprobe/data/models)
    "llama-2-7b": dict(num_layers=32, n_head=32, hidden_dim=4096, vocab_size=32000, num_key_value_heads=32,
                       ffn_embed_dim=11008, expansion_ratio=11008 / 4096),
    "llama-2-70b": dict(num_layers=80, n_head=64, hidden_dim=8192, vocab_size=32000, num_key_value_heads=8,
                        ffn_embed_dim=28672, expansion_ratio=3.5),
    "mixtral-8x7b": dict(num_layers=32, n_head=32, hidden_dim=4096, vocab_size=32000, num_key_value_heads=8,
                         ffn_embed_dim=14336, expansion_ratio=3.5, moe_num_experts=8, moe_top_k=2),
}
SCENARIOS = [(m, g, tp, b) for m in SHAPES for g in ("a100-sxm-80gb", "h100-sxm-80gb") for tp in (2, 4, 8)
             for b in (1, 8) if not (m == "llama-2-7b" and tp == 8 and g == "a100-sxm-80gb")]


def main() -> None:
    rows = []
    for model, gpu, tp, batch in SCENARIOS:
        gc = get_gpu_config_by_name(gpu)
        a = LLMAnalysis(ModelConfig(name=model, model_type="llama", **SHAPES[model]), gc,
                        get_dtype_config_by_name("w16a16e16"), ParallelismConfig(tp_size=tp),
                        hbm_memory_efficiency=1.0, flops_efficiency=1.0)
        s = a.inference(batch_size_per_gpu=batch, seq_len=256, num_tokens_to_generate=256, kv_cache_dtype_bytes=2)
        one = a.get_latency_fwd_per_layer_tp_comm(batch, 1, 2)   # the embedding's all-reduce, one decode token
        rows.append({"model": model, "gpu": gpu, "tp": tp, "batch": batch,
                     "latency_s": gc.intra_node_min_message_latency,
                     "bus_bytes_per_s": gc.intra_node_bandwidth_in_GB_per_sec * 1e9,
                     "decode_tp_comm_s": s["decode_latency_fwd_tp_comm"] + one,
                     "decode_latency_s": s["decode_latency"]})
    print(json.dumps({"peer": "llm-analysis 0.2.2", "prompt_len": 256, "gen_len": 256, "dtype": "w16a16e16",
                      "scenarios": rows}, indent=1))


if __name__ == "__main__":
    main()
