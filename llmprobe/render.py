"""Human-readable units and rich tables; nothing here computes a number, it only formats them."""

from __future__ import annotations

import json
import math
import sys
from typing import Any

from rich.console import Console
from rich.table import Table

# Piped output has no terminal width; 140 columns keeps the wide tables on one line each.
console = Console(soft_wrap=False, width=None if sys.stdout.isatty() else 140)
err_console = Console(stderr=True)


def si(value: float | None, unit: str, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if value == 0:
        return f"0 {unit}"
    for factor, prefix in ((1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k"), (1, "")):
        if abs(value) >= factor:
            return f"{value / factor:.{digits}g} {prefix}{unit}"
    return f"{value:.{digits}g} {unit}"


def seconds(value: float | None) -> str:
    if value is None:
        return "-"
    if value >= 1:
        return f"{value:.3g} s"
    if value >= 1e-3:
        return f"{value * 1e3:.3g} ms"
    return f"{value * 1e6:.3g} µs"


def pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def count(n: int) -> str:
    return f"{n:,}"


def table(title: str, columns: list[str], rows: list[list[Any]], caption: str | None = None) -> Table:
    t = Table(title=title, caption=caption, title_justify="left", caption_justify="left")
    for i, c in enumerate(columns):
        t.add_column(c, justify="left" if i == 0 else "right")
    for r in rows:
        t.add_row(*[str(x) for x in r])
    return t


def emit_json(doc: Any) -> None:
    """Exactly one JSON document on stdout."""
    sys.stdout.write(json.dumps(doc, indent=2, default=_default) + "\n")
    sys.stdout.flush()


def _default(o: Any) -> Any:
    if hasattr(o, "to_dict"):
        return o.to_dict()
    raise TypeError(f"not JSON serializable: {type(o).__name__}")


def print_bounds(model, ceilings, bounds) -> None:
    rows, advice = [], {}
    for b in bounds:
        fit = "yes"
        if not b.fits_in_memory:
            key = (b.dtype, b.tp, b.batch)
            advice[key] = b.fit_advice
            fit = "no*"
        tps = f"{b.tps_ceiling:,.1f}"
        if b.tps_ceiling_optimistic != b.tps_ceiling:
            tps += f" ({b.tps_ceiling_optimistic:,.1f} top-k)"
        rows.append([b.batch, b.prompt_len, b.gen_len, b.dtype, b.tp, fit, si(b.memory_required_bytes, "B"),
                     seconds(b.ttft_floor_s), seconds(b.tpot_floor_s), seconds(b.total_latency_floor_s), tps,
                     b.decode_bound])
    note = f" [{model.layers_note}]" if model.layers_note else ""
    caption = (f"Floors per GPU on {ceilings.kind} ceilings ({ceilings.source[:90]}). "
               f"Memory available: {si(bounds[0].memory_available_bytes, 'B')} "
               f"(gpu_memory_utilization x memory).")
    if model.is_moe:
        caption += " MoE: expected distinct experts under uniform routing; '(top-k)' = exactly k experts touched."
    console.print(table(f"{model.name}{note} on {ceilings.name}: analytic bounds",
                        ["batch", "prompt", "gen", "weights", "TP", "fits", "memory", "TTFT floor",
                         "TPOT floor", "latency floor", "TPS ceiling", "decode"], rows, caption=caption))
    for (dtype, tp, batch), text in advice.items():
        console.print(f"  * {dtype}, TP {tp}, batch {batch}: does not fit; {text}")
