"""Device code checked on the CPU: Triton under TRITON_INTERPRET=1, CUDA sources compiled by nvcc."""

import os
import re
import subprocess
import sys
from importlib import resources

import pytest

from llmprobe.kernels.traffic import STREAM
from llmprobe.microbench.launch import cuda_options

from .conftest import requires_nvcc

CU_FILES = sorted(p.name for p in resources.files("llmprobe.kernels").iterdir() if p.name.endswith(".cu"))


def test_kernels_ship_as_package_data():
    assert CU_FILES == ["fma.cu", "stream.cu"]
    assert (resources.files("llmprobe.kernels") / "triton_stream.py").is_file()


def test_one_source_for_the_fma_chain_count(tmp_path):
    """fma.cu takes CHAINS from the traffic table only: without -DCHAINS it refuses to compile."""
    src = (resources.files("llmprobe.kernels") / "fma.cu").read_text()
    assert "#error" in src and "#define CHAINS" not in src


@requires_nvcc
@pytest.mark.parametrize("arch", ["sm_80", "sm_90"])
@pytest.mark.parametrize("name", CU_FILES)
def test_cuda_sources_compile_without_spills(name, arch, tmp_path):
    src = resources.files("llmprobe.kernels") / name
    r = subprocess.run(["nvcc", f"-arch={arch}", "-cubin", "-Xptxas", "-v", *cuda_options(), "-o",
                        str(tmp_path / "k.cubin"), str(src)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    spills = re.findall(r"(\d+) bytes spill stores, (\d+) bytes spill loads", r.stderr)
    assert spills and all(s == ("0", "0") for s in spills), r.stderr
    kernels = set(re.findall(r"Compiling entry function '(\w+)'", r.stderr))
    assert kernels == ({f"{k}_v4" for k in STREAM} if name == "stream.cu" else {"fma_chain_fp32"})


TRITON_CHECK = r"""
import torch
from llmprobe.kernels.traffic import STREAM
from llmprobe.microbench.launch import triton_matmul, triton_stream_call
torch.manual_seed(0)
n = 10_000                      # not a multiple of the block: the masks are exercised


def observe(k):
    # The traffic table, observed: an input is read if changing it changes the output; an array is
    # written if the kernel changes it (read's output is its partial sums, one per program).
    a, b, c = torch.rand(n) + 0.5, torch.rand(n) + 0.5, torch.zeros(n)
    call = triton_stream_call(k, a, b, c, 1.5)
    call.launch()
    assert call.validate(), k
    base = call.output.clone()
    reads = 0
    for x in (a, b):
        keep = x.clone()
        x.add_(1.0)
        call.launch()
        reads += not torch.equal(call.output, base)
        x.copy_(keep)
    writes = int(bool(c.any()))
    return reads, writes, call.nbytes


for k, t in STREAM.items():
    reads, writes, nbytes = observe(k)
    assert (reads, writes) == (t.reads, t.writes), (k, reads, writes, t)
    assert nbytes == (reads + writes) * 4 * n, k
x, y = torch.randn(70, 40), torch.randn(40, 50)
out = triton_matmul(x, y, BLOCK_M=32, BLOCK_N=32, BLOCK_K=16, GROUP_M=2)
torch.testing.assert_close(out, x @ y, rtol=1e-4, atol=1e-4)
print("ok")
"""


def test_triton_kernels_under_interpreter():
    pytest.importorskip("triton")
    pytest.importorskip("torch")
    r = subprocess.run([sys.executable, "-c", TRITON_CHECK], capture_output=True, text=True, timeout=600,
                       env={**os.environ, "TRITON_INTERPRET": "1"})
    assert r.returncode == 0 and r.stdout.strip().endswith("ok"), r.stderr[-3000:]


def _nvrtc():
    import ctypes
    import glob
    import importlib.util
    spec = importlib.util.find_spec("nvidia")
    libs = sorted(p for d in (spec.submodule_search_locations if spec else []) for p in
                  glob.glob(os.path.join(d, "**", "libnvrtc.so*"), recursive=True))
    if not libs:
        pytest.skip("NVRTC not installed (pip install nvidia-cuda-nvrtc)")
    return ctypes, ctypes.CDLL(libs[0])


@pytest.mark.parametrize("arch", ["sm_80", "sm_90"])
@pytest.mark.parametrize("name", CU_FILES)
def test_cuda_sources_compile_with_nvrtc(name, arch):
    """CuPy's RawModule compiles with NVRTC, not nvcc: check that path too."""
    ctypes, lib = _nvrtc()
    src = (resources.files("llmprobe.kernels") / name).read_text().encode()
    prog = ctypes.c_void_p()
    assert lib.nvrtcCreateProgram(ctypes.byref(prog), src, name.encode(), 0, None, None) == 0
    opts = [f"--gpu-architecture={arch}".encode()] + [o.encode() for o in cuda_options()]   # what launch passes
    rc = lib.nvrtcCompileProgram(prog, len(opts), (ctypes.c_char_p * len(opts))(*opts))
    size = ctypes.c_size_t()
    lib.nvrtcGetProgramLogSize(prog, ctypes.byref(size))
    log = ctypes.create_string_buffer(size.value)
    lib.nvrtcGetProgramLog(prog, log)
    lib.nvrtcDestroyProgram(ctypes.byref(prog))
    assert rc == 0, log.value.decode()


SHARED_MEMORY_PER_BLOCK = {80: 163 * 1024, 90: 227 * 1024}   # opt-in maximum, A100 and H100 (CUDA guide)


@pytest.mark.parametrize("arch", [80, 90])
def test_triton_kernels_compile_for_cuda_targets(arch):
    """Triton's bundled ptxas builds every kernel for the GPUs it will meet, no GPU needed."""
    triton = pytest.importorskip("triton")
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    from llmprobe.kernels import triton_matmul as tm
    from llmprobe.kernels import triton_stream as ts
    from llmprobe.microbench.gpu import TRITON_DOT_CONFIGS
    target = GPUTarget("cuda", arch, 32)
    ptr = {"a_ptr": "*fp32", "b_ptr": "*fp32", "c_ptr": "*fp32", "partial_ptr": "*fp32"}
    for fn in (ts.read_kernel, ts.write_kernel, ts.copy_kernel, ts.triad_kernel):
        args = fn.arg_names
        sig = {a: ptr.get(a, "fp32" if a in ("s", "value") else "i32") for a in args}
        sig["BLOCK"] = "constexpr"
        triton.compile(ASTSource(fn=fn, signature=sig, constexprs={"BLOCK": 4096}), target=target)
    sig = {a: "*bf16" if a.endswith("_ptr") else "i32" for a in tm.matmul_kernel.arg_names}
    for cfg in TRITON_DOT_CONFIGS:
        consts = {k: v for k, v in cfg.items() if k.isupper()}
        sig.update(dict.fromkeys(consts, "constexpr"))
        k = triton.compile(ASTSource(fn=tm.matmul_kernel, signature=sig, constexprs=consts), target=target,
                           options={"num_warps": cfg["num_warps"], "num_stages": cfg["num_stages"]})
        assert 0 < k.metadata.shared <= SHARED_MEMORY_PER_BLOCK[arch], (cfg, k.metadata.shared)
