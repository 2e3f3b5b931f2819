"""Calibrated prediction: step-time models fitted on measured steps, then TTFT, TPOT, latency and TPS
of scenarios, cards and models never run, each with an interval.

Per phase (prefill, decode), every measured step of the calibration records is fitted to

    step time = fixed + a * memory floor + b * compute floor + communication floor

(non-negative least squares over the steps; ``a`` and ``b`` are the inverse efficiencies of the
memory and compute paths, ``fixed`` the per-step host and launch cost). Runs add a lead (submission
to the first step), a gap per decode step (scheduling and output handling between steps) and a
tail (last token to the run's end), each the median over the calibration runs. A scenario is then
its prefill step plus its gen_len - 1 decode steps, priced step by step on the analytic floors
(docs/model.md, "Calibrated prediction"). Intervals: the spread of measured / fitted over the
calibration runs, widened for extrapolation; more for another card ("transferred").
"""

from __future__ import annotations

import itertools
import statistics
from dataclasses import asdict, dataclass
from typing import Any

from .costs import Floors, decode_cost, prefill_cost, step_cost
from .errors import UserError
from .explain import inputs_for, timeline
from .hardware import Ceilings
from .models import ModelSpec
from .records import RunRecord

EXTRAPOLATION_MARGIN = 0.10   # on top of the calibration spread, for scenarios not calibrated on
TRANSFER_MARGIN = 0.30        # on top of that, for another card: its efficiencies are assumed, not measured


@dataclass(frozen=True)
class PhaseFit:
    fixed_s: float
    memory_factor: float      # seconds per second of memory floor (1 / efficiency)
    compute_factor: float
    steps: int
    rms_relative_residual: float

    def step_s(self, memory_s: float, compute_s: float, comm_s: float) -> float:
        return self.fixed_s + self.memory_factor * memory_s + self.compute_factor * compute_s + comm_s

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _solve(rows: list[list[float]], ys: list[float], cols: tuple[int, ...]) -> list[float] | None:
    """Least squares on the chosen columns (normal equations, at most 3 unknowns); None if singular."""
    n = len(cols)
    ata = [[sum(r[i] * r[j] for r in rows) for j in cols] for i in cols]
    aty = [sum(r[i] * y for r, y in zip(rows, ys)) for i in cols]
    # Gauss-Jordan with partial pivoting
    m = [ata[i] + [aty[i]] for i in range(n)]
    for c in range(n):
        p = max(range(c, n), key=lambda r: abs(m[r][c]))
        if abs(m[p][c]) < 1e-300:
            return None
        m[c], m[p] = m[p], m[c]
        for r in range(n):
            if r != c:
                f = m[r][c] / m[c][c]
                m[r] = [a - f * b for a, b in zip(m[r], m[c])]
    return [m[i][n] / m[i][i] for i in range(n)]


def fit_phase(xs: list[tuple[float, float]], ys: list[float]) -> PhaseFit:
    """Non-negative least squares of y = fixed + a * mem + b * cmp, in relative terms (weights 1/y^2,
    so a 1 ms step counts as much as a 100 ms one): the best fit over every subset of the three
    terms whose coefficients are all non-negative."""
    if not ys:
        raise UserError("no measured step of this phase to calibrate on")
    rows = [[1.0 / y, m / y, c / y] for (m, c), y in zip(xs, ys)]
    ones = [1.0] * len(ys)
    distinct = len({(round(m, 12), round(c, 12)) for m, c in xs})
    fits = []
    for k in (3, 2, 1):
        if k >= distinct and k > 1:   # as many terms as distinct points (or more): not identified
            continue
        for cols in itertools.combinations(range(3), k):
            coef = _solve(rows, ones, cols)
            if coef is None or any(v < 0 for v in coef):
                continue
            full = [0.0, 0.0, 0.0]
            for i, v in zip(cols, coef):
                full[i] = v
            sse = sum((sum(f * x for f, x in zip(full, r)) - 1) ** 2 for r in rows)
            fits.append((sse, cols, full))
    if not fits:
        raise UserError("the calibration steps admit no fit with non-negative costs")
    # Where the data cannot tell a fixed cost from a floor (a floor that barely varies over the
    # calibration steps), the floor is preferred: it scales with the model and the card, a constant
    # does not. Among fits within 1% (relative) of the best residual, one without the fixed term wins.
    least = min(f[0] for f in fits)
    close = [f for f in fits if f[0] <= least * 1.01 + 1e-12 * len(ys)]
    sse, _, (fixed, a, b) = min(close, key=lambda f: (0 in f[1], f[0]))
    return PhaseFit(fixed, a, b, len(ys), (sse / len(ys)) ** 0.5)


