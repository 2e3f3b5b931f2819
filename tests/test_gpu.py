"""GPU-only checks: skipped without a CUDA GPU (the `gpu` marker), run on the GPU machine."""

import pytest

from llmprobe.profiling import Scenario, profile

pytestmark = pytest.mark.gpu


def test_hf_profile_has_device_timers(tmp_path):
    rec = profile("tiny-llama", [Scenario(2, 16, 4)], backend="hf", runs=1, warmup=1)
    steps = rec["scenarios"][0]["runs"][0]["steps"]
    assert rec["provenance"]["device"]["kind"] == "cuda"
    assert all(s["device_ms"] is not None and s["device_ms"] > 0 for s in steps)


def test_vllm_profile_has_device_timers():
    pytest.importorskip("vllm")
    rec = profile("tiny-llama", [Scenario(2, 16, 4)], backend="vllm", runs=1, warmup=1,
                  engine_options={"enforce_eager": True, "gpu_memory_utilization": 0.3})
    steps = rec["scenarios"][0]["runs"][0]["steps"]
    assert all(s["device_ms"] is not None and s["device_ms"] > 0 for s in steps)
