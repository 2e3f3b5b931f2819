"""The wheel ships kernels/ as llmprobe.kernels and the data files; the package imports without GPU stacks."""

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_wheel_contains_kernels_and_data(tmp_path):
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                        str(tmp_path), str(ROOT)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    wheel = next(tmp_path.glob("llmprobe-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    for f in ("llmprobe/kernels/stream.cu", "llmprobe/kernels/fma.cu", "llmprobe/kernels/triton_stream.py",
              "llmprobe/kernels/triton_matmul.py", "llmprobe/data/gpus.toml", "llmprobe/data/prices.toml",
              "llmprobe/data/models/mixtral-8x7b.json", "llmprobe/engines/vllm_hooks.py"):
        assert f in names, f


def test_analytic_core_imports_no_gpu_stack():
    code = ("import sys, llmprobe, llmprobe.cli, llmprobe.commands, llmprobe.explain, llmprobe.audit, llmprobe.compare, "
            "llmprobe.microbench, llmprobe.profiling, llmprobe.engines;"
            "heavy = [m for m in ('torch', 'triton', 'cupy', 'pynvml', 'vllm', 'transformers', 'matplotlib', 'numpy') "
            "if m in sys.modules]; print(heavy); assert not heavy")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
