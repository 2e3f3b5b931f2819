"""A many-shape matmul sweep in the manner of mamf-finder (stas00/ml-engineering), as a check the bf16 ceiling
can fail (issue #29): the best of hundreds of shapes, timed its own way, against the ceiling `roofline` reports.

    python -m experiments.mamf_sweep --dtype bf16 --budget-s 60 --sustain-s 10 --out mamf.json [--ceilings roofline.json]

The grid: m from 1024 to 16384 in steps of 1024, n and k in {4096, 8192, 12288, 16384} (256 shapes, 8192^3
among them), in both layouts (a @ b and a @ w.t(), as F.linear; fp8 through torch._scaled_mm, a @ w.t() only,
with and without fast accumulation), in a seeded shuffled order so that a budget
that runs out leaves a spread of the grid, not its first corner. Each shape: operands from randn, one product
checked against fp32 on the first shape of each layout, 3 untimed calls, then CUDA events around 20 calls back to
back (the mean per call, as mamf-finder reports it). After the sweep, the best shape runs back to back for
``--sustain-s`` seconds in samples of ~100 ms: the median of the second half is the figure sustained under the
card's power cap, with NVML's power and SM clock read beside it. Without a CUDA GPU it says so and exits 2.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time

GRID_M = range(1024, 16385, 1024)
GRID_NK = (4096, 8192, 12288, 16384)
LAYOUTS = ("nn", "nt")
CALLS, WARM = 20, 3


# fp8 (e4m3, torch._scaled_mm) takes only a @ w.t(); with and without fast accumulation, as mamf-finder sweeps it
FP8_LAYOUTS = ("nt", "nt-fast")


def shapes(dtype: str, seed: int = 0) -> list[tuple[int, int, int, str]]:
    lays = FP8_LAYOUTS if dtype == "fp8" else LAYOUTS
    grid = [(m, n, k, lay) for m in GRID_M for n in GRID_NK for k in GRID_NK for lay in lays]
    random.Random(seed).shuffle(grid)
    return grid


def _product(torch, m, n, k, lay, dtype):
    """(call, a, b, c): call writes a @ b into c."""
    if dtype == "fp8":
        a = (torch.randn(m, k, device="cuda") / 4).to(torch.float8_e4m3fn)
        b = (torch.randn(n, k, device="cuda") / 4).to(torch.float8_e4m3fn).t()
        c = torch.empty(m, n, device="cuda", dtype=torch.bfloat16)
        one, fast = torch.ones((), device="cuda"), lay == "nt-fast"
        return (lambda: torch._scaled_mm(a, b, scale_a=one, scale_b=one, out_dtype=torch.bfloat16,
                                         use_fast_accum=fast, out=c)), a, b, c
    dt = {"bf16": torch.bfloat16, "fp16": torch.float16}[dtype]
    a = torch.randn(m, k, device="cuda", dtype=dt)
    b = torch.randn(k, n, device="cuda", dtype=dt) if lay == "nn" else torch.randn(n, k, device="cuda", dtype=dt).t()
    c = torch.empty(m, n, device="cuda", dtype=dt)
    return (lambda: torch.mm(a, b, out=c)), a, b, c


def _time(torch, call, calls: int) -> float:
    """Seconds per call: CUDA events around ``calls`` back-to-back products."""
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(calls):
        call()
    end.record()
    end.synchronize()
    return start.elapsed_time(end) / 1e3 / calls


def _nvml():
    try:
        import pynvml
        pynvml.nvmlInit()
        return pynvml, pynvml.nvmlDeviceGetHandleByIndex(0)
    except Exception:   # no NVML: the sustained figure goes without power and clocks
        return None, None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dtype", default="bf16", choices=["bf16", "fp16", "fp8"])
    ap.add_argument("--budget-s", type=float, default=60.0, help="stop sweeping after this many seconds")
    ap.add_argument("--sustain-s", type=float, default=10.0)
    ap.add_argument("--ceilings", help="a `llmprobe roofline --json` output: its ceiling is judged against the best")
    ap.add_argument("--target", type=float, default=0.99, help="pass: ceiling >= target x the sweep's best")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    import torch
    if not torch.cuda.is_available():
        print("no CUDA GPU: the sweep measures a GPU only", file=sys.stderr)
        raise SystemExit(2)
    from llmprobe.records import atomic_write_json
    t0 = time.perf_counter()
    warm = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    while time.perf_counter() - t0 < 2.0:   # a cold card boosts higher for a moment
        torch.mm(warm, warm)
        torch.cuda.synchronize()
    del warm
    rows, checked = [], set()
    t_sweep = time.perf_counter()
    grid = shapes(args.dtype)
    for m, n, k, lay in grid:
        if time.perf_counter() - t_sweep > args.budget_s:
            break
        call, a, b, c = _product(torch, m, n, k, lay, args.dtype)
        if lay not in checked:   # the product is right before any of its timings counts
            call()
            ref = a.float() @ b.float()
            err = ((c.float() - ref).norm() / ref.norm()).item()
            if not err < 2e-2:
                raise SystemExit(f"{m}x{n}x{k} {lay}: relative error {err:.3g} against fp32")
            checked.add(lay)
            del ref
        _time(torch, call, WARM)
        s = _time(torch, call, CALLS)
        rows.append({"m": m, "n": n, "k": k, "layout": lay, "s_per_call": s, "flops_per_s": 2 * m * n * k / s})
        del call, a, b, c
    sweep_s = time.perf_counter() - t_sweep
    best = max(rows, key=lambda r: r["flops_per_s"])
    call, a, b, c = _product(torch, best["m"], best["n"], best["k"], best["layout"], args.dtype)
    per_sample = max(1, int(0.1 / best["s_per_call"]))
    nvml, handle = _nvml()
    samples = []
    t1 = time.perf_counter()
    while time.perf_counter() - t1 < args.sustain_s:
        s = _time(torch, call, per_sample)
        sample = {"t_s": time.perf_counter() - t1, "flops_per_s": 2 * best["m"] * best["n"] * best["k"] / s}
        if handle is not None:
            sample["power_w"] = nvml.nvmlDeviceGetPowerUsage(handle) / 1e3
            sample["sm_clock_mhz"] = nvml.nvmlDeviceGetClockInfo(handle, nvml.NVML_CLOCK_SM)
        samples.append(sample)
    late = samples[len(samples) // 2:]
    sustained = statistics.median(x["flops_per_s"] for x in late)
    doc = {"dtype": args.dtype, "device": torch.cuda.get_device_name(), "torch": torch.__version__,
           "cuda": torch.version.cuda, "grid_shapes": len(grid), "shapes_timed": len(rows), "sweep_s": sweep_s,
           "calls_per_shape": CALLS, "best": best, "sustained": {
               "flops_per_s": sustained, "seconds": args.sustain_s, "samples": samples,
               "power_w_median": statistics.median(x["power_w"] for x in late) if handle is not None else None,
               "power_limit_w": nvml.nvmlDeviceGetEnforcedPowerLimit(handle) / 1e3 if handle is not None else None,
               "sm_clock_mhz_median": statistics.median(x["sm_clock_mhz"] for x in late) if handle is not None else None},
           "rows": rows}
    line = (f"{args.dtype}: best {best['flops_per_s'] / 1e12:.1f} TFLOP/s at {best['m']}x{best['n']}x{best['k']} "
            f"{best['layout']} over {len(rows)} of {len(grid)} shapes in {sweep_s:.0f} s; sustained "
            f"{sustained / 1e12:.1f} TFLOP/s over {args.sustain_s:g} s")
    if args.ceilings:
        with open(args.ceilings) as f:
            roof = json.load(f)
        ceiling = (roof.get("measured") or {}).get("flops_per_s", {}).get(args.dtype)
        ratio = ceiling / best["flops_per_s"] if ceiling else None
        doc["ceiling"] = {"flops_per_s": ceiling, "of_sweep_best": ratio, "target": args.target,
                          "pass": None if ratio is None else ratio >= args.target}
        line += (f"; roofline's ceiling {ceiling / 1e12:.1f} TFLOP/s = {ratio:.3f}x the sweep's best "
                 f"({'PASS' if ratio >= args.target else 'MISS'} at >= {args.target:g})" if ratio else
                 "; the roofline output has no such ceiling")
    atomic_write_json(args.out, doc)
    print(line)


if __name__ == "__main__":
    main()
