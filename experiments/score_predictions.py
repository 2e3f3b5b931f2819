"""Predictions made before a measurement, scored against it (issue #29's prediction step on the GPU).

    python -m experiments.score_predictions PRED.json... --record HELDOUT.json [--out table.md]

PRED.json: `llmprobe predict ... --json` outputs, written before HELDOUT.json was measured. Each predicted
scenario is matched to the record's scenario of the same batch, prompt and generation length; per metric (TPOT,
TPS, TTFT) the error (predicted / measured median - 1) and whether the measured median lies inside the
predicted interval. The criterion (issue #29): median |error| of TPOT and of TPS each <= 10%, and >= 80% of the
TPOT and TPS values inside their intervals. Prints the table and the verdict; --out writes it as markdown.
"""

from __future__ import annotations

import argparse
import json
import statistics

from llmprobe.records import atomic_write_text, load_run_record

METRICS = ("tpot_s", "tps", "ttft_s")
JUDGED = ("tpot_s", "tps")
MAX_MEDIAN_ERROR, MIN_INSIDE = 0.10, 0.80


def score(preds: list[dict], record) -> tuple[list[dict], dict]:
    measured = {(s.batch, s.prompt_len, s.gen_len): s for s in record.scenarios}
    rows = []
    for p in preds:
        sc = measured.get((p["batch"], p["prompt_len"], p["gen_len"]))
        if sc is None:
            continue
        for m in METRICS:
            meas = sc.summary[m].median
            lo, hi = p["interval"][m]
            rows.append({"scenario": f"b{p['batch']} p{p['prompt_len']} g{p['gen_len']}", "metric": m,
                         "predicted": p[m], "lo": lo, "hi": hi, "measured": meas, "error": p[m] / meas - 1,
                         "inside": lo <= meas <= hi, "predictable": p["predictable"][m]})
    verdict = {}
    for m in JUDGED:
        errs = [abs(r["error"]) for r in rows if r["metric"] == m]
        verdict[m] = {"n": len(errs), "median_abs_error": statistics.median(errs) if errs else None}
    judged = [r for r in rows if r["metric"] in JUDGED]
    inside = sum(r["inside"] for r in judged) / len(judged) if judged else None
    ok = bool(judged) and all(v["median_abs_error"] is not None and v["median_abs_error"] <= MAX_MEDIAN_ERROR
                              for v in verdict.values()) and inside >= MIN_INSIDE
    return rows, {"metrics": verdict, "inside_fraction": inside, "pass": ok}


def table(rows: list[dict], verdict: dict) -> str:
    lines = ["| scenario | metric | predicted | interval | measured | error | inside |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        unit = 1 if r["metric"] == "tps" else 1e3
        lines.append(f"| {r['scenario']} | {r['metric']} | {r['predicted'] * unit:.4g} | {r['lo'] * unit:.4g}–"
                     f"{r['hi'] * unit:.4g}{'' if r['predictable'] else ' (not predictable)'} | {r['measured'] * unit:.4g} "
                     f"| {r['error']:+.1%} | {'yes' if r['inside'] else 'no'} |")
    m = verdict["metrics"]
    lines += ["", "TPOT and TTFT in ms. " + "; ".join(
        f"median |error| {k.removesuffix('_s').upper()} {v['median_abs_error']:.1%} over {v['n']}"
        for k, v in m.items() if v["median_abs_error"] is not None)
        + (f"; {verdict['inside_fraction']:.0%} of TPOT and TPS inside their intervals" if verdict["inside_fraction"]
           is not None else "")
        + f" -> {'PASS' if verdict['pass'] else 'MISS'} (median |error| <= {MAX_MEDIAN_ERROR:.0%}, "
          f">= {MIN_INSIDE:.0%} inside)"]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("predictions", nargs="+")
    ap.add_argument("--record", required=True)
    ap.add_argument("--out")
    args = ap.parse_args()
    preds = [p for f in args.predictions for p in json.load(open(f))["predictions"]]
    rows, verdict = score(preds, load_run_record(args.record))
    text = table(rows, verdict)
    print(text)
    if args.out:
        atomic_write_text(args.out, text + "\n")


if __name__ == "__main__":
    main()
