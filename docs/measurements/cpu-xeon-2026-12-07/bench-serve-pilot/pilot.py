"""Pilot, 2026-12-07: vLLM's bench serve alone, four runs at registration 3's load, the client pinned to core 1 on runs
0 and 2 (vLLM's automatic binding reserves that core). Run from the repository root: PYTHONPATH=. python <this file>.
It reuses experiments/serve_vs_vllm's server and bench serve call, prefixing taskset to the latter's subprocess."""
import subprocess
import tempfile
from pathlib import Path
import experiments.serve_vs_vllm as E
from experiments.serve_vs_vllm import METRICS
tmp = Path(tempfile.mkdtemp(prefix="pilot-"))
d = E.model_dir(tmp); port = E.free_port(); url = f"http://127.0.0.1:{port}"
srv = E.start_server(d, port, tmp / "server.log")
print([l for l in (tmp/"server.log").read_text().splitlines() if "core ids" in l or "reserved" in l or "binding" in l], flush=True)
rows = []
orig_run = subprocess.run
try:
    for i in range(4):
        pin = i % 2 == 0
        def run(cmd, **kw):
            return orig_run((["taskset", "-c", "1"] if pin else []) + cmd, **kw)
        E.subprocess.run = run
        got = E.theirs(url, d, 0.5, tmp, f"p{i}")
        rows.append((pin, got)); print(pin, {k: round(got[k], 1) for k in METRICS}, flush=True)
finally:
    E.subprocess.run = orig_run
    srv.terminate(); srv.wait(60)
for pin in (True, False):
    v = [g for p, g in rows if p == pin]
    print("pinned" if pin else "floating", {m: f"{max(x[m] for x in v)/min(x[m] for x in v)-1:.1%}" for m in METRICS})
