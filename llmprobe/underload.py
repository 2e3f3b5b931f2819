"""A serve record explained: per load point, how the engine ran and where each request's latency went, from the
step timeline the step hooks recorded; then, in one line, what bounds the SLO at the knee.

A request's two latency windows are cut along the timeline (docs/methodology.md, "Explained under load"):
its TTFT window (send -> first token) into its own prefill steps, other requests' steps it queued behind, and the
time between steps; its decode window (first -> last token) into other requests' prefill inside the steps it
decoded in, the decode floor of those steps, their time above the floor, steps it was left out of (preempted or
not rescheduled) and the time between steps. The parts add up to the window exactly. A step's time is shared
between its prefill and its decode rows in proportion to their floors, each priced alone by the cost model; the
cost per million input and output tokens (``token_costs``) shares the paid time the same way. ``pareto`` picks a
sweep's frontier (tok/s per GPU against tok/s per user) for the figures.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from .context import RecordContext
from .costs import step_cost
from .records import LoadPoint, ServedRequest, ServeRecord, Step

# the knee: the first point, in order of offered load, where fewer than this share of requests meet the SLO
KNEE_GOOD_FRACTION = 0.9

TTFT_PARTS = {"own_prefill": "its own prefill steps", "queued": "other requests' steps it queued behind",
              "between_steps": "time between steps (scheduling, output to the caller)"}
DECODE_PARTS = {"others_prefill": "other requests' prefill in its steps", "decode_floor": "the decode floor",
                "above_floor": "decode steps above their floor", "left_out": "steps without it (preempted or not scheduled)",
                "between_steps": "time between steps (scheduling, output to the caller)"}
# what each part, when it is the largest share of the missed limit's windows, says bounds the SLO
BOUNDS = {("ttft", "own_prefill"): "prefill compute", ("ttft", "queued"): "capacity (requests queue behind running steps)",
          ("ttft", "between_steps"): "the host", ("tpot", "others_prefill"): "prefill interrupting decode",
          ("tpot", "decode_floor"): "the decode floor (the card's bandwidth and compute at this batch)",
          ("tpot", "above_floor"): "kernel efficiency", ("tpot", "left_out"): "preemption (KV cache full)",
          ("tpot", "between_steps"): "the host"}


@dataclass(frozen=True)
class TimedStep:
    """A step on the load point's timeline with its floor and the share of its time its prefill rows take."""
    start_s: float
    end_s: float
    floor_s: float
    prefill_share: float
    rows: dict[str, str]                     # request id -> "p" | "d"
    step: Step

    @property
    def span_s(self) -> float:
        return self.end_s - self.start_s


def timed_steps(ctx: RecordContext, steps: Sequence[Step]) -> list[TimedStep]:
    out = []
    for s in sorted(steps, key=lambda s: s.t_start_s):
        pre = [(r.new, r.cached) for r in s.seqs if r.kind == "p"]
        dec = [(r.new, r.cached) for r in s.seqs if r.kind == "d"]
        touched = s.experts.touched() if s.experts else None
        alone = {k: step_cost(ctx.floors, w, experts_touched=touched).floor_s if w else 0.0
                 for k, w in (("p", pre), ("d", dec))}
        share = alone["p"] / (alone["p"] + alone["d"]) if alone["p"] + alone["d"] > 0 else 0.0
        out.append(TimedStep(s.t_start_s, s.t_end_s, ctx.step_cost(s).floor_s, share,
                             {r.request: r.kind for r in s.seqs}, s))
    return out


def _overlapping(steps: list[TimedStep], starts: list[float], lo: float, hi: float):
    """(step, seconds of it inside [lo, hi]) for every step that overlaps the window."""
    i = max(0, bisect.bisect_right(starts, lo) - 1)
    while i < len(steps) and steps[i].start_s < hi:
        s = steps[i]
        ov = min(s.end_s, hi) - max(s.start_s, lo)
        if ov > 0:
            yield s, ov
        i += 1


