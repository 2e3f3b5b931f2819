"""One view per command: the tables each command shows, as sections (for the terminal, markdown, HTML)
or printed to the terminal. Numbers are formatted here, never computed."""

from __future__ import annotations

from typing import Any

from .explain import PART_GROUPS
from .tables import Section, markdown_table, rich_table
from .terminal import console, err_console, print_sections
from .timing import relative_spread
from .units import count, money, pct, seconds, si, throttle_text


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
    console.print(rich_table(f"{model.name}{note} on {ceilings.name}: analytic bounds",
                        ["batch", "prompt", "gen", "weights", "TP", "fits", "memory", "TTFT floor",
                         "TPOT floor", "latency floor", "TPS ceiling", "decode"], rows, caption=caption))
    for (dtype, tp, batch), text in advice.items():
        console.print(f"  * {dtype}, TP {tp}, batch {batch}: does not fit; {text}")


def _stat(s: dict | None, fmt) -> str:
    if not s or s.get("median") is None:
        return "-"
    spread = ""
    if s.get("n", 0) > 1 and s["median"]:
        spread = f" ±{100 * relative_spread(s) / 2:.1f}%"
    return f"{fmt(s['median'])}{spread}"


def print_profile(record) -> None:
    """``record``: a RunRecord."""
    cfg = record.config
    note = f" [{cfg['layers_note']}]" if cfg.get("layers_note") else ""
    title = f"{cfg['model']}{note} — {record.engine['backend']} {record.engine['version']} on {record.device.get('name', '?')}"
    rows = []
    for s in record.scenarios:
        sm = s.summary
        rows.append([s.batch, s.prompt_len, s.gen_len, _stat(sm["ttft_s"], seconds), _stat(sm["tpot_s"], seconds),
                     _stat(sm["total_latency_s"], seconds), _stat(sm["tps"], lambda v: f"{v:,.1f}"),
                     f"{sm['tps']['mean']:,.1f}" if sm["tps"]["mean"] else "-"])
    console.print(rich_table(title, ["batch", "prompt", "gen", "TTFT", "TPOT", "latency", "TPS (median)", "TPS (mean)"], rows,
                        caption=f"median ± half the min-max range over {cfg['runs']} measured runs "
                                f"(after {cfg['warmup']} warm-up); TPS = output tokens / wall time"))
    rows = []
    for s in record.scenarios:
        ph = s.phases
        for name in ("prefill", "decode", "mixed"):
            p = ph[name]
            if not p["steps"]["median"]:
                continue
            dev_s = p["device_s"]["median"] if p["device_s"]["n"] else None
            rows.append([s.batch, name, f"{p['steps']['median']:g}", seconds(dev_s), seconds(p["host_s"]["median"]),
                         seconds(p["host_s"]["median"] / p["steps"]["median"])])
        rows.append([s.batch, "outside steps", "", "", seconds(ph["outside_steps_s"]["median"]),
                     f"{ph['overhead_per_step_ms']['median']:.3g} ms" if ph["overhead_per_step_ms"]["median"] is not None else "-"])
    console.print(rich_table("Per phase (per run, median)", ["batch", "phase", "steps", "device time", "host time",
                                                        "host per step"], rows,
                        caption="device time: CUDA events around each step (none on CPU); "
                                "outside steps: scheduling, output processing and the caller's loop"))
    for s in record.scenarios:
        cc = s.cross_check or {}
        if cc.get("above_tolerance"):
            console.print(f"  batch {s.batch}: TTFT differs from vLLM's own first_token_latency by up to "
                          f"{100 * cc['max_rel_diff']:.1f}% on {cc['above_tolerance']} of {cc['requests']} requests "
                          f"({cc['note']})")
        for p in s.problems:
            console.print(f"  batch {s.batch}: [red]{p}[/red]")
        t = s.telemetry
        if t and t.get("throttled"):
            console.print(f"  batch {s.batch}: [red]GPU throttled during the runs[/red]: {t['throttle_fraction']}")


