"""llmprobe: how fast an LLM really runs on a GPU, how fast it could run, and what a token costs.

The analytic core (models, hardware, roofline) imports nothing heavier than the standard library;
measurement, engines and plots import torch, triton, cupy, pynvml, vllm or matplotlib only when used.
"""

from .errors import UserError
from .hardware import Ceilings, GpuSpec, gpu_catalog, resolve_gpu
from .models import ModelSpec, catalog_names, expected_experts_touched, from_hf_config, resolve_model
from .roofline import CostModel, Grid, ScenarioBound, StepCost, sweep, to_table

__version__ = "0.1.0"
__all__ = ["Ceilings", "CostModel", "GpuSpec", "Grid", "ModelSpec", "ScenarioBound", "StepCost", "UserError",
           "catalog_names", "expected_experts_touched", "from_hf_config", "gpu_catalog", "resolve_gpu",
           "resolve_model", "sweep", "to_table"]
