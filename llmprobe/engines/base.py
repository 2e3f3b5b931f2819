"""The engine interface: options every backend takes, and ``Engine.run``.

A run submits ``batch`` token-id prompts at once and generates exactly ``gen_len`` tokens for
each (EOS ignored). The engine returns a typed ``records.Run``: one ``Step`` per forward pass, in
order (host interval, host and device time, its sequence rows), and one ``Request`` per prompt
(times from submission on the submitting process's host clock, and the generated token ids, so a
run can be checked against a reference). Hooks inside engine workers send plain dicts across the
process boundary; the engine types them on arrival.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import Any

from ..models import ModelSpec
from ..records import Run


@dataclass(frozen=True)
class EngineOptions:
    model: ModelSpec
    model_path: str | None = None     # a local checkpoint folder (weights="real")
    weights: str = "dummy"            # "dummy": random weights, nothing downloaded
    dtype: str = "bfloat16"
    quantization: str | None = None
    kv_cache_dtype: str = "auto"
    tp: int = 1
    pp: int = 1
    max_model_len: int | None = None
    gpu_memory_utilization: float = 0.9
    enforce_eager: bool = False
    device: str = "auto"              # "auto" | "cuda" | "cpu"
    seed: int = 0
    temperature: float = 0.0          # 0: greedy; > 0: sampled at this temperature, top-p 1, no top-k
    trace_dir: str | None = None      # where traced runs write their profiler traces (profile --trace-steps)
    trace_graphs: bool = False        # CUDA: replay CUDA graphs in traced steps too (else they run without)
    expert_counts: bool = True        # MoE: count each step's routed experts per layer (engines/routing.py)
    routing: str = "as-loaded"        # MoE with random weights: "trained-like" sets the routers (engines/routing.py)
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class TraceSpec:
    """Trace ``steps`` consecutive steps of a run, from step index ``first``; files named after ``prefix``."""
    first: int
    steps: int
    prefix: str


class Engine(abc.ABC):
    name: str
    device: str  # "cuda" | "cpu"

    @abc.abstractmethod
    def run(self, prompts: list[list[int]], gen_len: int, trace: TraceSpec | None = None) -> Run:
        """Generate ``gen_len`` tokens for each prompt; with ``trace``, under the PyTorch profiler for those
        steps, the run's ``trace_files`` and ``trace_windows`` set (the engine needs ``EngineOptions.trace_dir``)."""

    @abc.abstractmethod
    def describe(self) -> dict[str, Any]:
        """Engine name, version and the arguments it was built with."""

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
