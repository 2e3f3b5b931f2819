"""The summary table of experiments/gpu_acceptance.sh, from whatever its steps have written so far.

    python3 experiments/acceptance_summary.py OUTDIR

Steps, their exit codes and seconds (OUTDIR/steps.tsv); the ceilings against their targets; each
profiled scenario against its floors. A missing or broken output is named, never fatal: the
script runs after every step, so a failed step still leaves the earlier ones summarized.
"""

import json
import sys
from pathlib import Path

from llmprobe.microbench import Measurement
from llmprobe.microbench.targets import judge
from llmprobe.units import throttle_text


def _load(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        print(f"({path.name}: {type(e).__name__})")
        return None


def steps(out: Path) -> None:
    f = out / "steps.tsv"
    if not f.is_file():
        return
    print(f"{'step':52} {'exit':>4} {'s':>5}")
    for line in f.read_text().splitlines():
        name, rc, secs = line.split("\t")
        print(f"{name:52} {rc:>4} {secs:>5}" + ("  TIMED OUT" if rc == "124" else "")
              + ("  SKIPPED (deadline)" if rc == "skip" else ""))


def ceilings(out: Path) -> None:
    roof = _load(out / "roofline.json") if (out / "roofline.json").is_file() else None
    if not roof or "measured" not in roof:
        return
    m = Measurement.from_dict(roof["measured"])
    fp = m.fingerprint
    print(f"\n== {fp.get('name')} ({m.device}) driver {fp.get('driver_version', '-')} "
          f"CUDA {fp.get('cuda_driver_version', '-')}; measured in {m.duration_s or 0:.0f} s ==")
    if m.device != "cuda":
        print("no CUDA GPU: CPU fallback; nothing below is a GPU figure")
    print(f"bandwidth: floors {(m.bandwidth_bytes_per_s or 0) / 1e9:,.0f} GB/s ({m.floor_stream.name if m.floor_stream else '-'}), "
          f"best stream {(m.best_stream_bytes_per_s or 0) / 1e9:,.0f} GB/s; "
          + ", ".join(f"{d} {v / 1e12:,.1f} TFLOP/s" for d, v in sorted(m.flops_per_s.items())))
    print(f"throttle reasons seen: {throttle_text((m.telemetry or {}).get('throttle_fraction')) if m.telemetry else 'no telemetry'}")
    for r in m.methods:
        if r.kind == "collective":   # bus bandwidth and the latency of one call
            val = (f"{r.value / 1e9:9.2f} GB/s bus, {r.best_params['latency_s'] * 1e6:.1f} us per call" if r.valid
                   else "   failed")
            print(f"  {r.name:22} {val} {r.error or ''}")
            continue
        unit, scale = ("GB/s", 1e9) if r.kind == "bandwidth" else ("TFLOP/s", 1e12)
        val = f"{r.value / scale:9.1f} {unit}" if r.valid else "   failed"
        extra = r.error or r.note or ""
        print(f"  {r.name:22} {r.dtype or '-':5} {val}  {json.dumps(r.best_params) if r.valid else ''} {extra}")
    for t in judge(m):
        verdict = {True: "PASS", False: "MISS", None: "n/a"}[t["pass"]]
        ratio = f"{t['ratio']:.3f}" if t["ratio"] is not None else "-"
        print(f"  {t['target']:46} {ratio:>7}  {verdict}")


def profiles(out: Path) -> None:
    ex = _load(out / "explain.json") if (out / "explain.json").is_file() else None
    if not ex:
        for p in sorted(out.glob("profile-*.json")):
            rec = _load(p)
            if rec:
                print(f"{p.name}: {rec.get('status')}, {len(rec.get('scenarios', []))} scenario(s); not yet explained")
        return
    print(f"\n{'model':34} {'batch':>5} {'TPS':>9} {'ceiling':>9} {'eff':>6} {'TPOT ms':>8} {'floor ms':>8}  flags")
    for s in ex["scenarios"]:
        rec = next(r for r in ex["records"] if r["path"] == s["record"])
        name = rec["model"] + (f" [{rec['layers_note']}]" if rec.get("layers_note") else "")
        flags = ",".join(sorted({f["kind"] for f in s["flags"]})) or "-"
        eff = s["tps"]["efficiency"]
        print(f"{name:34} {s['batch']:5} {s['tps']['measured']:9.1f} {s['tps']['ceiling']:9.1f} "
              f"{(f'{eff:6.1%}' if eff is not None else '   n/a')} {s['tpot']['measured_s'] * 1e3:8.2f} "
              f"{s['tpot']['floor_s'] * 1e3:8.2f}  {flags}")
        if s.get("extrapolated"):
            e = s["extrapolated"]
            print(f"{'  -> ' + e['label']:34} {'':5} {e['tps']:9.1f} {e['tps_ceiling_full']:9.1f} {e['efficiency']:6.1%}")
    print(f"\nreport: {out / 'report' / 'report.html'}")


def mamf(out: Path) -> None:
    for f in sorted(out.glob("mamf-*.json")):
        d = _load(f)
        if not d:
            continue
        b, s, c = d["best"], d["sustained"], d.get("ceiling") or {}
        print(f"\nmamf-style sweep {d['dtype']}: best {b['flops_per_s'] / 1e12:.1f} TFLOP/s at {b['m']}x{b['n']}x{b['k']} "
              f"{b['layout']} ({d['shapes_timed']} of {d['grid_shapes']} shapes in {d['sweep_s']:.0f} s); sustained "
              f"{s['flops_per_s'] / 1e12:.1f} TFLOP/s over {s['seconds']:g} s"
              + (f" at {s['power_w_median']:.0f} W of {s['power_limit_w']:.0f} W, SM {s['sm_clock_mhz_median']:.0f} MHz"
                 if s.get("power_w_median") else "")
              + (f"; roofline's ceiling {c['of_sweep_best']:.3f}x it" if c.get("of_sweep_best") else ""))


def targets(out: Path) -> None:
    """Issue #29's targets, from whatever exists so far."""
    rows = []
    roof = _load(out / "roofline.json") if (out / "roofline.json").is_file() else None
    if roof and "measured" in roof:
        m = Measurement.from_dict(roof["measured"])
        ds = m.datasheet
        if ds and m.best_stream_bytes_per_s:
            rows.append(("best stream / datasheet", m.best_stream_bytes_per_s / ds.hbm_bytes_per_s, 0.93))
        own = next((t for t in judge(m) if t["target"].startswith("llmprobe's best stream")), None)
        if own and own["ratio"]:
            rows.append(("own copy / torch copy_", own["ratio"], 0.97))
    bf16 = _load(out / "mamf-bf16.json") if (out / "mamf-bf16.json").is_file() else None
    if bf16 and (bf16.get("ceiling") or {}).get("of_sweep_best"):
        rows.append(("bf16 ceiling / mamf-style best", bf16["ceiling"]["of_sweep_best"], 0.99))
    ex = _load(out / "explain.json") if (out / "explain.json").is_file() else None
    for s in (ex or {}).get("scenarios", []):
        rec = next(r for r in ex["records"] if r["path"] == s["record"])
        tag = f"{rec['model']} b{s['batch']}"
        dec = (s.get("achieved") or {}).get("decode") or {}
        if s["batch"] == 1 and dec.get("bandwidth_fraction") is not None:
            rows.append((f"{tag}: decode / measured read bandwidth", dec["bandwidth_fraction"], 0.85))
        for ph, cov in ((s.get("kernels") or {}).get("coverage") or {}).items():
            if cov is not None:
                rows.append((f"{tag}: traced {ph} step in kernels", cov, 0.90))
    if rows:
        print(f"\n{'target':58} {'value':>7} {'need':>6}")
        for name, v, need in rows:
            print(f"{name:58} {v:7.3f} {need:6.2f}  {'PASS' if v >= need else 'MISS'}")
    for f in sorted(out.glob("score-*.md")):
        text = f.read_text().strip().splitlines()
        if text:
            print(f"{f.stem}: {text[-1]}")


def main() -> None:
    out = Path(sys.argv[1])
    steps(out)
    ceilings(out)
    mamf(out)
    profiles(out)
    targets(out)


if __name__ == "__main__":
    main()
