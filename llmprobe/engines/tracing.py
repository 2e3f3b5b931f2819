"""The PyTorch profiler over a window of steps, driven by llmprobe on both engines and every vLLM version.

Why not vLLM's own ``start_profile``: its per-session ``delay_iterations``/``max_iterations`` exist
only after vLLM 0.26 (the GPU build raises TypeError on them), 0.26's worker keeps the first trace
name across restarts, and its profiler starts inside the first traced step (its ``profiler.step()``
runs after llmprobe's step timer has started), so that step's time included profiler start-up.

Here the engine calls ``before(k)`` before step k's timers start and ``after(k)`` after they stop:
the profiler starts before the window's first step and stops after its last, never inside a timed
step. On CUDA the device is synchronized before the start and before the stop (outside every step),
so the trace holds exactly the kernels its steps launched, those an asynchronous step left queued
included. Each window is one file, named by llmprobe.
"""

from __future__ import annotations

import time
from typing import Any

STEP_SCOPE = "llmprobe::step"


def step_scope(prefill_tokens: int, decode_tokens: int) -> str:
    """A traced step's annotation: the token counts let the trace be checked against the step record."""
    return f"{STEP_SCOPE}[p={prefill_tokens},d={decode_tokens}]"


class ProfilerWindow:
    """Steps [first, first + steps) of one run under torch.profiler; ``finish()`` writes ``path``."""

    def __init__(self, first: int, steps: int, path: str, cuda: bool):
        import torch
        from torch.profiler import ProfilerActivity, profile, record_function
        self.torch, self.record_function = torch, record_function
        self.first, self.last, self.path, self.cuda = first, first + steps - 1, path, cuda
        acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
        self.prof = profile(activities=acts)
        self.started = self.stopped = False
        self.started_at = self.stopped_at = None   # perf_counter (system-wide monotonic): comparable to step times

    def before(self, k: int) -> bool:
        """Step k is about to start its timers; True if it is traced."""
        if k == self.first and not self.started:
            if self.cuda:   # kernels queued before the window would carry launches the trace never saw
                self.torch.cuda.synchronize()
            self.prof.start()
            self.started_at = time.perf_counter()
            self.started = True
        return self.started and not self.stopped and self.first <= k <= self.last

    def after(self, k: int) -> None:
        """Step k's timers have stopped."""
        if k >= self.last and self.started and not self.stopped:
            self._stop()

    def scope(self, name: str) -> Any:
        return self.record_function(name)

    def _stop(self) -> None:
        if self.cuda:
            self.torch.cuda.synchronize()
        self.stopped_at = time.perf_counter()
        self.prof.stop()
        self.stopped = True

    def finish(self) -> dict[str, Any] | None:
        """Stop if still running (a run that ended or failed inside the window) and write the trace: its path
        and when the profiler was on (``started_at`` before the first traced step's timers started,
        ``stopped_at`` before the stop began, after the last one's ended); None when it never started."""
        if not self.started:
            return None
        if not self.stopped:
            self._stop()
        self.prof.export_chrome_trace(self.path)
        return {"path": self.path, "started_at": self.started_at, "stopped_at": self.stopped_at}
