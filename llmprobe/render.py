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
err_console = Console(stderr=True, log_path=False)


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


def _stat(s: dict | None, fmt) -> str:
    if not s or s.get("median") is None:
        return "-"
    spread = ""
    if s.get("n", 0) > 1 and s["median"]:
        spread = f" ±{100 * (s['max'] - s['min']) / 2 / s['median']:.1f}%"
    return f"{fmt(s['median'])}{spread}"


def print_profile(record: dict) -> None:
    cfg = record["config"]
    note = f" [{cfg['layers_note']}]" if cfg.get("layers_note") else ""
    dev = (record.get("provenance") or {}).get("device") or {}
    title = f"{cfg['model']}{note} — {record['engine']['backend']} {record['engine']['version']} on {dev.get('name', '?')}"
    rows = []
    for s in record["scenarios"]:
        sm = s["summary"]
        rows.append([s["batch"], s["prompt_len"], s["gen_len"], _stat(sm["ttft_s"], seconds), _stat(sm["tpot_s"], seconds),
                     _stat(sm["total_latency_s"], seconds), _stat(sm["tps"], lambda v: f"{v:,.1f}"),
                     f"{sm['tps']['mean']:,.1f}" if sm["tps"]["mean"] else "-"])
    console.print(table(title, ["batch", "prompt", "gen", "TTFT", "TPOT", "latency", "TPS (median)", "TPS (mean)"], rows,
                        caption=f"median ± half the min-max range over {cfg['runs']} measured runs "
                                f"(after {cfg['warmup']} warm-up); TPS = output tokens / wall time"))
    rows = []
    for s in record["scenarios"]:
        ph = s["phases"]
        for name in ("prefill", "decode", "mixed"):
            p = ph[name]
            if not p["steps"]["median"]:
                continue
            dev_s = p["device_s"]["median"] if p["device_s"]["n"] else None
            rows.append([s["batch"], name, f"{p['steps']['median']:g}", seconds(dev_s), seconds(p["host_s"]["median"]),
                         seconds(p["host_s"]["median"] / p["steps"]["median"])])
        rows.append([s["batch"], "outside steps", "", "", seconds(ph["outside_steps_s"]["median"]),
                     f"{ph['overhead_per_step_ms']['median']:.3g} ms" if ph["overhead_per_step_ms"]["median"] is not None else "-"])
    console.print(table("Per phase (per run, median)", ["batch", "phase", "steps", "device time", "host time",
                                                        "host per step"], rows,
                        caption="device time: CUDA events around each step (none on CPU); "
                                "outside steps: scheduling, output processing and the caller's loop"))
    for s in record["scenarios"]:
        cc = s.get("cross_check") or {}
        if cc.get("above_tolerance"):
            console.print(f"  batch {s['batch']}: TTFT differs from vLLM's own first_token_latency by up to "
                          f"{100 * cc['max_rel_diff']:.1f}% on {cc['above_tolerance']} of {cc['requests']} requests "
                          f"({cc['note']})")
        for p in s.get("problems") or []:
            console.print(f"  batch {s['batch']}: [red]{p}[/red]")
        t = s.get("telemetry")
        if t and t.get("throttled"):
            console.print(f"  batch {s['batch']}: [red]GPU throttled during the runs[/red]: {t['throttle_fraction']}")


def print_measurement(m, datasheet) -> None:
    fp = m.fingerprint
    best = {"bandwidth": m.bandwidth_bytes_per_s}
    rows = []
    for r in m.methods:
        unit = "B/s" if r.kind == "bandwidth" else "FLOP/s"
        top = best["bandwidth"] if r.kind == "bandwidth" else m.flops.get(r.dtype)
        ds = None
        if datasheet is not None:
            ds = datasheet.hbm_bytes_per_s if r.kind == "bandwidth" else datasheet.peak_flops.get(r.dtype)
        rows.append([r.name, r.kind, r.dtype or "-", si(r.value, unit) if r.valid else "[red]failed[/red]",
                     pct(r.value / top) if r.valid and top else "-", pct(r.value / ds) if r.valid and ds else "-",
                     str(r.best_params.get("bytes_per_array") or r.best_params.get("shape") or "")[:24]])
    where = "CPU (no CUDA GPU)" if m.device == "cpu" else fp.get("name")
    console.print(table(f"Measured ceilings — {where}", ["method", "kind", "dtype", "value", "of best",
                                                         "of datasheet", "best at"], rows,
                        caption=f"{m.methodology}, mode {m.mode}, {m.provenance.get('created_utc', '')}; "
                                "median over repeats at the best size/shape"))
    if m.device == "cuda":
        console.print(f"  {fp.get('name')} {fp.get('form_factor', '')} uuid {fp.get('uuid')} driver {fp.get('driver_version')} "
                      f"CUDA {fp.get('cuda_driver_version')} power limit {fp.get('power_limit_w')} W, "
                      f"SM clock {fp.get('sm_clock_mhz')}/{fp.get('max_sm_clock_mhz')} MHz, "
                      f"PCIe gen {fp.get('pcie_gen')} x{fp.get('pcie_width')}, ECC {fp.get('ecc_enabled')}, "
                      f"MIG {fp.get('mig_enabled')}")
        t = m.telemetry or {}
        if t:
            console.print(f"  during measurement: SM clock median {t['sm_clock_mhz'].get('median')} MHz, "
                          f"power median {t['power_w'].get('median')} W, throttle reasons seen: "
                          f"{throttle_text(t.get('throttle_fraction'))}")
    for w in m.warnings:
        console.print(f"  [yellow]warning:[/yellow] {w}")


