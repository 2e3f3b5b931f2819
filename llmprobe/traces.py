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
import re
from collections import defaultdict
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