def windows(req: ServedRequest, steps: list[TimedStep], starts: list[float]) -> dict[str, dict[str, float]]:
    """The request's TTFT and decode windows cut into their parts (seconds; each window's parts sum to it)."""
    out: dict[str, dict[str, float]] = {}
    if req.ttft_s is None or req.latency_s is None:
        return out
    t0, t1, t2 = req.sent_s, req.sent_s + req.ttft_s, req.sent_s + req.latency_s
    ttft = dict.fromkeys(TTFT_PARTS, 0.0)
    for s, ov in _overlapping(steps, starts, t0, t1):
        ttft["own_prefill" if req.id in s.rows else "queued"] += ov
    ttft["between_steps"] = (t1 - t0) - ttft["own_prefill"] - ttft["queued"]
    out["ttft"] = ttft
    if req.output_tokens >= 2 and t2 > t1:
        dec = dict.fromkeys(DECODE_PARTS, 0.0)
        for s, ov in _overlapping(steps, starts, t1, t2):
            if req.id not in s.rows:
                dec["left_out"] += ov
                continue
            frac = ov / s.span_s if s.span_s > 0 else 0.0
            floor = min(s.floor_s, s.span_s) * frac   # a step under its floor is flagged elsewhere, never negative here
            dec["others_prefill"] += ov * s.prefill_share
            dec["decode_floor"] += floor * (1 - s.prefill_share)
            dec["above_floor"] += (ov - floor) * (1 - s.prefill_share)
        dec["between_steps"] = (t2 - t1) - sum(v for k, v in dec.items() if k != "between_steps")
        out["tpot"] = dec
    return out


def _shares(parts: list[dict[str, float]]) -> dict[str, float] | None:
    total = sum(sum(p.values()) for p in parts)
    if not parts or total <= 0:
        return None
    return {k: sum(p[k] for p in parts) / total for k in parts[0]}


@dataclass
class PointExplanation:
    """One load point: the client's summary, the engine's timeline, and its requests' windows cut into parts."""
    load: str
    summary: dict[str, Any]
    steps: int
    engine: dict[str, Any] | None              # None where no step was recorded (an HTTP client)
    ttft_parts: dict[str, float] | None        # shares over every completed request's TTFT window
    decode_parts: dict[str, float] | None
    missed: dict[str, int]                      # requests missing each SLO limit
    missed_parts: dict[str, dict[str, float] | None]   # shares over the windows of the requests missing that limit
    prefill_time_share: float | None           # of the point's step time, what its prefill rows took

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def load_label(p: LoadPoint) -> str:
    if p.max_concurrency:
        return f"{p.max_concurrency} in flight"
    return "all at once" if p.rate is None else f"{p.rate:g} req/s"


def _engine_view(p: LoadPoint, steps: list[TimedStep]) -> dict[str, Any]:
    """Batch size, tokens per step and their mix, each phase against its floor, KV cache, preemptions, host time."""
    busy = sum(s.span_s for s in steps)
    by_phase: dict[str, list[TimedStep]] = {}
    for s in steps:
        by_phase.setdefault(s.step.phase, []).append(s)
    # between consecutive steps while a request was in flight: the host (idle time with nothing to run is not)
    in_flight = sorted((r.sent_s, r.sent_s + r.latency_s) for r in p.requests if r.latency_s is not None)
    gaps = 0.0
    for a, b in zip(steps, steps[1:]):
        mid = (a.end_s + b.start_s) / 2
        if b.start_s > a.end_s and any(lo <= mid <= hi for lo, hi in in_flight):
            gaps += b.start_s - a.end_s
    sched = p.scheduler
    return {
        "batch_mean": sum(len(s.rows) * s.span_s for s in steps) / busy if busy > 0 else None,  # time-weighted
        "batch_max": max(len(s.rows) for s in steps),
        "prefill_tokens_per_step": _mean([s.step.prefill_tokens for s in steps if s.step.prefill_tokens]),
        "decode_tokens_per_step": _mean([s.step.decode_tokens for s in steps if s.step.decode_tokens]),
        "phases": {ph: {"steps": len(ss), "time_s": sum(s.span_s for s in ss),
                        "floor_fraction": sum(s.floor_s for s in ss) / sum(s.span_s for s in ss)
                        if sum(s.span_s for s in ss) > 0 else None}
                   for ph, ss in sorted(by_phase.items())},
        "step_time_s": busy, "between_steps_s": gaps,
        "between_steps_fraction": gaps / (busy + gaps) if busy + gaps > 0 else None,
        "kv_cache_usage_max": max((s.kv_cache_usage for s in sched), default=None),
        "waiting_max": max((s.waiting for s in sched), default=None),
        "preempted": sum(s.preempted for s in sched) if sched else None,
    }


