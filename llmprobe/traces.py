"""Inside traced steps: which kernels (GPU) or operators (CPU) a step's time went to, by class.

A traced step is read from a PyTorch profiler trace (Chrome JSON, written by llmprobe's profiler
window in vLLM's workers or the hf engine, engines/tracing.py). Its window is the step's own
annotation — ``llmprobe::step[p=…,d=…]`` around ``execute_model`` (or the hf forward), plus
``llmprobe::sample_tokens`` around vLLM's ``sample_tokens``; traces written by vLLM's own profiler
(``execute_context_…``) read the same. Time inside:

- GPU: every kernel, memcpy and memset whose launching host call lies in the window, at its
  device duration (CUPTI). A kernel replayed from a CUDA graph must map to a ``cudaGraphLaunch``
  inside a step (CUPTI before CUDA 13.1 Update 1 gives graph replays wrong correlation ids in every
  profiling session after the first): otherwise the trace is refused, never misattributed. A GPU
  trace without device events is refused too, never read as a CPU one.
- CPU: every operator's *self* time (its duration less its child operators'), on the thread that
  ran it, so nested ``aten::linear → aten::mm`` is not counted twice; and the host's own time (vLLM's
  Python: input preparation, bookkeeping) as class "host", split by the innermost annotation it ran
  in — an annotation's duration less everything nested directly in it.

Each is classified by the backend's name table (``data/kernel_classes.toml``): first matching rule
wins, a rule may require an enclosing scope; what no rule matches is "other", listed by name.
"""

from __future__ import annotations

import gzip
import json
import os
import re
import statistics
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

from .errors import UserError

CLASSES = ("dense_gemm", "lm_head", "moe_routing", "moe_experts", "attention", "elementwise", "communication",
           "sampling", "memcpy", "host", "other")
STEP_ANNOTATIONS = re.compile(r"^(execute_context_(\d+)\((\d+)\)_generation_(\d+)\((\d+)\)|execute_\d+_context_.*"
                              r"|llmprobe::step(\[p=(\d+),d=(\d+)\])?)$")
SAMPLE_ANNOTATION = "llmprobe::sample_tokens"
DEVICE_CATS = ("kernel", "gpu_memcpy", "gpu_memset")
GPU_ONLY_CATS = DEVICE_CATS + ("gpu_user_annotation",)   # the GPU's copy of an annotation is no host window
HOST_PREFIX = "host: "      # an item of host time, named after the annotation it ran in
GRAPH_LAUNCH = re.compile(r"GraphLaunch")


@dataclass(frozen=True)
class Rule:
    cls: str
    name: re.Pattern
    scope: re.Pattern | None


@lru_cache(maxsize=None)
def rules(table: str) -> tuple[Rule, ...]:
    import tomllib
    doc = tomllib.loads(resources.files("llmprobe.data").joinpath("kernel_classes.toml").read_text())
    if table not in doc:
        raise UserError(f"no kernel-class table {table!r} (have {', '.join(doc)})")
    out = []
    for r in doc[table]:
        if r["class"] not in CLASSES:
            raise ValueError(f"kernel_classes.toml: {table} names an unknown class {r['class']!r}")
        out.append(Rule(r["class"], re.compile(r["name"], re.I), re.compile(r["scope"], re.I) if "scope" in r else None))
    return tuple(out)


def classify(table: str, name: str, scopes: tuple[str, ...] = ()) -> str:
    if name.startswith(HOST_PREFIX):
        return "host"
    for r in rules(table):
        if r.name.search(name) and (r.scope is None or any(r.scope.search(s) for s in scopes)):
            return r.cls
    return "other"


@dataclass
class TracedStep:
    """One step as the trace saw it: its annotation, the (name, enclosing scopes, seconds) inside, and how
    many of its kernels were replayed from CUDA graphs."""
    annotation: str
    items: list[tuple[str, tuple[str, ...], float]]
    graph_kernels: int = 0

    @property
    def tokens(self) -> tuple[int, int] | None:
        """(prefill tokens, decode tokens) from the step's annotation, where it has them."""
        m = STEP_ANNOTATIONS.match(self.annotation)
        if m and m.group(2) is not None:
            return int(m.group(3)), int(m.group(5))
        if m and m.group(7) is not None:
            return int(m.group(7)), int(m.group(8))
        return None


