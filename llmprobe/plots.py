"""Every figure llmprobe draws (matplotlib, PNG): roofline, where the time went, kernel classes, per-step
time, cost; under load, a sweep's latency and throughput, the tok/s-per-GPU against tok/s-per-user frontier of
several records, and each load point's step timeline.

Every figure is readable without the text: titled, axes labelled with units, legend present.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from .errors import MissingDependency, UserError
from .labels import CLASS_COLOURS, CLASS_LABELS, KIND_COLOURS, PART_COLOURS, PART_GROUPS
from .underload import pareto

if TYPE_CHECKING:   # explanations are drawn here, never built
    from .explain import Explanation
from .hardware import Ceilings




def _plt():
    try:
        import matplotlib
    except ImportError as e:
        raise MissingDependency("matplotlib", "plot", cause=e) from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def _save(fig, path: str) -> str:
    plt = _plt()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _rate(v: float, unit: str) -> str:
    """A rate at a human scale with 3 significant digits: 731.8 GFLOP/s, 3.35 TB/s."""
    for factor, prefix in ((1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k"), (1, "")):
        if abs(v) >= factor:
            return f"{v / factor:.3g} {prefix}{unit}"
    return f"{v:.3g} {unit}"


def _roof(ax, c: Ceilings, dtype: str, style: str, label: str, xs) -> tuple[float, float] | None:
    """Draws the roof over ``xs``; returns (peak, knee) or None when the format has no ceiling."""
    try:
        peak = c.flops_per_s(dtype)
    except UserError:  # no ceiling of this format: no roof to draw
        return None
    if not peak or not c.hbm_bytes_per_s:
        return None
    knee = peak / c.hbm_bytes_per_s
    ax.plot(xs, [min(peak, c.hbm_bytes_per_s * x) for x in xs], style, lw=2,
            label=f"{label}: {_rate(c.hbm_bytes_per_s, 'B/s')}, {_rate(peak, 'FLOP/s')} {dtype} "
                  f"(knee {knee:.3g} FLOP/B)")
    ax.axvline(knee, color="grey", lw=0.5, ls=":")
    return peak, knee


def roofline_chart(path: str, ceilings: Ceilings, datasheet: Ceilings | None = None, compute: str = "bf16",
                   bound_points: Sequence[dict[str, Any]] = (), measured_points: Sequence[dict[str, Any]] = (),
                   measured_on: str | None = None, title_model: str = "") -> str:
    """Roofs (measured and datasheet) in the ``compute`` format, and operating points.

    ``bound_points`` (bounds.operating_points: {"phase", "batch", "intensity", "flops_per_s"}) sit on the
    roof. ``measured_points`` ({"label", "intensity", "flops_per_s"}) are where measured steps really ran,
    below the roof; ``measured_on`` names their device when it is not the one the roofs belong to. Axes
    span both roofs' knees and every point, a decade around.
    """
    plt = _plt()
    fig, ax = plt.subplots(figsize=(9, 6))
    points = [(p["intensity"], p["flops_per_s"]) for p in list(bound_points) + list(measured_points)]
    knees = [c.flops_per_s(compute) / c.hbm_bytes_per_s for c in (ceilings, datasheet) if c is not None
             and compute in c.peak_flops and c.hbm_bytes_per_s]
    xs_all = [x for x, _ in points] + knees
    lo = 10 ** (math.floor(math.log10(min(xs_all))) - 1) if xs_all else 1e-2
    hi = 10 ** (math.ceil(math.log10(max(xs_all))) + 1) if xs_all else 1e4
    xs = [lo * (hi / lo) ** (k / 200) for k in range(201)]
    roofs = [r for r in (_roof(ax, ceilings, compute, "-", ceilings.kind, xs),
                         _roof(ax, datasheet, compute, "--", "datasheet", xs) if datasheet is not None else None) if r]
    markers = {"prefill": "s", "decode": "o"}
    for p in bound_points:
        x, y, phase, b = p["intensity"], p["flops_per_s"], p["phase"], p["batch"]
        ax.plot([x], [y], markers[phase], ms=8, label=f"{phase}, batch {b} (bound)")
        ax.annotate(f"{phase[0].upper()}{b}", (x, y), textcoords="offset points", xytext=(5, -12), fontsize=8)
    for p in measured_points:
        ax.plot([p["intensity"]], [p["flops_per_s"]], markers.get(p.get("phase", "decode"), "x"), mfc="none", ms=10,
                mew=2, label=p["label"])
    ys = [y for _, y in points] + [peak for peak, _ in roofs] + [c.hbm_bytes_per_s * lo for c in (ceilings, datasheet)
                                                                  if c is not None and c.hbm_bytes_per_s]
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(lo, hi)
    if ys:
        ax.set_ylim(10 ** math.floor(math.log10(min(ys))), 10 ** (math.ceil(math.log10(max(ys))) + 0.3))
    ax.set_xlabel("arithmetic intensity (FLOP per byte from device memory)")
    ax.set_ylabel("FLOP/s")
    title = f"Roofline — {ceilings.name} ({ceilings.kind} ceilings)" + (f" — {title_model}" if title_model else "")
    if measured_on and measured_on != ceilings.name:
        title += f"\npoints measured on {measured_on}, not on this device"
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    return _save(fig, path)


def breakdown_chart(path: str, explained: Explanation) -> str:
    plt = _plt()
    rows = [(f"b{s.batch} p{s.prompt_len} g{s.gen_len} {ph}", parts)
            for s in explained.scenarios if s.breakdown for ph, parts in s.breakdown.items()]
    title = f"Where the time went — {explained.model} on {explained.device} ({explained.ceilings_source} ceilings)"
    if not rows:   # nothing explained: say why instead of drawing an empty frame
        fig, ax = plt.subplots(figsize=(12, 2.5))
        why = [f.message for s in explained.scenarios for f in s.flags if f.kind == "faster_than_floor"]
        ax.text(0.01, 0.5, "No scenario could be explained: " + (why[0] if why else "no breakdown in the record"),
                wrap=True, va="center", fontsize=9)
        ax.set_axis_off()
        ax.set_title(title)
        return _save(fig, path)
    fig, ax = plt.subplots(figsize=(12, 1.4 + 0.55 * max(1, len(rows))))
    for i, (_, parts) in enumerate(rows):
        left = 0.0
        for label, keys in PART_GROUPS:
            v = sum(parts.get(k, 0.0) for k in keys) * 1e3
            if v > 0:
                ax.barh(i, v, left=left, color=PART_COLOURS[label], label=label if i == 0 or label not in ax.get_legend_handles_labels()[1] else None)
                left += v
    ax.set_yticks(range(len(rows)), [r[0] for r in rows], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("time per run (ms, mean over measured runs)")
    ax.set_title(title)
    handles, labels = ax.get_legend_handles_labels()
    uniq = dict(zip(labels, handles))
    ax.legend(uniq.values(), uniq.keys(), fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return _save(fig, path)





def kernels_chart(path: str, explained: Explanation) -> str:
    """One panel per phase (their scales differ a hundredfold): per scenario, the traced step's time
    stacked by kernel class, and under it a thin hatched bar of each class's own floor."""
    plt = _plt()
    phases = [ph for ph in ("prefill", "decode") if any(s.kernels and s.kernels[ph] for s in explained.scenarios)]
    per = {ph: [(f"b{s.batch} p{s.prompt_len} g{s.gen_len}", s.kernels[ph])
                for s in explained.scenarios if s.kernels and s.kernels[ph]] for ph in phases}
    fig, axes = plt.subplots(len(phases), 1, squeeze=False,
                             figsize=(12, 1.2 + sum(0.9 + 0.7 * len(v) for v in per.values())))
    seen: set[str] = set()
    for ax, ph in zip(axes[:, 0], phases):
        for i, (_, classes) in enumerate(per[ph]):
            left = floor_left = 0.0
            for r in classes:
                colour, label = CLASS_COLOURS[r["class"]], CLASS_LABELS[r["class"]]
                ax.barh(i, r["time_s"] * 1e3, left=left, height=0.5, color=colour,
                        label=label if label not in seen else None)
                seen.add(label)
                left += r["time_s"] * 1e3
                if r["floor_s"]:
                    ax.barh(i + 0.38, r["floor_s"] * 1e3, left=floor_left, height=0.16, color=colour, hatch="//",
                            edgecolor="black", lw=0.3)
                    floor_left += r["floor_s"] * 1e3
        ax.set_yticks(range(len(per[ph])), [r[0] for r in per[ph]], fontsize=8)
        ax.invert_yaxis()
        ax.set_title(f"{ph} step", fontsize=10)
        ax.set_xlabel("time per traced step (ms); thin hatched bar: each class's own floor")
    fig.suptitle(f"Inside the step, by kernel class — {explained.model} on {explained.device}")
    handles = [h for ax in axes[:, 0] for h in ax.get_legend_handles_labels()[0]]
    labels = [lab for ax in axes[:, 0] for lab in ax.get_legend_handles_labels()[1]]
    axes[0, 0].legend(handles, labels, fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return _save(fig, path)


def steps_chart(path: str, ctx) -> str:
    """Each step's measured time against its floor, first measured run of each scenario (``ctx``: a RecordContext)."""
    record = ctx.record
    plt = _plt()
    fig, ax = plt.subplots(figsize=(10, 5))
    timer = "device"
    for sc in record.scenarios:
        run = sc.runs[0]
        xs = [st.index for st in run.steps]
        if any(st.device_ms is None for st in run.steps):
            timer = "host"
        ys = [st.time_s * 1e3 for st in run.steps]
        floor_ms = [ctx.step_cost(st).floor_s * 1e3 for st in run.steps]
        line, = ax.plot(xs, ys, "-", lw=1, label=f"batch {sc.batch} measured")
        ax.plot(xs, floor_ms, "--", lw=1, color=line.get_color(), label=f"batch {sc.batch} floor")
    ax.set_yscale("log")
    ax.set_xlabel("step (first measured run)")
    ax.set_ylabel(f"step time, ms ({timer} timer)")
    ax.set_title(f"Per-step time vs floor — {record.config['model']}")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    return _save(fig, path)


def cost_chart(path: str, rows: list[dict[str, Any]]) -> str:
    plt = _plt()
    rows = [r for r in rows if r["usd_per_million_tokens"] is not None]
    if not rows:
        raise UserError("nothing to plot: no row has both a TPS and a price")
    labels = [f"{r['model']} {r['gpu']}{' x' + str(r['gpus']) if r['gpus'] > 1 else ''} {r['provider']} b{r['batch']}"
              + (" (pred.)" if r["kind"] == "predicted" else "") for r in rows]
    fig, ax = plt.subplots(figsize=(10, 1.5 + 0.3 * len(rows)))
    colours = [KIND_COLOURS[r["kind"]] for r in rows]
    ax.barh(range(len(rows)), [r["usd_per_million_tokens"] for r in rows], color=colours)
    ax.set_yticks(range(len(rows)), labels, fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("$ per million output tokens (lower is better)")
    ax.set_title("Cost per token — blue: measured, orange: predicted")
    return _save(fig, path)


def serve_chart(path: str, title: str, summaries: list[dict[str, Any]], gpus: int = 1, per: str = "GPU") -> str:
    """Left: the frontier InferenceX plots, output tokens/s per GPU against tokens/s one user sees (1 / median
    TPOT): one point per load point, the line through those no other point beats on both axes; right:
    throughput and goodput against the offered load."""
    plt = _plt()
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(12, 4.8))
    pts = sorted((s for s in summaries if s["output_throughput_per_user"] and s["output_throughput"]),
                 key=lambda s: s["output_throughput_per_user"])
    labels = [f"{s['max_concurrency']} in flight" if s["max_concurrency"] else
              ("all at once" if s["rate"] is None else f"{s['rate']:g} req/s") for s in pts]
    xy = [(s["output_throughput_per_user"], s["output_throughput"] / gpus) for s in pts]
    ax.plot([x for x, _ in xy], [y for _, y in xy], "o")
    front = pareto(xy)
    ax.plot([x for x, _ in front], [y for _, y in front], "-", color="C0", label="frontier")
    for s, lab in zip(pts, labels):
        ax.annotate(lab, (s["output_throughput_per_user"], s["output_throughput"] / gpus), textcoords="offset points",
                    xytext=(5, 5), fontsize=7)
    ax.set_xlabel("tokens/s per user (1 / median TPOT)")
    ax.set_ylabel(f"output tokens/s per {per}")
    ax.set_title("Throughput against interactivity")
    ax.grid(True, alpha=0.3)
    xs = list(range(len(summaries)))
    names = [f"{s['max_concurrency']} in flight" if s["max_concurrency"] else
             ("all at once" if s["rate"] is None else f"{s['rate']:g}/s") for s in summaries]
    bx.plot(xs, [s["request_throughput"] or 0 for s in summaries], "o-", label="completed requests/s")
    bx.plot(xs, [s["goodput"] or 0 for s in summaries], "s--", label="goodput (within the SLO)")
    bx.set_xticks(xs, names, rotation=30, fontsize=7)
    bx.set_xlabel("offered load")
    bx.set_ylabel("requests/s")
    slo = ", ".join(f"{k} <= {v * 1e3:g} ms" for k, v in (summaries[0]["slo"] if summaries else {}).items())
    bx.set_title(f"Goodput ({slo})")
    bx.grid(True, alpha=0.3)
    bx.legend(fontsize=7)
    fig.suptitle(title)
    return _save(fig, path)


def frontier_chart(path: str, rows: list[dict[str, Any]]) -> str:
    """Several serve records side by side (compare): left, each one's output tokens/s per GPU against tokens/s per
    user with its frontier; right, $ per million output tokens at the SLO against tokens/s per user where priced,
    else goodput."""
    plt = _plt()
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(12, 4.8))
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault((r["record"], r["provider"]), []).append(r)
    priced = any(r["usd_per_mtok_output_at_slo"] for r in rows)
    for i, ((path_, prov), rs) in enumerate(groups.items()):
        r0 = rs[0]
        label = f"{r0['model']} on {r0['gpu']}" + (f" x{r0['gpus']}" if r0["gpus"] > 1 else "") + (f", {prov}" if prov else "")
        xy = [(r["output_throughput_per_user"], r["output_throughput_per_gpu"]) for r in rs
              if r["output_throughput_per_user"] and r["output_throughput_per_gpu"]]
        ax.plot([x for x, _ in xy], [y for _, y in xy], "o", color=f"C{i}", alpha=0.5)
        front = pareto(xy)
        ax.plot([x for x, _ in front], [y for _, y in front], "-", color=f"C{i}", label=label)
        key = "usd_per_mtok_output_at_slo" if priced else "goodput"
        pts = [(r["output_throughput_per_user"], r[key]) for r in rs if r["output_throughput_per_user"] and r[key]]
        bx.plot([x for x, _ in pts], [y for _, y in pts], "o-", color=f"C{i}", label=label)
    ax.set_xlabel("tokens/s per user (1 / median TPOT)")
    ax.set_ylabel("output tokens/s per GPU")
    ax.set_title("Throughput against interactivity")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7)
    bx.set_xlabel("tokens/s per user (1 / median TPOT)")
    bx.set_ylabel("$ per million output tokens at the SLO" if priced else "goodput (requests/s within the SLO)")
    bx.set_title("Cost at the SLO (lower is better)" if priced else "Goodput (no price matched)")
    if priced:
        bx.set_yscale("log")
    bx.grid(True, alpha=0.3)
    bx.legend(fontsize=7)
    return _save(fig, path)


