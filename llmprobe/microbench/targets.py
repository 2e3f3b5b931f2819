"""The ceilings issue's acceptance targets, judged on a measurement (GPU only: a CPU has no datasheet)."""

from __future__ import annotations

from typing import Any

from .result import Measurement

BANDWIDTH_OF_DATASHEET = 0.90     # best stream bandwidth (any kernel) vs datasheet HBM
OWN_KERNEL_OF_TORCH_COPY = 0.97   # llmprobe's best stream kernel vs torch's device-to-device copy_
MATMUL_OF_PUBLISHED_BEST = 0.95   # bf16 ceiling vs the best public sweep on the card (the old target, "within 2% of
                                  # the best torch.matmul shape", held by construction: the ceiling is that maximum)
MATMUL_OF_DATASHEET = 0.75        # bf16 ceiling vs datasheet dense bf16
# The best bf16 matmul a public many-shape sweep reached on each card (design brief, "Facts learned on the GPU")
PUBLISHED_BEST_BF16 = {"h100-sxm": (794.5e12, "mamf-finder (stas00/ml-engineering), H100 SXM")}


def _best(m: Measurement, kind: str, dtype: str | None = None, prefix: tuple[str, ...] = ()) -> float | None:
    vals = [r.value for r in m.methods if r.valid and r.value and r.kind == kind
            and (dtype is None or r.dtype == dtype) and (not prefix or r.name.startswith(prefix))]
    return max(vals) if vals else None


def judge(m: Measurement) -> list[dict[str, Any]]:
    ds = m.datasheet
    bw = m.best_stream_bytes_per_s
    own = _best(m, "bandwidth", prefix=("cupy.", "triton."))
    torch_copy = _best(m, "bandwidth", prefix=("torch.copy_",))
    torch_mm = _best(m, "flops", "bf16", prefix=("torch.matmul",))
    bf16 = m.flops_per_s.get("bf16")
    triton_mm = _best(m, "flops", "bf16", prefix=("triton.dot",))
    published = PUBLISHED_BEST_BF16.get(ds.id) if ds else None

    def row(name, value, ref, threshold, note=""):
        ratio = value / ref if value and ref else None
        return {"target": name, "value": value, "reference": ref, "ratio": ratio, "threshold": threshold,
                "pass": None if ratio is None or threshold is None else ratio >= threshold, "note": note}
    return [
        row("best bandwidth / datasheet", bw, ds.hbm_bytes_per_s if ds else None, BANDWIDTH_OF_DATASHEET),
        row("llmprobe's best stream kernel / torch copy_", own, torch_copy, OWN_KERNEL_OF_TORCH_COPY),
        row("bf16 ceiling / best public sweep", bf16, published[0] if published else None, MATMUL_OF_PUBLISHED_BEST,
            published[1] if published else "no public figure for this card"),
        row("bf16 ceiling / datasheet", bf16, ds.peak_flops.get("bf16") if ds else None, MATMUL_OF_DATASHEET),
        row("triton.dot / best torch.matmul shape", triton_mm, torch_mm, None, "informational"),
    ]
