"""Run records: their typed form (RunRecord > ScenarioResult > Run > Step > SeqRow, with the nested payloads),
serve records (ServeRecord > LoadPoint > ServedRequest), the methodology versions with their changelogs, atomic
JSON writes and validated loads.

The engines build the typed form; ``profile`` writes its ``to_dict()`` as it goes (a plain document, so an
interrupted run still leaves a readable file) and readers load it back, checked on the way in. A key this
version does not type is kept in ``extra`` and written back: nothing read is lost.
"""

from __future__ import annotations

import gzip
import json
import os
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any

from .errors import UserError
from .timing import percentile, relative_spread, summarize

SCHEMA_VERSION = 1
# Bumped whenever what is measured or how changes (mamf-finder's benchmark_version habit); one line per version.
PROFILE_METHODOLOGIES = {
    "profile-1": "warm-up run(s) then measured runs; token-id prompts of random ids; EOS ignored; prefix caching off",
    "profile-2": "as profile-1, and: MoE routers with random weights set trained-like by default and each step's "
                 "experts counted per layer; a quick ceilings pass where none is saved; sample_tokens timed per step; "
                 "traced steps in llmprobe's own profiler window, outside the timed ones; in-process engines on the "
                 "caller's thread; NVML energy read around each measured run",
    "profile-3": "as profile-2, and: the ceilings a record carries (saved, or the quick pass) measured by ceilings-3",
}
PROFILE_METHODOLOGY = "profile-3: " + PROFILE_METHODOLOGIES["profile-3"]
# One line per ceilings version, as for profiles; the bare version is what saved ceilings are keyed by and
# what their source names. Saved ceilings of an older methodology are re-measured.
CEILINGS_METHODOLOGIES = {
    "ceilings-1": "matmul best over square shapes in one layout (NN), no time budgets, L2 flushed by an add (a "
                  "write), stream grids of 8 blocks per SM",
    "ceilings-2": "matmul best over layouts (NN and NT) and LLM shapes, per-method time budgets, L2 flushed by a "
                  "read, stream grids sized by occupancy",
    "ceilings-3": "as ceilings-2, and: calls under 100 us timed many per sample (from a CUDA graph where the call can "
                  "be captured; matmul operands in copies that outgrow the L2), raw samples and named statistics kept "
                  "per sweep point, fp8 output re-randomized between samples, collectives checked before they are "
                  "timed and timed through the one timer",
}
CEILINGS_METHODOLOGY = "ceilings-3"
METRICS = ("ttft_s", "tpot_s", "total_latency_s", "tps")   # every scenario summary has these


def atomic_write_json(path: str | os.PathLike, doc: Any) -> None:
    atomic_write_text(path, json.dumps(doc, indent=1) + "\n")


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write-then-rename in the same folder: a reader never sees half a file, a crash keeps the old one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; a result file is as readable as any other
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_json(path: str | os.PathLike, what: str = "file") -> Any:
    p = Path(path)
    if not p.is_file():
        raise UserError(f"{path}: no such {what}")
    try:   # records kept in the repository are gzipped (a batch-64 run lists every sequence of every step)
        return json.loads(gzip.decompress(p.read_bytes()) if p.suffix == ".gz" else p.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError, OSError) as e:
        raise UserError(f"{path}: not a JSON {what} ({e})") from None


class RecordError(UserError):
    """A run record that is malformed or not one at all: one line saying where."""


def _need(cond: bool, where: str, what: str) -> None:
    if not cond:
        raise RecordError(f"{where}: {what}")


def _plain(v: Any) -> Any:
    """A value as JSON holds it: typed records by their ``to_dict``, containers element by element."""
    if hasattr(v, "to_dict"):
        return v.to_dict()
    if isinstance(v, list):
        return [_plain(x) for x in v]
    if isinstance(v, dict):
        return {k: _plain(x) for k, x in v.items()}
    return v


def _dump(obj: Any) -> dict[str, Any]:
    """A typed record's fields in order, nested ones converted, then the keys it kept without typing them."""
    out = {f.name: _plain(getattr(obj, f.name)) for f in fields(obj) if f.name != "extra"}
    return {**out, **getattr(obj, "extra", {})}


def _load(cls: Any, d: Any, where: str, **convert: Callable[[Any], Any]) -> Any:
    """``cls`` from ``d``: its fields (``convert`` builds the nested ones that are not null); every key ``cls``
    does not type goes to its ``extra``, so a record read and written again loses nothing."""
    _need(isinstance(d, dict), where, f"{cls.__name__} must be an object")
    names = {f.name for f in fields(cls)} - {"extra"}
    required = {f.name for f in fields(cls) if f.default is MISSING and f.default_factory is MISSING}
    missing = required - set(d)
    _need(not missing, where, f"lacks {', '.join(sorted(missing))}")
    kw = {k: (convert[k](v) if k in convert and v is not None else v) for k, v in d.items() if k in names}
    return cls(**kw, extra={k: v for k, v in d.items() if k not in names})


