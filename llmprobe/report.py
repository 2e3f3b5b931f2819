"""The explain report: report.md and report.html with every table of `explain` and its figures."""

from __future__ import annotations

from .context import RecordContext
from .explain import Explanation
from .plots import breakdown_chart, kernels_chart, roofline_chart, steps_chart
from .records import atomic_write_text
from .tables import html_table, markdown_table
from .views import explain_sections, record_sections


def _stem(path: str, taken: set[str]) -> str:
    """Figures are named after their record (mixtral-run-roofline.png), unique within the report."""
    import os
    import re
    base = re.sub(r"[^A-Za-z0-9._-]+", "_", os.path.splitext(os.path.basename(path))[0]) or "record"
    stem, n = base, 2
    while stem in taken:
        stem, n = f"{base}-{n}", n + 1
    taken.add(stem)
    return stem


def write_report(out_dir: str, items: list[tuple[str, Explanation, RecordContext]]) -> list[str]:
    """``items``: (record path, explanation, the record's context). Writes report.md, report.html and PNG figures."""
    import html
    import os
    from .hardware import gpu_catalog
    os.makedirs(out_dir, exist_ok=True)
    md, body, written = ["# llmprobe explain report", ""], ["<h1>llmprobe explain report</h1>"], []
    stems: set[str] = set()
    for path, ex, ctx in items:
        stem = _stem(path, stems)
        figs = {}
        ceil = ctx.ceilings
        ds = gpu_catalog().get(ceil.gpu_id or "") if ceil.kind == "measured" else None
        points = [{"label": f"{ph}, batch {s.batch} (measured)", "phase": ph, "intensity": a["intensity_flop_per_byte"],
                   "flops_per_s": a["flops_per_s"]} for s in ex.scenarios for ph, a in s.achieved.items()
                  if a["intensity_flop_per_byte"]]
        compute = ctx.floors.compute_dtype
        figs["roofline"] = roofline_chart(os.path.join(out_dir, f"{stem}-roofline.png"), ceil,
                                          ds.ceilings() if ds else None, compute=compute, measured_points=points,
                                          measured_on=ex.device)
        figs["breakdown"] = breakdown_chart(os.path.join(out_dir, f"{stem}-breakdown.png"), ex)
        if any(sc.kernels for sc in ex.scenarios):
            figs["kernels"] = kernels_chart(os.path.join(out_dir, f"{stem}-kernels.png"), ex)
        figs["steps"] = steps_chart(os.path.join(out_dir, f"{stem}-steps.png"), ctx)
        written += list(figs.values())
        title = f"{ex.model}" + (f" [{ex.layers_note}]" if ex.layers_note else "") + f" — {ex.backend} on {ex.device}"
        md += [f"## {title}", "", f"Record: `{path}`. Ceilings: {ex.ceilings_source} ({ex.ceilings['source']}).", ""]
        body += [f"<h2>{html.escape(title)}</h2>", f"<p>Record: <code>{html.escape(path)}</code>. Ceilings: "
                 f"{html.escape(ex.ceilings_source)} ({html.escape(ex.ceilings['source'])}).</p>"]
        for t, cols, rows in record_sections(ctx.record) + explain_sections(ex):
            md += [f"### {t}", "", markdown_table(cols, rows), ""]
            body += [f"<h3>{html.escape(t)}</h3>", html_table(cols, rows)]
        for name, f in figs.items():
            md += [f"![{name}]({os.path.basename(f)})", ""]
            body.append(f'<p><img src="{html.escape(os.path.basename(f))}" alt="{name}" style="max-width:100%"></p>')
    md_path, html_path = os.path.join(out_dir, "report.md"), os.path.join(out_dir, "report.html")
    atomic_write_text(md_path, "\n".join(md) + "\n")
    atomic_write_text(html_path, "<!doctype html><meta charset=utf-8><title>llmprobe explain</title><style>"
                      "body{font-family:sans-serif;max-width:1100px;margin:auto}table{border-collapse:collapse}"
                      "td,th{border:1px solid #ccc;padding:2px 8px;text-align:right}td:first-child{text-align:left}"
                      "td.prose{text-align:left}"
                      "</style>" + "\n".join(body))
    return [md_path, html_path] + written
