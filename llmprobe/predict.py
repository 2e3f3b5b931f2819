"""Calibrated prediction: one step-time model fitted on measured steps, then TTFT, TPOT, latency and
TPS of scenarios, cards and models never run, each with an interval.

Every measured step of the calibration records (prefill, decode and mixed alike: the same weights
read, the same GEMMs, the same host loop) is fitted to

    step time = fixed + a1 * memory floor [one-token steps] + a * memory floor [others]
                + b * compute floor + communication floor

by non-negative least squares in relative terms. ``a`` and ``b`` are inverse efficiencies of the
memory and compute paths; ``a1`` is ``a`` for steps that carry one token, which BLAS libraries run
as matrix-vector kernels of their own efficiency; ``fixed`` is the per-step host and launch cost.
Where the steps cannot tell two attributions apart (a fixed cost from a memory floor that never
varied), every fit within 1% of the best is kept: the prediction is the middle of what they say
(minimax in relative error) and its interval spans them all. Runs add a lead, a gap per decode
step and a tail, each the median over the calibration runs (docs/model.md, "Calibrated prediction").
"""

from __future__ import annotations

import itertools
import math
import statistics
from dataclasses import dataclass
from typing import Any

from .costs import Floors, RankCosts, StepCost, decode_cost, prefill_cost, step_cost
from .errors import UserError
from .explain import inputs_for, timeline
from .hardware import Ceilings
from .memory import card_of, fits
from .models import ModelSpec
from .profiling import run_metrics
from .records import RunRecord
from .roofline import scenario

EXTRAPOLATION_MARGIN = 0.10   # on top of the calibration spread, for scenarios not calibrated on
TRANSFER_MARGIN = 0.30        # on top of that, for another card: its efficiencies are assumed, not measured
INDISTINGUISHABLE = 0.01      # fits whose relative squared residual is within 1% of the best one
TERMS = ("fixed_s", "one_token_memory_factor", "memory_factor", "compute_factor")


def _terms(cost: StepCost, one_token_fitted: bool = True) -> tuple[float, float, float, float]:
    one = cost.tokens == 1 and one_token_fitted
    return 1.0, cost.memory_s if one else 0.0, 0.0 if one else cost.memory_s, cost.compute_s


def _solve(rows: list[list[float]], cols: tuple[int, ...]) -> list[float] | None:
    """Least squares of rows[:, cols] @ x = 1 by the normal equations on unit-norm columns; None where
    the columns are (nearly) collinear, i.e. the steps cannot separate the terms."""
    norms = [math.sqrt(sum(r[c] ** 2 for r in rows)) for c in cols]
    if min(norms) == 0:
        return None
    n = len(cols)
    m = [[sum(r[ci] * r[cj] for r in rows) / (norms[i] * norms[j]) for j, cj in enumerate(cols)]
         + [sum(r[ci] for r in rows) / norms[i]] for i, ci in enumerate(cols)]
    for c in range(n):   # Gauss-Jordan, partial pivoting; a tiny pivot on unit columns means collinear
        p = max(range(c, n), key=lambda r: abs(m[r][c]))
        if abs(m[p][c]) < 1e-6:
            return None
        m[c], m[p] = m[p], m[c]
        for r in range(n):
            if r != c:
                f = m[r][c] / m[c][c]
                m[r] = [a - f * b for a, b in zip(m[r], m[c])]
    return [m[i][n] / m[i][i] / norms[i] for i in range(n)]


def _fit_cols(rows: list[list[float]], cols: tuple[int, ...]) -> tuple[float, tuple[float, ...]] | None:
    coef = _solve(rows, cols)
    if coef is None or any(v < 0 for v in coef):
        return None
    full = [0.0] * len(TERMS)
    for i, v in zip(cols, coef):
        full[i] = v
    return sum((sum(f * x for f, x in zip(full, r)) - 1) ** 2 for r in rows), tuple(full)