class _Typed:
    """A record type that is written as its fields (``_dump``)."""
    __slots__ = ()

    def to_dict(self) -> dict[str, Any]:
        return _dump(self)


def sampling_label(temperature: float | None) -> str:
    """How a run sampled: a comparison of tokens/s across runs is fair only at the same setting (a 32k-vocabulary
    sampler at temperature 1 is a visible share of a small model's step)."""
    return "greedy" if not temperature else f"temperature {temperature:g}"


def _num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _mean(values: list[float | None]) -> float | None:
    """The mean of the values that exist (a request with one token has no TPOT, not a TPOT of 0)."""
    got = [v for v in values if v is not None]
    return sum(got) / len(got) if got else None


# ---- statistics over runs ------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Stat(_Typed):
    """One metric over a scenario's runs, every statistic named (timing.summarize); p90, p99 and the median's
    confidence interval are null in records from before they were recorded."""
    n: int
    mean: float | None
    median: float | None
    min: float | None
    max: float | None
    stdev: float | None
    p90: float | None = None
    p99: float | None = None
    median_ci: dict[str, float] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def of(cls, values: Sequence[float | None]) -> Stat:
        return cls.from_dict(summarize(values), "statistic")

    @classmethod
    def from_dict(cls, d: Any, where: str) -> Stat:
        _need(isinstance(d, dict) and "median" in d, where, "a statistic must be an object with a median")
        return _load(cls, {"n": None, "mean": None, "min": None, "max": None, "stdev": None, **d}, where)

    @property
    def spread(self) -> float | None:
        """(max - min) / median: the run-to-run spread explain flags where no interval was recorded."""
        return relative_spread(self.to_dict())


# ---- one run -------------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class SeqRow:
    """One sequence in one step: ``new`` tokens computed on top of ``cached`` ones; kind "p" (prefill) or "d"."""
    request: str
    new: int
    cached: int
    kind: str

    def to_list(self) -> list[Any]:
        return [self.request, self.new, self.cached, self.kind]

    @classmethod
    def from_list(cls, row: Any, where: str) -> SeqRow:
        _need(isinstance(row, (list, tuple)) and len(row) == 4 and isinstance(row[1], int)
              and isinstance(row[2], int) and row[3] in ("p", "d"), where,
              f"a sequence row must be [request, new, cached, 'p'|'d'], got {row!r}")
        return cls(str(row[0]), row[1], row[2], row[3])


@dataclass(frozen=True, slots=True)
class ExpertLoad:
    """A MoE step's routing, measured per layer (engines/routing.py): distinct experts its tokens touched and the
    most tokens one expert got; ``routed_tokens`` is what the router saw (above the step's tokens: graph padding)."""
    distinct: list[int]
    max_load: list[int]
    routed_tokens: int
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"distinct": self.distinct, "max_load": self.max_load, "routed_tokens": self.routed_tokens,
                **self.extra}

    @classmethod
    def from_dict(cls, d: Any, where: str) -> ExpertLoad:
        _need(isinstance(d, dict) and {"distinct", "max_load", "routed_tokens"} <= set(d), where,
              "experts must hold distinct, max_load and routed_tokens")
        _need(len(d["distinct"]) == len(d["max_load"]), where, "experts: one distinct and max_load per layer")
        return cls(list(d["distinct"]), list(d["max_load"]), int(d["routed_tokens"]),
                   {k: v for k, v in d.items() if k not in ("distinct", "max_load", "routed_tokens")})

    def touched(self) -> int:
        """Distinct experts summed over the MoE layers: the expert weights a step reads, in experts."""
        return sum(self.distinct)


