"""Step timing inside vLLM's worker processes (vLLM >= 0.10, V1 engine).

``StepTimerExtension`` is mixed into every worker through the ``worker_extension_cls`` engine
argument; ``llm.collective_rpc("llmprobe_install")`` then wraps that worker instance's own
``execute_model`` and ``sample_tokens``. Wrapping at the worker works with Model Runner V1 (the CPU
build) and V2 (the GPU build, which has no separate forward method) alike, in-process, with
multiprocessing and on every tensor-parallel rank.

On CUDA, events are recorded on the current stream right before ``execute_model`` and right after
the step's last call; nothing synchronizes inside a step (async scheduling returns before the
kernels finish), and the events are resolved only in ``llmprobe_fetch``.

MoE models: the loader installs expert counters before vLLM compiles the model (engines/routing.py);
each step's counts are snapshotted on the device in ``end`` and read back in ``llmprobe_fetch``.

Traced runs (``llmprobe_trace`` before the run, ``llmprobe_trace_finish`` after) put a window of steps
under the PyTorch profiler (engines/tracing.py), started and stopped outside the step timers; each
traced step is annotated ``llmprobe::step[p=…,d=…]`` and its sampler ``llmprobe::sample_tokens``.
On CUDA the traced steps run without CUDA-graph replay unless asked (``_GraphSwitch``): CUPTI before
CUDA 13.1 Update 1 gives the kernels of a replayed graph wrong correlation ids in every profiling
session after the first, so a replayed step cannot be split into its kernels.
"""

from __future__ import annotations

import sys
import time
from typing import Any

from .routing import merge_rank_experts, patch_vllm_loader
from .tracing import step_scope

if sys.modules.get("vllm") is not None:   # a worker importing its extension class, before it loads the model;
    patch_vllm_loader()      # elsewhere the engine patches after import_vllm (vLLM 0.26 configures logging on import)


def _rows(so, prompt_lens: dict[str, int]) -> list[list[Any]]:
    """[request, new tokens, cached tokens, "p"|"d"] for every request the step schedules."""
    rows = []
    for r in so.scheduled_new_reqs:
        prompt_lens[r.req_id] = len(r.prompt_token_ids or ()) or prompt_lens.get(r.req_id, 0)
        rows.append([r.req_id, so.num_scheduled_tokens[r.req_id], r.num_computed_tokens, "p"])
    c = so.scheduled_cached_reqs
    resumed = getattr(c, "resumed_req_ids", None) or set()
    for i, rid in enumerate(c.req_ids):
        done = c.num_computed_tokens[i]
        plen = prompt_lens.get(rid)
        # Still in prefill: a chunked prompt not yet consumed, or a preempted request recomputing.
        if plen is not None:
            prefill = rid in resumed or done < plen
        else:
            prefill = rid in resumed or c.num_output_tokens[i] == 0
        rows.append([rid, so.num_scheduled_tokens[rid], done, "p" if prefill else "d"])
    return rows


class _GraphSwitch:
    """Turns CUDA-graph replay off for the steps run while ``off`` is set, through the model runner's own choice
    of graph per step (vLLM 0.26 and 0.32): Model Runner V1's ``cudagraph_dispatcher.dispatch`` -> (mode,
    descriptor), V2's ``cudagraph_manager.dispatch`` -> descriptor. A NONE mode runs the compiled model without
    graphs, as vLLM does for a batch it captured no graph for; the padded token count is kept."""

    def __init__(self, runner):
        from vllm.config import CUDAGraphMode
        self.off = False
        none = CUDAGraphMode.NONE
        d = getattr(runner, "cudagraph_dispatcher", None)
        if d is not None:
            dispatch = d.dispatch

            def v1(*args, **kwargs):
                mode, desc = dispatch(*args, **kwargs)
                if self.off and mode != none:
                    return none, _replace(desc, num_reqs=None, uniform=False)
                return mode, desc
            d.dispatch = v1
        m = getattr(runner, "cudagraph_manager", None)
        if m is not None:
            dispatch2 = m.dispatch

            def v2(*args, **kwargs):
                desc = dispatch2(*args, **kwargs)
                if self.off and desc.cg_mode != none:
                    return _replace(desc, cg_mode=none, num_reqs=None, uniform_token_count=None)
                return desc
            m.dispatch = v2
        self.installed = d is not None or m is not None


