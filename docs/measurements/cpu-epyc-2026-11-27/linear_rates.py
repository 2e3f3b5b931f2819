"""Independent check: torch bf16 rates by layout on LLM-like shapes (median of 7 calls after one)."""
import json, sys, time
import torch, torch.nn.functional as F
out = {}
for (m, n, k) in [(32, 2048, 2048), (512, 2048, 2048), (512, 4096, 4096), (1024, 1024, 1024)]:
    for lay in ("nt", "nn"):
        a = torch.randn(m, k, dtype=torch.bfloat16)
        w = torch.randn(n, k, dtype=torch.bfloat16) if lay == "nt" else torch.randn(k, n, dtype=torch.bfloat16)
        f = (lambda: F.linear(a, w)) if lay == "nt" else (lambda: a @ w)
        t0 = time.perf_counter(); f(); first = time.perf_counter() - t0
        reps = 7 if first < 1 else 1
        ts = []
        for _ in range(reps):
            t0 = time.perf_counter(); f(); ts.append(time.perf_counter() - t0)
        out[f"{m}x{n}x{k} {lay}"] = 2 * m * n * k / sorted(ts)[len(ts) // 2] / 1e9
for k, v in out.items():
    print(f"{k:22} {v:8.1f} GFLOP/s")
json.dump(out, open(sys.argv[1], "w"), indent=1)