@dataclass(slots=True)
class Step:
    """One forward pass: its host interval (s from the run's start), host and device time, and its sequences.

    The token and request counts follow from ``seqs`` (``Step.counts``); ``phase`` is the one rule for what a
    step was: prefill, decode, or mixed (prefill chunks and decode rows in one pass)."""
    index: int
    t_start_s: float
    t_end_s: float
    host_ms: float
    device_ms: float | None
    seqs: list[SeqRow]
    gap_ms: float | None = None
    prefill_tokens: int = 0
    decode_tokens: int = 0
    num_reqs: int = 0
    prefill_reqs: int = 0
    decode_reqs: int = 0
    mixed: bool = False
    sample_host_ms: float | None = None     # vLLM: the step's sample_tokens part (the sampler; V2: the logits too)
    sample_device_ms: float | None = None
    experts: ExpertLoad | None = None       # MoE: the routing this step measured
    extra: dict[str, Any] = field(default_factory=dict)   # keys this version does not type (per-rank times): kept

    @staticmethod
    def counts(seqs: Sequence[SeqRow]) -> dict[str, Any]:
        """Token and request counts of a step from its sequence rows."""
        pre = [s for s in seqs if s.kind == "p"]
        dec = [s for s in seqs if s.kind == "d"]
        return {"prefill_tokens": sum(s.new for s in pre), "decode_tokens": sum(s.new for s in dec),
                "num_reqs": len(seqs), "prefill_reqs": len(pre), "decode_reqs": len(dec), "mixed": bool(pre and dec)}

    @classmethod
    def measured(cls, index: int, seqs: Sequence[Any], **times: Any) -> Step:
        """A step as an engine saw it: its rows ([request, new, cached, kind]) and times; counts derived."""
        rows = [r if isinstance(r, SeqRow) else SeqRow.from_list(r, f"step {index}") for r in seqs]
        return cls.from_dict({"index": index, **times, "seqs": rows, **cls.counts(rows)}, f"step {index}")

    @property
    def time_s(self) -> float:
        """The step's own time: device time where a device timer ran, else host time."""
        return (self.device_ms if self.device_ms is not None else self.host_ms) / 1e3

    @property
    def phase(self) -> str:
        return "mixed" if self.mixed else ("prefill" if self.prefill_tokens else "decode")

    @property
    def group(self) -> str:
        """The two-way split tables and traces use: a mixed step carries a prefill chunk, so it goes with prefill."""
        return "decode" if self.phase == "decode" else "prefill"

    @property
    def tokens(self) -> int:
        return self.prefill_tokens + self.decode_tokens

    @property
    def work(self) -> list[tuple[int, int]]:
        """(new, cached) per sequence: what the cost model prices."""
        return [(r.new, r.cached) for r in self.seqs]

    def to_dict(self) -> dict[str, Any]:
        d = _dump(self)
        d["seqs"] = [r.to_list() for r in self.seqs]
        for k in ("sample_host_ms", "sample_device_ms", "experts"):   # absent where the engine has no such hook
            if d[k] is None:
                del d[k]
        return d

    @classmethod
    def from_dict(cls, d: Any, where: str) -> Step:
        _need(isinstance(d, dict), where, "a step must be an object")
        missing = {"index", "t_start_s", "t_end_s", "host_ms", "seqs"} - set(d)
        _need(not missing, where, f"step lacks {', '.join(sorted(missing))}")
        _need(all(_num(d[k]) for k in ("t_start_s", "t_end_s", "host_ms")), where, "step times must be numbers")
        _need(d.get("device_ms") is None or _num(d["device_ms"]), where, "device_ms must be a number or null")
        _need(isinstance(d["seqs"], list), where, "seqs must be a list")
        return _load(cls, {"device_ms": None, **d}, where,
                     seqs=lambda rows: [r if isinstance(r, SeqRow) else SeqRow.from_list(r, where) for r in rows],
                     experts=lambda e: e if isinstance(e, ExpertLoad) else ExpertLoad.from_dict(e, where))


@dataclass(slots=True)
class Request(_Typed):
    """One prompt of a run: times from its submission on the caller's clock, and the token ids it generated
    (so a run can be checked against a reference)."""
    id: str
    prompt_len: int
    output_tokens: int
    ttft_s: float | None
    latency_s: float | None
    tpot_s: float | None
    engine_ttft_s: float | None = None     # vLLM's own first_token_latency, for the cross-check
    output_ids: list[int] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def timed(cls, req_id: str, prompt_len: int, token_times_s: Sequence[float]) -> Request:
        """TTFT, latency and TPOT from the arrival times of the request's tokens (s from submit)."""
        n = len(token_times_s)
        ttft = token_times_s[0] if n else None
        latency = token_times_s[-1] if n else None
        tpot = (latency - ttft) / (n - 1) if n > 1 else None
        return cls(req_id, prompt_len, n, ttft, latency, tpot)

    @classmethod
    def from_dict(cls, d: Any, where: str) -> Request:
        _need(isinstance(d, dict) and {"id", "output_tokens"} <= set(d), where, "a request needs id and output_tokens")
        return _load(cls, {"prompt_len": None, "ttft_s": None, "latency_s": None, "tpot_s": None, **d}, where)


@dataclass(frozen=True, slots=True)
class Admission(_Typed):
    """Did the run's first step hold every request of its batch? (Unless the scheduler's token budget was what
    cut it: then the prompts were chunked, not raced.)"""
    method: str
    batch: int
    first_step_requests: int
    together: bool
    chunked_by_token_budget: bool
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def of(cls, steps: Sequence[Step], batch: int, method: str, token_budget: int | None) -> Admission:
        first = steps[0] if steps else None
        reqs = first.num_reqs if first else 0
        chunked = bool(first and token_budget and first.tokens >= token_budget)
        return cls(method, batch, reqs, reqs == batch, chunked and reqs < batch)

    @classmethod
    def from_dict(cls, d: Any, where: str) -> Admission:
        _need(isinstance(d, dict) and {"method", "batch", "first_step_requests"} <= set(d), where,
              "admission needs method, batch and first_step_requests")
        return _load(cls, {"together": d["first_step_requests"] == d["batch"], "chunked_by_token_budget": False, **d},
                     where)


