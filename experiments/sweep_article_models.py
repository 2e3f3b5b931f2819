"""Research-script example: where does each article model fit, and how fast could it be?

Sweeps Llama-2-70B and Mixtral-8x7B over GPUs, batch sizes, weight formats and TP degrees with the
library API and prints, per model, GPU, batch and weight format, the fewest GPUs that hold it and its TPS ceiling.

    python -m experiments.sweep_article_models [--csv out.csv]
"""

import argparse
import csv
import sys

from llmprobe import Grid, gpu_catalog, resolve_model, sweep


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--csv", help="write every scenario as a CSV row")
    args = ap.parse_args()
    rows = sweep(Grid(models=[resolve_model("llama-2-70b"), resolve_model("mixtral")],
                      ceilings=[gpu_catalog()[g].ceilings() for g in ("a100-sxm-80gb", "h100-sxm", "h200", "l40s")],
                      batches=[1, 8, 32], prompt_lens=[256], gen_lens=[256], tp_degrees=[1, 2, 4, 8],
                      dtypes=["bf16", "fp8", "int4"]))
    if args.csv:
        with open(args.csv, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(rows[0].to_dict()))
            w.writeheader()
            w.writerows(r.to_dict() for r in rows)
    dtypes = ("bf16", "fp8", "int4")
    print(f"{'model':14} {'gpu':14} {'batch':>5}" + "".join(f"{d:>20}" for d in dtypes))
    for model in ("llama-2-70b", "mixtral-8x7b"):
        for gpu in ("a100-sxm-80gb", "h100-sxm", "h200", "l40s"):
            for batch in (1, 8, 32):
                cells = []
                for d in dtypes:  # fewest GPUs that hold the model at this precision, and its ceiling
                    fit = [r for r in rows if (r.model, r.gpu, r.batch, r.dtype) == (model, gpu, batch, d)
                           and r.fits_in_memory]
                    best = min(fit, key=lambda r: r.tp) if fit else None
                    cells.append(f"TP{best.tp}: {best.tps_ceiling:8.1f} tok/s" if best else "no fit at TP<=8")
                print(f"{model:14} {gpu:14} {batch:5}" + "".join(f"{c:>20}" for c in cells))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
