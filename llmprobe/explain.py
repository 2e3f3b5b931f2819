"""Measured against the roofline: efficiency, where the time went, and what looks broken.

Time accounting, per measured run (then averaged part by part, which keeps the sums exact):
the run's wall time = the steps + the time between them. Each step belongs to a phase (prefill,
decode, or mixed: both at once, counted with prefill); the gap before a step belongs to that
step's phase and the tail after the last step to decode. A step's time splits into

  floor parts      weights_s, kv_read_s, kv_write_s (memory-bound) or linear_flops_s,
                   attention_flops_s (compute-bound), comm_s (collectives) — the step's analytic floor
  above floor      device time above the floor (GPU) / step time above the floor (CPU)
  host in step     the rest of the step's span: host work its device work did not overlap

A step's span is the union of its host and device intervals (see ``records.Run.timeline``): device work that
runs on past the host's return (async execution) is taken off the following gap, not counted
twice. The gaps are ``host_between_steps_s``. Parts add up to the measured wall time, none negative
(bar "above floor" under a step that beat its floor, which is flagged and not explained).
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, fields
from typing import Any

from .dtypes import nbytes
from .errors import UserError
from .hardware import Ceilings
from .models import ModelSpec, expected_experts_touched
from .records import Run, RunRecord, ScenarioResult, TraceSummary, sampling_label
from .context import RecordContext
from .costs import Floors, RankCosts, class_costs, step_cost
from .memory import card_of
from .bounds import scenario
from .traces import CLASSES

SPREAD_LIMIT = 0.05
BEATS_FLOOR = 0.98   # a step measured under 98% of its floor: the model or the ceilings are wrong
COVERAGE_LOW = 0.9   # decode touched under 90% of the experts uniform routing would: optimistic for a trained model
FLOOR_PARTS = ("weights_s", "kv_read_s", "kv_write_s", "linear_flops_s", "attention_flops_s", "comm_s")


def run_breakdown(run: Run, ctx: RecordContext) -> dict[str, Any]:
    """Parts of one run's wall time per phase, and per-step floors."""
    f = ctx.floors
    bw, peak = f.bw, f.peak
    phases = {p: dict.fromkeys(FLOOR_PARTS + ("above_floor_s", "host_in_step_s", "host_between_steps_s",
                                              "mixed_steps_s"), 0.0) for p in ("prefill", "decode")}
    totals = {p: {"bytes": 0.0, "flops": 0.0, "time_s": 0.0, "floor_s": 0.0, "steps": 0} for p in ("prefill", "decode", "mixed")}
    beaten, concentrated = [], 0
    spans = run.timeline()
    for st, sp in zip(run.steps, spans):
        # a MoE step read the experts its tokens touched: its floor is priced on the coverage it measured
        floor = ctx.step_cost(st)
        kind = st.phase
        phase = phases[st.group]
        t = st.time_s
        if f.model.is_moe and st.experts is None and t < BEATS_FLOOR * floor.floor_s:
            # Unmeasured coverage (records from before it was counted): the floor assumes the experts uniform
            # routing is expected to touch; only the top-k minimum is a floor no step can beat.
            lower = step_cost(f, st.work, optimistic=True)
            if t >= BEATS_FLOOR * lower.floor_s:
                floor, concentrated = lower, concentrated + 1
        phase["host_between_steps_s"] += sp["gap_s"]
        if kind == "mixed":
            phase["mixed_steps_s"] += sp["span_s"]
        else:
            parts = floor.parts_s(bw, peak)
            for part, v in parts.items():
                phase[part] += v
            # the device (or, without one, host) time of the step above its floor; the rest of its
            # span is host work the device did not overlap
            phase["above_floor_s"] += sp["device_s"] - sum(parts.values())
            phase["host_in_step_s"] += sp["span_s"] - sp["device_s"]
        tot = totals[kind]
        tot["bytes"] += floor.bytes
        tot["flops"] += floor.flops
        tot["time_s"] += t
        tot["floor_s"] += floor.floor_s
        tot["steps"] += 1
        if t < BEATS_FLOOR * floor.floor_s:
            beaten.append({"index": st.index, "phase": kind, "measured_s": t, "floor_s": floor.floor_s,
                           "bound": floor.bound})
    phases["decode"]["host_between_steps_s"] += spans[-1]["tail_s"]
    return {"phases": phases, "totals": totals, "beaten": beaten, "concentrated": concentrated}


