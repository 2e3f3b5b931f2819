"""The transformers ("hf") backend: the reference path for machines without vLLM.

The model is built from its config with random weights (or loaded from a local checkpoint),
generates with a static KV cache, and every forward call is timed by a pre/post hook on the
model: CUDA events on GPU, the host clock on CPU. Token arrival times come from a streamer, which
transformers calls after each step once the new tokens are on the host.
"""

from __future__ import annotations

import time
from typing import Any

from ..dtypes import torch_name
from ..errors import MissingDependency, UserError
from ..records import Admission, Request, Run, Step
from .base import Engine, EngineOptions, TraceSpec
from .routing import ExpertCounter, set_routing
from .tracing import ProfilerWindow, step_scope



class _Stamps:
    """A transformers streamer that only timestamps: put() gets the prompt, then each new token column."""

    def __init__(self):
        self.t0 = 0.0
        self.times: list[float] = []
        self._prompt_seen = False

    def put(self, value) -> None:
        if not self._prompt_seen:
            self._prompt_seen = True
            return
        self.times.append(time.perf_counter() - self.t0)

    def end(self) -> None:
        pass


# modules whose calls get a profiler scope in traced steps: what the class table (data/kernel_classes.toml)
# needs to tell the logits matmul, attention, the MoE router and the experts from other matmuls
_SCOPED = ("lm_head", "self_attn", "mlp", "block_sparse_moe", "experts", "gate", "router")


class _Tracer:
    """Steps [first, first + steps) of one generate() call under the profiler (engines/tracing.py): each step
    in its ``llmprobe::step[p=…,d=…]`` scope and each module of interest in ``llmprobe::module <path>``."""

    def __init__(self, model, spec: TraceSpec, path: str, cuda: bool):
        self.window = ProfilerWindow(spec.first, spec.steps, path, cuda)
        self.open: list[Any] = []
        self.active = False
        self.hooks = []
        for name, mod in model.named_modules():
            if name.rsplit(".", 1)[-1] in _SCOPED:
                self.hooks += [mod.register_forward_pre_hook(self._enter_scope(f"llmprobe::module {name}")),
                               mod.register_forward_hook(lambda *a: self._exit_scope())]

    def _enter_scope(self, name):
        def pre(*_):
            if self.active:
                rf = self.window.scope(name)
                rf.__enter__()
                self.open.append(rf)
        return pre

    def _exit_scope(self):
        if self.active and self.open:
            self.open.pop().__exit__(None, None, None)

    def before_step(self, k: int) -> bool:
        """Before step k's timers start; True if it is traced."""
        self.active = self.window.before(k)
        return self.active

    def open_step(self, prefill_tokens: int, decode_tokens: int) -> None:
        rf = self.window.scope(step_scope(prefill_tokens, decode_tokens))
        rf.__enter__()
        self.open.append(rf)

    def close_step(self) -> None:
        if self.active:
            self._exit_scope()
            self.active = False

    def after_step(self, k: int) -> None:
        """After step k's timers stopped."""
        self.window.after(k)

    def close(self) -> dict[str, Any] | None:
        """Remove the scopes and write the trace (also after a generate() that failed mid-window)."""
        for h in self.hooks:
            h.remove()
        return self.window.finish()


