"""Measured against the roofline: efficiency, where the time went, and what looks broken.

Time accounting, per measured run (then averaged part by part, which keeps the sums exact):
the run's wall time = the steps + the time between them. Each step belongs to a phase (prefill,
decode, or mixed: both at once, counted with prefill); the gap before a step belongs to that
step's phase and the tail after the last step to decode. A step's time splits into

  floor parts      weights_s, kv_read_s, kv_write_s (memory-bound) or linear_flops_s,
                   attention_flops_s (compute-bound), comm_s (collectives) — the step's analytic floor
  above floor      device time above the floor (GPU) / step time above the floor (CPU)
  host in step     the rest of the step's span: host work its device work did not overlap

A step's span is the union of its host and device intervals (see ``timeline``): device work that
runs on past the host's return (async execution) is taken off the following gap, not counted
twice. The gaps are ``host_between_steps_s``. Parts add up to the measured wall time, none negative
(bar "above floor" under a step that beat its floor, which is flagged and not explained).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .dtypes import kv_dtype_of, nbytes
from .errors import UserError
from .hardware import Ceilings, match_device_name, resolve_gpu
from .models import ModelSpec, expected_experts_touched, from_hf_config
from .records import Run, RunRecord, ScenarioResult, sampling_label
from .costs import Floors, RankCosts, step_cost
from .memory import card_of
from .roofline import scenario
from .timing import relative_spread
from .traces import explain_kernels

SPREAD_LIMIT = 0.05
BEATS_FLOOR = 0.98   # a step measured under 98% of its floor: the model or the ceilings are wrong
COVERAGE_LOW = 0.9   # decode touched under 90% of the experts uniform routing would: optimistic for a trained model
FLOOR_PARTS = ("weights_s", "kv_read_s", "kv_write_s", "linear_flops_s", "attention_flops_s", "comm_s")
# The parts of a phase's time, grouped as tables and charts show them, in this order.
PART_GROUPS = [
    ("floor: weights", ("weights_s",)),
    ("floor: KV cache", ("kv_read_s", "kv_write_s")),
    ("floor: FLOPs", ("linear_flops_s", "attention_flops_s")),
    ("floor: communication", ("comm_s",)),
    ("above floor (in step)", ("above_floor_s",)),
    ("host in step", ("host_in_step_s",)),
    ("host between steps", ("host_between_steps_s",)),
    ("mixed steps", ("mixed_steps_s",)),
]


@dataclass
class Inputs:
    ceilings: Ceilings
    source: str                # "measured" | "datasheet"
    floors: Floors


def ceilings_for(record: RunRecord, gpu: str | None = None, ceilings_file: dict | None = None) -> tuple[Ceilings, str]:
    from .microbench.result import ceilings_from_record
    if ceilings_file is not None:
        return ceilings_from_record(ceilings_file), "measured"
    if gpu:
        return resolve_gpu(gpu).ceilings(), "datasheet"
    if record.ceilings:
        return ceilings_from_record(record.ceilings), "measured"
    dev = record.device
    spec = match_device_name(dev.get("name") or "", dev.get("memory_bytes")) if dev.get("kind") == "cuda" else None
    if spec is None:
        raise UserError("the record carries no measured ceilings and its device is not in the GPU catalog: "
                        "profile it without --no-ceilings, run `llmprobe roofline` on that machine, or pass --gpu or --ceilings")
    return spec.ceilings(), "datasheet"


def inputs_for(record: RunRecord, gpu: str | None = None, ceilings_file: dict | None = None) -> Inputs:
    cfg = record.config
    if not record.model_config:
        raise UserError(f"the run record of {cfg['model']} carries no model_config: it cannot be explained")
    spec = from_hf_config(record.model_config, name=cfg["model"], source=cfg.get("model_source", ""))
    if cfg.get("full_layers") and cfg["full_layers"] != spec.num_layers:
        full = from_hf_config({**record.model_config, "num_hidden_layers": cfg["full_layers"]}, name=cfg["model"])
        spec = full.with_layers(spec.num_layers)
    ceil, source = ceilings_for(record, gpu, ceilings_file)
    kv = kv_dtype_of(cfg.get("kv_cache_dtype", "auto"))
    return Inputs(ceil, source, Floors.of(spec, ceil, dtype=cfg.get("weight_dtype", "bf16"), kv_dtype=kv, tp=cfg.get("tp", 1)))


def timeline(run: Run) -> list[dict[str, float]]:
    """Each step's share of the run's wall time: the gap before it and its own span, never negative.

    A step occupies the union of its host interval [t_start, t_end] and its device interval. Device
    work is queued, so it starts no earlier than the step's host start nor before the previous step's
    device work ends, and lasts the measured device time: with async execution it runs on past the
    host's return, into what would otherwise look like the gap before the next step. That overlap
    is taken off the gap; the timeline is clipped at the run's wall time, so gaps + spans + tail
    = wall exactly. Without a device timer the device interval is the host interval.
    """
    wall = run.wall_s
    cursor = dev_end = 0.0
    out = []
    for st in run.steps:
        a, b = st.t_start_s, st.t_end_s
        t = st.time_s
        if st.device_ms is None:
            d0, d1 = a, b
        else:
            d0 = max(a, dev_end)
            d1 = d0 + t
            dev_end = d1
        start = min(max(a, cursor), wall)
        end = min(max(b, d1, start), wall)
        out.append({"gap_s": start - cursor, "span_s": end - start, "device_s": min(t, end - start)})
        cursor = end
    out.append({"tail_s": wall - cursor})
    return out


def run_breakdown(run: Run, f: Floors) -> dict[str, Any]:
    """Parts of one run's wall time per phase, and per-step floors."""
    bw, peak = f.bw, f.peak
    phases = {p: dict.fromkeys(FLOOR_PARTS + ("above_floor_s", "host_in_step_s", "host_between_steps_s",
                                              "mixed_steps_s"), 0.0) for p in ("prefill", "decode")}
    totals = {p: {"bytes": 0.0, "flops": 0.0, "time_s": 0.0, "floor_s": 0.0, "steps": 0} for p in ("prefill", "decode", "mixed")}
    beaten, concentrated = [], 0
    spans = timeline(run)
    for st, sp in zip(run.steps, spans):
        seqs = st.work
        # a MoE step read the experts its tokens touched: its floor is priced on the coverage it measured
        floor = step_cost(f, seqs, experts_touched=st.experts.touched() if st.experts else None)
        kind = st.phase
        phase = phases["decode" if kind == "decode" else "prefill"]
        t = st.time_s
        if f.model.is_moe and st.experts is None and t < BEATS_FLOOR * floor.floor_s:
            # Unmeasured coverage (records from before it was counted): the floor assumes the experts uniform
            # routing is expected to touch; only the top-k minimum is a floor no step can beat.
            lower = step_cost(f, seqs, optimistic=True)
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