@dataclass(frozen=True, slots=True)
class RunMetrics:
    """A run's figures, the article's way: TTFT, TPOT and latency averaged over its requests, TPS = output tokens /
    wall time; with an energy reading, the whole run's energy (prefill included) per generated token."""
    ttft_s: float | None
    tpot_s: float | None
    total_latency_s: float | None
    tps: float | None
    output_tokens: int
    joules_per_token: float | None = None

    def to_dict(self) -> dict[str, Any]:
        d = _dump(self)
        if d["joules_per_token"] is None:
            del d["joules_per_token"]
        return d


@dataclass(frozen=True, slots=True)
class PhaseTotal(_Typed):
    steps: int
    device_s: float | None      # None where a step had no device timer
    host_s: float
    tokens: int


@dataclass(frozen=True, slots=True)
class RunPhases(_Typed):
    """Per phase: step count, summed device and host time and tokens; and the time outside every step."""
    prefill: PhaseTotal
    decode: PhaseTotal
    mixed: PhaseTotal
    outside_steps_s: float
    overhead_per_step_ms: float | None


@dataclass(slots=True)
class Run:
    """One measured (or warm-up) run of a scenario: its wall time, steps and requests; its metrics and phase
    totals follow from them."""
    wall_s: float
    steps: list[Step]
    requests: list[Request]
    admission: Admission | None = None
    energy_j: float | None = None      # the GPUs' energy over the run (NVML's counter, read around it)
    trace_files: list[str] = field(default_factory=list)    # a traced run's profiler files (not in records)
    trace_windows: list[dict[str, Any]] = field(default_factory=list)   # when each rank's profiler was on, graphs or not
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def metrics(self) -> RunMetrics:
        reqs = self.requests
        tokens = sum(r.output_tokens for r in reqs)
        return RunMetrics(ttft_s=_mean([r.ttft_s for r in reqs]), tpot_s=_mean([r.tpot_s for r in reqs]),
                          total_latency_s=_mean([r.latency_s for r in reqs]),
                          tps=tokens / self.wall_s if self.wall_s > 0 else None, output_tokens=tokens,
                          joules_per_token=self.energy_j / tokens if self.energy_j is not None and tokens else None)

    @property
    def phases(self) -> RunPhases:
        has_device = bool(self.steps) and all(s.device_ms is not None for s in self.steps)

        def total(ph: str) -> PhaseTotal:
            mine = [s for s in self.steps if s.phase == ph]
            return PhaseTotal(len(mine), sum(s.device_ms / 1e3 for s in mine) if has_device else None,
                              sum(s.host_ms / 1e3 for s in mine), sum(s.tokens for s in mine))
        outside = self.wall_s - sum(s.host_ms for s in self.steps) / 1e3
        n = len(self.steps)
        return RunPhases(total("prefill"), total("decode"), total("mixed"), outside, outside / n * 1e3 if n else None)

    def timeline(self) -> list[dict[str, float]]:
        """Each step's share of the run's wall time: the gap before it and its own span, never negative.

        A step occupies the union of its host interval [t_start, t_end] and its device interval. Device
        work is queued, so it starts no earlier than the step's host start nor before the previous step's
        device work ends, and lasts the measured device time: with async execution it runs on past the
        host's return, into what would otherwise look like the gap before the next step. That overlap
        is taken off the gap; the timeline is clipped at the run's wall time, so gaps + spans + tail
        = wall exactly. Without a device timer the device interval is the host interval.
        """
        wall = self.wall_s
        cursor = dev_end = 0.0
        out = []
        for st in self.steps:
            a, b = st.t_start_s, st.t_end_s
            t = st.time_s
            if st.device_ms is None:
                d1 = b
            else:
                d1 = max(a, dev_end) + t
                dev_end = d1
            start = min(max(a, cursor), wall)
            end = min(max(b, d1, start), wall)
            out.append({"gap_s": start - cursor, "span_s": end - start, "device_s": min(t, end - start)})
            cursor = end
        out.append({"tail_s": wall - cursor})
        return out

    def to_dict(self) -> dict[str, Any]:
        d = {"wall_s": self.wall_s, "steps": [s.to_dict() for s in self.steps],
             "requests": [r.to_dict() for r in self.requests],
             "admission": self.admission.to_dict() if self.admission else None,
             "metrics": self.metrics.to_dict(), "phases": self.phases.to_dict()}
        if self.energy_j is not None:   # absent where no counter was read (CPU, no NVML)
            d["energy_j"] = self.energy_j
        if self.trace_files or self.trace_windows:
            d.update(trace_files=self.trace_files, trace_windows=self.trace_windows)
        return {**d, **self.extra}

    @classmethod
    def from_dict(cls, d: Any, where: str) -> Run:
        _need(isinstance(d, dict) and _num(d.get("wall_s")) and isinstance(d.get("steps"), list)
              and isinstance(d.get("requests"), list), where, "a run needs wall_s, steps and requests")
        # metrics and phases are derived from the steps and requests, never read back; a key in them that this
        # version does not derive (a newer one wrote it) is refused rather than lost on the next write
        run = _load(cls, {k: v for k, v in d.items() if k not in ("metrics", "phases")}, where,
                    steps=lambda ss: [s if isinstance(s, Step) else Step.from_dict(s, f"{where} step {i}")
                                      for i, s in enumerate(ss)],
                    requests=lambda rs: [r if isinstance(r, Request) else Request.from_dict(r, f"{where} request {i}")
                                         for i, r in enumerate(rs)],
                    admission=lambda a: a if isinstance(a, Admission) else Admission.from_dict(a, where))
        unknown = (_underived(d.get("metrics"), run.metrics.to_dict(), "metrics")
                   + _underived(d.get("phases"), run.phases.to_dict(), "phases"))
        _need(not unknown, where, f"holds {', '.join(unknown)}, which this llmprobe does not derive "
                                  "(written by a newer version?)")
        return run


