"""GPU-only checks: skipped without a CUDA GPU (the `gpu` marker), run on the GPU machine."""

import pytest

from llmprobe.explain import explain_record
from llmprobe.profiling import Scenario, profile

pytestmark = pytest.mark.gpu


def _check_device_times(rec):
    """Device time is real and physical: positive, never under the step's floor, and never longer than
    the wall time it could have run in (its host interval plus the gap to the next step's start)."""
    run = rec["scenarios"][0]["runs"][0]
    steps = run["steps"]
    assert rec["provenance"]["device"]["kind"] == "cuda"
    assert all(s["device_ms"] is not None and s["device_ms"] > 0 for s in steps)
    for st, nxt in zip(steps, steps[1:] + [None]):
        window_s = (nxt["t_start_s"] if nxt else run["wall_s"]) - st["t_start_s"]
        assert st["device_ms"] / 1e3 <= window_s * 1.01 + 50e-6, st
    flags = explain_record(rec, gpu="h100-sxm")["scenarios"][0]["flags"]
    assert not [f for f in flags if f["kind"] == "faster_than_floor"], flags


def test_hf_profile_has_device_timers(tmp_path):
    _check_device_times(profile("tiny-llama", [Scenario(2, 16, 4)], backend="hf", runs=1, warmup=1))


def test_vllm_profile_has_device_timers():
    pytest.importorskip("vllm")
    _check_device_times(profile("tiny-llama", [Scenario(2, 16, 4)], backend="vllm", runs=1, warmup=1,
                                engine_options={"enforce_eager": True, "gpu_memory_utilization": 0.3}))
