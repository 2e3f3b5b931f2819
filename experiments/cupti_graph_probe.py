"""Does this machine's CUPTI give kernels replayed from a CUDA graph their own step in a *second* profiling
session? CUPTI before CUDA 13.1 Update 1 gives them wrong correlation ids there (its release notes;
pytorch/kineto#1165), and a traced vLLM decode step is exactly that: a graph replay, never the first session.

A three-kernel graph (matmul, relu, sum) is captured, then replayed under two profiler sessions, each replay in a
``llmprobe::step`` annotation; each trace is read by llmprobe's own trace reader (llmprobe/traces.py), which
refuses graph kernels that map to no cudaGraphLaunch inside a step. One JSON line per session, then a verdict.

    python -m experiments.cupti_graph_probe [OUTDIR]
"""

from __future__ import annotations

import ctypes
import glob
import json
import os
import sys
import tempfile


def cupti_version() -> int | None:
    """cuptiGetVersion() of the libcupti torch loads (its own wheel's, else the toolkit's)."""
    import torch
    roots = [os.path.dirname(torch.__file__), os.path.dirname(os.path.dirname(torch.__file__)), "/usr/local/cuda"]
    for root in roots:
        for lib in sorted(glob.glob(os.path.join(root, "**", "libcupti.so*"), recursive=True)):
            try:
                v = ctypes.c_uint32()
                if ctypes.CDLL(lib).cuptiGetVersion(ctypes.byref(v)) == 0:
                    return v.value
            except OSError:
                continue
    return None


def main(out: str) -> int:
    import torch
    from torch.profiler import ProfilerActivity, profile, record_function

    from llmprobe.errors import UserError
    from llmprobe.traces import load, steps
    if not torch.cuda.is_available():
        print(json.dumps({"cuda": False, "verdict": "no CUDA GPU: nothing to probe"}))
        return 0
    x = torch.randn(2048, 2048, device="cuda")
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):      # warm-up off the capture stream, as torch's graph docs ask
        (x @ x).relu_().sum()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        (x @ x).relu_().sum()
    rows = []
    for session in (1, 2):
        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            with record_function("llmprobe::step[p=0,d=1]"):
                graph.replay()
            torch.cuda.synchronize()
        path = os.path.join(out, f"cupti-graph-session{session}.json")
        prof.export_chrome_trace(path)
        events = load(path)
        row = {"session": session, "kernels": sum(e.get("cat") == "kernel" for e in events),
               "with_graph_metadata": sum(e.get("cat") == "kernel" and "graph id" in e.get("args", {}) for e in events)}
        try:
            (st,) = steps(events, device=True)
            row.update(attributed=len(st.items), graph_kernels=st.graph_kernels, error=None)
        except (UserError, ValueError) as e:
            row.update(attributed=0, graph_kernels=0, error=str(e))
        rows.append(row)
        print(json.dumps(row))
    good = all(r["error"] is None and r["attributed"] >= 3 for r in rows)
    print(json.dumps({"torch": torch.__version__, "cuda": torch.version.cuda, "cupti_version": cupti_version(),
                      "graph_replays_attributed_in_session_2": good}))
    return 0


if __name__ == "__main__":
    out = sys.argv[1] if len(sys.argv) > 1 else tempfile.mkdtemp(prefix="cupti-probe-")
    os.makedirs(out, exist_ok=True)
    sys.exit(main(out))