def _underived(stored: Any, derived: Any, path: str) -> list[str]:
    """The keys of ``stored`` (nested) that ``derived`` lacks."""
    if not (isinstance(stored, dict) and isinstance(derived, dict)):
        return []
    return [p for k, v in stored.items()
            for p in ([f"{path}.{k}"] if k not in derived else _underived(v, derived[k], f"{path}.{k}"))]


# ---- one scenario --------------------------------------------------------------------------------

def _stats(where: str, *keys: str) -> dict[str, Callable[[Any], Stat]]:
    return {k: (lambda s, k=k: Stat.from_dict(s, f"{where}.{k}")) for k in keys}


@dataclass(frozen=True, slots=True)
class PhaseStats(_Typed):
    steps: Stat
    device_s: Stat
    host_s: Stat
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, d: Any, where: str) -> PhaseStats:
        return _load(cls, d, where, **_stats(where, "steps", "device_s", "host_s"))


@dataclass(frozen=True, slots=True)
class ScenarioPhases(_Typed):
    """A scenario's phase totals over its measured runs (each a Stat over runs)."""
    prefill: PhaseStats
    decode: PhaseStats
    mixed: PhaseStats
    outside_steps_s: Stat
    overhead_per_step_ms: Stat
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def of(cls, runs: Sequence[Run]) -> ScenarioPhases:
        per = [r.phases for r in runs]

        def ph(name: str) -> PhaseStats:
            tot = [getattr(p, name) for p in per]
            return PhaseStats(Stat.of([t.steps for t in tot]), Stat.of([t.device_s for t in tot]),
                              Stat.of([t.host_s for t in tot]))
        return cls(ph("prefill"), ph("decode"), ph("mixed"), Stat.of([p.outside_steps_s for p in per]),
                   Stat.of([p.overhead_per_step_ms for p in per]))

    @classmethod
    def from_dict(cls, d: Any, where: str) -> ScenarioPhases:
        return _load(cls, d, where, **_stats(where, "outside_steps_s", "overhead_per_step_ms"),
                     **{k: (lambda p, k=k: PhaseStats.from_dict(p, f"{where}.{k}")) for k in ("prefill", "decode", "mixed")})


@dataclass(frozen=True, slots=True)
class AdmissionSummary(_Typed):
    """Which measured runs did not start as one batch (unless the token budget chunked the prompts)."""
    method: str
    batch: int
    first_step_requests: list[int]
    split_runs: list[int]
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def of(cls, runs: Sequence[Run]) -> AdmissionSummary | None:
        adms = [r.admission for r in runs]
        if not adms or not all(adms):
            return None
        return cls(adms[0].method, adms[0].batch, [a.first_step_requests for a in adms],
                   [i for i, a in enumerate(adms) if not a.together and not a.chunked_by_token_budget])


