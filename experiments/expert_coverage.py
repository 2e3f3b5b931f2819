"""Expert coverage under both routings: one MoE model profiled with trained-like and as-loaded routers,
then one table of measured distinct experts per layer against uniform routing's, with TPOT and tokens/s.

    python -m experiments.expert_coverage OUTDIR [--model tiny-mixtral] [--layers N] [--batch 8] [--prompt-len 64]
                                          [--gen-len 24] [--runs 1] [--temperature 0]
    python -m experiments.expert_coverage OUTDIR --tabulate        # the table from OUTDIR's records only

Records go to OUTDIR/<routing>.json (each written as the profile goes), the table to OUTDIR/coverage.md.
"""

from __future__ import annotations

import argparse
import os
import statistics

from llmprobe.engines.routing import ROUTINGS
from llmprobe.explain import explain_record
from llmprobe.profiling import Scenario, profile
from llmprobe.records import atomic_write_text, load_run_record


def step_times_by_coverage(record) -> dict[int, tuple[int, float]]:
    """Decode steps grouped by the experts they touched (summed over layers): (steps, median ms)."""
    by: dict[int, list[float]] = {}
    for sc in record.scenarios:
        for run in sc.runs:
            for st in run.steps:
                if st.phase == "decode" and st.experts:
                    by.setdefault(st.experts.touched(), []).append(st.time_s * 1e3)
    return {k: (len(v), statistics.median(v)) for k, v in sorted(by.items())}


def table(outdir: str) -> str:
    rows = ["| routing | batch | phase | tokens/step | distinct experts per layer | uniform routing | measured / uniform "
            "| TPOT | TPS |", "|---|---|---|---|---|---|---|---|---|"]
    levels = []
    for routing in ROUTINGS:
        path = os.path.join(outdir, f"{routing}.json")
        if not os.path.exists(path):
            continue
        rec = load_run_record(path)
        for s in explain_record(rec).to_dict()["scenarios"]:
            for ph in ("prefill", "decode"):
                c = (s.get("experts") or {}).get(ph)
                if c:
                    rows.append(f"| {routing} | {s['batch']} | {ph} | {c['tokens_per_step']} | {c['measured']:.2f} of "
                                f"{s['experts']['num_experts']} | {c['expected']:.2f} | {c['ratio']:.0%} | "
                                f"{s['tpot']['measured_s'] * 1e3:.1f} ms | {s['tps']['measured']:.1f} |")
        levels.append(f"- {routing}: decode step time by experts touched (all layers): " + ", ".join(
            f"{k}: {n} steps at {ms:.1f} ms" for k, (n, ms) in step_times_by_coverage(rec).items()))
    return "\n".join(rows + [""] + levels) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("outdir")
    ap.add_argument("--model", default="tiny-mixtral")
    ap.add_argument("--layers", type=int)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--prompt-len", type=int, default=64)
    ap.add_argument("--gen-len", type=int, default=24)
    ap.add_argument("--runs", type=int, default=1)
    ap.add_argument("--temperature", type=float, default=0.0)
    ap.add_argument("--tabulate", action="store_true", help="only the table, from the records already in OUTDIR")
    a = ap.parse_args()
    os.makedirs(a.outdir, exist_ok=True)
    if not a.tabulate:
        for routing in ROUTINGS:
            profile(a.model, [Scenario(a.batch, a.prompt_len, a.gen_len)], runs=a.runs, warmup=0, layers=a.layers,
                    out=os.path.join(a.outdir, f"{routing}.json"), progress=print,
                    engine_options={"routing": routing, "temperature": a.temperature})
    text = table(a.outdir)
    atomic_write_text(os.path.join(a.outdir, "coverage.md"), text)
    print(text)


if __name__ == "__main__":
    main()