def _mean(xs: Sequence[float]) -> float | None:
    return sum(xs) / len(xs) if xs else None


def explain_point(ctx: RecordContext | None, p: LoadPoint, slo: dict[str, float]) -> PointExplanation:
    summary = p.summary(slo)
    done = [r for r in p.requests if r.error is None and r.output_tokens]
    missed = {k: sum(1 for r in done if not r.meets({k: v})) for k, v in slo.items()}
    if ctx is None or not p.steps:
        return PointExplanation(load_label(p), summary, len(p.steps), None, None, None, missed,
                                dict.fromkeys(missed), None)
    steps = timed_steps(ctx, p.steps)
    starts = [s.start_s for s in steps]
    cut = {r.id: windows(r, steps, starts) for r in done}
    # an end-to-end miss spans both windows, whose parts differ: it is counted, not cut
    missed_parts = {k: _shares([cut[r.id][k] for r in done if not r.meets({k: v}) and k in cut[r.id]])
                    if k in ("ttft", "tpot") else None for k, v in slo.items()}
    busy = sum(s.span_s for s in steps)
    return PointExplanation(
        load_label(p), summary, len(steps), _engine_view(p, steps),
        _shares([w["ttft"] for w in cut.values() if "ttft" in w]), _shares([w["tpot"] for w in cut.values() if "tpot" in w]),
        missed, missed_parts, sum(s.span_s * s.prefill_share for s in steps) / busy if busy > 0 else None)


@dataclass
class ServeExplanation:
    """A serve record explained: every point, and the knee (the first point under KNEE_GOOD_FRACTION within the SLO)
    with the one line that says what bounds the SLO there."""
    model: str
    slo: dict[str, float]
    points: list[PointExplanation]
    knee: str | None
    verdict: str
    ceilings_source: str | None
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model, "slo": self.slo, "knee": self.knee, "verdict": self.verdict,
                "ceilings_source": self.ceilings_source, "warnings": self.warnings,
                "points": [p.to_dict() for p in self.points]}


def _offered(p: LoadPoint) -> tuple[int, float]:
    """Order of offered load: rates (all at once last), then concurrencies."""
    if p.max_concurrency:
        return (1, p.max_concurrency)
    return (0, math.inf if p.rate is None else p.rate)


def explain_serve(record: ServeRecord, ctx: RecordContext | None, slo: dict[str, float] | None = None) -> ServeExplanation:
    """``ctx``: the record's model, ceilings and floors (None: no floors known, the client's view only)."""
    slo = dict(slo if slo is not None else record.config.get("slo") or {})
    pts = [explain_point(ctx, p, slo) for p in sorted(record.points, key=_offered)]
    knee = next((x for x in pts if (x.summary["good_fraction"] or 0) < KNEE_GOOD_FRACTION), None)
    warnings = []
    if ctx is None and any(p.steps for p in record.points):
        warnings.append("no ceilings for this record's device: steps are not set against floors (pass --gpu or --ceilings)")
    return ServeExplanation(record.config["model"], slo, pts, knee.load if knee else None, verdict(pts, knee, slo),
                            ctx.source if ctx else None, warnings)


