"""Calibrated prediction: one step-time model fitted on measured steps, then TTFT, TPOT, latency and
TPS of scenarios, cards and models never run, each with an interval that says how well it is known.

Every measured step of the calibration records (prefill, decode and mixed alike) is fitted to

    step time = fixed + w * weights floor + v * KV floor + c * compute floor + communication floor

by least squares in relative terms, each floor that very step's (bytes or FLOPs over the measured
ceilings). ``w``, ``v`` and ``c`` are inverse efficiencies and never below 1: no path runs faster than
its measured ceiling, so no prediction is faster than physics by construction. The KV term carries
attention's cost as the context grows. ``fixed`` (>= 0) is the per-step host and launch cost. What
the steps cannot tell apart (a fixed cost from a weights term that never varied: one dense model reads
the same weights every step) is kept, not guessed: every exactly equivalent fit is carried, the point is
the middle of what they say and the interval spans them. Uncertainty: a bootstrap over the calibration
runs (resampled within each scenario), the run-to-run spread, the engine-to-engine spread where the
calibration holds two engine starts, and a widening per doubling of distance outside the calibrated
batch, context and layer count (docs/model.md, "Calibrated prediction").
"""

from __future__ import annotations

import itertools
import math
import random
import statistics
from dataclasses import dataclass, field
from typing import Any

from .costs import Floors, RankCosts, StepCost, decode_cost, prefill_cost, step_cost
from .errors import DoesNotFit, UserError
from .context import RecordContext
from .hardware import Ceilings
from .memory import card_of, fit_advice, fits
from .models import ModelSpec
from .records import RunRecord
from .bounds import scenario
from .timing import percentile

# Relative widening per doubling of distance outside the calibrated batch, context and layer count: the
# EPYC validation of 2026-11-27 (docs/measurements/cpu-epyc-2026-11-27/predict-validation.md) missed by
# -2.4% at 2x the calibrated context, -7-8% at 4x and -17.6% at 8x: about 8% per doubling.
WIDEN_PER_DOUBLING = 0.08
TRANSFER_MARGIN = 0.30        # on top, for other ceilings or TP: their efficiencies are assumed, not measured
NOT_PREDICTABLE = 2.0         # an interval wider than x2 (high / low) is no prediction
BOOTSTRAP = 200               # resamples of the calibration runs
EQUIVALENT = 1e-6             # fits whose squared residual is within this of the best: the steps cannot part them
TERMS = ("fixed_s", "weights_factor", "kv_factor", "compute_factor")


def _floors(cost: StepCost) -> tuple[float, float, float]:
    """(weights, KV, compute) floors of a step, s."""
    mem_bytes = cost.weight_bytes + cost.kv_read_bytes + cost.kv_write_bytes
    w = cost.memory_s * cost.weight_bytes / mem_bytes if mem_bytes else 0.0
    return w, cost.memory_s - w, cost.compute_s


@dataclass
class _Normal:
    """Sums of one run's steps for the relative least squares: rows x/t over (fixed, weights, KV, compute),
    target 1 - (sum of floors)/t (the part above every factor at its bound of 1)."""
    g: list[list[float]] = field(default_factory=lambda: [[0.0] * 4 for _ in range(4)])
    b: list[float] = field(default_factory=lambda: [0.0] * 4)
    s: float = 0.0
    n: int = 0

    def add(self, cost: StepCost, t: float) -> None:
        w, kv, c = _floors(cost)
        row = [1.0 / t, w / t, kv / t, c / t]
        y = 1.0 - (w + kv + c) / t
        for i in range(4):
            self.b[i] += row[i] * y
            for j in range(4):
                self.g[i][j] += row[i] * row[j]
        self.s += y * y
        self.n += 1

    def __add__(self, o: _Normal) -> _Normal:
        return _Normal([[a + b for a, b in zip(r, q)] for r, q in zip(self.g, o.g)],
                       [a + b for a, b in zip(self.b, o.b)], self.s + o.s, self.n + o.n)


