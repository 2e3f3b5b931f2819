"""Figures (matplotlib, PNG) and the explain report (HTML and markdown).

Every figure is readable without the text: titled, axes labelled with units, legend present.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .errors import MissingDependency, UserError
from .hardware import Ceilings


def _plt():
    try:
        import matplotlib
    except ImportError as e:
        raise MissingDependency("matplotlib", "plot", cause=e) from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def _roof(ax, c: Ceilings, dtype: str, style: str, label: str) -> None:
    try:
        peak = c.flops(dtype)
    except UserError:  # no ceiling of this format: no roof to draw
        return
    if not peak or not c.hbm_bytes_per_s:
        return
    knee = peak / c.hbm_bytes_per_s
    xs = [10 ** (k / 20) for k in range(-40, 120)]
    ax.plot(xs, [min(peak, c.hbm_bytes_per_s * x) for x in xs], style, lw=2,
            label=f"{label}: {c.hbm_bytes_per_s / 1e12:.3g} TB/s, {peak / 1e12:.4g} TFLOP/s {dtype} (knee {knee:.0f} FLOP/B)")
    ax.axvline(knee, color="grey", lw=0.5, ls=":")


def roofline_chart(path: str, ceilings: Ceilings, datasheet: Ceilings | None = None, model=None,
                   batches: Sequence[int] = (1, 8), prompt_len: int = 256, dtype: str = "bf16",
                   kv_dtype: str | None = None, measured_points: Sequence[dict[str, Any]] = ()) -> str:
    """Roofs (measured and datasheet) and operating points.

    Analytic points (from ``model``) sit on the roof: prefill of batch x prompt tokens and a decode
    step at the prompt's context, per batch. ``measured_points`` ({"label", "intensity", "flops_per_s"})
    are where measured steps really ran, below the roof.
    """
    plt = _plt()
    from .costs import Floors, decode_cost, prefill_cost, roofline
    fig, ax = plt.subplots(figsize=(9, 6))
    compute = dtype
    if model is not None:
        f = Floors.of(model, ceilings, dtype=dtype, kv_dtype=kv_dtype)
        compute = f.compute_dtype
    _roof(ax, ceilings, compute, "-", ceilings.kind)
    if datasheet is not None:
        _roof(ax, datasheet, compute, "--", "datasheet")
    markers = {"prefill": "s", "decode": "o"}
    if model is not None:
        for b in batches:
            for phase, step in (("prefill", prefill_cost(f, b, prompt_len)), ("decode", decode_cost(f, b, prompt_len))):
                x = step.flops / step.bytes
                y = step.flops / roofline(step.flops, step.bytes, f.peak, f.bw)
                ax.plot([x], [y], markers[phase], ms=8, label=f"{phase}, batch {b} (bound)")
                ax.annotate(f"{phase[0].upper()}{b}", (x, y), textcoords="offset points", xytext=(5, -12), fontsize=8)
    for p in measured_points:
        ax.plot([p["intensity"]], [p["flops_per_s"]], markers.get(p.get("phase", "decode"), "x"), mfc="none", ms=10,
                mew=2, label=p["label"])
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("arithmetic intensity (FLOP per byte from device memory)")
    ax.set_ylabel("FLOP/s")
    name = model.name if model is not None else ""
    ax.set_title(f"Roofline — {ceilings.name}" + (f" — {name}" if name else ""))
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


# ---- explain report ------------------------------------------------------------------------------

_GROUPS = [  # stacked-bar segments: (label, parts, colour)
    ("floor: weights", ("weights_s",), "#1f77b4"),
    ("floor: KV cache", ("kv_read_s", "kv_write_s"), "#17becf"),
    ("floor: FLOPs", ("linear_flops_s", "attention_flops_s"), "#2ca02c"),
    ("floor: all-reduce", ("allreduce_s",), "#9467bd"),
    ("above floor (in step)", ("above_floor_s",), "#ff7f0e"),
    ("host in step", ("host_in_step_s",), "#d62728"),
    ("host between steps", ("host_between_steps_s",), "#8c564b"),
    ("mixed steps", ("mixed_steps_s",), "#7f7f7f"),
]


def breakdown_chart(path: str, explained: dict[str, Any]) -> str:
    plt = _plt()
    rows = [(f"b{s['batch']} p{s['prompt_len']} g{s['gen_len']} {ph}", parts)
            for s in explained["scenarios"] if s["breakdown"] for ph, parts in s["breakdown"].items()]
    fig, ax = plt.subplots(figsize=(12, 1.4 + 0.55 * max(1, len(rows))))
    for i, (_, parts) in enumerate(rows):
        left = 0.0
        for label, keys, colour in _GROUPS:
            v = sum(parts.get(k, 0.0) for k in keys) * 1e3
            if v > 0:
                ax.barh(i, v, left=left, color=colour, label=label if i == 0 or label not in ax.get_legend_handles_labels()[1] else None)
                left += v
    ax.set_yticks(range(len(rows)), [r[0] for r in rows], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("time per run (ms, mean over measured runs)")
    ax.set_title(f"Where the time went — {explained['model']} on {explained['device']} ({explained['ceilings_source']} ceilings)")
    handles, labels = ax.get_legend_handles_labels()
    uniq = dict(zip(labels, handles))
    ax.legend(uniq.values(), uniq.keys(), fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def steps_chart(path: str, record: dict[str, Any], floors) -> str:
    from .costs import step_cost
    plt = _plt()
    fig, ax = plt.subplots(figsize=(10, 5))
    timer = "device"
    for sc in record["scenarios"]:
        run = sc["runs"][0]
        xs = [st["index"] for st in run["steps"]]
        ys = []
        for st in run["steps"]:
            if st["device_ms"] is None:
                timer = "host"
            ys.append(st["device_ms"] if st["device_ms"] is not None else st["host_ms"])
        floor_ms = [step_cost(floors, [(q, c) for _, q, c, _ in st["seqs"]]).floor_s * 1e3 for st in run["steps"]]
        line, = ax.plot(xs, ys, "-", lw=1, label=f"batch {sc['batch']} measured")
        ax.plot(xs, floor_ms, "--", lw=1, color=line.get_color(), label=f"batch {sc['batch']} floor")
    ax.set_yscale("log")
    ax.set_xlabel("step (first measured run)")
    ax.set_ylabel(f"step time, ms ({timer} timer)")
    ax.set_title(f"Per-step time vs floor — {record['config']['model']}")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _md_table(cols: list[str], rows: list[list[Any]]) -> str:
    out = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    out += ["| " + " | ".join(str(x) for x in r) + " |" for r in rows]
    return "\n".join(out)


def _html_table(cols: list[str], rows: list[list[Any]]) -> str:
    import html
    head = "".join(f"<th>{html.escape(c)}</th>" for c in cols)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(x))}</td>" for x in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def explain_sections(explained: dict[str, Any]) -> list[tuple[str, list[str], list[list[Any]]]]:
    """(title, columns, rows) for every table of the explanation, shared by terminal, markdown and HTML."""
    from .render import pct, seconds, si
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
                           key=lambda k: [g for _, ks, _ in _GROUPS for g in ks].index(k) if k in
                           [g for _, ks, _ in _GROUPS for g in ks] else 99)
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


def write_report(out_dir: str, items: list[tuple[str, dict[str, Any], dict[str, Any]]]) -> list[str]:
    """``items``: (record path, explanation, record). Writes report.md, report.html and PNG figures."""
    import html
    import os
    from .explain import inputs_for
    from .hardware import gpu_catalog
    from .microbench.result import ceilings_from_record
    os.makedirs(out_dir, exist_ok=True)
    md, body, written = ["# llmprobe explain report", ""], ["<h1>llmprobe explain report</h1>"], []
    for k, (path, ex, record) in enumerate(items):
        stem = f"r{k}" if len(items) > 1 else ""
        figs = {}
        ceil = ceilings_from_record({"ceilings": ex["ceilings"]})
        ds = gpu_catalog().get(ceil.gpu_id or "") if ceil.kind == "measured" else None
        points = [{"label": f"{ph}, batch {s['batch']} (measured)", "phase": ph, "intensity": a["intensity_flop_per_byte"],
                   "flops_per_s": a["flops_per_s"]} for s in ex["scenarios"] for ph, a in s["achieved"].items()
                  if a["intensity_flop_per_byte"]]
        compute = inputs_for(record).floors.compute_dtype
        figs["roofline"] = roofline_chart(os.path.join(out_dir, f"{stem}roofline.png"), ceil,
                                          ds.ceilings() if ds else None, dtype=compute, measured_points=points)
        figs["breakdown"] = breakdown_chart(os.path.join(out_dir, f"{stem}breakdown.png"), ex)
        figs["steps"] = steps_chart(os.path.join(out_dir, f"{stem}steps.png"), record, inputs_for(record).floors)
        written += list(figs.values())
        title = f"{ex['model']}" + (f" [{ex['layers_note']}]" if ex.get("layers_note") else "") + f" — {ex['backend']} on {ex['device']}"
        md += [f"## {title}", "", f"Record: `{path}`. Ceilings: {ex['ceilings_source']} ({ex['ceilings']['source']}).", ""]
        body += [f"<h2>{html.escape(title)}</h2>", f"<p>Record: <code>{html.escape(path)}</code>. Ceilings: "
                 f"{html.escape(ex['ceilings_source'])} ({html.escape(ex['ceilings']['source'])}).</p>"]
        for t, cols, rows in explain_sections(ex):
            md += [f"### {t}", "", _md_table(cols, rows), ""]
            body += [f"<h3>{html.escape(t)}</h3>", _html_table(cols, rows)]
        for name, f in figs.items():
            md += [f"![{name}]({os.path.basename(f)})", ""]
            body.append(f'<p><img src="{html.escape(os.path.basename(f))}" alt="{name}" style="max-width:100%"></p>')
    md_path, html_path = os.path.join(out_dir, "report.md"), os.path.join(out_dir, "report.html")
    with open(md_path, "w") as f:
        f.write("\n".join(md) + "\n")
    with open(html_path, "w") as f:
        f.write("<!doctype html><meta charset=utf-8><title>llmprobe explain</title><style>body{font-family:sans-serif;"
                "max-width:1100px;margin:auto}table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:2px 8px;"
                "text-align:right}td:first-child{text-align:left}</style>" + "\n".join(body))
    return [md_path, html_path] + written