def load(path: str | Path) -> list[dict[str, Any]]:
    p = Path(path)
    try:
        raw = gzip.open(p, "rt").read() if p.suffix == ".gz" else p.read_text()
        doc = json.loads(raw)
    except (OSError, ValueError) as e:
        raise UserError(f"cannot read trace {p}: {e}") from None
    events = doc.get("traceEvents", doc) if isinstance(doc, dict) else doc
    if not isinstance(events, list):
        raise UserError(f"{p} is not a Chrome trace (no traceEvents)")
    return [e for e in events if isinstance(e, dict) and e.get("ph") == "X"]


def _nest(events: list[dict[str, Any]]) -> dict[int, tuple[float, tuple[str, ...]]]:
    """Per event (by index): its self time (us, less nested cpu_op children) and the names enclosing it."""
    out: dict[int, tuple[float, tuple[str, ...]]] = {}
    by_thread: dict[tuple, list[int]] = defaultdict(list)
    for i, e in enumerate(events):
        by_thread[(e.get("pid"), e.get("tid"))].append(i)
    for idx in by_thread.values():
        idx.sort(key=lambda i: (events[i]["ts"], -events[i].get("dur", 0)))
        stack: list[int] = []
        child_us: dict[int, float] = defaultdict(float)
        for i in idx:
            e = events[i]
            while stack and events[stack[-1]]["ts"] + events[stack[-1]].get("dur", 0) <= e["ts"]:
                stack.pop()
            if stack and e.get("cat") == "cpu_op":
                parent = next((j for j in reversed(stack) if events[j].get("cat") == "cpu_op"), None)
                if parent is not None:
                    child_us[parent] += e.get("dur", 0)
            out[i] = (0.0, tuple(events[j]["name"] for j in stack))
            stack.append(i)
        for i in idx:
            out[i] = (max(events[i].get("dur", 0) - child_us[i], 0.0), out[i][1])
    return out


def _host_items(host: list[dict[str, Any]], windows, step_of) -> list[list[tuple[str, tuple[str, ...], float]]]:
    """Per step: the host's own time in each annotation inside it (its duration less what is nested
    directly in it), on the thread that opened the step's annotation."""
    out: list[list[tuple[str, tuple[str, ...], float]]] = [[] for _ in windows]
    threads = {(m["pid"], m["tid"]) for m in (w[2] for w in windows)}
    for key in threads:
        evs = sorted((e for e in host if (e.get("pid"), e.get("tid")) == key and e.get("cat") in ("cpu_op", "user_annotation")),
                     key=lambda e: (e["ts"], -e.get("dur", 0)))
        stack: list[dict[str, Any]] = []
        nested: dict[int, float] = defaultdict(float)
        for e in evs:
            while stack and stack[-1]["ts"] + stack[-1].get("dur", 0) <= e["ts"]:
                stack.pop()
            if stack:
                nested[id(stack[-1])] += e.get("dur", 0)
            stack.append(e)
        for e in evs:
            if e.get("cat") != "user_annotation":
                continue
            k = step_of(e["ts"])
            if k is None:
                continue
            own = max(e.get("dur", 0) - nested[id(e)], 0.0)
            name = "llmprobe::step" if STEP_ANNOTATIONS.match(e["name"]) else e["name"]
            out[k].append((HOST_PREFIX + name, (), own * 1e-6))
    return out