def _compute_bound_phases(totals: dict[str, dict[str, float]], ceil: Ceilings, f: Floors) -> list[str]:
    """The phases whose floor is set by FLOP/s rather than bytes on these ceilings."""
    peak = ceil.flops(f.compute_dtype)
    return [ph for ph, t in totals.items() if t["steps"] and t["flops"] / peak > t["bytes"] / ceil.hbm_bytes_per_s]


def _mean_dicts(ds: Sequence[dict[str, float]]) -> dict[str, float]:
    return {k: sum(d[k] for d in ds) / len(ds) for k in ds[0]}


def explain_scenario(sc: ScenarioResult, record: RunRecord, inp: Inputs) -> dict[str, Any]:
    f, ceil = inp.floors, inp.ceilings
    b, p, g = sc.batch, sc.prompt_len, sc.gen_len
    bound = scenario(f, card_of(ceil), b, p, g, advise=False)
    sm = sc.summary
    runs = [run_breakdown(r, f) for r in sc.runs]
    flags: list[dict[str, str]] = []

    def eff(floor, measured):
        return floor / measured if measured else None
    ttft_m, tpot_m, tps_m = sm["ttft_s"]["median"], sm["tpot_s"]["median"], sm["tps"]["median"]
    out: dict[str, Any] = {
        "batch": b, "prompt_len": p, "gen_len": g, "ceilings_source": inp.source, "ceilings": ceil.to_dict(),
        "ceilings_mode": ceil.mode, "bandwidth_method": ceil.bandwidth_method,
        "ttft": {"measured_s": ttft_m, "floor_s": bound.ttft_floor_s, "efficiency": eff(bound.ttft_floor_s, ttft_m)},
        "tpot": {"measured_s": tpot_m, "floor_s": bound.tpot_floor_s, "efficiency": eff(bound.tpot_floor_s, tpot_m)},
        "tps": {"measured": tps_m, "ceiling": bound.tps_ceiling,
                "efficiency": tps_m / bound.tps_ceiling if tps_m else None,
                "ceiling_optimistic": bound.tps_ceiling_optimistic},
    }
    # ---- where the time went ----
    breakdown = {ph: _mean_dicts([r["phases"][ph] for r in runs]) for ph in ("prefill", "decode")}
    measured_wall = sum(r.wall_s for r in sc.runs) / len(sc.runs)
    out["breakdown"] = breakdown   # {phase: {part: s}}; each phase's parts sum to phase_time_s[phase]
    out["phase_time_s"] = {ph: sum(parts.values()) for ph, parts in breakdown.items()}
    out["measured_wall_s"] = measured_wall
    # ---- achieved bandwidth and FLOP/s (gpt-fast's view: model bytes x steps / time) ----
    achieved = {}
    for ph in ("prefill", "decode"):
        tot = _mean_dicts([r["totals"][ph] for r in runs])
        if tot["time_s"] > 0:
            achieved[ph] = {"bytes_per_s": tot["bytes"] / tot["time_s"], "flops_per_s": tot["flops"] / tot["time_s"],
                            "bandwidth_fraction": tot["bytes"] / tot["time_s"] / ceil.hbm_bytes_per_s,
                            "flops_fraction": tot["flops"] / tot["time_s"] / f.peak,
                            "intensity_flop_per_byte": tot["flops"] / tot["bytes"] if tot["bytes"] else None,
                            "steps_per_run": tot["steps"], "step_time_s": tot["time_s"], "floor_s": tot["floor_s"],
                            "timer": "device" if all(s.device_ms is not None for s in sc.runs[0].steps) else "host"}
    out["achieved"] = achieved
    # ---- layer-sampled runs ----
    spec = f.model
    if spec.full_num_layers and spec.full_num_layers != spec.num_layers:
        out["extrapolated"] = extrapolate(sc, f)
    # ---- consistency checks ----
    beaten = [s for r in runs for s in r["beaten"]]
    if beaten:
        worst = min(beaten, key=lambda s: s["measured_s"] / s["floor_s"])
        doubt = ("the HBM bandwidth ceiling or the bytes the model streams (weights, KV)" if worst["bound"] == "memory"
                 else "the peak FLOP/s ceiling or the FLOPs the model counts")
        flags.append({"kind": "faster_than_floor", "message":
                      f"{len(beaten)} step(s) ran faster than their floor (worst: {worst['phase']} step "
                      f"{worst['index']} at {worst['measured_s'] / worst['floor_s']:.0%} of it): doubt {doubt}"})
    concentrated = sum(r["concentrated"] for r in runs)
    if concentrated:
        flags.append({"kind": "routing_concentrated", "message":
                      f"{concentrated} MoE step(s) ran under the floor that assumes uniform routing (but not under the "
                      f"top-k minimum): their tokens touched fewer distinct experts than uniform routing predicts; "
                      f"they are explained against the top-k floor (this record did not count experts)"})
    for key, s in sm.items():
        ci = s.get("median_ci")
        if ci and s.get("median"):   # how well the median is known; the min-max range only grows with more runs
            width = (ci["high"] - ci["low"]) / s["median"]
            if width > SPREAD_LIMIT:
                flags.append({"kind": "spread", "message": f"{key}: the median's {ci['level']:.0%} confidence interval "
                              f"spans {width:.1%} of it (over {SPREAD_LIMIT:.0%}): more runs, or a quieter machine"})
            continue
        spread = relative_spread(s)   # records from before the interval was recorded
        if spread is not None and spread > SPREAD_LIMIT:
            flags.append({"kind": "spread", "message": f"{key} varies {spread:.1%} run to run (over {SPREAD_LIMIT:.0%})"})
    tel = sc.telemetry or {}
    if tel.get("throttled"):
        flags.append({"kind": "throttled", "message": f"the GPU throttled during the runs: {tel.get('throttle_fraction')}"})
    cc = sc.cross_check or {}
    if cc.get("above_tolerance"):
        flags.append({"kind": "cross_check", "message": f"TTFT differs from the engine's own by up to "
                      f"{cc['max_rel_diff']:.1%} on {cc['above_tolerance']} request(s)"})
    experts = (((record.engine or {}).get("args") or {}).get("experts_implementation") or {})
    if "batched_mm" in str(experts.get("decode", "")):
        flags.append({"kind": "moe_implementation", "message": "transformers ran the experts as batched_mm in decode: "
                      "it copies each selected expert's weights per token, so decode reads several times the "
                      "floor's expert bytes (an hf artefact; vLLM's fused MoE reads each touched expert once)"})
    for prob in sc.problems:
        flags.append({"kind": "incomplete", "message": prob})
    if sc.trace and sc.trace.get("error"):
        flags.append({"kind": "trace_failed", "message": f"the traced runs failed: {sc.trace['error']}"})
    adm = sc.admission or {}
    if adm.get("split_runs"):
        flags.append({"kind": "batch_split", "message": f"run(s) {adm['split_runs']} did not start as one batch: their "
                      f"first steps held {adm['first_step_requests']} of {adm['batch']} requests ({adm['method']})"})
    load = sc.host_load or {}
    if load.get("busy"):
        flags.append({"kind": "busy_host", "message": "the machine was busy beside the runs (" + "; ".join(load["reasons"])
                      + "): figures are likely slower than this machine can do"})
    if record.status not in (None, "complete"):
        flags.append({"kind": "record_incomplete", "message": f"the run record is {record.status}"
                      + (f" ({record.error})" if record.error else "") + ": later scenarios are missing"})
    compute_bound = _compute_bound_phases(runs[0]["totals"], ceil, f) if ceil.kind == "measured" and ceil.mode == "quick" else []
    if compute_bound:
        flags.append({"kind": "quick_ceiling", "message": "compute-bound efficiencies ("
                      + ", ".join(compute_bound) + ") are against the quick "
                      "pass's one-shape matmul ceiling, which a shape sweep beats: `llmprobe roofline --full` "
                      "(or --remeasure) on this machine measures the sweep"})
    if inp.source == "datasheet":
        flags.append({"kind": "datasheet_ceilings", "message": "no ceilings measured on this card: efficiencies are "
                      "against the datasheet (run `llmprobe roofline` on it for measured ones)"})
        dev = record.device
        same = dev.get("kind") == "cuda" and getattr(match_device_name(dev.get("name") or "", dev.get("memory_bytes")),
                                                     "id", None) == ceil.gpu_id
        if not same:
            flags.append({"kind": "other_device", "message": f"explained against {ceil.name}'s datasheet, but the "
                          f"record was measured on {dev.get('name') or 'an unknown device'}: the efficiencies compare "
                          "two different machines"})
    warm = sc.warmup_runs
    if warm:
        first = warm[0].wall_s
        out["warmup"] = {"first_warmup_wall_s": first, "measured_mean_wall_s": measured_wall,
                         "excess_s": first - measured_wall}
    out["kernels"] = explain_kernels(sc.trace, f)
    out["sampling"] = sampling(sc, record.config.get("temperature"))
    jpt = sc.summary.get("joules_per_token")
    if jpt:   # NVML's energy counter around each measured run, all the engine's GPUs
        tel = sc.telemetry or {}
        out["energy"] = {"joules_per_output_token": jpt["median"], "power_w": (tel.get("power_w") or {}).get("median"),
                         "sm_clock_mhz": (tel.get("sm_clock_mhz") or {}).get("median"),
                         "power_limit_w": record.device.get("power_limit_w"),
                         "gpus": record.config.get("tp", 1) * record.config.get("pp", 1)}
    cov = expert_coverage(sc, f.model, record.config.get("routing"))
    if cov:
        out["experts"] = cov
    low = (cov or {}).get("decode")
    if low and low["ratio"] < COVERAGE_LOW:
        how = {"as-loaded": " (routing as loaded: random routers; --routing trained-like spreads them)",
               "trained-like": " (trained-like routers: the tokens themselves repeat, e.g. greedy decoding in a cycle)"}
        flags.append({"kind": "low_expert_coverage", "message": f"decode steps touched {low['measured']:.2f} of "
                      f"{cov['num_experts']} experts per layer, {1 - low['ratio']:.0%} under the {low['expected']:.2f} uniform "
                      f"routing touches: tokens/s is optimistic for a trained checkpoint"
                      + how.get(cov.get("routing") or "", "")})
    out["flags"] = flags
    out["explained"] = not beaten
    if beaten:  # a measurement under its floor is flagged, not explained
        out["breakdown"] = out["phase_time_s"] = None
    return out


