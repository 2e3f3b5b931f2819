"""Import what an offline LLM(...) run of a Llama and a Mixtral with dummy weights imports on a GPU.

    python3 experiments/vllm_closure.py        # prints "ok", or each module that failed and why

The engine core and its client, the executors, the GPU worker and both model runners, the two
model files, the attention backend Hopper uses (FlashAttention 3), the fused-MoE path, the sampler,
the dummy loader, torch.compile's backend and the CUDA platform with its compiled ops. Used to find
what experiments/vllm_bundle.sh must carry and, in its test, to check the bundle carries it.
Without a GPU the CUDA driver is absent: run it with LD_LIBRARY_PATH holding a stand-in
libcuda.so.1 (experiments/vllm_bundle.sh --check builds one), so that only a real gap fails.
"""
import importlib
import sys

MODULES = [
    "vllm", "vllm.entrypoints.llm", "vllm.v1.engine.llm_engine", "vllm.v1.engine.core", "vllm.v1.engine.core_client",
    "vllm.v1.executor.abstract", "vllm.v1.executor.uniproc_executor", "vllm.v1.executor.multiproc_executor",
    "vllm.v1.worker.gpu_worker", "vllm.v1.worker.gpu_model_runner", "vllm.v1.worker.gpu.model_runner",
    "vllm.model_executor.models.llama", "vllm.model_executor.models.mixtral",
    "vllm.v1.attention.backends.flash_attn", "vllm.vllm_flash_attn", "vllm.model_executor.layers.fused_moe",
    "vllm.model_executor.layers.fused_moe.fused_moe", "vllm.v1.sample.sampler", "vllm.model_executor.model_loader.dummy_loader",
    "vllm.compilation.backends", "vllm.v1.structured_output", "vllm._custom_ops", "vllm.platforms.cuda",
    "vllm.distributed.parallel_state", "vllm.v1.core.sched.scheduler",
]


def main() -> int:
    failed = []
    for m in MODULES:
        try:
            importlib.import_module(m)
        except Exception as e:  # every module is tried; each failure is reported with its reason
            failed.append((m, f"{type(e).__name__}: {e}"))
    for m, e in failed:
        print(f"FAIL {m}: {e}")
    print("ok" if not failed else f"{len(failed)} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
