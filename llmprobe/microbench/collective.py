"""The communication ceiling: all-reduce and all-gather time over message sizes, fitted to alpha + bytes / B.

Run the way NVIDIA's nccl-tests reports it: one process per rank (torch.distributed; NCCL across
GPUs, gloo across CPU processes); each size's result is checked first, then, after a barrier, timed
through llmprobe's one timer (timing.bench: CUDA events on NCCL, the host clock on gloo) with a call
count every rank agrees on. Calls under 100 us are timed in batches of back-to-back calls, the batch
over its count (nccl-tests' way); each sample is the slowest rank's, a size's time the median sample.
Algorithm bandwidth is bytes / time; bus bandwidth multiplies it by the ring factor (2 (n-1)/n for
all-reduce, (n-1)/n for all-gather), so one number compares across rank counts. alpha (latency per call) and
B (bus bandwidth) come from a least-squares fit of time = alpha + factor * bytes / B.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
from typing import Any

from ..comm import allgather_factor, allreduce_factor
from .result import MethodResult

SIZES = {"quick": [2 ** k for k in range(3, 25, 3)], "default": [2 ** k for k in range(3, 27, 2)],
         "full": [2 ** k for k in range(3, 29)]}    # bytes per rank's buffer: 8 B .. 16/64/256 MiB
TIME_BUDGET_S = {"quick": 0.03, "default": 0.1, "full": 0.2}   # timed samples per size and op, about (warm-up: a third)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, backend: str, sizes: list[int], budget_s: float) -> list[dict[str, Any]]:
    import torch
    import torch.distributed as dist

    from ..timing import CudaClock, HostClock, Timing, bench
    dist.init_process_group(backend, init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    cuda = backend == "nccl"
    dev = torch.device("cuda", rank) if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(dev)
    clock = CudaClock() if cuda else HostClock()

    def slowest(values: list[float]) -> list[float]:
        t = torch.tensor(values, dtype=torch.float64, device=dev)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return t.tolist()

    rows: list[dict[str, Any]] = []
    for size in sizes:
        n_el = max(1, size // 4)
        x = torch.full((n_el,), float(rank + 1), device=dev)
        gathered = torch.empty(n_el * world, device=dev)
        # checked before anything is timed: the sum of 1..world everywhere, each rank's block in its place
        dist.all_reduce(x)
        dist.all_gather_into_tensor(gathered, torch.full((n_el,), float(rank + 1), device=dev))
        ok = bool((x == world * (world + 1) / 2).all()) and all(
            bool((gathered[r * n_el:(r + 1) * n_el] == r + 1).all()) for r in range(world))
        if not ok:
            rows.append({"op": "error", "bytes": n_el * 4, "message": "wrong collective result"})
            break
        ops = {"all_reduce": lambda: dist.all_reduce(x),
               "all_gather": lambda: dist.all_gather_into_tensor(gathered, x)}
        for op, fn in ops.items():
            dist.barrier()
            # Every rank must make the same number of calls: the slowest rank's estimate sets it. No CUDA
            # graph: gloo has nothing to capture, and NCCL calls would have to be captured by every rank in
            # lockstep; nccl-tests times them eagerly by default too.
            t = bench(fn, clock, warmup_s=budget_s / 3, rep_s=budget_s, min_reps=3, graph=False,
                      agree=lambda est: slowest([est])[0])
            # a collective is as slow as its slowest rank: each sample, the max over ranks
            t = Timing(samples_s=slowest(t.samples_s), warmup_calls=t.warmup_calls,
                       calls_per_sample=t.calls_per_sample, mode=t.mode)
            rows.append({"op": op, "bytes": n_el * 4, "calls": t.stats["n"] * t.calls_per_sample,
                         "time_s": t.median_s, **t.to_dict()})
    dist.destroy_process_group()
    return rows


def run_collectives(world: int, backend: str, mode: str = "default") -> list[dict[str, Any]]:
    """Time all-reduce and all-gather on ``world`` ranks, one process each; the slowest rank's time per size."""
    port = _free_port()
    env = dict(os.environ, OMP_NUM_THREADS="1")   # gloo's CPU ranks share the cores: no spinning pools
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "rows.json")
        procs = [subprocess.Popen([sys.executable, "-m", "llmprobe.microbench.collective", str(r), str(world), str(port),
                                   backend, mode, out], env=env, stderr=subprocess.PIPE, text=True)
                 for r in range(world)]
        errors = []
        for p in procs:
            try:
                _, err = p.communicate(timeout=600)
            except subprocess.TimeoutExpired:
                p.kill()
                _, err = p.communicate()
            if p.returncode:
                errors.append((err or "").strip().splitlines()[-1:] or [f"exit {p.returncode}"])
        if errors:
            raise RuntimeError(f"collective benchmark rank failed: {errors[0][0]}")
        with open(out) as f:
            return json.load(f)