def steps(events: list[dict[str, Any]], device: bool | None = None) -> list[TracedStep]:
    """The traced steps of one trace file, in order, with what ran inside each. ``device``: True for a
    trace of a GPU run (refused without device events), False for a CPU one, None to go by its events."""
    host = [e for e in events if e.get("cat") not in GPU_ONLY_CATS]
    marks = sorted((e for e in host if e.get("cat") == "user_annotation" and STEP_ANNOTATIONS.match(e.get("name", ""))),
                   key=lambda e: e["ts"])
    samples = sorted((e for e in host if e.get("name") == SAMPLE_ANNOTATION), key=lambda e: e["ts"])
    windows = []
    for k, m in enumerate(marks):
        nxt = marks[k + 1]["ts"] if k + 1 < len(marks) else float("inf")
        spans = [(m["ts"], m["ts"] + m.get("dur", 0))]
        spans += [(s["ts"], s["ts"] + s.get("dur", 0)) for s in samples if spans[0][1] <= s["ts"] < nxt]
        windows.append((m["name"], spans, m))
    if not windows:
        return []
    nest = _nest(host)
    pos = {id(e): i for i, e in enumerate(host)}
    out = [TracedStep(name, []) for name, _, _ in windows]

    def step_of(ts: float) -> int | None:
        for k, (_, spans, _) in enumerate(windows):
            if any(a <= ts < b for a, b in spans):
                return k
        return None
    device_events = [e for e in events if e.get("cat") in DEVICE_CATS]
    if device and not device_events:
        raise UserError("the GPU trace holds no device events (kernels, copies): CUPTI recorded nothing, so the "
                        "steps cannot be split into kernel classes")
    if device_events:
        launch = {e["args"]["correlation"]: e for e in host
                  if e.get("cat") in ("cuda_runtime", "cuda_driver") and "correlation" in e.get("args", {})}
        stray = 0
        for d in device_events:
            args = d.get("args", {})
            la = launch.get(args.get("correlation"))
            k = step_of(la["ts"]) if la is not None else None
            if "graph id" in args:
                if k is None or not GRAPH_LAUNCH.search(la["name"]):
                    stray += 1
                    continue
                out[k].graph_kernels += 1
            if k is not None:
                scopes = nest[pos[id(la)]][1]
                out[k].items.append((d["name"], scopes, d.get("dur", 0) * 1e-6))
        if stray:
            raise UserError(f"{stray} kernel(s) replayed from CUDA graphs do not map to a cudaGraphLaunch inside a "
                            "traced step (CUPTI before CUDA 13.1 Update 1 gives graph replays wrong correlation ids "
                            "after the first profiling session): their time cannot be attributed")
    else:
        for e in host:
            if e.get("cat") != "cpu_op":
                continue
            k = step_of(e["ts"])
            if k is not None:
                self_us, scopes = nest[pos[id(e)]]
                out[k].items.append((e["name"], scopes, self_us * 1e-6))
        for k, items in enumerate(_host_items(host, windows, step_of)):
            out[k].items += items
    return out


def kernel_rows(traced: list[tuple[str, TracedStep]], table: str) -> list[dict[str, Any]]:
    """[(phase, step)] → one row per (phase, class, name): calls and time per traced step of that phase (mean)."""
    n = defaultdict(int)
    acc: dict[tuple[str, str, str], list[float]] = defaultdict(lambda: [0, 0.0])
    for phase, st in traced:
        n[phase] += 1
        for name, scopes, t in st.items:
            row = acc[(phase, classify(table, name, scopes), name)]
            row[0] += 1
            row[1] += t
    return sorted(({"phase": ph, "class": c, "name": name, "calls": calls / n[ph], "time_s": t / n[ph]}
                   for (ph, c, name), (calls, t) in acc.items()), key=lambda r: (r["phase"], -r["time_s"]))


def _step_s(step: dict[str, Any]) -> float:
    return (step["device_ms"] if step.get("device_ms") is not None else step["host_ms"]) / 1e3


def _phase(step: dict[str, Any]) -> str:
    return "prefill" if step["prefill_tokens"] else "decode"   # a mixed step carries a prefill chunk


