"""Benchmark: time a 100,000-scenario sweep of the analytic model on one core.

    python -m experiments.bench_sweep
"""

import time

from llmprobe.hardware import gpu_catalog
from llmprobe.models import resolve_model
from llmprobe.bounds import Grid, sweep


def main() -> None:
    grid = Grid(models=[resolve_model(n) for n in ("llama-2-70b", "mixtral", "llama-3-8b", "mistral-7b", "mixtral-8x22b")],
                ceilings=[g.ceilings() for g in gpu_catalog().values()],   # 11 GPUs
                batches=[1, 2, 4, 8, 16, 32, 64, 128, 256, 512], prompt_lens=[128, 256, 512, 1024, 2048],
                gen_lens=[64, 128, 256, 512, 1024], tp_degrees=[1, 2, 4, 8], dtypes=["bf16", "fp8", "int4"])
    best = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        rows = sweep(grid)
        best = min(best, time.perf_counter() - t0)
    print(f"{len(rows):,} scenarios in {best:.3f} s (best of 3) = {best / len(rows) * 1e6:.2f} µs each; "
          f"100,000 would take {best / len(rows) * 1e5:.2f} s")


if __name__ == "__main__":
    main()