def serve_timeline(path: str, title: str, points: list) -> str:
    """A serve record over time, one row per load point (``points``: LoadPoint): requests in each engine step and
    requests waiting (vLLM's scheduler) on the left axis, KV cache in use on the right."""
    plt = _plt()
    fig, axes = plt.subplots(len(points), 1, figsize=(11, 2.6 * len(points)), squeeze=False)
    for ax, p in zip(axes[:, 0], points):
        steps = sorted(p.steps, key=lambda s: s.t_start_s)
        ax.step([s.t_start_s for s in steps], [len(s.seqs) for s in steps], where="post", lw=0.8,
                label="requests in the step")
        mixed = [s for s in steps if s.prefill_tokens]
        ax.plot([s.t_start_s for s in mixed], [len(s.seqs) for s in mixed], "|", color="C3", ms=8,
                label="step with prefill")
        if p.scheduler:
            ax.plot([s.t_s for s in p.scheduler], [s.waiting for s in p.scheduler], lw=0.8, color="C1", label="waiting")
            kv = ax.twinx()
            kv.plot([s.t_s for s in p.scheduler], [100 * s.kv_cache_usage for s in p.scheduler], lw=0.8, color="C2",
                    alpha=0.7)
            kv.set_ylabel("KV cache in use, %", color="C2", fontsize=8)
            kv.set_ylim(0, max(5.0, 110 * max(s.kv_cache_usage for s in p.scheduler)))
        label = f"{p.max_concurrency} in flight" if p.max_concurrency else (
            "all at once" if p.rate is None else f"{p.rate:g} req/s")
        ax.set_title(label, fontsize=9)
        ax.set_ylabel("requests", fontsize=8)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7, loc="upper left")
    axes[-1, 0].set_xlabel("s from the load point's start")
    fig.suptitle(title)
    return _save(fig, path)