def print_measurement(m, datasheet) -> None:
    fp = m.fingerprint
    best = {"bandwidth": m.bandwidth_bytes_per_s}
    rows = []
    for r in m.methods:
        if r.kind == "collective":   # bus bandwidth and latency, against the interconnect's datasheet
            ds = datasheet.interconnect_bytes_per_s if datasheet is not None else None
            rows.append([r.name, "bus bandwidth", r.dtype or "-", si(r.value, "B/s") if r.valid else "[red]failed[/red]",
                         "-", pct(r.value / ds) if r.valid and ds else "-",
                         f"latency {seconds(r.best_params['latency_s'])}" if r.valid else ""])
            continue
        unit = "B/s" if r.kind == "bandwidth" else "FLOP/s"
        top = best["bandwidth"] if r.kind == "bandwidth" else m.flops.get(r.dtype)
        ds = None
        if datasheet is not None:
            ds = datasheet.hbm_bytes_per_s if r.kind == "bandwidth" else datasheet.peak_flops.get(r.dtype)
        rows.append([r.name, r.kind, r.dtype or "-", si(r.value, unit) if r.valid else "[red]failed[/red]",
                     pct(r.value / top) if r.valid and top else "-", pct(r.value / ds) if r.valid and ds else "-",
                     str(r.best_params.get("bytes_per_array") or r.best_params.get("shape") or "")[:24]])
    where = "CPU (no CUDA GPU)" if m.device == "cpu" else fp.get("name")
    console.print(rich_table(f"Measured ceilings — {where}", ["method", "kind", "dtype", "value", "of best",
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


def compare_tables(rows: list[dict], tokens: float | None) -> list[Section]:
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
            cells = [prov or "(no price)", money(any_r["usd_per_hour"])]
            cells += [money(by_b[b]["tps"], "{:,.1f}") if b in by_b else "-" for b in batches]
            cells += [money(by_b[b]["tps_per_dollar"]) if b in by_b else "-" for b in batches]
            cells += [money(by_b[b]["usd_per_million_tokens"]) if b in by_b else "-" for b in batches]
            if tokens:
                cells += [money(by_b[b]["workload_usd"], "${:,.0f}") if b in by_b else "-" for b in batches]
            table_rows.append(cells)
        title = f"{model} on {gpu}" + (f" x{tp} (TP {tp})" if tp > 1 else "") + (" — PREDICTED" if kind == "predicted" else "")
        if kind == "predicted":
            r0 = rs[0]
            title += f" — {r0['efficiency']:.0%} of the ceiling, from {r0['efficiency_from']}"
        out.append((title, cols, table_rows))
    return out


def print_compare(rows: list[dict], best: list[dict], tokens: float | None) -> None:
    print_sections(compare_tables(rows, tokens))
    if best:
        console.print(rich_table("Cheapest per scenario", ["model", "batch", "gpu", "TP", "provider", "kind", "TPS", "$/Mtok"],
                            [[b["model"], b["batch"], b["gpu"], b["tp"], b["provider"], b["kind"], f"{b['tps']:,.1f}",
                              f"{b['usd_per_million_tokens']:.2f}"] for b in best]))


def compare_markdown(rows: list[dict], best: list[dict], tokens: float | None) -> str:
    parts = []
    for title, cols, trs in compare_tables(rows, tokens):
        parts += [f"### {title}", ""] + ([markdown_table(cols, trs), ""] if cols else [])
    if best:
        parts += ["### Cheapest per scenario", "", markdown_table(["model", "batch", "gpu", "TP", "provider", "kind", "TPS", "$/Mtok"],
                  [[b["model"], b["batch"], b["gpu"], b["tp"], b["provider"], b["kind"], f"{b['tps']:,.1f}",
                    f"{b['usd_per_million_tokens']:.2f}"] for b in best]), ""]
    return "\n".join(parts)


_PART_ORDER = [k for _, keys in PART_GROUPS for k in keys]


def explain_sections(explained: dict[str, Any]) -> list[Section]:
    """(title, columns, rows) for every table of the explanation, shared by terminal, markdown and HTML."""
    secs = []
    for s in explained["scenarios"]:
        tag = f"batch {s['batch']}, prompt {s['prompt_len']}, gen {s['gen_len']}"
        secs.append((f"Efficiency — {tag} ({s['ceilings_source']} ceilings)", ["metric", "measured", "floor / ceiling", "efficiency"], [
            ["TTFT", seconds(s["ttft"]["measured_s"]), seconds(s["ttft"]["floor_s"]), pct(s["ttft"]["efficiency"])],
            ["TPOT", seconds(s["tpot"]["measured_s"]), seconds(s["tpot"]["floor_s"]), pct(s["tpot"]["efficiency"])],
            ["TPS", f"{s['tps']['measured']:,.1f}", f"{s['tps']['ceiling']:,.1f}", pct(s["tps"]["efficiency"])],
        ] + ([["TPS, full model (" + s["extrapolated"]["label"] + ")", f"{s['extrapolated']['tps']:,.1f}",
               f"{s['extrapolated']['tps_ceiling_full']:,.1f}", pct(s["extrapolated"]["efficiency"])]]
             if s.get("extrapolated") else [])))
        if s["breakdown"]:
            parts = sorted({k for ph in s["breakdown"].values() for k in ph},
                           key=lambda k: _PART_ORDER.index(k) if k in _PART_ORDER else 99)
            rows = [[k.removesuffix("_s").replace("_", " ")] + [seconds(s["breakdown"][ph].get(k, 0.0)) for ph in ("prefill", "decode")]
                    for k in parts if any(abs(s["breakdown"][ph].get(k, 0.0)) > 0 for ph in ("prefill", "decode"))]
            rows.append(["= measured"] + [seconds(s["phase_time_s"][ph]) for ph in ("prefill", "decode")])
            secs.append((f"Where the time went per run — {tag}", ["part", "prefill", "decode"], rows))
        rows = [[ph, si(a["bytes_per_s"], "B/s"), pct(a["bandwidth_fraction"]), si(a["flops_per_s"], "FLOP/s"),
                 pct(a["flops_fraction"]), f"{a['intensity_flop_per_byte']:.3g}", a["timer"]]
                for ph, a in s["achieved"].items()]
        if rows:
            secs.append((f"Achieved during steps — {tag}", ["phase", "bandwidth", "of ceiling", "FLOP/s", "of ceiling",
                                                            "FLOP/byte", "timer"], rows))
        if s["flags"]:
            secs.append((f"Flags — {tag}", ["kind", "message"], [[f["kind"], f["message"]] for f in s["flags"]]))
    return secs


def print_audit(path: str, doc: dict[str, Any]) -> None:
    rows = [[c["line"], c["model"], c["gpu"], c["batch"], f"{c['tps']:g}", c["tp"], c["dtype"] or "any",
             f"{c['precisions']['bf16']['share_of_ceiling']:.0%}", c["verdict"], c["reason"]] for c in doc["claims"]]
    console.print(rich_table(f"Audit of {path}", ["line", "model", "gpu", "batch", "TPS", "TP", "dtype",
                                                           "of bf16 ceiling", "verdict", "reason"], rows,
                                      caption=f"plausible: at most {doc['achievable_share']:.0%} of the ceiling "
                                              "(what a streaming kernel reaches of datasheet bandwidth)"))
    for e in doc["errors"]:
        err_console.print(f"line {e['line']}: {e['message']}")


def print_models(specs, aliases: dict[str, str]) -> None:
    rows = [[s.name, s.architecture, count(s.total_params), count(s.active_params_per_token),
             s.num_layers, s.hidden_size, f"{s.num_heads}/{s.num_kv_heads}",
             f"{s.experts_per_token}/{s.num_experts}" if s.is_moe else "-",
             ", ".join(sorted(a for a, t in aliases.items() if t == s.name))] for s in specs]
    console.print(rich_table("Model catalog", ["model", "architecture", "total params", "active/token",
                                               "layers", "hidden", "heads/kv", "experts k/E", "aliases"], rows,
                             caption="Any Hugging Face config.json (file or folder) works too: --model ./path"))


def print_gpus(cat) -> None:
    rows = [[g.id, g.name, si(g.memory_bytes, "B"), si(g.hbm_bytes_per_s, "B/s"),
             si(g.peak_flops.get("bf16"), "FLOP/s"), si(g.peak_flops.get("fp8"), "FLOP/s"),
             si(g.peak_flops.get("int8"), "OP/s"), f"{si(g.interconnect_bytes_per_s, 'B/s')} {g.interconnect}",
             ", ".join(g.aliases)] for g in cat]
    console.print(rich_table("GPU catalog (datasheet, dense)", ["id", "name", "memory", "HBM", "bf16", "fp8",
                                                                "int8", "interconnect/dir", "aliases"], rows))
    console.print("Sources:")
    for g in cat:
        console.print(f"  {g.id}: {g.source}")


def print_datasheet(ceilings) -> None:
    console.print(rich_table(
        f"{ceilings.name} — datasheet ceilings", ["memory", "HBM bandwidth", "bf16", "fp8", "interconnect/dir",
                                                  "collective latency"],
        [[si(ceilings.memory_bytes, "B"), si(ceilings.hbm_bytes_per_s, "B/s"),
          si(ceilings.peak_flops.get("bf16"), "FLOP/s"), si(ceilings.peak_flops.get("fp8"), "FLOP/s"),
          si(ceilings.interconnect_bytes_per_s, "B/s"), seconds(ceilings.collective_latency_s)]],
        caption=ceilings.source))


def print_prices(ps) -> None:
    console.print(rich_table("Prices (USD per GPU-hour)", ["provider", "gpu", "$/h", "date", "source"],
                             [[p.provider, p.gpu, f"{p.usd_per_hour:.2f}", p.date, p.source] for p in ps]))


def print_explain(items, files: list[str]) -> None:
    """``items``: (record path, explanation, record) per record."""
    for p, ex, _ in items:
        note = f" [{ex['layers_note']}]" if ex.get("layers_note") else ""
        console.rule(f"{ex['model']}{note} — {ex['backend']} on {ex['device']} — {p}")
        if (ex.get("compute") or {}).get("gemm"):
            console.print(f"compute: {ex['compute']['gemm']}; floors use the measured {ex['compute']['ceiling']} ceiling")
        for title, cols, rows in explain_sections(ex):
            console.print(rich_table(title, cols, rows))
    for f in files:
        console.print(f"wrote {f}")
