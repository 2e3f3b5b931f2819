"""Device code checked on the CPU: Triton under TRITON_INTERPRET=1, CUDA sources compiled by nvcc."""

import os
import re
import subprocess
import sys
from importlib import resources

import pytest

from llmprobe.microbench.cupy_streams import declarations, fma_flops, stream_bytes, stream_flops

from .conftest import requires_nvcc

CU_FILES = sorted(p.name for p in resources.files("llmprobe.kernels").iterdir() if p.name.endswith(".cu"))


def test_kernels_ship_as_package_data():
    assert CU_FILES == ["fma.cu", "stream.cu"]
    assert (resources.files("llmprobe.kernels") / "triton_stream.py").is_file()


def test_declarations_match_hand_counts():
    n4 = 1000  # float4 elements, 16 bytes each
    assert stream_bytes("copy_v4", n4) == 2 * 16 * n4        # read a, write c
    assert stream_bytes("triad_v4", n4) == 3 * 16 * n4       # read a and b, write c
    assert stream_bytes("read_v4", n4) == 16 * n4
    assert stream_bytes("write_v4", n4) == 16 * n4
    assert stream_flops("triad_v4", n4) == 8 * n4            # one FMA (2 FLOPs) per float, 4 floats
    assert fma_flops(threads=256, iters=10) == 2 * 8 * 10 * 256
    assert set(declarations("stream.cu")) == {"read_v4", "write_v4", "copy_v4", "triad_v4"}


@requires_nvcc
@pytest.mark.parametrize("arch", ["sm_80", "sm_90"])
@pytest.mark.parametrize("name", CU_FILES)
def test_cuda_sources_compile_without_spills(name, arch, tmp_path):
    src = resources.files("llmprobe.kernels") / name
    r = subprocess.run(["nvcc", f"-arch={arch}", "-cubin", "-Xptxas", "-v", "-std=c++17", "-o",
                        str(tmp_path / "k.cubin"), str(src)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    spills = re.findall(r"(\d+) bytes spill stores, (\d+) bytes spill loads", r.stderr)
    assert spills and all(s == ("0", "0") for s in spills), r.stderr
    kernels = re.findall(r"Compiling entry function '(\w+)'", r.stderr)
    assert set(kernels) >= set(declarations(name))


TRITON_CHECK = r"""
import torch
from llmprobe.microbench.triton_launch import matmul, stream_bytes, stream_call
torch.manual_seed(0)
n = 10_000                      # not a multiple of the block: the masks are exercised
a, b, c = torch.rand(n) + 0.5, torch.rand(n) + 0.5, torch.empty(n)
for k in ("read", "write", "copy", "triad"):
    call, valid, nbytes = stream_call(k, a, b, c, 1.5)
    call()
    assert valid(), k
assert stream_bytes("triad", n, 4) == 3 * 4 * n and stream_bytes("read", n, 4) == 4 * n
x, y = torch.randn(70, 40), torch.randn(40, 50)
out = matmul(x, y, BLOCK_M=32, BLOCK_N=32, BLOCK_K=16, GROUP_M=2)
torch.testing.assert_close(out, x @ y, rtol=1e-4, atol=1e-4)
print("ok")
"""


def test_triton_kernels_under_interpreter():
    pytest.importorskip("triton")
    pytest.importorskip("torch")
    r = subprocess.run([sys.executable, "-c", TRITON_CHECK], capture_output=True, text=True, timeout=600,
                       env={**os.environ, "TRITON_INTERPRET": "1"})
    assert r.returncode == 0 and r.stdout.strip().endswith("ok"), r.stderr[-3000:]