@dataclass(frozen=True)
class StepFit:
    """The fits the calibration steps cannot tell apart, their run-to-run uncertainty and residuals."""
    fits: tuple[tuple[float, ...], ...]   # coefficients over TERMS, best first
    stderr: tuple[tuple[float, ...], ...]  # jackknife over calibration runs, per fit and term
    one_token_fitted: bool               # were one-token steps calibrated on (else they take ``memory_factor``)
    steps: int
    residual_rms: float                   # relative, per step, of the best fit
    residual_p90: float

    def step_s(self, cost: StepCost) -> list[float]:
        """This step's time under each fit."""
        x = _terms(cost, self.one_token_fitted)
        return [sum(c * v for c, v in zip(fit, x)) + cost.comm_s for fit in self.fits]

    def to_dict(self) -> dict[str, Any]:
        return {"fits": [{t: {"value": v, "stderr": e} for t, v, e in zip(TERMS, fit, err)}
                         for fit, err in zip(self.fits, self.stderr)],
                "one_token_steps_fitted": self.one_token_fitted, "steps": self.steps,
                "residual_relative": {"rms": self.residual_rms, "p90_abs": self.residual_p90}}


def fit_steps(costs: list[StepCost], times: list[float], runs: list[int] | None = None) -> StepFit:
    """Non-negative least squares of step time on the terms, relative (weights 1/t^2: a 1 ms step counts
    as much as a 100 ms one), over every subset of the terms; ``runs`` labels each step's run for the
    jackknife."""
    if not times:
        raise UserError("no measured step to calibrate on")
    one_token = any(c.tokens == 1 for c in costs)
    rows = [[x / t for x in _terms(c, one_token)] for c, t in zip(costs, times)]
    found = []
    for k in range(1, len(TERMS) + 1):
        for cols in itertools.combinations(range(len(TERMS)), k):
            if (fit := _fit_cols(rows, cols)) is not None:
                found.append((fit[0], cols, fit[1]))
    if not found:
        raise UserError("the calibration steps admit no fit with non-negative costs")
    least = min(f[0] for f in found)
    close = sorted((f for f in found if f[0] <= least * (1 + INDISTINGUISHABLE) + 1e-12 * len(rows)), key=lambda f: f[0])
    distinct, seen = [], set()
    for sse, cols, coef in close:
        key = tuple(round(v, 12) for v in coef)
        if key not in seen:
            seen.add(key)
            distinct.append((cols, coef))
    groups = sorted(set(runs or ()))
    stderr = []
    for cols, _ in distinct:   # jackknife: refit the same terms leaving one calibration run out
        reps = [fit[1] for g in (groups if len(groups) > 2 else ())
                if (fit := _fit_cols([row for row, run in zip(rows, runs) if run != g], cols)) is not None]
        n = len(reps)
        stderr.append(tuple(math.sqrt((n - 1) / n * sum((rep[i] - statistics.fmean(x[i] for x in reps)) ** 2 for rep in reps))
                            if n > 1 else float("nan") for i in range(len(TERMS))))
    best = distinct[0][1]
    resid = sorted(abs(sum(f * x for f, x in zip(best, r)) - 1) for r in rows)
    return StepFit(tuple(c for _, c in distinct), tuple(stderr), one_token, len(rows),
                   math.sqrt(sum(e * e for e in resid) / len(resid)), resid[min(len(resid) - 1, int(0.9 * len(resid)))])


@dataclass
class Calibration:
    model: ModelSpec
    ceilings: Ceilings
    costs: RankCosts                               # formats and TP degree the calibration runs had
    records: list[str]
    fit: StepFit
    lead_s: float
    gap_s: float
    tail_s: float
    token_budget: int | None                      # the scheduler's tokens per step (prefill is chunked to it)
    ratio_range: dict[str, tuple[float, float]]   # measured / predicted over the calibration runs, per metric

    def parameters(self) -> dict[str, Any]:
        return {"step": self.fit.to_dict(), "lead_s": self.lead_s, "gap_per_decode_step_s": self.gap_s,
                "tail_s": self.tail_s, "token_budget": self.token_budget,
                "calibration_spread": {k: list(v) for k, v in self.ratio_range.items()}}