@dataclass
class Calibration:
    model: ModelSpec
    ceilings: Ceilings
    records: list[str]
    prefill: PhaseFit
    decode: PhaseFit
    lead_s: float
    gap_s: float
    tail_s: float
    token_budget: int | None                      # the scheduler's tokens per step (prefill is chunked to it)
    ratio_range: dict[str, tuple[float, float]]   # measured / fitted over the calibration runs, per metric

    def parameters(self) -> dict[str, Any]:
        return {"prefill": self.prefill.to_dict(), "decode": self.decode.to_dict(), "lead_s": self.lead_s,
                "gap_per_decode_step_s": self.gap_s, "tail_s": self.tail_s, "token_budget": self.token_budget,
                "calibration_spread": {k: list(v) for k, v in self.ratio_range.items()}}


def _steps(record: RunRecord, f: Floors):
    for sc in record.scenarios:
        for run in sc.runs:
            yield sc, run, [(st, step_cost(f, st.work)) for st in run.steps]


def calibrate(records: list[tuple[str, RunRecord]]) -> Calibration:
    """Fit the step models on every step of every measured run of ``records`` (same model, same device)."""
    if not records:
        raise UserError("predict needs at least one run record to calibrate on")
    first = inputs_for(records[0][1])
    names = {r.config["model"] for _, r in records}
    devices = {r.device.get("name") for _, r in records}
    if len(names) > 1 or len(devices) > 1:
        raise UserError(f"calibrate on runs of one model on one device (got {sorted(names)} on {sorted(devices)})")
    f = first.floors
    xs: dict[str, list] = {"prefill": [], "decode": []}
    ys: dict[str, list] = {"prefill": [], "decode": []}
    leads, gaps, tails = [], [], []
    for _, rec in records:
        for _sc, run, priced in _steps(rec, f):
            spans = timeline(run)
            leads.append(run.steps[0].t_start_s if run.steps else 0.0)
            tails.append(spans[-1]["tail_s"])
            for (st, cost), sp in zip(priced, spans):
                phase = "decode" if st.phase == "decode" else "prefill"   # a mixed step carries a prefill chunk
                xs[phase].append((cost.memory_s, cost.compute_s))
                ys[phase].append(max(sp["span_s"] - cost.comm_s, 1e-9))
                if phase == "decode":
                    gaps.append(sp["gap_s"])
    cal = Calibration(model=f.model, ceilings=first.ceilings, records=[p for p, _ in records],
                      prefill=fit_phase(xs["prefill"], ys["prefill"]), decode=fit_phase(xs["decode"], ys["decode"]),
                      lead_s=statistics.median(leads), gap_s=statistics.median(gaps) if gaps else 0.0,
                      tail_s=statistics.median(tails), ratio_range={},
                      token_budget=min((b for _, r in records if (b := (r.engine or {}).get("max_num_batched_tokens"))),
                                       default=None))
    ratios: dict[str, list[float]] = {"ttft_s": [], "tpot_s": [], "total_latency_s": [], "tps": []}
    for _, rec in records:
        for sc in rec.scenarios:
            pred = _predict(cal, f, sc.batch, sc.prompt_len, sc.gen_len)
            for key in ratios:
                m = sc.summary[key]["median"]
                if m and pred[key]:
                    ratios[key].append(m / pred[key])
    cal.ratio_range = {k: (min(v), max(v)) if v else (1.0, 1.0) for k, v in ratios.items()}
    return cal