def verdict(points: list[PointExplanation], knee: PointExplanation | None, slo: dict[str, float]) -> str:
    """One line: what bounds the SLO at the knee."""
    if not points:
        return "no finished load point"
    if not slo:
        return "no SLO given: no knee"
    if knee is None:
        top = max(points, key=lambda x: x.summary["goodput"] or 0)
        return (f"every load point keeps at least {KNEE_GOOD_FRACTION:.0%} of requests within the SLO; the most goodput: "
                f"{top.summary['goodput']:.3g} req/s at {top.load}")
    done = knee.summary["completed"]
    if not done or not any(knee.missed.values()):
        return f"at {knee.load}, {knee.summary['failed']} requests failed in the engine"
    # the limit most requests miss; between equals, the one the timeline can cut (TTFT, TPOT) first
    limit = max(knee.missed, key=lambda k: (knee.missed[k], k != "e2el"))
    head = (f"at {knee.load}, {knee.missed[limit] / done:.0%} of requests miss {limit} <= {slo[limit] * 1e3:g} ms "
            f"({(knee.summary['good_fraction'] or 0):.0%} within the SLO)")
    parts = knee.missed_parts.get(limit)
    if not parts:
        return head + ("; no engine steps recorded (an HTTP client sees the client side only)"
                       if knee.engine is None else "")
    window = "ttft" if limit == "ttft" else "tpot"
    names = TTFT_PARTS if window == "ttft" else DECODE_PARTS
    big = max(parts, key=lambda k: parts[k])
    eng = knee.engine or {}
    context = []
    if window == "tpot" and big in ("decode_floor", "above_floor", "others_prefill") and eng.get("batch_mean"):
        context.append(f"batch {eng['batch_mean']:.3g} on average")
    if eng.get("preempted"):
        context.append(f"{eng['preempted']} preemptions")
    if eng.get("kv_cache_usage_max") is not None:
        context.append(f"KV cache up to {eng['kv_cache_usage_max']:.0%}")
    if big == "queued" and eng.get("waiting_max"):
        context.append(f"up to {eng['waiting_max']} waiting")
    return (f"{head}: bound by {BOUNDS[(window, big)]} ({parts[big]:.0%} of their "
            f"{'time to first token' if window == 'ttft' else 'decode time'}: {names[big]}"
            + (f"; {', '.join(context)}" if context else "") + ")")


def pareto(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """The points no other beats on both axes (higher is better on both), in order of x."""
    front, best = [], -math.inf
    for x, y in sorted(points, reverse=True):   # from the most interactive: on the frontier if it adds throughput
        if y > best:
            front.append((x, y))
            best = y
    return front[::-1]


def token_costs(summary: dict[str, Any], prefill_time_share: float | None, usd_per_hour: float) -> dict[str, float | None]:
    """$ per million tokens for one load point on ``usd_per_hour`` (all its GPUs): the point's whole paid time
    (its duration, idle included) shared between input and output by the prefill share of its step time;
    the output tokens' all-in cost (every paid second on the output tokens), and that at the SLO (on the output
    tokens of the requests within it)."""
    paid = usd_per_hour * summary["duration_s"] / 3600
    out_tok, in_tok = summary["output_tokens"], summary["input_tokens"]
    good_tok = summary["good_output_tokens"]
    split = prefill_time_share is not None
    return {
        "usd_per_hour": usd_per_hour, "usd": paid,
        "usd_per_mtok_input": paid * prefill_time_share / in_tok * 1e6 if split and in_tok else None,
        "usd_per_mtok_output": paid * (1 - prefill_time_share) / out_tok * 1e6 if split and out_tok else None,
        "usd_per_mtok_output_all_in": paid / out_tok * 1e6 if out_tok else None,
        "usd_per_mtok_output_at_slo": paid / good_tok * 1e6 if good_tok else None,
    }