def _replace(desc, **changes):
    """A dispatch descriptor with ``changes``, only those fields this vLLM's descriptor has."""
    import dataclasses
    have = {f.name for f in dataclasses.fields(desc)}
    return dataclasses.replace(desc, **{k: v for k, v in changes.items() if k in have})


class _StepState:
    def __init__(self, device_timers: bool):
        self.clock = None
        if device_timers:
            import torch
            if torch.cuda.is_available():
                from ..timing import CudaClock
                self.clock = CudaClock()
        self.steps: list[dict[str, Any]] = []
        self.open: dict[str, Any] | None = None
        self.prompt_lens: dict[str, int] = {}
        self.last_end: float | None = None
        self.window = None      # tracing.ProfilerWindow of a traced run
        self.scope = None       # the open step annotation of a traced step
        self.experts = None     # routing.ExpertCounter of a MoE model
        self.graphs = None      # _GraphSwitch: CUDA-graph replay off in the traced steps
        self.eager_traced = False

    def begin(self, so) -> bool:
        """Open the step; True if it is traced."""
        rows = _rows(so, self.prompt_lens)
        traced = self.window is not None and self.window.before(len(self.steps))   # the profiler starts here
        t = time.perf_counter()
        self.open = {"t_start": t, "gap_ms": None if self.last_end is None else (t - self.last_end) * 1e3,
                     "seqs": rows, "host_s": 0.0,
                     "ev": [self.clock.event(), None, None] if self.clock else None}
        self.open["_t"] = t
        if traced:   # the annotation lies inside the timed span, so a step's classes never outweigh its time
            pre = sum(r[1] for r in rows if r[3] == "p")
            self.scope = self.window.scope(step_scope(pre, sum(r[1] for r in rows) - pre))
            self.scope.__enter__()
        return traced

    def _close_scope(self) -> None:
        """The step annotation spans execute_model only; sample_tokens has its own (the pause between is no step's)."""
        if self.scope is not None:
            self.scope.__exit__(None, None, None)
            self.scope = None

    def pause(self) -> None:
        """execute_model returned; the step ends with sample_tokens (or right here if it returned output)."""
        self._close_scope()
        if self.open is not None:
            self.open["host_s"] += time.perf_counter() - self.open.pop("_t", time.perf_counter())

    def resume(self) -> None:
        """sample_tokens starts: the rest of the step is the sampler's (and, on Model Runner V2, the logits')."""
        if self.open is not None:
            self.open["_t"] = self.open["_sample_t"] = time.perf_counter()
            if self.open["ev"] is not None:
                self.open["ev"][2] = self.clock.event()

    def end(self) -> None:
        rec, self.open = self.open, None
        if rec is None:
            return
        self._close_scope()
        t = time.perf_counter()
        if "_t" in rec:
            rec["host_s"] += t - rec.pop("_t")
        if "_sample_t" in rec:
            rec["sample_host_ms"] = (t - rec.pop("_sample_t")) * 1e3
        if rec["ev"] is not None:
            rec["ev"][1] = self.clock.event()
        rec["t_end"] = self.last_end = t
        if self.experts is not None:   # after the step's end event: the copy is no step's time
            self.experts.snapshot()
        self.steps.append(rec)
        if self.window is not None:
            self.window.after(len(self.steps) - 1)   # the profiler stops here

    def fetch(self) -> list[dict[str, Any]]:
        if self.clock is not None and self.steps:
            self.clock.synchronize()
        loads = self.experts.drain() if self.experts is not None else []
        if self.experts is not None and len(loads) != len(self.steps):   # steps from before the counters: none kept
            loads = [None] * len(self.steps)
        out = []
        for k, rec in enumerate(self.steps):
            if loads:
                rec["experts"] = loads[k]
            ev = rec.pop("ev")
            rec["device_ms"] = self.clock.elapsed_s(ev[0], ev[1]) * 1e3 if ev else None
            if ev and ev[2] is not None:
                rec["sample_device_ms"] = self.clock.elapsed_s(ev[2], ev[1]) * 1e3
            rec["host_ms"] = rec.pop("host_s") * 1e3
            out.append(rec)
        self.steps = []
        self.last_end = None
        for rid in [r for r in self.prompt_lens if r not in {s[0] for rec in out for s in rec["seqs"]}]:
            del self.prompt_lens[rid]
        return out


