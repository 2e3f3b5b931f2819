"""llmprobe: how fast an LLM really runs on a GPU, how fast it could run, and what a token costs.

The analytic core (models, hardware, costs, bounds) imports nothing heavier than the standard library;
measurement, engines and plots import torch, triton, cupy, pynvml, vllm or matplotlib only when used.
"""

import importlib.util as _ilu
import sys as _sys
from pathlib import Path as _Path

from .errors import UserError
from .hardware import Ceilings, GpuSpec, gpu_catalog, resolve_gpu
from .models import ModelSpec, catalog_names, expected_experts_touched, from_hf_config, resolve_model
from .costs import Floors, RankCosts, StepCost, decode_cost, decode_sum, prefill_cost, roofline, step_cost
from .memory import Card, fit_advice, memory_required
from .bounds import Grid, ScenarioBound, bound, scenario, sweep, to_table

__version__ = "0.1.0"


def _bind_kernels() -> None:
    """Make ``llmprobe.kernels`` importable from a plain source tree, not only from an install.

    Installed (wheel or editable), pyproject's package-dir maps the top-level ``kernels/`` folder to
    ``llmprobe.kernels``. Run from a repository root without an install (as the GPU machine does),
    ``llmprobe`` is found through the working directory and that mapping does not exist: bind the
    sibling folder under the same name so launchers find the sources the same way everywhere.
    Kept over the alternatives: moving the device code into the package would leave no top-level
    ``kernels/`` (the layout the brief names), and an install step on the lent GPU machine (offline)
    is untried there, where a failure would cost its few minutes.
    """
    if "llmprobe.kernels" in _sys.modules or _ilu.find_spec(__name__ + ".kernels") is not None:
        return
    folder = _Path(__file__).resolve().parent.parent / "kernels"
    if not (folder / "__init__.py").is_file():
        return
    spec = _ilu.spec_from_file_location(__name__ + ".kernels", folder / "__init__.py",
                                        submodule_search_locations=[str(folder)])
    module = _ilu.module_from_spec(spec)
    _sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    globals()["kernels"] = module


_bind_kernels()

__all__ = ["Card", "Ceilings", "Floors", "GpuSpec", "Grid", "ModelSpec", "RankCosts", "ScenarioBound", "StepCost",
           "UserError", "bound", "catalog_names", "decode_cost", "decode_sum", "expected_experts_touched", "fit_advice",
           "from_hf_config", "gpu_catalog", "memory_required", "prefill_cost", "resolve_gpu", "resolve_model",
           "roofline", "scenario", "step_cost", "sweep", "to_table"]