def _solve(ne: _Normal, cols: tuple[int, ...]) -> list[float] | None:
    """Least squares on the columns ``cols`` (unit-normalized); None where they are (nearly) collinear."""
    norms = [math.sqrt(ne.g[c][c]) for c in cols]
    if min(norms) == 0:
        return None
    n = len(cols)
    m = [[ne.g[ci][cj] / (norms[i] * norms[j]) for j, cj in enumerate(cols)] + [ne.b[ci] / norms[i]]
         for i, ci in enumerate(cols)]
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


def _fits(ne: _Normal) -> list[tuple[float, tuple[float, ...]]]:
    """Every non-negative subset solution, (squared residual, coefficients over TERMS), factors as 1 + excess."""
    out = []
    for k in range(len(TERMS) + 1):
        for cols in itertools.combinations(range(len(TERMS)), k):
            z = [0.0] * len(TERMS)
            if cols:
                sol = _solve(ne, cols)
                if sol is None or any(v < 0 for v in sol):
                    continue
                for i, v in zip(cols, sol):
                    z[i] = v
            sse = ne.s - 2 * sum(zi * bi for zi, bi in zip(z, ne.b)) + sum(z[i] * z[j] * ne.g[i][j]
                                                                        for i in range(4) for j in range(4))
            out.append((max(sse, 0.0), (z[0], 1 + z[1], 1 + z[2], 1 + z[3])))
    return out


def _best(ne: _Normal) -> tuple[tuple[float, ...], ...]:
    """The best fit and every fit the steps cannot tell from it (exactly collinear terms), best first."""
    found = sorted(_fits(ne))
    least = found[0][0]
    keep, seen = [], set()
    for sse, coef in found:
        if sse <= least + EQUIVALENT * max(ne.s, 1e-12):
            key = tuple(round(v, 9) for v in coef)
            if key not in seen:
                seen.add(key)
                keep.append(coef)
    return tuple(keep)


@dataclass(frozen=True)
class StepFit:
    """The fits the calibration steps cannot tell apart, their bootstrap replicates and residuals."""
    fits: tuple[tuple[float, ...], ...]        # coefficients over TERMS, best first
    replicates: tuple[tuple[tuple[float, ...], ...], ...]   # the same, refitted on resampled calibration runs
    steps: int
    residual_rms: float                        # relative, per step, of the best fit
    residual_p90: float

    def step_s(self, cost: StepCost, fits: tuple[tuple[float, ...], ...] | None = None) -> list[float]:
        """This step's time under each fit."""
        w, kv, c = _floors(cost)
        return [fx[0] + fx[1] * w + fx[2] * kv + fx[3] * c + cost.comm_s for fx in (fits or self.fits)]

    def stderr(self) -> tuple[float, ...]:
        """Bootstrap standard error of each coefficient of the best fit."""
        reps = [r[0] for r in self.replicates]
        return tuple(statistics.stdev(r[i] for r in reps) if len(reps) > 1 else float("nan") for i in range(len(TERMS)))

    def to_dict(self) -> dict[str, Any]:
        err = self.stderr()
        return {"fits": [{t: v for t, v in zip(TERMS, fit)} for fit in self.fits],
                "bootstrap": {"replicates": len(self.replicates), "stderr": dict(zip(TERMS, err))},
                "steps": self.steps, "residual_relative": {"rms": self.residual_rms, "p90_abs": self.residual_p90}}