def _prefill_s(cal: Calibration, f: Floors, batch: int, prompt_len: int) -> tuple[float, float]:
    """The prefill as the scheduler runs it: one step, or chunks of the token budget (each request's
    first token comes when its own prompt is done). Returns (mean first-token time, last one)."""
    budget = cal.token_budget
    if not budget or batch * prompt_len <= budget:
        pre = prefill_cost(f, batch, prompt_len)
        t = cal.prefill.step_s(pre.memory_s, pre.compute_s, pre.comm_s)
        return t, t
    left = [prompt_len] * batch
    t, done_at = 0.0, []
    while any(left):
        room, seqs = budget, []
        for i, n in enumerate(left):
            if n and room:
                take = min(n, room)
                seqs.append((take, prompt_len - n))
                left[i] -= take
                room -= take
                if not left[i]:
                    done_at.append(None)   # filled in below, once this step's time is known
        c = step_cost(f, seqs)
        t += cal.prefill.step_s(c.memory_s, c.compute_s, c.comm_s) + (cal.gap_s if t else 0.0)
        done_at = [t if x is None else x for x in done_at]
    return sum(done_at) / len(done_at), t


def _predict(cal: Calibration, f: Floors, batch: int, prompt_len: int, gen_len: int) -> dict[str, float]:
    first, last = _prefill_s(cal, f, batch, prompt_len)
    ttft = cal.lead_s + first
    decode = 0.0
    for j in range(1, gen_len):
        d = decode_cost(f, batch, prompt_len + j - 1)
        decode += cal.gap_s + cal.decode.step_s(d.memory_s, d.compute_s, d.comm_s)
    tpot = decode / (gen_len - 1) if gen_len > 1 else 0.0
    total = cal.lead_s + last + decode
    return {"ttft_s": ttft, "tpot_s": tpot, "total_latency_s": total, "tps": batch * gen_len / (total + cal.tail_s)}


def predict(cal: Calibration, batch: int, prompt_len: int, gen_len: int, ceilings: Ceilings | None = None,
            tp: int = 1, model: ModelSpec | None = None, gpu_label: str | None = None) -> dict[str, Any]:
    """One scenario. Same card and model as calibrated: "calibrated"; another card (``ceilings``) or
    TP degree: "transferred" (the fitted factors applied to that card's floors, wider interval)."""
    target = model or cal.model
    if target.architecture != cal.model.architecture:
        raise UserError(f"calibrated on {cal.model.name} ({cal.model.architecture}); {target.name} is "
                        f"{target.architecture}: predictions stay within one architecture family")
    ceil = ceilings or cal.ceilings
    transferred = ceilings is not None and ceilings.name != cal.ceilings.name or tp != 1
    f = Floors.of(target, ceil, tp=tp)
    from .memory import card_of, fits
    if not fits(f.costs, card_of(ceil), batch, prompt_len, gen_len):
        raise UserError(f"{target.name} at batch {batch}, prompt {prompt_len}, gen {gen_len} does not fit on "
                        f"{ceil.name}" + (f" at TP {tp}" if tp > 1 else ""))
    point = _predict(cal, f, batch, prompt_len, gen_len)
    margin = EXTRAPOLATION_MARGIN + (TRANSFER_MARGIN if transferred else 0.0)
    interval = {}
    for key in ("ttft_s", "tpot_s", "tps"):
        lo, hi = cal.ratio_range[key]
        interval[key] = [point[key] * min(lo, 1.0) * (1 - margin), point[key] * max(hi, 1.0) * (1 + margin)]
    assumptions = []
    if transferred:
        assumptions.append(f"the efficiencies measured on {cal.ceilings.name} hold on {ceil.name}"
                           + (f" at TP {tp}" if tp > 1 else "") + "; the per-step host cost is unchanged")
    if target.name != cal.model.name:
        assumptions.append(f"{target.name} runs its kernels as efficiently as {cal.model.name} (same family)")
    elif target.num_layers != cal.model.num_layers:
        assumptions.append(f"calibrated on {cal.model.num_layers} of {cal.model.full_num_layers or cal.model.num_layers} "
                           f"layers; predicted for {target.num_layers}: each layer as efficient as those measured")
    return {"batch": batch, "prompt_len": prompt_len, "gen_len": gen_len, "gpu": gpu_label or ceil.gpu_id or ceil.name,
            "tp": tp, "model": target.name, "kind": "transferred" if transferred else "calibrated", **point,
            "interval": interval, "assumptions": assumptions,
            "calibration": {"records": cal.records, "parameters": cal.parameters()}}