def extrapolate(sc: ScenarioResult, f: Floors) -> dict[str, Any]:
    """Full-model estimate from a layer-sampled run: per-layer time x layers + the fixed part.

    The fixed part is the time that does not scale with layers: everything between and around
    steps, and the share of each step's device time that the floor gives to the lm_head, the final
    norm and the embedding gather (its fraction of the floor). The rest scales by full/sampled layers.
    """
    spec, c = f.model, f.costs
    k = spec.full_num_layers / spec.num_layers
    full = Floors.of(from_hf_config({**spec.config, "num_hidden_layers": spec.full_num_layers}, spec.name),
                     f.ceilings, dtype=c.dtype, kv_dtype=c.kv_dtype, tp=c.tp)
    ests = []
    for run in sc.runs:
        est_wall, first_token = 0.0, None
        prev_end = 0.0
        for st in run.steps:
            floor = step_cost(f, st.work)
            layer_share = 1.0 - _fixed_share(c, floor, rows=len(st.seqs))
            t = st.time_s
            scaled = t * (1 - layer_share) + t * layer_share * k
            est_wall += (st.t_start_s - prev_end) + (st.t_end_s - st.t_start_s - t) + scaled
            prev_end = st.t_end_s
            if first_token is None and st.prefill_tokens:
                first_token = est_wall
        est_wall += run.wall_s - prev_end
        out_tokens = sum(r["output_tokens"] for r in run.requests)
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


def explain_record(record: RunRecord | dict[str, Any], gpu: str | None = None,
                   ceilings_file: dict | None = None) -> dict[str, Any]:
    """The explanation of a run record (typed, or the document ``profile`` returned)."""
    if not isinstance(record, RunRecord):
        record = RunRecord.from_dict(record)
    if any(not sc.runs for sc in record.scenarios):
        raise UserError("a scenario of the run record has no measured run: nothing to explain")
    inp = inputs_for(record, gpu, ceilings_file)
    cfg = record.config
    return {"model": cfg["model"], "layers_note": cfg.get("layers_note"), "backend": cfg["backend"],
            "device": record.device.get("name"),
            "ceilings_source": inp.source, "ceilings": inp.ceilings.to_dict(), "compute": record.compute,
            "execution": (record.engine or {}).get("execution"),
            "scenarios": [explain_scenario(sc, record, inp) for sc in record.scenarios]}