def fit_steps(costs: list[StepCost], times: list[float], runs: list[tuple[Any, Any]] | None = None,
              seed: int = 0) -> StepFit:
    """Least squares of step time on the terms, relative (weights 1/t^2: a 1 ms step counts as much as a
    100 ms one), factors bounded below by 1; ``runs`` labels each step's (scenario, run) for the bootstrap,
    which resamples runs within each scenario."""
    if not times:
        raise UserError("no measured step to calibrate on")
    labels = runs or [(0, i) for i in range(len(times))]
    per_run: dict[Any, _Normal] = {}
    for cost, t, lab in zip(costs, times, labels):
        per_run.setdefault(lab, _Normal()).add(cost, t)
    total = sum(per_run.values(), _Normal())
    fits_ = _best(total)
    by_scenario: dict[Any, list[_Normal]] = {}
    for (sc, _), ne in per_run.items():
        by_scenario.setdefault(sc, []).append(ne)
    rng = random.Random(seed)
    reps = []
    if sum(len(v) for v in by_scenario.values()) > len(by_scenario):   # some scenario has two runs to resample
        for _ in range(BOOTSTRAP):
            ne = sum((rng.choice(v) for v in by_scenario.values() for _ in v), _Normal())
            reps.append(_best(ne))
    resid = []
    best = fits_[0]
    for cost, t in zip(costs, times):
        resid.append(abs(sum(best[i] * x for i, x in enumerate((1.0, *_floors(cost)))) - t) / t)
    resid.sort()
    return StepFit(fits_, tuple(reps), len(times), math.sqrt(sum(e * e for e in resid) / len(resid)),
                   resid[min(len(resid) - 1, int(0.9 * len(resid)))])


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
    calibrated: dict[str, Any]                     # the batches, prompts, contexts and layers calibrated on
    engine_spread: float | None = None             # relative half-range between engine starts (None: one start)
    busy: bool = False                             # a calibration run had a busy host beside it

    def parameters(self) -> dict[str, Any]:
        return {"step": self.fit.to_dict(), "lead_s": self.lead_s, "gap_per_decode_step_s": self.gap_s,
                "tail_s": self.tail_s, "token_budget": self.token_budget,
                "calibration_spread": {k: list(v) for k, v in self.ratio_range.items()},
                "calibrated": self.calibrated, "engine_spread": self.engine_spread}


def calibrate(records: list[tuple[str, RunRecord | RecordContext]]) -> Calibration:
    """Fit the step model on every step of every measured run of ``records`` (same model, same device)."""
    if not records:
        raise UserError("predict needs at least one run record to calibrate on")
    contexts = [r if isinstance(r, RecordContext) else RecordContext.of(r) for _, r in records]
    first = contexts[0]
    names = {c.record.config["model"] for c in contexts}
    # a catalogued GPU by its id; a CPU (every one is "cpu" in the catalog) or an uncatalogued GPU by its name
    devices = {c.gpu_id if c.gpu_id not in (None, "cpu") else c.record.device.get("name") for c in contexts}
    if len(names) > 1 or len(devices) > 1:
        raise UserError(f"calibrate on runs of one model on one device (got {sorted(names)} on {sorted(devices)})")
    f = first.floors
    costs, times, labels = [], [], []
    leads, gaps, tails = [], [], []
    # each record priced on its own floors (its ceilings, layer count, formats), never on the first one's
    runs = [(ri, si, sc, run, ctx) for ri, ctx in enumerate(contexts)
            for si, sc in enumerate(ctx.record.scenarios) for run in sc.runs]
    for k, (ri, si, _sc, run, ctx) in enumerate(runs):
        spans = run.timeline()
        leads.append(run.steps[0].t_start_s if run.steps else 0.0)
        tails.append(spans[-1]["tail_s"])
        for st, sp in zip(run.steps, spans):
            cost = ctx.step_cost(st)
            costs.append(cost)
            times.append(max(sp["span_s"] - cost.comm_s, 1e-9))   # step_s adds the collectives' floor back
            labels.append(((ri, si), k))
            if st.phase == "decode":
                gaps.append(sp["gap_s"])
    recs = [c.record for c in contexts]
    scs = [sc for rec in recs for sc in rec.scenarios]
    layers = sorted({rec.config.get("layers") or f.model.num_layers for rec in recs})
    cal = Calibration(model=f.model, ceilings=first.ceilings, costs=f.costs, records=[p for p, _ in records],
                      fit=fit_steps(costs, times, labels), lead_s=statistics.median(leads),
                      gap_s=statistics.median(gaps) if gaps else 0.0, tail_s=statistics.median(tails), ratio_range={},
                      token_budget=min((b for r in recs if (b := (r.engine or {}).get("max_num_batched_tokens"))),
                                       default=None),
                      calibrated={"batch": [min(s.batch for s in scs), max(s.batch for s in scs)],
                                  "prompt": [min(s.prompt_len for s in scs), max(s.prompt_len for s in scs)],
                                  "context": [min(s.prompt_len for s in scs), max(s.prompt_len + s.gen_len for s in scs)],
                                  "layers": layers},
                      busy=any(sc.host_load is not None and sc.host_load.busy for sc in scs))
    # the spread of single runs around the model (run-to-run noise plus what the model misses), and of one
    # scenario's median between engine starts where two records hold it
    ratios: dict[str, list[float]] = {"ttft_s": [], "tpot_s": [], "total_latency_s": [], "tps": []}
    per_start: dict[tuple[int, int, int], dict[int, list[float]]] = {}
    for ri, _si, sc, run, ctx in runs:
        pred = _point(_predict(cal, ctx.floors, sc.batch, sc.prompt_len, sc.gen_len))
        measured = run.metrics
        for key in ratios:
            if getattr(measured, key) and pred[key]:
                ratios[key].append(getattr(measured, key) / pred[key])
        if measured.tps and pred["tps"]:
            per_start.setdefault((sc.batch, sc.prompt_len, sc.gen_len), {}).setdefault(ri, []).append(
                pred["tps"] / measured.tps)
    cal.ratio_range = {k: (min(v), max(v)) if v else (1.0, 1.0) for k, v in ratios.items()}
    spreads = []
    for starts in per_start.values():
        if len(starts) > 1:
            meds = [statistics.median(v) for v in starts.values()]
            spreads.append((max(meds) - min(meds)) / (max(meds) + min(meds)))
    cal.engine_spread = max(spreads) if spreads else None
    return cal