@dataclass(frozen=True, slots=True)
class HostLoadReading(_Typed):
    """What else used the CPU beside the measured runs (hostload.py): other processes and the hypervisor's steal."""
    wall_s: float
    cores: int
    own_cpu_s: float
    other_cpu_s: float
    other_cores: float
    steal_s: float
    steal_share: float
    busy: bool
    reasons: list[str]
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class TraceSummary:
    """A scenario's traced steps (profile --trace-steps, traces.py): per kernel class and name, the time per traced
    step of each phase; or, where the traced runs failed, only ``error`` (the measured runs stand)."""
    steps_traced: dict[str, int] = field(default_factory=dict)
    ranks: int = 1
    table: str | None = None
    profiler_outside_steps: bool = True
    trace_files: list[str] = field(default_factory=list)
    kernels: list[dict[str, Any]] = field(default_factory=list)   # {phase, class, name, calls, time_s} rows
    steps: list[dict[str, Any]] = field(default_factory=list)     # {phase, index, seqs, time_s, untraced_time_s}
    step_time_s: dict[str, float | None] = field(default_factory=dict)
    overhead: dict[str, float | None] = field(default_factory=dict)
    cuda_graphs: str | None = None   # CUDA: "off in traced steps" (their kernels are named) or "as in the measured steps"
    error: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        if self.error is not None:
            return {"error": self.error, **self.extra}
        d = _dump(self)
        del d["error"]
        return d

    @classmethod
    def from_dict(cls, d: Any, where: str) -> TraceSummary:
        return _load(cls, d, where)


@dataclass(slots=True)
class ScenarioResult(_Typed):
    """Everything measured for one (batch, prompt_len, gen_len): runs, their summary and what was seen beside."""
    batch: int
    prompt_len: int
    gen_len: int
    runs: list[Run]
    summary: dict[str, Stat]
    warmup_runs: list[Run] = field(default_factory=list)
    phases: ScenarioPhases | None = None
    cross_check: dict[str, Any] | None = None
    telemetry: dict[str, Any] | None = None
    host_load: HostLoadReading | None = None
    admission: AdmissionSummary | None = None
    problems: list[str] = field(default_factory=list)
    trace: TraceSummary | None = None          # profile --trace-steps: traced steps by kernel class (traces.py)
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def of(cls, batch: int, prompt_len: int, gen_len: int, runs: list[Run], warmup_runs: list[Run],
           telemetry: dict[str, Any] | None = None, host_load: HostLoadReading | None = None) -> ScenarioResult:
        """The scenario's summary over its measured runs, each metric a Stat, and what looks incomplete."""
        per_run = [r.metrics for r in runs]
        summary = {k: Stat.of([getattr(m, k) for m in per_run]) for k in METRICS}
        if per_run and all(m.joules_per_token is not None for m in per_run):
            summary["joules_per_token"] = Stat.of([m.joules_per_token for m in per_run])
        problems = []
        for i, r in enumerate(runs):
            short = [q.id for q in r.requests if q.output_tokens != gen_len]
            if short:
                problems.append(f"run {i}: {len(short)} request(s) did not produce {gen_len} tokens")
        return cls(batch, prompt_len, gen_len, runs, summary, warmup_runs, ScenarioPhases.of(runs),
                   cross_check(runs), telemetry, host_load, AdmissionSummary.of(runs), problems)

    def warnings(self) -> list[str]:
        """What makes the scenario's figures suspect, in words (also flagged by explain)."""
        out = list(self.problems)
        adm = self.admission
        if adm and adm.split_runs:
            out.append(f"{len(adm.split_runs)} run(s) did not start as one batch: their first step held "
                       f"{adm.first_step_requests} of {adm.batch} requests ({adm.method})")
        if self.host_load:
            out += [f"busy machine: {r}" for r in self.host_load.reasons]
        return out

    @classmethod
    def from_dict(cls, d: Any, where: str) -> ScenarioResult:
        _need(isinstance(d, dict), where, "a scenario must be an object")
        missing = {"batch", "prompt_len", "gen_len", "runs", "summary"} - set(d)
        missing |= {f"summary.{k}" for k in METRICS if "median" not in ((d.get("summary") or {}).get(k) or {})}
        _need(not missing, where, f"lacks {', '.join(sorted(missing))}")
        _need(isinstance(d["runs"], list), where, "runs must be a list")
        return _load(cls, d, where, runs=lambda rs: [Run.from_dict(r, f"{where} run {i}") for i, r in enumerate(rs)],
                     warmup_runs=lambda rs: [Run.from_dict(r, f"{where} warm-up {i}") for i, r in enumerate(rs)],
                     summary=lambda s: {k: Stat.from_dict(v, f"{where} summary.{k}") for k, v in s.items()},
                     phases=lambda p: ScenarioPhases.from_dict(p, f"{where} phases"),
                     host_load=lambda h: _load(HostLoadReading, h, f"{where} host_load"),
                     admission=lambda a: _load(AdmissionSummary, a, f"{where} admission"),
                     trace=lambda t: TraceSummary.from_dict(t, f"{where} trace"))


CROSS_CHECK_TOLERANCE = 0.05


