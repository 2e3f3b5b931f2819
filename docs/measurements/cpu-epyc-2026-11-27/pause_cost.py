import statistics, time
from llmprobe.engines import EngineOptions
from llmprobe.engines.vllm_engine import VllmEngine
from llmprobe.models import resolve_model
if __name__ == "__main__":
    eng = VllmEngine(EngineOptions(model=resolve_model("tiny-llama"), enforce_eager=True, max_model_len=64))
    try:
        client = eng.llm.llm_engine.engine_core
        ts = []
        for _ in range(50):
            t0 = time.perf_counter()
            client.call_utility("pause_scheduler", "keep", False)
            t1 = time.perf_counter()
            client.call_utility("resume_scheduler")
            ts.append((t1 - t0, time.perf_counter() - t1))
        print("pause round trip ms median", statistics.median(a for a, _ in ts) * 1e3,
              "resume round trip ms median", statistics.median(b for _, b in ts) * 1e3)
        prompts = [[11 + i + j for j in range(16)] for i in range(8)]
        for method in ("none (forced)", "paused scheduler"):
            eng.admission_method = method
            res = []
            for _ in range(6):
                run = eng.run(prompts, 8)
                res.append((run["requests"][0]["ttft_s"], sum(r["ttft_s"] for r in run["requests"]) / 8, run["wall_s"],
                            [(s["num_reqs"], s["prefill_reqs"]) for s in run["steps"][:2]]))
            print(method, "median mean-TTFT ms", statistics.median(r[1] for r in res) * 1e3,
                  "median wall ms", statistics.median(r[2] for r in res) * 1e3, res[-1][3])
    finally:
        eng.close()