def _design(cal: Calibration, f: Floors, batch: int, prompt_len: int, gen_len: int) -> dict[str, tuple[list[float], float]]:
    """Each time of the scenario as (vector over TERMS, constant): time = vector . fit + constant.

    The prefill as the scheduler runs it (one step, or chunks of the token budget; each request's first
    token comes when its own prompt is done: "ttft" is their mean, "prefill" the last), then the decode
    steps at growing context, each with the gap before it. A step's time is linear in the fit's
    coefficients, so every fit and bootstrap replicate prices the scenario from these sums."""
    def vec(cost: StepCost) -> list[float]:
        return [1.0, *_floors(cost)]

    def add(a, b):
        return [x + y for x, y in zip(a, b)]
    budget = cal.token_budget
    zero = [0.0] * len(TERMS)
    if not budget or batch * prompt_len <= budget:
        c = prefill_cost(f, batch, prompt_len)
        ttft = last = (vec(c), c.comm_s)
    else:
        left = [prompt_len] * batch
        t, k, done = zero, 0.0, []
        while any(left):
            room, seqs, finished = budget, [], 0
            for i, n in enumerate(left):
                if n and room:
                    take = min(n, room)
                    seqs.append((take, prompt_len - n))
                    left[i] -= take
                    room -= take
                    finished += not left[i]
            c = step_cost(f, seqs)
            t, k = add(t, vec(c)), k + c.comm_s + (cal.gap_s if done or any(t) else 0.0)
            done += [(t, k)] * finished
        ttft = ([sum(d[0][i] for d in done) / len(done) for i in range(len(TERMS))], sum(d[1] for d in done) / len(done))
        last = (t, k)
    dv, dk = zero, 0.0
    for j in range(1, gen_len):
        c = decode_cost(f, batch, prompt_len + j - 1)
        dv, dk = add(dv, vec(c)), dk + c.comm_s + cal.gap_s
    return {"ttft": ttft, "prefill": last, "decode": (dv, dk)}


def _metrics(cal: Calibration, design, fits_: tuple[tuple[float, ...], ...], batch: int, gen_len: int) -> dict[str, list[float]]:
    """The scenario's metrics under each fit."""
    def t(key, fx):
        v, k = design[key]
        return sum(a * b for a, b in zip(v, fx)) + k
    out: dict[str, list[float]] = {"ttft_s": [], "tpot_s": [], "total_latency_s": [], "tps": []}
    for fx in fits_:
        decode = t("decode", fx)
        total = cal.lead_s + t("prefill", fx) + decode
        out["ttft_s"].append(cal.lead_s + t("ttft", fx))
        out["tpot_s"].append(decode / (gen_len - 1) if gen_len > 1 else 0.0)
        out["total_latency_s"].append(total)
        out["tps"].append(batch * gen_len / (total + cal.tail_s))
    return out


