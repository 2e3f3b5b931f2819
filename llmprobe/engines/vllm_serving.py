"""The vLLM engine under load: ``AsyncLLM``'s client in this process (its engine core in its own process, as
vLLM runs it), each request sent at its arrival time by its own task, every output chunk timed as it reaches the caller (DELTA outputs), as vLLM's ``bench serve`` times them
from the client side. The offline engine's step hooks time every step inside the workers meanwhile, and a stat
logger keeps the scheduler's view after each step (KV cache in use, running, waiting, preempted).
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Sequence
from typing import Any

from ..records import LoadPoint, SchedulerSample, ServedRequest
from ..workload import RequestSpec
from .base import EngineOptions
from .vllm_engine import engine_kwargs, import_vllm, start_failure, typed_steps, worker_environment
from .routing import patch_vllm_loader


FETCH_TIMEOUT_S = 600


class _SchedulerLog:
    """vLLM stat logger (``stat_loggers`` factory): one sample per engine step, on the caller's clock."""

    def __init__(self):
        self.samples: list[SchedulerSample] = []
        self.t0 = time.perf_counter()

    def factory(self, vllm_config, engine_index: int = 0):
        from vllm.v1.metrics.loggers import StatLoggerBase
        log = self

        class Logger(StatLoggerBase):
            def __init__(self, vllm_config, engine_index: int = 0):
                pass

            def record(self, scheduler_stats, iteration_stats, mm_cache_stats=None, engine_idx: int = 0):
                if scheduler_stats is None:
                    return
                log.samples.append(SchedulerSample(
                    time.perf_counter() - log.t0, float(scheduler_stats.kv_cache_usage),
                    int(scheduler_stats.num_running_reqs), int(scheduler_stats.num_waiting_reqs),
                    int(getattr(iteration_stats, "num_preempted_reqs", 0) or 0)))

            def log_engine_initialized(self):
                pass
        return Logger(vllm_config, engine_index)

    def take(self, t0: float) -> list[SchedulerSample]:
        """The samples since the last take, re-timed from ``t0`` (a load point's start)."""
        shift = self.t0 - t0
        out = [SchedulerSample(s.t_s + shift, s.kv_cache_usage, s.running, s.waiting, s.preempted)
               for s in self.samples]
        self.samples = []
        return out


class ServingEngine:
    """Build with ``await ServingEngine.start(opts)`` (AsyncLLM needs the running loop); ``close()`` after."""

    def __init__(self, opts: EngineOptions, engine, kw: dict[str, Any], tmp, device: str, log: _SchedulerLog,
                 version: str):
        self.opts, self.engine, self.device, self._tmp, self.log, self.version = opts, engine, device, tmp, log, version
        self.engine_args = {k: v for k, v in kw.items() if k != "model"}
        self._n = 0

    @classmethod
    async def start(cls, opts: EngineOptions) -> ServingEngine:
        vllm = import_vllm()
        patch_vllm_loader()   # an in-process engine core loads the model in this very process
        from vllm.engine.arg_utils import AsyncEngineArgs
        from vllm.v1.engine.async_llm import AsyncLLM
        kw, tmp, device = engine_kwargs(opts)
        log = _SchedulerLog()
        try:
            with worker_environment(opts):
                engine = AsyncLLM.from_engine_args(AsyncEngineArgs(**kw), stat_loggers=[log.factory])
        except Exception as e:  # one line: vLLM's reason
            if tmp is not None:
                tmp.cleanup()
            raise start_failure(e, device, opts) from e
        self = cls(opts, engine, kw, tmp, device, log, vllm.__version__)
        self.ranks = await engine.collective_rpc("llmprobe_install", args=(device == "cuda",))
        return self

    def describe(self) -> dict[str, Any]:
        return {"backend": "vllm", "client": "AsyncLLM in this process", "version": self.version, "device": self.device,
                "args": self.engine_args, "ranks": len(self.ranks)}

    async def load_point(self, specs: Sequence[RequestSpec], prompts: Sequence[list[int]], rate: float,
                         max_concurrency: int | None, say=None) -> LoadPoint:
        """Send each request at its arrival time (a semaphore holds back all but ``max_concurrency`` in flight);
        return them timed, with the steps and scheduler samples of the point."""
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt
        from vllm.sampling_params import RequestOutputKind
        self._n += 1
        await self._fetch()   # nothing from before this point
        self.log.take(time.perf_counter())
        gate = asyncio.Semaphore(max_concurrency) if max_concurrency else None
        t0 = time.perf_counter()
        done = 0

        async def one(i: int, spec: RequestSpec, prompt: list[int]) -> ServedRequest:
            nonlocal done
            rid = f"llmprobe-serve-{self._n}-{i}"
            await asyncio.sleep(max(0.0, t0 + spec.arrival_s - time.perf_counter()))
            sp = SamplingParams(max_tokens=spec.output_len, ignore_eos=True,
                                temperature=self.opts.temperature, top_p=1.0, detokenize=False,
                                output_kind=RequestOutputKind.DELTA)
            if gate is not None:
                await gate.acquire()
            sent = time.perf_counter() - t0
            stamps: list[float] = []
            tokens = 0
            error = None
            try:
                async for out in self.engine.generate(TokensPrompt(prompt_token_ids=prompt), sp, rid):
                    new = len(out.outputs[0].token_ids) if out.outputs else 0
                    if new:
                        stamps.append(time.perf_counter() - t0)
                        tokens += new
            except Exception as e:  # a request the engine refused or lost: counted as failed, not as latency
                error = f"{type(e).__name__}: {e}"
            finally:
                if gate is not None:
                    gate.release()
            done += 1
            if say is not None and done % max(1, len(specs) // 4) == 0:
                say(f"{done}/{len(specs)} requests done")
            return ServedRequest(id=rid, arrival_s=spec.arrival_s, sent_s=sent, prompt_len=len(prompt),
                                 output_tokens=tokens, ttft_s=stamps[0] - sent if stamps else None,
                                 latency_s=stamps[-1] - sent if stamps else None,
                                 itl_s=[b - a for a, b in zip(stamps, stamps[1:])], error=error)
        requests = await asyncio.gather(*(one(i, s, p) for i, (s, p) in enumerate(zip(specs, prompts))))
        duration = time.perf_counter() - t0
        steps = typed_steps(await self._fetch(), [r.id for r in requests], t0)
        return LoadPoint(rate=None if math.isinf(rate) else rate, max_concurrency=max_concurrency, duration_s=duration,
                         requests=list(requests), steps=steps, scheduler=self.log.take(t0))

    async def _fetch(self) -> list:
        """The workers' step records; vLLM 0.26 leaves a utility call waiting forever on a dead engine core,
        so the wait is bounded (a step list takes well under a second to fetch)."""
        try:
            return await asyncio.wait_for(self.engine.collective_rpc("llmprobe_fetch"), FETCH_TIMEOUT_S)
        except asyncio.TimeoutError:
            raise RuntimeError(f"the engine's workers did not answer within {FETCH_TIMEOUT_S} s (engine core dead?)") from None

    def close(self) -> None:
        engine = getattr(self, "engine", None)
        if engine is not None:
            try:
                engine.shutdown()
            except Exception:  # already dead: nothing left to release
                pass
            # AsyncLLM shuts down again when it is collected, and collected at interpreter exit (a frame of its
            # start keeps it), after vLLM's module globals are gone, that prints a traceback: once is enough
            engine.shutdown = lambda *args, **kwargs: None
            self.engine = None
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None