def cross_check(runs: Sequence[Run]) -> dict[str, Any]:
    """Our TTFT (token arrival at the caller) against vLLM's own first_token_latency."""
    pairs = [(r.ttft_s, r.engine_ttft_s) for run in runs for r in run.requests if r.engine_ttft_s and r.ttft_s]
    if not pairs:
        return {"available": False}
    diffs = [abs(a - b) / b for a, b in pairs]
    bad = sum(d > CROSS_CHECK_TOLERANCE for d in diffs)
    return {"available": True, "requests": len(pairs), "max_rel_diff": max(diffs),
            "median_rel_diff": sorted(diffs)[len(diffs) // 2], "above_tolerance": bad,
            "tolerance": CROSS_CHECK_TOLERANCE,
            "note": "ours: first token received by the caller; vLLM's: engine-side, before output processing"}


# ---- the whole record ----------------------------------------------------------------------------

@dataclass(slots=True)
class RunRecord(_Typed):
    """What ``llmprobe profile`` wrote: how it ran (config, engine, provenance) and each finished scenario."""
    schema_version: int
    config: dict[str, Any]
    scenarios: list[ScenarioResult]
    kind: str = "llmprobe.run"
    methodology: str | None = None
    status: str | None = None
    error: str | None = None
    provenance: dict[str, Any] | None = None
    model: dict[str, Any] | None = None
    model_config: dict[str, Any] | None = None
    engine: dict[str, Any] | None = None
    memory_fit: dict[str, Any] | None = None
    compute: dict[str, Any] | None = None
    ceilings: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def device(self) -> dict[str, Any]:
        return (self.provenance or {}).get("device") or {}

    @classmethod
    def from_dict(cls, doc: Any, where: str = "run record") -> RunRecord:
        _need(isinstance(doc, dict) and "schema_version" in doc and "scenarios" in doc, where,
              "not an llmprobe run record (no schema_version/scenarios)")
        _need(doc["schema_version"] == SCHEMA_VERSION, where,
              f"run record schema {doc['schema_version']}, this llmprobe reads {SCHEMA_VERSION}")
        _need(isinstance(doc.get("config"), dict) and "model" in doc["config"], where,
              "run record has no config (model, backend, ...)")
        _need(isinstance(doc["scenarios"], list), where, "scenarios must be a list")
        return _load(cls, doc, where, scenarios=lambda ss: [ScenarioResult.from_dict(s, f"{where}: scenario {i}")
                                                     for i, s in enumerate(ss)])


def load_run_record(path: str | os.PathLike) -> RunRecord:
    return RunRecord.from_dict(load_json(path, "run record"), str(path))


# ---- serving: an open-loop load on the engine (llmprobe serve) ----------------------------------------

SERVE_METHODOLOGIES = {
    "serve-1": "open-loop arrivals (poisson or constant, seeded) of token-id prompts on the in-process AsyncLLM, "
               "EOS ignored, prefix caching off; each request timed from its send to each token's arrival at the "
               "caller (DELTA outputs); the engine's steps timed by the step hooks; scheduler stats per step",
    "serve-2": "as serve-1, and: requests ask for their length with ignore_eos alone (no min_tokens, which adds a "
               "logits processor to every step), as bench serve does; arrivals on bench serve's schedule (request i "
               "after i + 1 gaps, Poisson gaps rescaled so the last request goes at n/rate)",
}
SERVE_METHODOLOGY = "serve-2: " + SERVE_METHODOLOGIES["serve-2"]


@dataclass(slots=True)
class ServedRequest(_Typed):
    """One request under load: when it was due and sent (s from the load point's start), its lengths, and its
    tokens' arrival: TTFT and latency from its send, the gaps between output chunks (ITL, as vLLM's bench)."""
    id: str
    arrival_s: float
    sent_s: float
    prompt_len: int
    output_tokens: int
    ttft_s: float | None
    latency_s: float | None
    itl_s: list[float] = field(default_factory=list)
    error: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def tpot_s(self) -> float | None:
        """Time per output token after the first (vLLM bench serve's TPOT)."""
        if self.output_tokens < 2 or self.ttft_s is None or self.latency_s is None:
            return None
        return (self.latency_s - self.ttft_s) / (self.output_tokens - 1)

    def meets(self, slo: dict[str, float]) -> bool:
        """Completed within every limit of ``slo`` ({"ttft", "tpot", "e2el"}: seconds)."""
        if self.error is not None or self.ttft_s is None:
            return False
        got = {"ttft": self.ttft_s, "tpot": self.tpot_s, "e2el": self.latency_s}
        return all(got[k] is None or got[k] <= v for k, v in slo.items())


@dataclass(frozen=True, slots=True)
class SchedulerSample(_Typed):
    """vLLM's scheduler after one engine step (its stat logger): KV cache in use (0-1), requests running and
    waiting, requests preempted in that step; ``t_s`` on the load point's clock."""
    t_s: float
    kv_cache_usage: float
    running: int
    waiting: int
    preempted: int
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class LoadPoint(_Typed):
    """One rate (requests/s; None: all at once) or concurrency of a sweep: its requests, the engine's steps and
    scheduler samples over it, and the energy its GPUs drew where NVML counts it."""
    rate: float | None
    max_concurrency: int | None
    duration_s: float
    requests: list[ServedRequest]
    steps: list[Step] = field(default_factory=list)
    scheduler: list[SchedulerSample] = field(default_factory=list)
    energy_j: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def summary(self, slo: dict[str, float]) -> dict[str, Any]:
        """What vLLM's bench serve reports, named alike: throughput, and mean, median, p90, p99 of TTFT, TPOT,
        ITL and end-to-end latency (E2EL); goodput: completed requests within ``slo`` per second."""
        done = [r for r in self.requests if r.error is None and r.output_tokens]
        dur = self.duration_s
        out_tok = sum(r.output_tokens for r in done)
        in_tok = sum(r.prompt_len for r in done)
        good = [r for r in done if r.meets(slo)]
        out: dict[str, Any] = {
            "rate": self.rate, "max_concurrency": self.max_concurrency, "completed": len(done),
            "failed": len(self.requests) - len(done), "duration_s": dur,
            "request_throughput": len(done) / dur if dur > 0 else None,
            "output_throughput": out_tok / dur if dur > 0 else None,
            "input_throughput": in_tok / dur if dur > 0 else None,
            "total_token_throughput": (in_tok + out_tok) / dur if dur > 0 else None,
            "goodput": len(good) / dur if dur > 0 else None, "good_fraction": len(good) / len(done) if done else None,
            "slo": dict(slo), "input_tokens": in_tok, "output_tokens": out_tok,
            "good_output_tokens": sum(r.output_tokens for r in good),
        }
        for name, vals in (("ttft", [r.ttft_s for r in done]), ("tpot", [r.tpot_s for r in done]),
                           ("itl", [x for r in done for x in r.itl_s]), ("e2el", [r.latency_s for r in done])):
            v = sorted(x for x in vals if x is not None)
            out[name] = ({"mean_s": sum(v) / len(v), "median_s": percentile(v, 0.5), "p90_s": percentile(v, 0.9),
                          "p99_s": percentile(v, 0.99), "n": len(v)} if v else None)
        # the frontier's other axis, as InferenceX plots it: tokens/s one user sees, 1 / the median TPOT
        tpot = out["tpot"]
        out["output_throughput_per_user"] = 1 / tpot["median_s"] if tpot and tpot["median_s"] else None
        sched = self.scheduler
        out["scheduler"] = ({"kv_cache_usage_max": max(s.kv_cache_usage for s in sched),
                             "kv_cache_usage_mean": sum(s.kv_cache_usage for s in sched) / len(sched),
                             "running_mean": sum(s.running for s in sched) / len(sched),
                             "waiting_max": max(s.waiting for s in sched),
                             "preempted": sum(s.preempted for s in sched)} if sched else None)
        if self.energy_j is not None and out_tok:
            out["joules_per_output_token"] = self.energy_j / out_tok
        return out

    @classmethod
    def from_dict(cls, d: Any, where: str) -> LoadPoint:
        return _load(cls, d, where,
                     requests=lambda rs: [_load(ServedRequest, r, f"{where} request {i}") for i, r in enumerate(rs)],
                     steps=lambda ss: [Step.from_dict(s, f"{where} step {i}") for i, s in enumerate(ss)],
                     scheduler=lambda ss: [_load(SchedulerSample, s, f"{where} scheduler {i}") for i, s in enumerate(ss)])


@dataclass(slots=True)
class ServeRecord(_Typed):
    """What ``llmprobe serve`` wrote: how the load was made (config, engine, provenance) and each finished point."""
    schema_version: int
    config: dict[str, Any]
    points: list[LoadPoint]
    kind: str = "llmprobe.serve"
    methodology: str | None = None
    status: str | None = None
    error: str | None = None
    provenance: dict[str, Any] | None = None
    model: dict[str, Any] | None = None
    model_config: dict[str, Any] | None = None
    engine: dict[str, Any] | None = None
    ceilings: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def device(self) -> dict[str, Any]:
        return (self.provenance or {}).get("device") or {}

    @classmethod
    def from_dict(cls, doc: Any, where: str = "serve record") -> ServeRecord:
        _need(isinstance(doc, dict) and doc.get("kind") == "llmprobe.serve", where,
              "not an llmprobe serve record (kind llmprobe.serve)")
        _need(doc.get("schema_version") == SCHEMA_VERSION, where,
              f"serve record schema {doc.get('schema_version')}, this llmprobe reads {SCHEMA_VERSION}")
        return _load(cls, doc, where, points=lambda ps: [LoadPoint.from_dict(p, f"{where}: point {i}")
                                                         for i, p in enumerate(ps)])