def _predict(cal: Calibration, f: Floors, batch: int, prompt_len: int, gen_len: int) -> dict[str, list[float]]:
    return _metrics(cal, _design(cal, f, batch, prompt_len, gen_len), cal.fit.fits, batch, gen_len)


def _point(per_fit: dict[str, list[float]]) -> dict[str, float]:
    """The middle (geometric) of what the indistinguishable fits say: the least worst-case relative error."""
    return {k: math.sqrt(min(v) * max(v)) for k, v in per_fit.items()}


def doublings_outside(cal: Calibration, target: ModelSpec, batch: int, prompt_len: int, gen_len: int) -> float:
    """How far the scenario lies outside what was calibrated: doublings of batch, context and layer count."""
    c = cal.calibrated
    d = max(0.0, math.log2(batch / c["batch"][1]), math.log2(c["batch"][0] / batch))
    d += max(0.0, math.log2((prompt_len + gen_len) / c["context"][1])) + max(0.0, math.log2(c["prompt"][0] / prompt_len))
    near = min(c["layers"], key=lambda n: abs(math.log2(target.num_layers / n)))
    return d + abs(math.log2(target.num_layers / near))


def predict(cal: Calibration, batch: int, prompt_len: int, gen_len: int, ceilings: Ceilings | None = None,
            tp: int = 1, model: ModelSpec | None = None, gpu_label: str | None = None) -> dict[str, Any]:
    """One scenario. On the calibration's ceilings and TP degree: "calibrated"; on other ``ceilings`` (another card,
    or another measurement or the datasheet of the same one) or TP degree: "transferred" (the fitted factors applied
    to those floors, wider interval)."""
    target = model or cal.model
    if target.architecture != cal.model.architecture:
        raise UserError(f"calibrated on {cal.model.name} ({cal.model.architecture}); {target.name} is "
                        f"{target.architecture}: predictions stay within one architecture family")
    ceil = ceilings or cal.ceilings
    c = cal.costs
    transferred = (ceilings is not None and ceilings != cal.ceilings) or tp != c.tp
    f = Floors.of(target, ceil, dtype=c.dtype, kv_dtype=c.kv_dtype, tp=tp, activation_dtype=c.activation_dtype)
    card = card_of(ceil)
    if not fits(f.costs, card, batch, prompt_len, gen_len):
        raise DoesNotFit(f"{target.name} at batch {batch}, prompt {prompt_len}, gen {gen_len} does not fit on "
                         f"{ceil.name}" + (f" at TP {tp}" if tp > 1 else ""),
                         fit_advice(f.costs, card, batch, prompt_len, gen_len))
    design = _design(cal, f, batch, prompt_len, gen_len)
    per_fit = _metrics(cal, design, cal.fit.fits, batch, gen_len)
    reps = [_metrics(cal, design, r, batch, gen_len) for r in cal.fit.replicates]
    # the factors are bounded by the ceilings, so a fit is never under a floor; the bound stays as a guard
    # for what the factors do not price (the gaps and lead are measured, never negative)
    bound = scenario(f, card_of(ceil), batch, prompt_len, gen_len, advise=False)
    limits = {"ttft_s": bound.ttft_floor_s, "tpot_s": bound.tpot_floor_s, "total_latency_s": bound.total_latency_floor_s}
    clamped = sorted({k for k, lim in limits.items() if min(per_fit[k]) < lim}
                     | ({"tps"} if max(per_fit["tps"]) > bound.tps_ceiling else set()))
    point = _point({k: [max(v, limits[k]) for v in vals] if k in limits else [min(v, bound.tps_ceiling) for v in vals]
                    for k, vals in per_fit.items()})
    doublings = doublings_outside(cal, target, batch, prompt_len, gen_len)
    widen = 1 + WIDEN_PER_DOUBLING * doublings + (TRANSFER_MARGIN if transferred else 0.0)
    engine = 1 + (cal.engine_spread or 0.0)
    interval, width, predictable = {}, {}, {}
    for key in ("ttft_s", "tpot_s", "tps"):
        lows = [min(per_fit[key])] + ([percentile(sorted([min(r[key]) for r in reps]), 0.05)] if reps else [])
        highs = [max(per_fit[key])] + ([percentile(sorted([max(r[key]) for r in reps]), 0.95)] if reps else [])
        lo_r, hi_r = cal.ratio_range[key]
        lo = min(lows) * min(lo_r, 1.0) / (widen * engine)
        hi = max(highs) * max(hi_r, 1.0) * widen * engine
        if key in limits:
            lo, hi = max(lo, limits[key]), max(hi, limits[key])
        else:
            lo, hi = min(lo, bound.tps_ceiling), min(hi, bound.tps_ceiling)
        interval[key] = [lo, hi]
        width[key] = hi / lo if lo > 0 else math.inf
        predictable[key] = width[key] <= NOT_PREDICTABLE
    assumptions = []
    if clamped:
        assumptions.append(f"the fit put {', '.join(clamped)} beyond the roofline bound on {ceil.name}: clamped to it")
    if transferred:
        assumptions.append(f"the efficiencies measured on {cal.ceilings.name}" + (f" at TP {c.tp}" if c.tp > 1 else "")
                           + f" hold on {ceil.name}" + (f" at TP {tp}" if tp > 1 else "")
                           + "; the per-step host cost is unchanged")
    if target.name != cal.model.name:
        assumptions.append(f"{target.name} runs its kernels as efficiently as {cal.model.name} (same family)")
    moved = transferred or target.name != cal.model.name or target.num_layers not in cal.calibrated["layers"]
    if len(cal.fit.fits) > 1 and moved:
        assumptions.append(f"{len(cal.fit.fits)} fits explain the calibration steps equally well (a fixed cost or a "
                           "weights floor that never varied there); they part on this target: the interval spans them")
    if target.name == cal.model.name and target.num_layers not in cal.calibrated["layers"]:
        assumptions.append(f"calibrated on {'/'.join(map(str, cal.calibrated['layers']))} layers; predicted for "
                           f"{target.num_layers}: each layer as efficient as those measured")
    if doublings:
        assumptions.append(f"{doublings:.1f} doubling(s) outside the calibrated batch, context or layers: interval "
                           f"widened by {WIDEN_PER_DOUBLING:.0%} per doubling")
    if cal.engine_spread is None:
        assumptions.append("one engine start calibrated: engine-to-engine variation is not in the interval")
    if cal.token_budget and batch > 1 and batch * prompt_len > cal.token_budget:
        assumptions.append(f"the {batch} prompts ({batch * prompt_len} tokens) exceed the scheduler's {cal.token_budget}"
                           "-token steps: the model runs their chunks before any decode step, vLLM starts decoding a "
                           "request while others' chunks still run (TPOT measured up to 6x this figure on vLLM's CPU "
                           "build, TTFT 15-32% over it; docs/methodology.md); TPS is not affected that way (the same work in all)")
    if cal.busy:
        assumptions.append("a calibration run had a busy host beside it (its record says so)")
    if not all(predictable.values()):
        assumptions.append("not predictable from these runs: " + ", ".join(
            f"{k} (interval x{width[k]:.1f})" for k, ok in predictable.items() if not ok)
            + f" — wider than x{NOT_PREDICTABLE:g}; calibrate nearer this scenario")
    return {"batch": batch, "prompt_len": prompt_len, "gen_len": gen_len, "gpu": gpu_label or ceil.gpu_id or ceil.name,
            "tp": tp, "model": target.name, "kind": "transferred" if transferred else "calibrated", **point,
            "interval": interval, "interval_width": width, "predictable": predictable,
            "extrapolation_doublings": doublings, "assumptions": assumptions, "clamped_to_bound": clamped,
            "calibration": {"records": cal.records, "parameters": cal.parameters()}}