def calibrate(records: list[tuple[str, RunRecord]]) -> Calibration:
    """Fit the step model on every step of every measured run of ``records`` (same model, same device)."""
    if not records:
        raise UserError("predict needs at least one run record to calibrate on")
    first = inputs_for(records[0][1])
    names = {r.config["model"] for _, r in records}
    devices = {r.device.get("name") for _, r in records}
    if len(names) > 1 or len(devices) > 1:
        raise UserError(f"calibrate on runs of one model on one device (got {sorted(names)} on {sorted(devices)})")
    f = first.floors
    costs, times, labels = [], [], []
    leads, gaps, tails = [], [], []
    # each record priced on its own floors (its ceilings, layer count, formats), never on the first one's
    own = {id(rec): inputs_for(rec).floors for _, rec in records}
    runs = [(sc, run, own[id(rec)]) for _, rec in records for sc in rec.scenarios for run in sc.runs]
    for i, (_sc, run, fr) in enumerate(runs):
        spans = timeline(run)
        leads.append(run.steps[0].t_start_s if run.steps else 0.0)
        tails.append(spans[-1]["tail_s"])
        for st, sp in zip(run.steps, spans):
            cost = step_cost(fr, st.work)
            costs.append(cost)
            times.append(max(sp["span_s"] - cost.comm_s, 1e-9))   # step_s adds the collectives' floor back
            labels.append(i)
            if st.phase == "decode":
                gaps.append(sp["gap_s"])
    cal = Calibration(model=f.model, ceilings=first.ceilings, costs=f.costs, records=[p for p, _ in records],
                      fit=fit_steps(costs, times, labels), lead_s=statistics.median(leads),
                      gap_s=statistics.median(gaps) if gaps else 0.0, tail_s=statistics.median(tails), ratio_range={},
                      token_budget=min((b for _, r in records if (b := (r.engine or {}).get("max_num_batched_tokens"))),
                                       default=None))
    # the spread of single runs around the model: run-to-run noise plus what the model misses
    ratios: dict[str, list[float]] = {"ttft_s": [], "tpot_s": [], "total_latency_s": [], "tps": []}
    for sc, run, fr in runs:
        pred = _point(_predict(cal, fr, sc.batch, sc.prompt_len, sc.gen_len))
        measured = run_metrics({"requests": run.requests, "wall_s": run.wall_s})
        for key in ratios:
            if measured[key] and pred[key]:
                ratios[key].append(measured[key] / pred[key])
    cal.ratio_range = {k: (min(v), max(v)) if v else (1.0, 1.0) for k, v in ratios.items()}
    return cal


def _prefill_s(cal: Calibration, f: Floors, batch: int, prompt_len: int) -> tuple[list[float], list[float]]:
    """The prefill as the scheduler runs it: one step, or chunks of the token budget (each request's
    first token comes when its own prompt is done). Per fit: (mean first-token time, last one)."""
    budget = cal.token_budget
    if not budget or batch * prompt_len <= budget:
        t = cal.fit.step_s(prefill_cost(f, batch, prompt_len))
        return t, t
    left = [prompt_len] * batch
    t, done_at = [0.0] * len(cal.fit.fits), []
    while any(left):
        room, seqs, finished = budget, [], 0
        for i, n in enumerate(left):
            if n and room:
                take = min(n, room)
                seqs.append((take, prompt_len - n))
                left[i] -= take
                room -= take
                finished += not left[i]
        gap = cal.gap_s if done_at or any(t) else 0.0
        t = [a + s + gap for a, s in zip(t, cal.fit.step_s(step_cost(f, seqs)))]
        done_at += [t] * finished
    return [sum(d[k] for d in done_at) / len(done_at) for k in range(len(t))], t


def _predict(cal: Calibration, f: Floors, batch: int, prompt_len: int, gen_len: int) -> dict[str, list[float]]:
    """The scenario's metrics under each fit the calibration cannot tell apart."""
    first, last = _prefill_s(cal, f, batch, prompt_len)
    decode = [0.0] * len(first)
    for j in range(1, gen_len):
        decode = [a + cal.gap_s + s for a, s in zip(decode, cal.fit.step_s(decode_cost(f, batch, prompt_len + j - 1)))]
    total = [cal.lead_s + a + d for a, d in zip(last, decode)]
    return {"ttft_s": [cal.lead_s + a for a in first], "tpot_s": [d / (gen_len - 1) if gen_len > 1 else 0.0 for d in decode],
            "total_latency_s": total, "tps": [batch * gen_len / (t + cal.tail_s) for t in total]}


def _point(per_fit: dict[str, list[float]]) -> dict[str, float]:
    """The middle (geometric) of what the indistinguishable fits say: the least worst-case relative error."""
    return {k: math.sqrt(min(v) * max(v)) for k, v in per_fit.items()}


