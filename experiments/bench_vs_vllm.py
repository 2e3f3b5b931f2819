"""Does `llmprobe profile` time the same work as vLLM's own latency benchmark, and as fast?

Runs `llmprobe profile` and `vllm bench latency` (vllm.benchmarks.latency) interleaved, on the same
random-weight model, batch and lengths, in both engine modes (in-process:
VLLM_ENABLE_V1_MULTIPROCESSING=0; multiprocess: vLLM's default), and prints the ratio of
llmprobe's median total latency to the benchmark's p50, per repeat and overall.

    python experiments/bench_vs_vllm.py [--repeats 2] [--batch 8] [--prompt-len 64] [--gen-len 16] [--out F]

The model is tiny-mixtral's architecture with a 32k vocabulary (a real tokenizer's size: the
logits and the sampler cost what they cost in a real model). Both sides: enforce-eager, dummy
weights, no tokenizer, no detokenization, prefix caching off, EOS ignored, sampled at temperature 1
with top-p 1 (the benchmark's fixed sampling; llmprobe's default is greedy). Run it on a quiet
machine: on 2 cores a busy neighbour slows vLLM's CPU build several-fold.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MODES = {"in-process": {"VLLM_ENABLE_V1_MULTIPROCESSING": "0"}, "multiprocess": {}}


def model_dir(tmp: str) -> str:
    sys.path.insert(0, str(ROOT))
    from llmprobe.models import resolve_model
    cfg = dict(resolve_model("tiny-mixtral").config, vocab_size=32000)
    d = os.path.join(tmp, "tiny-mixtral-32k")
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump(cfg, f)
    return d


def llmprobe_latency(model: str, a, env: dict[str, str], tmp: str) -> dict:
    out = os.path.join(tmp, "rec.json")
    cmd = [sys.executable, "-m", "llmprobe", "profile", "--model", model, "--batch", str(a.batch), "--prompt-len",
           str(a.prompt_len), "--gen-len", str(a.gen_len), "--runs", str(a.runs), "--warmup", str(a.warmup),
           "--enforce-eager", "--temperature", "1.0", "--out", out, "--json"]
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT, timeout=1800)
    if r.returncode:
        raise SystemExit(f"llmprobe profile failed: {r.stderr[-2000:]}")
    sc = json.loads(r.stdout)["scenarios"][0]
    adm = sc.get("admission") or {}
    return {"median_s": sc["summary"]["total_latency_s"]["median"], "split_runs": adm.get("split_runs"),
            "wall_median_s": statistics.median(run["wall_s"] for run in sc["runs"])}


def vllm_latency(model: str, a, env: dict[str, str], tmp: str) -> dict:
    out = os.path.join(tmp, "bench.json")
    cmd = [sys.executable, "-m", "vllm.entrypoints.cli.main", "bench", "latency", "--model", model,
           "--load-format", "dummy", "--skip-tokenizer-init", "--disable-detokenize", "--enforce-eager",
           "--input-len", str(a.prompt_len), "--output-len", str(a.gen_len), "--batch-size", str(a.batch),
           "--num-iters", str(a.runs), "--num-iters-warmup", str(a.warmup), "--max-model-len",
           str(a.prompt_len + a.gen_len), "--kv-cache-memory-bytes", str(1 << 30), "--output-json", out]
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tmp, timeout=1800)
    if r.returncode:
        raise SystemExit(f"vllm bench latency failed: {r.stderr[-2000:]}")
    doc = json.loads(Path(out).read_text())
    return {"median_s": doc["percentiles"]["50"], "mean_s": doc["avg_latency"]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--prompt-len", type=int, default=64)
    p.add_argument("--gen-len", type=int, default=16)
    p.add_argument("--runs", type=int, default=10)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--modes", default="in-process,multiprocess")
    p.add_argument("--out", help="also write the table (markdown) here")
    a = p.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        model = model_dir(tmp)
        for rep in range(a.repeats):
            for mode in a.modes.split(","):
                env = dict(os.environ, **MODES[mode])
                t0 = time.time()
                ours = llmprobe_latency(model, a, env, tmp)
                theirs = vllm_latency(model, a, env, tmp)
                rows.append({"repeat": rep, "mode": mode, "llmprobe_s": ours["median_s"], "vllm_s": theirs["median_s"],
                             "ratio": ours["median_s"] / theirs["median_s"], "split_runs": ours["split_runs"]})
                print(f"repeat {rep} {mode:12s} llmprobe {ours['median_s'] * 1e3:7.1f} ms  vllm bench p50 "
                      f"{theirs['median_s'] * 1e3:7.1f} ms  ratio {rows[-1]['ratio']:.3f}  ({time.time() - t0:.0f} s)",
                      flush=True)
    lines = [f"batch {a.batch}, prompt {a.prompt_len}, gen {a.gen_len}, {a.runs} runs after {a.warmup} warm-up, "
             "tiny-mixtral architecture with a 32k vocabulary, enforce-eager", "",
             "| engine mode | llmprobe median total latency | vLLM bench latency p50 | ratio (per repeat) | median ratio |",
             "|---|---|---|---|---|"]
    for mode in a.modes.split(","):
        rs = [r for r in rows if r["mode"] == mode]
        lines.append(f"| {mode} | {', '.join(f'{r['llmprobe_s'] * 1e3:.1f}' for r in rs)} ms | "
                     f"{', '.join(f'{r['vllm_s'] * 1e3:.1f}' for r in rs)} ms | "
                     f"{', '.join(f'{r['ratio']:.3f}' for r in rs)} | {statistics.median(r['ratio'] for r in rs):.3f} |")
    table = "\n".join(lines)
    print(table)
    if a.out:
        Path(a.out).write_text(table + "\n")


if __name__ == "__main__":
    main()