def expert_coverage(sc: ScenarioResult, spec: ModelSpec, routing: str | None) -> dict[str, Any] | None:
    """Per phase: distinct experts per MoE layer the steps measured, against the uniform-routing expectation for
    the same tokens and the top-k minimum; None where the record did not count experts."""
    if not spec.is_moe:
        return None
    out: dict[str, Any] = {"num_experts": spec.num_experts, "top_k": spec.experts_per_token, "routing": routing}
    layers = spec.num_moe_layers
    for ph in ("prefill", "decode"):
        steps = [st for r in sc.runs for st in r.steps if st.phase == ph and st.experts is not None]
        if not steps:
            continue
        tokens = sorted(st.prefill_tokens + st.decode_tokens for st in steps)
        measured = sum(st.experts.touched() for st in steps) / len(steps) / layers
        expected = sum(expected_experts_touched(spec.num_experts, spec.experts_per_token, st.prefill_tokens
                                                + st.decode_tokens) for st in steps) / len(steps)
        load = sum(sum(st.experts.max_load) for st in steps) / len(steps) / layers
        out[ph] = {"steps": len(steps), "tokens_per_step": tokens[len(tokens) // 2], "measured": measured,
                   "expected": expected, "ratio": measured / expected, "top_k_minimum": spec.experts_per_token,
                   "max_load": load}
    return out if "prefill" in out or "decode" in out else None


def sampling(sc: ScenarioResult, temperature: float | None) -> dict[str, Any] | None:
    """What the sampler cost per decode step (vLLM's sample_tokens, timed by the step hooks; on Model Runner
    V2 it computes the logits too), and how it sampled; None where the engine has no such hook (hf)."""
    steps = [st for r in sc.runs for st in r.steps if st.phase == "decode"]
    device = bool(steps) and all(st.sample_device_ms is not None for st in steps)
    ms = [st.sample_device_ms if device else st.sample_host_ms for st in steps]
    if not steps or any(m is None for m in ms):
        return None
    mid = sorted(ms)[len(ms) // 2]
    return {"temperature": temperature or 0.0, "method": sampling_label(temperature),
            "decode_ms_per_step": mid, "share_of_decode_step": sum(ms) / 1e3 / sum(st.time_s for st in steps),
            "timer": "device" if device else "host"}


def _mean_dicts(ds: Sequence[dict[str, float]]) -> dict[str, float]:
    return {k: sum(d[k] for d in ds) / len(ds) for k in ds[0]}


@dataclass(frozen=True, slots=True)
class Flag:
    """Something that makes a scenario's figures suspect, or its explanation partial: a kind and one sentence."""
    kind: str
    message: str

    def to_dict(self) -> dict[str, str]:
        return {"kind": self.kind, "message": self.message}


@dataclass(frozen=True, slots=True)
class Evidence:
    """What the flag rules look at: the scenario, its record's context, each run's breakdown and the coverage."""
    sc: ScenarioResult
    ctx: RecordContext
    runs: list[dict[str, Any]]
    coverage: dict[str, Any] | None


def _faster_than_floor(e: Evidence) -> Iterator[Flag]:
    beaten = [s for r in e.runs for s in r["beaten"]]
    if beaten:
        worst = min(beaten, key=lambda s: s["measured_s"] / s["floor_s"])
        doubt = ("the HBM bandwidth ceiling or the bytes the model streams (weights, KV)" if worst["bound"] == "memory"
                 else "the peak FLOP/s ceiling or the FLOPs the model counts")
        yield Flag("faster_than_floor", f"{len(beaten)} step(s) ran faster than their floor (worst: {worst['phase']} step "
                   f"{worst['index']} at {worst['measured_s'] / worst['floor_s']:.0%} of it): doubt {doubt}")


def _routing_concentrated(e: Evidence) -> Iterator[Flag]:
    concentrated = sum(r["concentrated"] for r in e.runs)
    if concentrated:
        yield Flag("routing_concentrated", f"{concentrated} MoE step(s) ran under the floor that assumes uniform routing "
                   "(but not under the top-k minimum): their tokens touched fewer distinct experts than uniform routing "
                   "predicts; they are explained against the top-k floor (this record did not count experts)")


def _spread(e: Evidence) -> Iterator[Flag]:
    for key, s in e.sc.summary.items():
        ci = s.median_ci
        if ci and s.median:   # how well the median is known; the min-max range only grows with more runs
            width = (ci["high"] - ci["low"]) / s.median
            if width > SPREAD_LIMIT:
                yield Flag("spread", f"{key}: the median's {ci['level']:.0%} confidence interval spans {width:.1%} of it "
                           f"(over {SPREAD_LIMIT:.0%}): more runs, or a quieter machine")
            continue
        spread = s.spread   # records from before the interval was recorded
        if spread is not None and spread > SPREAD_LIMIT:
            yield Flag("spread", f"{key} varies {spread:.1%} run to run (over {SPREAD_LIMIT:.0%})")


def _throttled(e: Evidence) -> Iterator[Flag]:
    tel = e.sc.telemetry or {}
    if tel.get("throttled"):
        yield Flag("throttled", f"the GPU throttled during the runs: {tel.get('throttle_fraction')}")


def _cross_check(e: Evidence) -> Iterator[Flag]:
    cc = e.sc.cross_check or {}
    if cc.get("above_tolerance"):
        yield Flag("cross_check", f"TTFT differs from the engine's own by up to {cc['max_rel_diff']:.1%} on "
                   f"{cc['above_tolerance']} request(s)")


def _moe_implementation(e: Evidence) -> Iterator[Flag]:
    experts = (((e.ctx.record.engine or {}).get("args") or {}).get("experts_implementation") or {})
    if "batched_mm" in str(experts.get("decode", "")):
        yield Flag("moe_implementation", "transformers ran the experts as batched_mm in decode: it copies each selected "
                   "expert's weights per token, so decode reads several times the floor's expert bytes (an hf artefact; "
                   "vLLM's fused MoE reads each touched expert once)")


def _incomplete(e: Evidence) -> Iterator[Flag]:
    for prob in e.sc.problems:
        yield Flag("incomplete", prob)


def _trace_failed(e: Evidence) -> Iterator[Flag]:
    if e.sc.trace and e.sc.trace.error:
        yield Flag("trace_failed", f"the traced runs failed: {e.sc.trace.error}")


def _batch_split(e: Evidence) -> Iterator[Flag]:
    adm = e.sc.admission
    if adm and adm.split_runs:
        yield Flag("batch_split", f"run(s) {adm.split_runs} did not start as one batch: their first steps held "
                   f"{adm.first_step_requests} of {adm.batch} requests ({adm.method})")


def _busy_host(e: Evidence) -> Iterator[Flag]:
    load = e.sc.host_load
    if load and load.busy:
        yield Flag("busy_host", "the machine was busy beside the runs (" + "; ".join(load.reasons)
                   + "): figures are likely slower than this machine can do")


def _record_incomplete(e: Evidence) -> Iterator[Flag]:
    record = e.ctx.record
    if record.status not in (None, "complete"):
        yield Flag("record_incomplete", f"the run record is {record.status}"
                   + (f" ({record.error})" if record.error else "") + ": later scenarios are missing")


def _quick_ceiling(e: Evidence) -> Iterator[Flag]:
    ceil = e.ctx.ceilings
    if ceil.kind == "measured" and ceil.mode == "quick":
        peak = ceil.flops_per_s(e.ctx.floors.compute_dtype)
        compute_bound = [ph for ph, t in e.runs[0]["totals"].items()
                         if t["steps"] and t["flops"] / peak > t["bytes"] / ceil.hbm_bytes_per_s]
        if compute_bound:
            yield Flag("quick_ceiling", "compute-bound efficiencies (" + ", ".join(compute_bound) + ") are against the "
                       "quick pass's one-shape matmul ceiling, which a shape sweep beats: `llmprobe roofline --full` "
                       "(or --remeasure) on this machine measures the sweep")


def _datasheet(e: Evidence) -> Iterator[Flag]:
    ctx = e.ctx
    if ctx.source == "datasheet":
        yield Flag("datasheet_ceilings", "no ceilings measured on this card: efficiencies are against the datasheet "
                   "(run `llmprobe roofline` on it for measured ones)")
        if ctx.gpu_id != ctx.ceilings.gpu_id:
            yield Flag("other_device", f"explained against {ctx.ceilings.name}'s datasheet, but the record was measured "
                       f"on {ctx.record.device.get('name') or 'an unknown device'}: the efficiencies compare two "
                       "different machines")


def _low_expert_coverage(e: Evidence) -> Iterator[Flag]:
    cov = e.coverage
    low = (cov or {}).get("decode")
    if low and low["ratio"] < COVERAGE_LOW:
        how = {"as-loaded": " (routing as loaded: random routers; --routing trained-like spreads them)",
               "trained-like": " (trained-like routers: the tokens themselves repeat, e.g. greedy decoding in a cycle)"}
        yield Flag("low_expert_coverage", f"decode steps touched {low['measured']:.2f} of {cov['num_experts']} experts "
                   f"per layer, {1 - low['ratio']:.0%} under the {low['expected']:.2f} uniform routing touches: "
                   "tokens/s is optimistic for a trained checkpoint" + how.get(cov.get("routing") or "", ""))


# In the order explain lists them.
FLAG_RULES = (_faster_than_floor, _routing_concentrated, _spread, _throttled, _cross_check, _moe_implementation,
              _incomplete, _trace_failed, _batch_split, _busy_host, _record_incomplete, _quick_ceiling, _datasheet,
              _low_expert_coverage)


@dataclass(slots=True)
class ScenarioExplanation:
    """One scenario against its floors. ``breakdown`` ({phase: {part: s}}, each phase's parts summing to
    ``phase_time_s[phase]``) is None when a step ran under its floor: such a scenario is flagged, not explained."""
    batch: int
    prompt_len: int
    gen_len: int
    ceilings_source: str
    ceilings: dict[str, Any]
    ceilings_mode: str | None
    bandwidth_method: str | None
    ttft: dict[str, Any]
    tpot: dict[str, Any]
    tps: dict[str, Any]
    breakdown: dict[str, dict[str, float]] | None
    phase_time_s: dict[str, float] | None
    measured_wall_s: float
    achieved: dict[str, dict[str, Any]]
    extrapolated: dict[str, Any] | None       # layer-sampled runs: the full model's estimate
    warmup: dict[str, float] | None
    kernels: dict[str, Any] | None            # traced steps by kernel class
    sampling: dict[str, Any] | None
    energy: dict[str, Any] | None
    experts: dict[str, Any] | None            # MoE with counted experts: measured coverage
    flags: list[Flag]
    explained: bool

    def to_dict(self) -> dict[str, Any]:
        d = {f.name: getattr(self, f.name) for f in fields(self)}
        d["flags"] = [fl.to_dict() for fl in self.flags]
        return {k: v for k, v in d.items() if v is not None or k not in _ABSENT_WHEN_NONE}


_ABSENT_WHEN_NONE = ("extrapolated", "warmup", "energy", "experts")


@dataclass(slots=True)
class Explanation:
    """A run record explained: what ran where, on which ceilings, and each scenario."""
    model: str
    layers_note: str | None
    backend: str
    device: str | None
    ceilings_source: str
    ceilings: dict[str, Any]
    compute: dict[str, Any] | None
    execution: dict[str, Any] | None
    scenarios: list[ScenarioExplanation]

    def to_dict(self) -> dict[str, Any]:
        d = {f.name: getattr(self, f.name) for f in fields(self)}
        d["scenarios"] = [s.to_dict() for s in self.scenarios]
        return d


def explain_scenario(sc: ScenarioResult, ctx: RecordContext) -> ScenarioExplanation:
    f, ceil, record = ctx.floors, ctx.ceilings, ctx.record
    bound = ctx.bound(sc)
    sm = sc.summary
    runs = [run_breakdown(r, ctx) for r in sc.runs]

    def eff(floor, measured):
        return floor / measured if measured else None
    ttft_m, tpot_m = sm["ttft_s"].median, sm["tpot_s"].median
    breakdown = {ph: _mean_dicts([r["phases"][ph] for r in runs]) for ph in ("prefill", "decode")}
    measured_wall = sum(r.wall_s for r in sc.runs) / len(sc.runs)
    cov = expert_coverage(sc, f.model, record.config.get("routing"))
    flags = [fl for rule in FLAG_RULES for fl in rule(Evidence(sc, ctx, runs, cov))]
    explained = not any(r["beaten"] for r in runs)
    warm = sc.warmup_runs
    spec = f.model
    return ScenarioExplanation(
        batch=sc.batch, prompt_len=sc.prompt_len, gen_len=sc.gen_len, ceilings_source=ctx.source,
        ceilings=ceil.to_dict(), ceilings_mode=ceil.mode, bandwidth_method=ceil.bandwidth_method,
        ttft={"measured_s": ttft_m, "floor_s": bound.ttft_floor_s, "efficiency": eff(bound.ttft_floor_s, ttft_m)},
        tpot={"measured_s": tpot_m, "floor_s": bound.tpot_floor_s, "efficiency": eff(bound.tpot_floor_s, tpot_m)},
        tps={"measured": sm["tps"].median, "ceiling": bound.tps_ceiling, "efficiency": ctx.tps_efficiency(sc),
             "ceiling_optimistic": bound.tps_ceiling_optimistic},
        breakdown=breakdown if explained else None,
        phase_time_s={ph: sum(parts.values()) for ph, parts in breakdown.items()} if explained else None,
        measured_wall_s=measured_wall, achieved=_achieved(sc, runs, ctx),
        extrapolated=(extrapolate(sc, ctx) if spec.full_num_layers and spec.full_num_layers != spec.num_layers
                      else None),
        warmup=({"first_warmup_wall_s": warm[0].wall_s, "measured_mean_wall_s": measured_wall,
                 "excess_s": warm[0].wall_s - measured_wall} if warm else None),
        kernels=explain_kernels(sc.trace, f), sampling=sampling(sc, record.config.get("temperature")),
        energy=_energy(sc, record), experts=cov, flags=flags, explained=explained)


def _achieved(sc: ScenarioResult, runs: list[dict[str, Any]], ctx: RecordContext) -> dict[str, dict[str, Any]]:
    """Achieved bandwidth and FLOP/s per phase, gpt-fast's view: the floors' bytes and FLOPs / the steps' time."""
    out = {}
    for ph in ("prefill", "decode"):
        tot = _mean_dicts([r["totals"][ph] for r in runs])
        if tot["time_s"] > 0:
            out[ph] = {"bytes_per_s": tot["bytes"] / tot["time_s"], "flops_per_s": tot["flops"] / tot["time_s"],
                       "bandwidth_fraction": tot["bytes"] / tot["time_s"] / ctx.ceilings.hbm_bytes_per_s,
                       "flops_fraction": tot["flops"] / tot["time_s"] / ctx.floors.peak,
                       "intensity_flop_per_byte": tot["flops"] / tot["bytes"] if tot["bytes"] else None,
                       "steps_per_run": tot["steps"], "step_time_s": tot["time_s"], "floor_s": tot["floor_s"],
                       "timer": "device" if all(s.device_ms is not None for s in sc.runs[0].steps) else "host"}
    return out


def _energy(sc: ScenarioResult, record: RunRecord) -> dict[str, Any] | None:
    """NVML's energy counter around each measured run, all the engine's GPUs; None where it was not read."""
    jpt = sc.summary.get("joules_per_token")
    if not jpt:
        return None
    tel = sc.telemetry or {}
    return {"joules_per_output_token": jpt.median, "power_w": (tel.get("power_w") or {}).get("median"),
            "sm_clock_mhz": (tel.get("sm_clock_mhz") or {}).get("median"),
            "power_limit_w": record.device.get("power_limit_w"),
            "gpus": record.config.get("tp", 1) * record.config.get("pp", 1)}


def extrapolate(sc: ScenarioResult, ctx: RecordContext) -> dict[str, Any]:
    """Full-model estimate from a layer-sampled run: per-layer time x layers + the fixed part.

    The fixed part is the time that does not scale with layers: everything between and around
    steps, and the share of each step's device time that the floor gives to the lm_head, the final
    norm and the embedding gather (its fraction of the floor). The rest scales by full/sampled layers.
    """
    f = ctx.floors
    spec, c = f.model, f.costs
    k = spec.full_num_layers / spec.num_layers
    full = ctx.full_depth_floors()
    ests = []
    for run in sc.runs:
        est_wall, first_token = 0.0, None
        prev_end = 0.0
        for st in run.steps:
            floor = ctx.step_cost(st)
            layer_share = 1.0 - _fixed_share(c, floor, rows=len(st.seqs))
            t = st.time_s
            scaled = t * (1 - layer_share) + t * layer_share * k
            est_wall += (st.t_start_s - prev_end) + (st.t_end_s - st.t_start_s - t) + scaled
            prev_end = st.t_end_s
            if first_token is None and st.prefill_tokens:
                first_token = est_wall
        est_wall += run.wall_s - prev_end
        out_tokens = sum(r.output_tokens for r in run.requests)
        ests.append({"wall_s": est_wall, "tps": out_tokens / est_wall, "ttft_s": first_token})
    n = len(ests)
    tps = sum(e["tps"] for e in ests) / n
    full_bound = scenario(full, card_of(f.ceilings), sc.batch, sc.prompt_len, sc.gen_len, advise=False)
    return {"label": f"extrapolated from {spec.num_layers} to {spec.full_num_layers} layers",
            "tps": tps, "ttft_s": _mean_present([e["ttft_s"] for e in ests]), "wall_s": sum(e["wall_s"] for e in ests) / n,
            "tps_ceiling_full": full_bound.tps_ceiling, "efficiency": tps / full_bound.tps_ceiling}


def _mean_present(values: list[float | None]) -> float | None:
    """The mean of the values that exist (a run with no prefill step has no TTFT, not a TTFT of 0)."""
    got = [v for v in values if v is not None]
    return sum(got) / len(got) if got else None


def _fixed_share(c: RankCosts, floor, rows: int) -> float:
    """Fraction of a step's floor spent outside the decoder layers: the lm_head (and final norm)."""
    if floor.floor_s <= 0:
        return 0.0
    if floor.bound == "memory":
        final_norm = c.model.hidden_size * nbytes(c.activation_dtype)
        return min(1.0, (c.lm_head_bytes + final_norm) / floor.bytes)
    return min(1.0, c.lm_head_flops_per_row * rows / floor.flops) if floor.flops else 0.0


def explain_kernels(trace: TraceSummary | None, f: Floors) -> dict[str, Any] | None:
    """Per phase: each class's time per traced step, share of the step, own floor on these ceilings and
    efficiency; the unattributed rest; the class furthest from its floor. None without a trace."""
    if trace is None or trace.error is not None:
        return None
    out: dict[str, Any] = {"coverage": {}, "headline": {}}
    for ph in ("prefill", "decode"):
        steps_ = [s for s in trace.steps if s["phase"] == ph]
        if not steps_:
            out[ph], out["coverage"][ph] = [], None
            continue
        step_s = statistics.fmean(s["time_s"] for s in steps_)
        costs = [class_costs(f, [tuple(q) for q in s["seqs"]]) for s in steps_]
        times: dict[str, float] = defaultdict(float)
        for r in trace.kernels:
            if r["phase"] == ph:
                times[r["class"]] += r["time_s"]
        rows = []
        for cls in CLASSES:
            t = times.get(cls, 0.0)
            if not t:   # a class with a floor but no time here (the hf step has no sampler in it): nothing to show
                continue
            have = [c[cls] for c in costs if cls in c]
            floor = statistics.fmean(c.floor_s for c in have) if have else None
            nbytes = statistics.fmean(c.bytes for c in have) if have else None
            flops = statistics.fmean(c.flops for c in have) if have else None
            bound = have[0].bound if have else None
            rows.append({"class": cls, "time_s": t, "share": t / step_s, "floor_s": floor,
                         "efficiency": floor / t if floor is not None and t > 0 else None, "bound": bound,
                         "achieved_bytes_per_s": nbytes / t if nbytes and t > 0 else None,
                         "achieved_flops_per_s": flops / t if flops and t > 0 else None})
        attributed = sum(r["time_s"] for r in rows)
        rows.append({"class": "unattributed", "time_s": max(step_s - attributed, 0.0),
                     "share": max(step_s - attributed, 0.0) / step_s, "floor_s": None, "efficiency": None,
                     "bound": None, "achieved_bytes_per_s": None, "achieved_flops_per_s": None})
        out[ph] = rows
        out["coverage"][ph] = attributed / step_s
        out["headline"][ph] = _headline(rows, step_s, f)
    out["step_time_s"] = trace.step_time_s
    out["overhead"] = trace.overhead
    out["steps_traced"] = trace.steps_traced
    out["cuda_graphs"] = trace.cuda_graphs
    return out


def _headline(rows: list[dict[str, Any]], step_s: float, f: Floors) -> dict[str, Any] | None:
    """The class with the most time above its own floor, what bounds it ("hbm" on a GPU's memory) and its share
    of the whole step's gap to the floor (labels.headline says it in words)."""
    priced = [r for r in rows if r["floor_s"] is not None and r["time_s"] > 0]
    if not priced:
        return None
    worst = max(priced, key=lambda r: r["time_s"] - r["floor_s"])
    gap = step_s - sum(r["floor_s"] for r in priced)
    bound = "hbm" if worst["bound"] == "memory" and f.ceilings.gpu_id not in (None, "cpu") else worst["bound"]
    return {"class": worst["class"], "efficiency": worst["efficiency"], "bound": bound,
            "share_of_gap": (worst["time_s"] - worst["floor_s"]) / gap if gap > 0 else None}


def explain(ctx: RecordContext) -> Explanation:
    """A run record, in its context, against its floors."""
    record = ctx.record
    if any(not sc.runs for sc in record.scenarios):
        raise UserError("a scenario of the run record has no measured run: nothing to explain")
    cfg = record.config
    return Explanation(model=cfg["model"], layers_note=cfg.get("layers_note"), backend=cfg["backend"],
                       device=record.device.get("name"), ceilings_source=ctx.source, ceilings=ctx.ceilings.to_dict(),
                       compute=record.compute, execution=(record.engine or {}).get("execution"),
                       scenarios=[explain_scenario(sc, ctx) for sc in record.scenarios])


def explain_record(record: RunRecord | dict[str, Any], gpu: str | None = None,
                   ceilings: Ceilings | None = None) -> Explanation:
    """``explain`` for a record (typed, or the document ``profile`` wrote), on ``RecordContext.of``'s ceilings."""
    return explain(RecordContext.of(record, gpu, ceilings))