def predict(cal: Calibration, batch: int, prompt_len: int, gen_len: int, ceilings: Ceilings | None = None,
            tp: int = 1, model: ModelSpec | None = None, gpu_label: str | None = None) -> dict[str, Any]:
    """One scenario. Same card and model as calibrated: "calibrated"; another card (``ceilings``) or
    TP degree: "transferred" (the fitted factors applied to that card's floors, wider interval)."""
    target = model or cal.model
    if target.architecture != cal.model.architecture:
        raise UserError(f"calibrated on {cal.model.name} ({cal.model.architecture}); {target.name} is "
                        f"{target.architecture}: predictions stay within one architecture family")
    ceil = ceilings or cal.ceilings
    c = cal.costs
    transferred = (ceilings is not None and ceilings.name != cal.ceilings.name) or tp != c.tp
    f = Floors.of(target, ceil, dtype=c.dtype, kv_dtype=c.kv_dtype, tp=tp, activation_dtype=c.activation_dtype)
    if not fits(f.costs, card_of(ceil), batch, prompt_len, gen_len):
        raise UserError(f"{target.name} at batch {batch}, prompt {prompt_len}, gen {gen_len} does not fit on "
                        f"{ceil.name}" + (f" at TP {tp}" if tp > 1 else ""))
    per_fit = _predict(cal, f, batch, prompt_len, gen_len)
    # never faster than physics: a fit may extrapolate under the floor (or over the TPS ceiling) of a scenario
    # it was not calibrated on; such a figure is clamped to the bound, and the prediction says so
    bound = scenario(f, card_of(ceil), batch, prompt_len, gen_len, advise=False)
    limits = {"ttft_s": bound.ttft_floor_s, "tpot_s": bound.tpot_floor_s, "total_latency_s": bound.total_latency_floor_s}
    clamped = sorted({k for k, lim in limits.items() if min(per_fit[k]) < lim}
                     | ({"tps"} if max(per_fit["tps"]) > bound.tps_ceiling else set()))
    per_fit = {k: [max(v, limits[k]) for v in vals] if k in limits else [min(v, bound.tps_ceiling) for v in vals]
               for k, vals in per_fit.items()}
    point = _point(per_fit)
    margin = EXTRAPOLATION_MARGIN + (TRANSFER_MARGIN if transferred else 0.0)
    interval = {}
    for key in ("ttft_s", "tpot_s", "tps"):
        lo, hi = cal.ratio_range[key]
        interval[key] = [min(per_fit[key]) * min(lo, 1.0) * (1 - margin), max(per_fit[key]) * max(hi, 1.0) * (1 + margin)]
        if key in limits:
            interval[key][0] = max(interval[key][0], limits[key])
        else:
            interval[key][1] = min(interval[key][1], bound.tps_ceiling)
    assumptions = []
    if clamped:
        assumptions.append(f"the fit put {', '.join(clamped)} beyond the roofline bound on {ceil.name}: clamped to it "
                           "(the calibration does not pin down this scenario)")
    if transferred:
        assumptions.append(f"the efficiencies measured on {cal.ceilings.name}" + (f" at TP {c.tp}" if c.tp > 1 else "")
                           + f" hold on {ceil.name}" + (f" at TP {tp}" if tp > 1 else "")
                           + "; the per-step host cost is unchanged")
    if target.name != cal.model.name:
        assumptions.append(f"{target.name} runs its kernels as efficiently as {cal.model.name} (same family)")
    if not cal.fit.one_token_fitted and batch == 1:
        assumptions.append("no one-token step was calibrated on: batch-1 decode assumed as efficient per byte as larger steps")
    moved = transferred or target.name != cal.model.name or target.num_layers != cal.model.num_layers
    if len(cal.fit.fits) > 1 and moved:
        assumptions.append(f"{len(cal.fit.fits)} fits explain the calibration steps equally well (a fixed cost or a "
                           "memory floor that never varied there); they part on this target: the interval spans them")
    if target.name == cal.model.name and target.num_layers != cal.model.num_layers:
        assumptions.append(f"calibrated on {cal.model.num_layers} of {cal.model.full_num_layers or cal.model.num_layers} "
                           f"layers; predicted for {target.num_layers}: each layer as efficient as those measured")
    return {"batch": batch, "prompt_len": prompt_len, "gen_len": gen_len, "gpu": gpu_label or ceil.gpu_id or ceil.name,
            "tp": tp, "model": target.name, "kind": "transferred" if transferred else "calibrated", **point,
            "interval": interval, "assumptions": assumptions, "clamped_to_bound": clamped,
            "calibration": {"records": cal.records, "parameters": cal.parameters()}}
