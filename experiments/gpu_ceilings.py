"""Measure this card's ceilings with every method and print one table, with the acceptance targets.

Each method's bandwidth or FLOP/s, its ratio to the best of its kind and to the datasheet; then
the targets of the ceilings issue (best bandwidth >= 90% of datasheet; llmprobe's best stream
kernel >= 0.97x torch's copy_; bf16 ceiling within 2% of the best torch shape and >= 75% of the
datasheet). Without a GPU it measures the CPU and says so (targets need a datasheet: n/a).

    python -m experiments.gpu_ceilings [--mode quick|default|full] [--json out.json]
"""

import argparse
import json

from llmprobe.microbench import measure
from llmprobe.microbench.targets import judge


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mode", default="default", choices=["quick", "default", "full"])
    ap.add_argument("--json", help="also write the measurement and targets here")
    args = ap.parse_args()
    m = measure(args.mode, say=lambda s: print(f"  .. {s}", flush=True))
    ds = m.datasheet
    print(f"\n{m.fingerprint.get('name')} ({m.device}), mode {args.mode}, {m.duration_s:.0f} s"
          + ("" if m.device == "cuda" else "  -- no CUDA GPU: these are CPU figures"))
    print(f"{'method':24} {'kind':9} {'dtype':5} {'value':>14} {'of best':>8} {'of datasheet':>12}  note")
    for r in m.methods:
        best = m.best_stream_bytes_per_s if r.kind == "bandwidth" else m.flops_per_s.get(r.dtype)
        ref = (ds.hbm_bytes_per_s if r.kind == "bandwidth" else ds.peak_flops.get(r.dtype)) if ds else None
        unit = "GB/s" if r.kind == "bandwidth" else "TFLOP/s"
        val = f"{r.value / (1e9 if r.kind == 'bandwidth' else 1e12):10.1f} {unit}" if r.valid else "failed"
        ob = f"{r.value / best:8.1%}" if r.valid and best else "-"
        od = f"{r.value / ref:12.1%}" if r.valid and ref else "-"
        print(f"{r.name:24} {r.kind:9} {r.dtype or '-':5} {val:>14} {ob:>8} {od:>12}  {r.error or ''}")
    print("\ntargets:")
    targets = judge(m)
    for t in targets:
        verdict = {True: "PASS", False: "MISS", None: "n/a"}[t["pass"]]
        ratio = f"{t['ratio']:.3f}" if t["ratio"] is not None else "-"
        thr = f">= {t['threshold']}" if t["threshold"] is not None else ""
        print(f"  {t['target']:46} {ratio:>7} {thr:8} {verdict} {t['note']}")
    for w in m.warnings:
        print(f"warning: {w}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"measurement": m.to_dict(), "targets": targets}, f, indent=1)


if __name__ == "__main__":
    main()