def throttle_text(fractions: dict[str, float] | None) -> str:
    if fractions is None:
        return "unknown (NVML did not report them)"
    return ", ".join(f"{r} {f:.0%}" for r, f in fractions.items()) or "none"


def _money(x: float | None, fmt: str = "{:,.2f}") -> str:
    return "-" if x is None else fmt.format(x)


def compare_tables(rows: list[dict], tokens: float | None) -> list[tuple[str, list[str], list[list]]]:
    """The article's layout: one table per model x GPU (x TP), providers as rows, batches as columns."""
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["model"], r["gpu"], r["tp"], r["kind"]), []).append(r)
    out = []
    for (model, gpu, tp, kind), rs in groups.items():
        if kind == "predicted" and not rs[0]["fits_in_memory"]:
            out.append((f"{model} on {gpu}" + (f" x{tp} (TP {tp})" if tp > 1 else "")
                        + f" — PREDICTED — does not fit: {rs[0]['fit_advice']}", [], []))
            continue
        batches = sorted({r["batch"] for r in rs})
        providers = list(dict.fromkeys(r["provider"] for r in rs))
        cols = ["provider", "$/h"] + [f"TPS b{b}" for b in batches] + [f"TPS/$ b{b}" for b in batches] \
            + [f"$/Mtok b{b}" for b in batches] + ([f"cost of {tokens:g} tok b{b}" for b in batches] if tokens else [])
        table_rows = []
        for prov in providers:
            by_b = {r["batch"]: r for r in rs if r["provider"] == prov}
            any_r = next(iter(by_b.values()))
            cells = [prov or "(no price)", _money(any_r["usd_per_hour"])]
            cells += [_money(by_b[b]["tps"], "{:,.1f}") if b in by_b else "-" for b in batches]
            cells += [_money(by_b[b]["tps_per_dollar"]) if b in by_b else "-" for b in batches]
            cells += [_money(by_b[b]["usd_per_million_tokens"]) if b in by_b else "-" for b in batches]
            if tokens:
                cells += [_money(by_b[b]["workload_usd"], "${:,.0f}") if b in by_b else "-" for b in batches]
            table_rows.append(cells)
        title = f"{model} on {gpu}" + (f" x{tp} (TP {tp})" if tp > 1 else "") + (" — PREDICTED" if kind == "predicted" else "")
        if kind == "predicted":
            r0 = rs[0]
            title += f" — {r0['efficiency']:.0%} of the ceiling, from {r0['efficiency_from']}"
        out.append((title, cols, table_rows))
    return out


def print_compare(rows: list[dict], best: list[dict], tokens: float | None) -> None:
    for title, cols, trs in compare_tables(rows, tokens):
        console.print(table(title, cols, trs) if cols else title)
    if best:
        console.print(table("Cheapest per scenario", ["model", "batch", "gpu", "TP", "provider", "kind", "TPS", "$/Mtok"],
                            [[b["model"], b["batch"], b["gpu"], b["tp"], b["provider"], b["kind"], f"{b['tps']:,.1f}",
                              f"{b['usd_per_million_tokens']:.2f}"] for b in best]))


def compare_markdown(rows: list[dict], best: list[dict], tokens: float | None) -> str:
    from .report import _md_table
    parts = []
    for title, cols, trs in compare_tables(rows, tokens):
        parts += [f"### {title}", ""] + ([_md_table(cols, trs), ""] if cols else [])
    if best:
        parts += ["### Cheapest per scenario", "", _md_table(["model", "batch", "gpu", "TP", "provider", "kind", "TPS", "$/Mtok"],
                  [[b["model"], b["batch"], b["gpu"], b["tp"], b["provider"], b["kind"], f"{b['tps']:,.1f}",
                    f"{b['usd_per_million_tokens']:.2f}"] for b in best]), ""]
    return "\n".join(parts)