def fit_alpha_beta(points: list[tuple[float, float]]) -> tuple[float, float]:
    """Fit time = alpha + x / B over (x = factor * bytes, time), minimizing relative error.

    Weights of 1 / time^2: message sizes span seven orders of magnitude, and an unweighted fit would
    let the largest messages set alpha too. alpha is kept >= 0 (a line through the origin otherwise).
    """
    ws = [1.0 / t ** 2 for _, t in points]
    sw = sum(ws)
    mx = sum(w * x for w, (x, _) in zip(ws, points)) / sw
    mt = sum(w * t for w, (_, t) in zip(ws, points)) / sw
    sxx = sum(w * (x - mx) ** 2 for w, (x, _) in zip(ws, points))
    slope = sum(w * (x - mx) * (t - mt) for w, (x, t) in zip(ws, points)) / sxx if sxx else 0.0
    if slope <= 0:
        raise ValueError("collective time does not grow with message size: no bandwidth to fit")
    alpha = mt - slope * mx
    if alpha < 0:
        slope = sum(w * x * t for w, (x, t) in zip(ws, points)) / sum(w * x * x for w, (x, _) in zip(ws, points))
        alpha = 0.0
    return alpha, 1.0 / slope


def collective_methods(world: int, backend: str, mode: str = "default") -> list[MethodResult]:
    """One MethodResult per collective: value = fitted bus bandwidth (B/s), best_params has alpha and ranks."""
    rows = run_collectives(world, backend, mode)
    errors = [r for r in rows if r["op"] == "error"]
    out = []
    for op, factor in (("all_reduce", allreduce_factor(world)), ("all_gather", allgather_factor(world))):
        name = f"torch.distributed.{op} ({backend}, {world} ranks)"
        pts = [r for r in rows if r["op"] == op]
        for r in pts:
            r["algbw"] = r["bytes"] * (world if op == "all_gather" else 1) / r["time_s"]
            r["busbw"] = r["algbw"] * factor
        if errors:
            out.append(MethodResult(name, "collective", "fp32", None, False, errors[0]["message"], sweep=pts))
            continue
        # all-gather's message is the gathered output: world x each rank's buffer
        size = (lambda r: r["bytes"] * world) if op == "all_gather" else (lambda r: r["bytes"])
        try:
            alpha, bus = fit_alpha_beta([(factor * size(r), r["time_s"]) for r in pts])
        except ValueError as e:
            out.append(MethodResult(name, "collective", "fp32", None, False, str(e), sweep=pts))
            continue
        out.append(MethodResult(name, "collective", "fp32", bus, True, sweep=pts,
                                best_params={"latency_s": alpha, "ranks": world, "backend": backend, "op": op,
                                             "smallest_time_s": min(r["time_s"] for r in pts)}))
    return out


if __name__ == "__main__":   # one rank: python -m llmprobe.microbench.collective RANK WORLD PORT BACKEND MODE OUT
    _rank, _world, _port, _backend, _mode, _out = sys.argv[1:7]
    _rows = _worker(int(_rank), int(_world), int(_port), _backend, SIZES[_mode], TIME_BUDGET_S[_mode])
    if _rank == "0":
        with open(_out, "w") as _f:
            json.dump(_rows, _f)
