"""The short summary table that closes experiments/gpu_acceptance.sh.

    python experiments/acceptance_summary.py OUTDIR
"""

import json
import sys
from pathlib import Path

from llmprobe.microbench import Measurement
from llmprobe.microbench.targets import judge


def main() -> None:
    out = Path(sys.argv[1])
    roof = json.loads((out / "roofline.json").read_text())
    m = Measurement.from_dict(roof["measured"])
    fp = m.fingerprint
    print(f"\n== {fp.get('name')} ({m.device}) driver {fp.get('driver_version', '-')} ==")
    if m.device != "cuda":
        print("no CUDA GPU: CPU fallback; nothing below is a GPU figure")
    print(f"bandwidth {m.bandwidth_bytes_per_s / 1e9:,.0f} GB/s; "
          + ", ".join(f"{d} {v / 1e12:,.1f} TFLOP/s" for d, v in sorted(m.flops.items())))
    thr = (m.telemetry or {}).get("throttle_fraction")
    print(f"throttle reasons seen: {thr or 'none' if m.telemetry else 'no telemetry'}")
    for t in judge(m):
        verdict = {True: "PASS", False: "MISS", None: "n/a"}[t["pass"]]
        ratio = f"{t['ratio']:.3f}" if t["ratio"] is not None else "-"
        print(f"  {t['target']:46} {ratio:>7}  {verdict}")
    ex = json.loads((out / "explain.json").read_text())
    print(f"\n{'model':34} {'batch':>5} {'TPS':>9} {'ceiling':>9} {'eff':>6} {'TPOT ms':>8} {'floor ms':>8}  flags")
    for s in ex["scenarios"]:
        rec = next(r for r in ex["records"] if r["path"] == s["record"])
        name = rec["model"] + (f" [{rec['layers_note']}]" if rec.get("layers_note") else "")
        flags = ",".join(sorted({f["kind"] for f in s["flags"]})) or "-"
        print(f"{name:34} {s['batch']:5} {s['tps']['measured']:9.1f} {s['tps']['ceiling']:9.1f} "
              f"{s['tps']['efficiency']:6.1%} {s['tpot']['measured_s'] * 1e3:8.2f} {s['tpot']['floor_s'] * 1e3:8.2f}  {flags}")
        if s.get("extrapolated"):
            e = s["extrapolated"]
            print(f"{'  -> ' + e['label']:34} {'':5} {e['tps']:9.1f} {e['tps_ceiling_full']:9.1f} {e['efficiency']:6.1%}")
    print(f"\nreport: {out / 'report' / 'report.html'}")


if __name__ == "__main__":
    main()
