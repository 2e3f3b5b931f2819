"""The GPU paths' decisions that can be exercised without a GPU (the GPU-readiness desk-check)."""

import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from llmprobe.errors import MissingDependency
from llmprobe.microbench.gpu import l2_bytes, resident_blocks
from llmprobe.telemetry import clock_event_mask, decode_throttle, summarize_samples

ROOT = Path(__file__).resolve().parents[1]


def test_kernels_found_from_a_plain_source_tree(tmp_path):
    """The GPU machine runs from a copy of the repository with nothing installed: no site-packages
    (-S), only the copy on sys.path, and llmprobe.kernels must still resolve to its kernels/."""
    for d in ("llmprobe", "kernels"):
        shutil.copytree(ROOT / d, tmp_path / d, ignore=shutil.ignore_patterns("__pycache__"))
    code = ("import sys; sys.path.insert(0, sys.argv[1]); import llmprobe.kernels as k; "
            "from llmprobe.microbench.launch import cuda_source; from llmprobe.kernels.traffic import STREAM; "
            "assert k.__file__.startswith(sys.argv[1]), k.__file__; "
            "assert 'triad_v4' in cuda_source('stream.cu') and 'fma_chain_fp32' in cuda_source('fma.cu') "
            "and 'triad' in STREAM; print('ok')")
    r = subprocess.run([sys.executable, "-S", "-c", code, str(tmp_path)], capture_output=True, text=True, timeout=60,
                       cwd=tmp_path)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr[-2000:]


def test_missing_dependency_names_the_failed_import():
    e = MissingDependency("CuPy", "cupy12", "cupy13", cause=ModuleNotFoundError("No module named 'llmprobe.kernels'"))
    assert "ModuleNotFoundError: No module named 'llmprobe.kernels'" in str(e)
    assert "pip install 'llmprobe[cupy12]' or 'llmprobe[cupy13]'" in str(e)


@pytest.mark.parametrize("regs, blocks", [(14, 8), (32, 8), (40, 6), (48, 5), (64, 4), (255, 1)])
def test_stream_grid_is_one_full_wave_by_registers(regs, blocks):
    # 64K registers per SM, allocated per warp in units of 256; 2048 threads per SM; blocks of 256
    assert resident_blocks(regs, 256) == blocks


def test_l2_size_falls_back_to_the_catalog():
    h100 = SimpleNamespace(name="NVIDIA H100 80GB HBM3", total_memory=85520809984, L2_cache_size=0)
    assert l2_bytes(h100) == 50 << 20
    assert l2_bytes(SimpleNamespace(name="NVIDIA A100-SXM4-80GB", total_memory=85e9, L2_cache_size=40 << 20)) == 40 << 20


class _NvmlError(Exception):
    pass


class _Nvml:
    """Stands in for pynvml (no NVML on a machine without a GPU): one binding present or absent, or failing."""
    NVMLError = _NvmlError

    def __init__(self, new=None, old=None):
        if new is not None:
            self.nvmlDeviceGetCurrentClocksEventReasons = new
        if old is not None:
            self.nvmlDeviceGetCurrentClocksThrottleReasons = old


def _fail(h):
    raise _NvmlError("NVML_ERROR_NOT_SUPPORTED")


def _bug(h):
    raise TypeError("a bug in our call, not an NVML answer")


def test_throttle_reasons_prefer_the_new_call_and_never_invent_not_throttled():
    assert clock_event_mask(_Nvml(new=lambda h: 0x4, old=lambda h: 0x1), None) == 0x4
    assert clock_event_mask(_Nvml(new=_fail, old=lambda h: 0x8), None) == 0x8      # falls back
    assert clock_event_mask(_Nvml(old=lambda h: 0x1), None) == 0x1                  # old bindings only
    assert clock_event_mask(_Nvml(new=_fail, old=_fail), None) is None
    with pytest.raises(TypeError):   # only what NVML raises means "unknown"; a bug is not hidden
        clock_event_mask(_Nvml(new=_bug), None)
    assert decode_throttle(None) is None and decode_throttle(0) == [] and decode_throttle(0x4) == ["sw_power_cap"]
    unknown = summarize_samples([{"throttle": None}, {"throttle": None}], 0.1)
    assert unknown["throttle_fraction"] is None and unknown["throttled"] is None
    half = summarize_samples([{"throttle": 0x4}, {"throttle": 0}, {"throttle": None}], 0.1)
    assert half["throttle_fraction"] == {"sw_power_cap": 0.5} and half["throttled"] is True


def test_hf_engine_never_auto_compiles():
    """transformers compiles a static-cache generate() on CUDA by itself; its own criterion, told to treat
    every device as compile hardware, must still say no for the engine's generation settings."""
    pytest.importorskip("transformers")
    from transformers import CompileConfig, GenerationConfig, StaticCache

    from llmprobe.engines import EngineOptions
    from llmprobe.engines.hf_engine import HfEngine
    from llmprobe.models import resolve_model
    eng = HfEngine(EngineOptions(model=resolve_model("tiny-llama"), device="cpu"))
    try:
        model = eng.model
        kwargs = {"past_key_values": StaticCache(config=model.config, max_cache_len=32)}
        cfg = GenerationConfig(**eng.generation_kwargs())
        cfg.compile_config = CompileConfig()
        cfg.compile_config._compile_all_devices = True
        assert model._valid_auto_compile_criteria(kwargs, cfg) is False
        cfg.disable_compile = False
        assert model._valid_auto_compile_criteria(kwargs, cfg) is True     # what would happen without it
        assert eng.describe()["args"]["compile"] is False
    finally:
        eng.close()


def test_hf_engine_records_the_experts_kernel_per_phase():
    pytest.importorskip("transformers")
    from llmprobe.engines import EngineOptions
    from llmprobe.engines.hf_engine import HfEngine
    from llmprobe.models import resolve_model
    eng = HfEngine(EngineOptions(model=resolve_model("tiny-mixtral"), device="cpu"))
    try:
        out = eng.run([[1, 2, 3, 4]], gen_len=3)
        assert len(out.steps) == 3
        impl = eng.describe()["args"]["experts_implementation"]
        assert impl["prefill"] and impl["decode"] and "configured" in impl
    finally:
        eng.close()


def test_a_busy_neighbour_is_detected():
    """A process outside llmprobe's tree spinning on a core shows as other_cores ~1 and 'busy'."""
    import os
    import signal
    import time

    from llmprobe.hostload import HostLoad
    if not os.path.exists("/proc/stat"):
        pytest.skip("needs Linux /proc")
    # `sh` starts `yes` and exits at once: `yes` is reparented away from this process tree
    pid = int(subprocess.run(["sh", "-c", "yes > /dev/null 2>&1 & echo $!"], capture_output=True, text=True).stdout)
    try:
        with HostLoad() as load:
            time.sleep(0.6)
        r = load.result()
    finally:
        os.kill(pid, signal.SIGKILL)
    assert r.busy and r.other_cores > 0.5, r
    assert "other processes used" in r.reasons[0]