def _moe_method(method) -> str:
    """A fused-MoE layer's method class and, where vLLM names them, the backend and expert kernels it chose."""
    parts = [type(method).__name__]
    for attr in ("unquantized_backend", "experts_cls"):
        v = getattr(method, attr, None)
        if v is not None:
            parts.append(f"{attr}={getattr(v, 'name', None) or getattr(v, '__name__', None) or v}")
    return " ".join(parts)


class StepTimerExtension:
    """Worker mix-in: methods only (vLLM forbids overriding worker methods through the extension)."""

    def llmprobe_install(self, device_timers: bool = True) -> int:
        if getattr(self, "_llmprobe_state", None) is None:
            from torch._C._autograd import _profiler_enabled as profiler_on
            from torch.profiler import record_function

            from ..traces import SAMPLE_ANNOTATION
            state = _StepState(device_timers)
            execute_model, sample_tokens = self.execute_model, self.sample_tokens

            def timed_execute_model(scheduler_output, *args, **kwargs):
                if scheduler_output.total_num_scheduled_tokens == 0:
                    return execute_model(scheduler_output, *args, **kwargs)
                if state.experts is not None:   # before the step's timers: padded rows are not counted
                    state.experts.set_tokens(scheduler_output.total_num_scheduled_tokens)
                eager = state.begin(scheduler_output) and state.eager_traced and state.graphs is not None
                if eager:   # the runner picks the step's graph inside execute_model, on this thread
                    state.graphs.off = True
                try:
                    out = execute_model(scheduler_output, *args, **kwargs)
                finally:
                    if eager:
                        state.graphs.off = False
                if out is None:   # the step goes on in sample_tokens
                    state.pause()
                else:
                    state.end()
                return out

            def timed_sample_tokens(*args, **kwargs):
                state.resume()
                if profiler_on():   # a traced step: vLLM annotates execute_model only, the sampler is ours
                    with record_function(SAMPLE_ANNOTATION):
                        out = sample_tokens(*args, **kwargs)
                else:
                    out = sample_tokens(*args, **kwargs)
                state.end()
                return out

            self.execute_model, self.sample_tokens = timed_execute_model, timed_sample_tokens
            state.experts = getattr(self._model(), "_llmprobe_experts", None)
            if state.experts is not None:
                state.experts.reset()   # warm-up and graph-capture forwards are no step's
            self._llmprobe_state = state
        return self._rank()

    def llmprobe_uninstall(self) -> int:
        """Back to the class's own methods: the same process measured without hooks."""
        for name in ("execute_model", "sample_tokens"):
            self.__dict__.pop(name, None)
        self._llmprobe_state = None
        return self._rank()

    def llmprobe_code_path(self) -> dict[str, Any]:
        """Which code ran, read off this worker's own objects rather than assumed from the version: the model
        runner's class (vLLM's GPU build picks Model Runner V1 or V2 per model), each attention layer's
        backend, and each fused-MoE layer's method class."""
        runner = getattr(self, "model_runner", None)
        model = self._model()
        attention, moe = set(), set()
        for m in (model.modules() if model is not None else ()):
            backend = getattr(m, "attn_backend", None)
            if backend is not None:
                name = getattr(backend, "get_name", None)
                attention.add(name() if callable(name) else getattr(backend, "__name__", str(backend)))
            method = getattr(m, "quant_method", None)
            if method is not None and "MoE" in type(method).__name__:
                moe.add(_moe_method(method))
        for groups in getattr(runner, "attn_groups", None) or ():   # the runner's own record, where it keeps one
            for g in groups:
                name = getattr(getattr(g, "backend", None), "get_name", None)
                if callable(name):
                    attention.add(name())
        # the worker settles the graph mode against what the attention backend supports, after the engine's
        # config was built: read it here (Model Runner V1's dispatcher, V2's manager), not from the caller's copy
        graphs = next((getattr(getattr(runner, a, None), "cudagraph_mode", None)
                       for a in ("cudagraph_dispatcher", "cudagraph_manager") if getattr(runner, a, None) is not None), None)
        comp = getattr(getattr(self, "vllm_config", None), "compilation_config", None)
        cls = type(runner) if runner is not None else None
        out = {"model_runner": f"{cls.__module__}.{cls.__qualname__}" if cls else None,
               "attention_backends": sorted(attention), "moe_methods": sorted(moe)}
        if graphs is not None:
            out["cudagraph_mode"] = str(getattr(graphs, "name", graphs))
        if getattr(comp, "mode", None) is not None:
            out["compilation_level"] = str(getattr(comp.mode, "name", comp.mode))
        return out

    def llmprobe_trace(self, first: int, steps: int, path_prefix: str, eager: bool = False) -> dict[str, Any]:
        """Trace steps [first, first + steps) of the next run into ``<path_prefix>_rank<r>.pt.trace.json.gz``;
        ``eager``: on CUDA, run those steps without CUDA-graph replay. Returns the rank and how the traced steps
        ran on CUDA: "off in traced steps", or "as in the measured steps" (None on a CPU)."""
        import torch

        from .tracing import ProfilerWindow
        state = self._llmprobe_state
        if state.window is not None:
            state.window.finish()
        cuda = torch.cuda.is_available()
        if eager and cuda and state.graphs is None:
            state.graphs = _GraphSwitch(getattr(self, "model_runner", None))
        state.eager_traced = eager and cuda and state.graphs.installed
        state.window = ProfilerWindow(first, steps, f"{path_prefix}_rank{self._rank()}.pt.trace.json.gz", cuda=cuda)
        return {"rank": self._rank(), "cuda_graphs": None if not cuda else
                "off in traced steps" if state.eager_traced else "as in the measured steps"}

    def llmprobe_trace_finish(self) -> dict[str, Any] | None:
        """End the traced window (stopping the profiler if the run ended inside it) and write its file."""
        state = getattr(self, "_llmprobe_state", None)
        if state is None or state.window is None:
            return None
        window, state.window = state.window, None
        state._close_scope()
        return window.finish()

    def llmprobe_fetch(self) -> list[dict[str, Any]]:
        state = getattr(self, "_llmprobe_state", None)
        return state.fetch() if state is not None else []

    def _model(self):
        """The worker's model (unwrapped from any CUDA-graph wrapper), or None."""
        runner = getattr(self, "model_runner", None)
        for get in (lambda: runner.get_model(), lambda: runner.model):
            try:
                return get()
            except Exception:   # a runner without that accessor: try the next
                continue
        return None

    def _rank(self) -> int:
        return int(getattr(self, "rank", 0) or 0)


def merge_ranks(per_rank: list[list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """One record per step from every rank's: the slowest rank's times, rank 0's classification."""
    if not per_rank:
        return []
    n = min(len(r) for r in per_rank)
    merged = []
    for i in range(n):
        recs = [r[i] for r in per_rank]
        base = dict(recs[0])
        if len(recs) > 1:
            dev = [r["device_ms"] for r in recs]
            base["rank_device_ms"] = dev
            base["rank_host_ms"] = [r["host_ms"] for r in recs]
            base["device_ms"] = max(dev) if all(d is not None for d in dev) else None
            base["host_ms"] = max(r["host_ms"] for r in recs)
            if any(r.get("experts") for r in recs):
                base["experts"] = merge_rank_experts([r.get("experts") for r in recs])
        merged.append(base)
    return merged
