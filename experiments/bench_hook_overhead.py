"""Benchmark: does llmprobe's per-step instrumentation change what it measures?

One vLLM engine, the same prompts, runs alternating with the worker hooks installed and removed
(llmprobe_install / llmprobe_uninstall) in the same process; TPS compared by median over pairs.

    python -m experiments.bench_hook_overhead [--model small-llama] [--pairs 8] [--batch 4] [--gen-len 64]
"""

import argparse
import random
import statistics
import time
from types import SimpleNamespace

from llmprobe.engines import EngineOptions
from llmprobe.engines.vllm_engine import VllmEngine
from llmprobe.engines.vllm_hooks import _StepState


def hook_cost_per_step_s(batch: int, n: int = 20000) -> float:
    """The hooks' own work per step (classify, two timestamps), on a scheduler output of ``batch`` decodes."""
    ids = [f"r{i}" for i in range(batch)]
    so = SimpleNamespace(scheduled_new_reqs=[], num_scheduled_tokens=dict.fromkeys(ids, 1), total_num_scheduled_tokens=batch,
                         scheduled_cached_reqs=SimpleNamespace(req_ids=ids, num_computed_tokens=[40] * batch,
                                                               num_output_tokens=[3] * batch, resumed_req_ids=set()))
    st = _StepState(device_timers=False)
    st.prompt_lens.update(dict.fromkeys(ids, 32))
    t0 = time.perf_counter()
    for _ in range(n):
        st.begin(so)
        st.pause()
        st.resume()
        st.end()
    return (time.perf_counter() - t0) / n
from llmprobe.models import resolve_model


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="small-llama")
    ap.add_argument("--pairs", type=int, default=8)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--prompt-len", type=int, default=32)
    ap.add_argument("--gen-len", type=int, default=64)
    args = ap.parse_args()
    spec = resolve_model(args.model)
    rng = random.Random(0)
    prompts = [[rng.randrange(10, spec.vocab_size) for _ in range(args.prompt_len)] for _ in range(args.batch)]
    cost = hook_cost_per_step_s(args.batch)  # before the engine starts: its processes would share the cores
    eng = VllmEngine(EngineOptions(model=spec, enforce_eager=True, max_model_len=args.prompt_len + args.gen_len))
    try:
        eng.run(prompts, args.gen_len)  # warm-up
        tps = {True: [], False: []}
        ratios = []  # hooked / unhooked of each adjacent pair: robust to slow drift of the machine
        for i in range(args.pairs):
            pair = {}
            for hooked in ((True, False) if i % 2 == 0 else (False, True)):  # alternate the order: no order bias
                eng.set_hooks(hooked)
                r = eng.run(prompts, args.gen_len)
                pair[hooked] = args.batch * args.gen_len / r.wall_s
                tps[hooked].append(pair[hooked])
            ratios.append(pair[True] / pair[False])
        on, off = statistics.median(tps[True]), statistics.median(tps[False])
        q1, med, q3 = statistics.quantiles(ratios, n=4)
        print(f"{args.model} on {eng.device}, batch {args.batch}, prompt {args.prompt_len}, gen {args.gen_len}, "
              f"{args.pairs} pairs")
        print(f"TPS with hooks    median {on:9.1f}  (min {min(tps[True]):.1f}, max {max(tps[True]):.1f})")
        print(f"TPS without hooks median {off:9.1f}  (min {min(tps[False]):.1f}, max {max(tps[False]):.1f})")
        print(f"paired overhead: median {100 * (1 - med):+.2f}% of TPS, quartiles {100 * (1 - q3):+.2f}% .. "
              f"{100 * (1 - q1):+.2f}% (negative: hooked runs were faster)")
        # batch / TPS counts the prefill and the gaps as decode time: an upper bound on a step's time,
        # so the share below is a lower bound; said so in the output
        step_s = 1 / off * args.batch
        print(f"hook work per step: {cost * 1e6:.2f} µs = at least {100 * cost / step_s:.2g}% of a step "
              f"(~{step_s * 1e3:.2g} ms: batch / TPS, an upper bound on the decode step time)")
    finally:
        eng.close()


if __name__ == "__main__":
    main()