class HfEngine(Engine):
    name = "hf"

    def __init__(self, opts: EngineOptions):
        try:
            import torch
            import transformers
        except ImportError as e:
            raise MissingDependency("transformers and torch", "hf", cause=e) from None
        self.torch, self.opts = torch, opts
        self.version = transformers.__version__
        want = opts.device
        if want == "auto":
            want = "cuda" if torch.cuda.is_available() else "cpu"
        if want == "cuda" and not torch.cuda.is_available():
            raise UserError("--device cuda: torch sees no CUDA device")
        self.device = want
        self.clock = None
        if want == "cuda":
            from ..timing import CudaClock
            self.clock = CudaClock()
        dtype = getattr(torch, torch_name(opts.dtype))
        torch.manual_seed(opts.seed)
        if opts.weights == "real":
            if not opts.model_path:
                raise UserError("--weights real needs --model to be a local checkpoint folder")
            cut = {"num_hidden_layers": opts.model.num_layers} if opts.model.layers_note else {}
            model = transformers.AutoModelForCausalLM.from_pretrained(opts.model_path, dtype=dtype, **cut)
        else:
            config = transformers.AutoConfig.for_model(**opts.model.config)
            with torch.device(self.device):
                model = transformers.AutoModelForCausalLM.from_config(config, dtype=dtype)
        self.model = model.to(self.device).eval()
        self.dtype = str(dtype).replace("torch.", "")
        self._steps: list[dict[str, Any]] = []
        self._cached = 0
        self._tracer: _Tracer | None = None
        self._moe = opts.model.is_moe
        self.experts_seen: dict[str, list[str]] = {}   # phase -> experts implementations that ran
        self.experts = None
        if self._moe:
            set_routing(self.model, opts.routing, opts.seed)   # as-loaded: nothing; real weights: refused before here
            if opts.expert_counts:
                m = opts.model
                self.experts = ExpertCounter(self.model, m.num_experts, m.experts_per_token, m.num_layers)
        self._hooks = [self.model.register_forward_pre_hook(self._pre, with_kwargs=True),
                       self.model.register_forward_hook(self._post, with_kwargs=True)]

    def describe(self) -> dict[str, Any]:
        args = {"dtype": self.dtype, "cache_implementation": "static", "weights": self.opts.weights, "compile": False,
                "attn_implementation": getattr(self.model.config, "_attn_implementation", None)}
        if self._moe:
            # transformers picks the experts kernel itself and, on a GPU, switches grouped_mm to batched_mm
            # for decode (it copies each selected expert's weights per token): what ran, per phase.
            args["experts_implementation"] = {"configured": getattr(self.model.config, "_experts_implementation", None),
                                              **{ph: "+".join(v) for ph, v in self.experts_seen.items()}}
        return {"backend": "hf", "version": self.version, "device": self.device, "args": args}

    def generation_kwargs(self) -> dict[str, Any]:
        """What every generate() call is given: greedy (or sampled at --temperature, top-p 1, no top-k),
        exactly gen_len tokens, static cache, no compile."""
        t = self.opts.temperature
        sampling = {"do_sample": True, "temperature": t, "top_p": 1.0, "top_k": 0} if t > 0 else {"do_sample": False}
        return {**sampling, "cache_implementation": "static", "eos_token_id": None, "pad_token_id": 0,
                "disable_compile": True}

    def _pre(self, module, args, kwargs):
        ids = kwargs.get("input_ids", args[0] if args else None)
        batch, new = ids.shape
        kind = "p" if self._cached == 0 else "d"
        if self._moe:
            impl = str(getattr(self.model.config, "_experts_implementation", None))
            seen = self.experts_seen.setdefault("prefill" if kind == "p" else "decode", [])
            if impl not in seen:
                seen.append(impl)
        seqs = [[f"r{i}", new, self._cached, kind] for i in range(batch)]
        t = time.perf_counter()
        gap = (t - self._steps[-1]["_t_end"]) * 1e3 if self._steps else None
        traced = self._tracer is not None and self._tracer.before_step(len(self._steps))   # profiler starts here
        t = time.perf_counter()
        self._steps.append({"_t_start": t, "gap_ms": gap, "seqs": seqs,
                            "_ev": [self.clock.event(), None] if self.clock else None})
        if traced:   # the annotation lies inside the timed span, so a step's classes never outweigh its time
            tokens = batch * new
            self._tracer.open_step(tokens if kind == "p" else 0, tokens if kind == "d" else 0)

    def _post(self, module, args, kwargs, output):
        rec = self._steps[-1]
        if self._tracer is not None:
            self._tracer.close_step()
        if rec["_ev"] is not None:
            rec["_ev"][1] = self.clock.event()
        rec["_t_end"] = time.perf_counter()
        self._cached += rec["seqs"][0][1]
        if self.experts is not None:   # after the step's end event: the copy is no step's time
            self.experts.snapshot()
        if self._tracer is not None:
            self._tracer.after_step(len(self._steps) - 1)   # profiler stops here

    def run(self, prompts: list[list[int]], gen_len: int, trace: TraceSpec | None = None) -> Run:
        torch = self.torch
        if len({len(p) for p in prompts}) != 1:
            raise UserError("--backend hf batches prompts of one length only")
        window = None
        if trace is not None:
            if not self.opts.trace_dir:
                raise UserError("a traced run needs an engine built with a trace folder (profile --trace-steps)")
            import os
            self._tracer = _Tracer(self.model, trace, os.path.join(self.opts.trace_dir, f"{trace.prefix}_rank0.pt.trace.json.gz"),
                                   self.device == "cuda")
        ids = torch.tensor(prompts, device=self.device)
        self._steps, self._cached = [], 0
        if self.experts is not None:
            self.experts.reset()
        stamps = _Stamps()
        with torch.inference_mode():
            stamps.t0 = t0 = time.perf_counter()
            try:
                out = self.model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=gen_len,
                                          min_new_tokens=gen_len, streamer=stamps, **self.generation_kwargs())
            finally:
                if self._tracer is not None:
                    window = self._tracer.close()
                    self._tracer = None
            wall = time.perf_counter() - t0
        if self.clock:
            self.clock.synchronize()
        loads = self.experts.drain() if self.experts is not None else []
        steps = []
        for k, rec in enumerate(self._steps):
            ev = rec.pop("_ev")
            steps.append(Step.measured(k, rec["seqs"], t_start_s=rec["_t_start"] - t0, t_end_s=rec["_t_end"] - t0,
                                       gap_ms=rec["gap_ms"], host_ms=(rec["_t_end"] - rec["_t_start"]) * 1e3,
                                       device_ms=self.clock.elapsed_s(*ev) * 1e3 if ev else None,
                                       experts=loads[k] if loads else None))
        # generate() returns every row together: all requests share the step times.
        requests = [Request.timed(f"r{i}", len(p), stamps.times) for i, p in enumerate(prompts)]
        for r, row in zip(requests, out[:, ids.shape[1]:].tolist()):
            r.output_ids = row
        run = Run(wall_s=wall, steps=steps, requests=requests,
                  admission=Admission.of(steps, len(prompts), "one generate() call", None))
        if trace is not None and window:   # its file and when the profiler was on, on the steps' clock
            run.trace_files = [window["path"]]
            run.trace_windows = [{"started_s": window["started_at"] - t0, "stopped_s": window["stopped_at"] - t0}]
        return run

    def close(self) -> None:
        for h in getattr(self, "_hooks", []):
            h.remove()
        self._hooks = []
        if getattr(self, "experts", None) is not None:
            self.experts.remove()
            self.experts = None
