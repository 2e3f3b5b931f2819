"""The engine interface and the per-run result every backend returns.

A run submits ``batch`` token-id prompts at once and generates exactly ``gen_len`` tokens for
each (EOS ignored). The engine returns plain dicts, so records travel between processes and
straight into JSON:

  steps:    one per forward step, in order: {"index", "t_start_s", "t_end_s", "gap_ms", "host_ms",
            "device_ms" (None without device timers), "prefill_tokens", "decode_tokens",
            "num_reqs", "prefill_reqs", "decode_reqs", "mixed", "seqs": [[req, new, cached, "p"|"d"]]}
  requests: one per prompt: {"id", "prompt_len", "output_tokens", "ttft_s", "latency_s", "tpot_s",
            "output_ids"} times from submission, on the host clock of the process that submitted;
            output_ids are the generated token ids (greedy), so a run can be checked against a reference.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import Any

from ..models import ModelSpec


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
    expert_counts: bool = True        # MoE: count each step's routed experts per layer (engines/routing.py)
    routing: str = "as-loaded"        # MoE with random weights: "trained-like" sets the routers (engines/routing.py)
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class TraceSpec:
    """Trace ``steps`` consecutive steps of a run, from step index ``first``; files named after ``prefix``."""
    first: int
    steps: int
    prefix: str


def classify(seqs: list[list[Any]]) -> dict[str, Any]:
    """Token and request counts of a step from its [req, new, cached, kind] rows."""
    pre = [s for s in seqs if s[3] == "p"]
    dec = [s for s in seqs if s[3] == "d"]
    return {"prefill_tokens": sum(s[1] for s in pre), "decode_tokens": sum(s[1] for s in dec),
            "num_reqs": len(seqs), "prefill_reqs": len(pre), "decode_reqs": len(dec), "mixed": bool(pre and dec)}


def admission(steps: list[dict[str, Any]], batch: int, method: str, token_budget: int | None) -> dict[str, Any]:
    """Did the run's first step hold every request of its batch? (Unless the scheduler's token budget
    was what cut it: then the prompts were chunked, not raced.)"""
    first = steps[0] if steps else None
    reqs = first["num_reqs"] if first else 0
    chunked = bool(first and token_budget and first["prefill_tokens"] + first["decode_tokens"] >= token_budget)
    return {"method": method, "batch": batch, "first_step_requests": reqs, "together": reqs == batch,
            "chunked_by_token_budget": chunked and reqs < batch}


def request_timing(req_id: str, prompt_len: int, token_times_s: list[float]) -> dict[str, Any]:
    """TTFT, latency and TPOT of one request from the arrival times of its tokens (s from submit)."""
    n = len(token_times_s)
    ttft = token_times_s[0] if n else None
    latency = token_times_s[-1] if n else None
    tpot = (latency - ttft) / (n - 1) if n > 1 else None
    return {"id": req_id, "prompt_len": prompt_len, "output_tokens": n, "ttft_s": ttft, "latency_s": latency,
            "tpot_s": tpot}


class Engine(abc.ABC):
    name: str
    device: str  # "cuda" | "cpu"

    @abc.abstractmethod
    def run(self, prompts: list[list[int]], gen_len: int, trace: TraceSpec | None = None) -> dict[str, Any]:
        """Generate ``gen_len`` tokens for each prompt; return {"wall_s", "steps", "requests", ...}; with
        ``trace``, under the PyTorch profiler for those steps, plus "trace_files" (the engine needs
        ``EngineOptions.trace_dir``)."""

    @abc.abstractmethod
    def describe(self) -> dict[str, Any]:
        """Engine name, version and the arguments it was built with."""

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
