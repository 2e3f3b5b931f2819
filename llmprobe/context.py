"""One run record's derived inputs, derived once: the model it ran, the ceilings it is judged on, the floors, the
catalog GPU it ran on and each step's analytic cost. explain, report, plots, predict and compare all read them here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .costs import Floors, StepCost, step_cost
from .dtypes import kv_dtype_of
from .errors import UserError
from .hardware import Ceilings, match_device_name, resolve_gpu
from .memory import card_of
from .models import ModelSpec, from_hf_config
from .records import RunRecord, ScenarioResult, ServeRecord, Step
from .bounds import ScenarioBound, scenario


def record_gpu_id(record: RunRecord | ServeRecord) -> str | None:
    """The catalog id of the device a record ran on: "cpu" on a CPU, None for a GPU the catalog lacks or a server
    loaded over HTTP (its machine is not described). Run records since the memory preflight hold it; the others are
    matched by the device's name and memory."""
    dev = record.device
    if dev.get("kind") == "remote":
        return None
    if dev.get("kind") != "cuda":
        return "cpu"
    held = (getattr(record, "memory_fit", None) or {}).get("gpu_id")
    if held:
        return held
    spec = match_device_name(dev.get("name") or "", dev.get("memory_bytes"))
    return spec.id if spec else None


def record_model(record: RunRecord | ServeRecord) -> ModelSpec:
    """The model as it ran: the record's config at its own layer count (a layer-sampled run keeps its full depth)."""
    cfg = record.config
    if not record.model_config:
        raise UserError(f"the run record of {cfg['model']} carries no model_config: it cannot be explained")
    spec = from_hf_config(record.model_config, name=cfg["model"], source=cfg.get("model_source", ""))
    if cfg.get("full_layers") and cfg["full_layers"] != spec.num_layers:
        full = from_hf_config({**record.model_config, "num_hidden_layers": cfg["full_layers"]}, name=cfg["model"])
        spec = full.with_layers(spec.num_layers)
    return spec


@dataclass
class RecordContext:
    """A record with what every reader derives from it. ``source``: "measured" or "datasheet" ceilings."""
    record: RunRecord | ServeRecord
    spec: ModelSpec
    ceilings: Ceilings
    source: str
    floors: Floors
    gpu_id: str | None
    _costs: dict[int, StepCost] = field(default_factory=dict, repr=False)
    _bounds: dict[tuple[int, int, int], ScenarioBound] = field(default_factory=dict, repr=False)
    _full: Floors | None = field(default=None, repr=False)

    @classmethod
    def of(cls, record: RunRecord | ServeRecord | dict[str, Any], gpu: str | None = None,
           ceilings: Ceilings | None = None) -> RecordContext:
        """On ``ceilings`` (a measurement the caller loaded) or ``gpu``'s datasheet where given; else the
        ceilings the record carries, else its device's datasheet."""
        if isinstance(record, dict):
            record = (ServeRecord if record.get("kind") == "llmprobe.serve" else RunRecord).from_dict(record)
        if gpu and ceilings is not None:
            raise UserError("--gpu (a catalog datasheet) and --ceilings (a measurement) name two different ceilings: "
                            "give one")
        gpu_id = record_gpu_id(record)
        ceil, source = _ceilings(record, gpu, ceilings, gpu_id)
        cfg = record.config
        spec = record_model(record)
        floors = Floors.of(spec, ceil, dtype=cfg.get("weight_dtype", "bf16"),
                           kv_dtype=kv_dtype_of(cfg.get("kv_cache_dtype", "auto")), tp=cfg.get("tp", 1))
        return cls(record, spec, ceil, source, floors, gpu_id)

    def step_cost(self, step: Step) -> StepCost:
        """The step's floor, priced on the experts it measured touching (MoE) where it counted them."""
        key = id(step)
        if key not in self._costs:
            self._costs[key] = step_cost(self.floors, step.work,
                                         experts_touched=step.experts.touched() if step.experts else None)
        return self._costs[key]

    def full_depth_floors(self) -> Floors:
        """The floors of the whole model, where the record ran a slice of its layers (what explain extrapolates to)."""
        if self._full is None:
            s, c = self.floors.model, self.floors.costs
            self._full = Floors.of(from_hf_config({**s.config, "num_hidden_layers": s.full_num_layers}, s.name),
                                   self.ceilings, dtype=c.dtype, kv_dtype=c.kv_dtype, tp=c.tp)
        return self._full

    def bound(self, sc: ScenarioResult) -> ScenarioBound:
        """The scenario's analytic floors and TPS ceiling on these ceilings (bounds.scenario)."""
        key = (sc.batch, sc.prompt_len, sc.gen_len)
        if key not in self._bounds:
            self._bounds[key] = scenario(self.floors, card_of(self.ceilings), *key, advise=False)
        return self._bounds[key]

    def tps_efficiency(self, sc: ScenarioResult) -> float | None:
        """Measured TPS (median over runs) / the TPS ceiling."""
        tps = sc.summary["tps"].median
        return tps / self.bound(sc).tps_ceiling if tps else None


def _ceilings(record: RunRecord | ServeRecord, gpu: str | None, given: Ceilings | None, gpu_id: str | None) -> tuple[Ceilings, str]:
    from .microbench.result import ceilings_from_record
    if given is not None:
        return given, "measured"
    if gpu:
        return resolve_gpu(gpu).ceilings(), "datasheet"
    if record.ceilings:
        return ceilings_from_record(record.ceilings), "measured"
    if gpu_id in (None, "cpu"):
        raise UserError("the record carries no measured ceilings and its device is not in the GPU catalog: "
                        "profile it without --no-ceilings, run `llmprobe roofline` on that machine, or pass --gpu or --ceilings")
    return resolve_gpu(gpu_id).ceilings(), "datasheet"