def trace_scenario(run: Callable[[Any], dict[str, Any]], measured: list[dict[str, Any]], n: int, table: str,
                   record_dir: str, tag: str, device: bool = False) -> dict[str, Any]:
    """Extra runs of a scenario under the profiler, after its measured runs: ``n`` prefill steps (the
    prefill of as many runs as needed) and ``n`` consecutive decode steps from the middle of one run's
    decode, so their context is the run's average. ``run(TraceSpec)`` runs the scenario once, traced;
    ``device``: the run is on a GPU (its traces must hold kernels). Returns the scenario's "trace" record;
    nothing here feeds the timing summary. Traced decode steps of one batch must agree in how many
    kernels they replayed from CUDA graphs, else the trace is refused (a mis-correlated replay)."""
    from .engines.base import TraceSpec
    steps0 = measured[0]["steps"]
    p = next((k for k, st in enumerate(steps0) if not st["prefill_tokens"]), len(steps0))
    plan, done = [], 0
    while done < n and p:
        plan.append(TraceSpec(0, min(p, n - done), f"{tag}-prefill-{len(plan)}"))
        done += plan[-1].steps
    d = len(steps0) - p
    if d:
        k = min(n, d)
        plan.append(TraceSpec(p + (d - k) // 2, k, f"{tag}-decode"))
    traced: list[tuple[str, TracedStep]] = []
    files, meta = [], []
    graph_counts: dict[tuple[str, str], set[int]] = {}
    for spec in plan:
        out = run(spec)
        files += out.get("trace_files", [])
        recorded = out["steps"][spec.first:spec.first + spec.steps]
        for w in out.get("trace_windows", []):   # the profiler's start and stop belong to no timed step
            if recorded and not (w["started_s"] <= recorded[0]["t_start_s"] and w["stopped_s"] >= recorded[-1]["t_end_s"]):
                raise UserError(f"the profiler ran from {w['started_s']:.4f} s to {w['stopped_s']:.4f} s, inside the traced "
                                f"steps {recorded[0]['t_start_s']:.4f}-{recorded[-1]['t_end_s']:.4f} s: their times include it")
        if not out.get("trace_files"):
            raise UserError(f"the traced run wrote no trace file for steps {spec.first}-{spec.first + spec.steps - 1}")
        for path in out.get("trace_files", []):
            seen = steps(load(path), device=device)
            if len(seen) != len(recorded):
                raise UserError(f"{path}: {len(seen)} traced steps, {len(recorded)} expected (steps {spec.first}-"
                                f"{spec.first + spec.steps - 1}); the trace and the step records disagree")
            for st, rec in zip(seen, recorded):
                if st.tokens is not None and st.tokens != (rec["prefill_tokens"], rec["decode_tokens"]):
                    raise UserError(f"{path}: traced step {st.annotation} is not step {rec['index']} "
                                    f"({rec['prefill_tokens']} prefill, {rec['decode_tokens']} decode tokens)")
                traced.append((_phase(rec), st))
                graph_counts.setdefault((_phase(rec), path), set()).add(st.graph_kernels)
        for rec in recorded:
            untraced = [_step_s(m["steps"][rec["index"]]) for m in measured if len(m["steps"]) > rec["index"]]
            meta.append({"phase": _phase(rec), "index": rec["index"], "seqs": [[r[1], r[2]] for r in rec["seqs"]],
                         "time_s": _step_s(rec), "untraced_time_s": statistics.median(untraced) if untraced else None})
    for (ph, path), counts in graph_counts.items():
        if ph == "decode" and len(counts) > 1:
            raise UserError(f"{path}: traced decode steps replayed {sorted(counts)} kernels from CUDA graphs; steps of "
                            "one batch replay the same graph, so the trace mis-attributes graph replays")
    phases = ("prefill", "decode")
    mean = {ph: [m for m in meta if m["phase"] == ph] for ph in phases}
    ranks = max(1, len(traced) // max(1, len(meta)))
    return {"steps_traced": {ph: len(mean[ph]) for ph in phases}, "ranks": ranks, "table": table,
            "profiler_outside_steps": True,
            "trace_files": [os.path.relpath(f, record_dir) for f in files],
            "kernels": kernel_rows(traced, table), "steps": meta,
            "step_time_s": {ph: statistics.fmean(m["time_s"] for m in v) if v else None for ph, v in mean.items()},
            "overhead": {ph: (statistics.fmean(m["time_s"] for m in v) / statistics.fmean(m["untraced_time_s"] for m in v))
                         if v and all(m["untraced_time_s"] for m in v) else None for ph, v in mean.items()}}


LABELS = {"dense_gemm": "dense GEMMs", "lm_head": "LM head", "moe_routing": "MoE routing", "moe_experts": "MoE expert GEMMs",
          "attention": "attention", "elementwise": "elementwise", "communication": "communication",
          "sampling": "sampling", "memcpy": "memory copies", "host": "host (the engine's Python)",
          "other": "other (unclassified)",
          "unattributed": "unattributed (host gaps, launches, idle)"}


def explain_kernels(trace: dict[str, Any] | None, f) -> dict[str, Any] | None:
    """Per phase: each class's time per traced step, share of the step, own floor on these ceilings and
    efficiency; the unattributed rest; the class furthest from its floor. None without a trace."""
    from .costs import class_costs
    if not trace or "kernels" not in trace:
        return None
    out: dict[str, Any] = {"coverage": {}, "headline": {}}
    for ph in ("prefill", "decode"):
        steps_ = [s for s in trace["steps"] if s["phase"] == ph]
        if not steps_:
            out[ph], out["coverage"][ph] = [], None
            continue
        step_s = statistics.fmean(s["time_s"] for s in steps_)
        costs = [class_costs(f, [tuple(q) for q in s["seqs"]]) for s in steps_]
        times: dict[str, float] = defaultdict(float)
        for r in trace["kernels"]:
            if r["phase"] == ph:
                times[r["class"]] += r["time_s"]
        rows = []
        for cls in CLASSES:
            t = times.get(cls, 0.0)
            if not t:   # a class with a floor but no time here (the hf step has no sampler in it): nothing to show
                continue
            have = [c[cls] for c in costs if cls in c]
            floor = statistics.fmean(c.floor_s for c in have) if have else None
            nbytes = statistics.fmean(c.bytes for c in have) if have else None
            flops = statistics.fmean(c.flops for c in have) if have else None
            bound = have[0].bound if have else None
            rows.append({"class": cls, "time_s": t, "share": t / step_s, "floor_s": floor,
                         "efficiency": floor / t if floor is not None and t > 0 else None, "bound": bound,
                         "achieved_bytes_per_s": nbytes / t if nbytes and t > 0 else None,
                         "achieved_flops_per_s": flops / t if flops and t > 0 else None})
        attributed = sum(r["time_s"] for r in rows)
        rows.append({"class": "unattributed", "time_s": max(step_s - attributed, 0.0),
                     "share": max(step_s - attributed, 0.0) / step_s, "floor_s": None, "efficiency": None,
                     "bound": None, "achieved_bytes_per_s": None, "achieved_flops_per_s": None})
        out[ph] = rows
        out["coverage"][ph] = attributed / step_s
        out["headline"][ph] = _headline(rows, step_s, ph, f)
    out["step_time_s"] = trace.get("step_time_s")
    out["overhead"] = trace.get("overhead")
    out["steps_traced"] = trace.get("steps_traced")
    return out


def _headline(rows: list[dict[str, Any]], step_s: float, phase: str, f) -> str | None:
    """The class with the most time above its own floor, and its share of the whole step's gap."""
    priced = [r for r in rows if r["floor_s"] is not None and r["time_s"] > 0]
    if not priced:
        return None
    worst = max(priced, key=lambda r: r["time_s"] - r["floor_s"])
    gap = step_s - sum(r["floor_s"] for r in priced)
    what = {"memory": "HBM bandwidth" if f.ceilings.gpu_id not in (None, "cpu") else "memory bandwidth", "compute": "peak FLOP/s",
            "communication": "the collectives' floor"}[worst["bound"]]
    share = (worst["time_s"] - worst["floor_s"]) / gap if gap > 0 else None
    return (f"{LABELS[worst['class']]} at {worst['efficiency']:.0%} of {what}"
            + (f": {share:.0%} of the {phase} gap" if share is not None else ""))
