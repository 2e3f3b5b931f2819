"""A serving workload, as data: when requests arrive, how long their prompts and outputs are, and the latency
objective (SLO) a request must meet to count as goodput. Pure and seeded: the same seed gives the same requests.

Arrivals follow vLLM's ``bench serve`` (vllm/benchmarks/serve.py, ``get_request``): request i is sent after i + 1
gaps; ``poisson`` draws exponential gaps of mean 1/rate and rescales their sum so that the last request is sent
at exactly n/rate (which steadies a point's throughput from seed to seed), ``constant`` spaces them exactly 1/rate
apart; a rate of ``inf`` sends every request at once (then ``max_concurrency`` bounds how many are in flight). Lengths are fixed, or uniform within ``range_ratio`` of the
given lengths as vLLM's random dataset draws them, or read from a dataset file of (prompt, output) lengths.
"""

from __future__ import annotations

import csv
import json
import math
import random
from dataclasses import dataclass
from pathlib import Path

from .errors import UserError

ARRIVALS = ("poisson", "constant")
# MLPerf Inference v4.0 server scenario, Llama-2-70B: TTFT <= 2 s and TPOT <= 200 ms at the 99th percentile
# (mlcommons/inference, language/llama2-70b/README.md, "Server": ttft 2000 ms, tpot 200 ms).
MLPERF_LLAMA2_70B_SLO = {"ttft": 2.0, "tpot": 0.2}
SLO_KEYS = {"ttft": "time to first token", "tpot": "time per output token after the first",
            "e2el": "end-to-end latency"}


@dataclass(frozen=True, slots=True)
class RequestSpec:
    """One request of a workload: when it is sent (s after the first) and its prompt and output lengths."""
    arrival_s: float
    prompt_len: int
    output_len: int


def arrival_times(n: int, rate: float, process: str, rng: random.Random) -> list[float]:
    """``n`` send times (s from the load point's start), the last at n/rate."""
    if process not in ARRIVALS:
        raise UserError(f"unknown arrival process {process!r}; known: {', '.join(ARRIVALS)}")
    if not rate > 0:
        raise UserError(f"a request rate must be positive, got {rate:g}")
    if math.isinf(rate):
        return [0.0] * n
    out, t = [], 0.0
    for _ in range(n):
        t += rng.expovariate(rate) if process == "poisson" else 1.0 / rate
        out.append(t)
    scale = n / rate / out[-1]
    return [x * scale for x in out]


def lengths(n: int, prompt_len: int, output_len: int, range_ratio: float, rng: random.Random,
            dataset: str | None = None) -> list[tuple[int, int]]:
    """(prompt, output) lengths of ``n`` requests: from ``dataset`` (cycled in file order), else uniform in
    [len x (1 - range_ratio), len x (1 + range_ratio)], a ratio of 0 meaning exactly the given lengths."""
    if dataset:
        rows = read_dataset(dataset)
        return [rows[i % len(rows)] for i in range(n)]
    if not 0 <= range_ratio < 1:
        raise UserError(f"--range-ratio must be in [0, 1), got {range_ratio:g}")
    if min(prompt_len, output_len) <= 0:
        raise UserError(f"prompt and output lengths must be positive, got {prompt_len} and {output_len}")

    def draw(mean: int) -> int:
        lo, hi = max(1, math.floor(mean * (1 - range_ratio))), math.ceil(mean * (1 + range_ratio))
        return rng.randint(lo, hi)
    return [(draw(prompt_len), draw(output_len)) for _ in range(n)]


def read_dataset(path: str) -> list[tuple[int, int]]:
    """(prompt, output) lengths from a JSONL file ({"prompt_len": .., "output_len": ..} per line) or a CSV with
    prompt_len and output_len columns; a file without them is refused in one line."""
    p = Path(path)
    if not p.is_file():
        raise UserError(f"{path}: no such dataset file")
    try:
        if p.suffix == ".csv":
            with p.open(newline="") as f:
                rows = list(csv.DictReader(f))
        else:
            rows = [json.loads(line) for line in p.read_text().splitlines() if line.strip()]
    except (json.JSONDecodeError, UnicodeDecodeError, csv.Error) as e:
        raise UserError(f"{path}: not a JSONL or CSV dataset ({e})") from None
    out = []
    for i, r in enumerate(rows, 1):
        try:
            pl, ol = int(r["prompt_len"]), int(r["output_len"])
        except (KeyError, TypeError, ValueError):
            raise UserError(f"{path}: row {i} has no integer prompt_len and output_len (the lengths a dataset "
                            "must give)") from None
        if min(pl, ol) <= 0:
            raise UserError(f"{path}: row {i}: lengths must be positive, got {pl} and {ol}")
        out.append((pl, ol))
    if not out:
        raise UserError(f"{path}: the dataset holds no rows")
    return out


def workload(n: int, rate: float, process: str, prompt_len: int, output_len: int, range_ratio: float = 0.0,
             seed: int = 0, dataset: str | None = None) -> list[RequestSpec]:
    """The requests of one load point. Lengths and arrivals draw from separate streams of one seed, so the
    same requests (lengths) are sent at every rate of a sweep, only their times differ."""
    if n <= 0:
        raise UserError(f"--num-prompts must be positive, got {n}")
    sizes = lengths(n, prompt_len, output_len, range_ratio, random.Random(f"{seed}-lengths"), dataset)
    times = arrival_times(n, rate, process, random.Random(f"{seed}-arrivals-{rate}"))
    return [RequestSpec(t, p, o) for t, (p, o) in zip(times, sizes)]


def parse_slo(text: str | None) -> dict[str, float]:
    """``ttft=2s,tpot=200ms`` (units s or ms; a bare number is seconds) -> {"ttft": 2.0, "tpot": 0.2}.
    None or empty: MLPerf's Llama-2-70B server limits."""
    if not text:
        return dict(MLPERF_LLAMA2_70B_SLO)
    out: dict[str, float] = {}
    for part in text.split(","):
        key, sep, value = part.strip().partition("=")
        key = key.strip().lower()
        if not sep or key not in SLO_KEYS:
            raise UserError(f"--slo: {part.strip()!r} is not KEY=VALUE with KEY one of {', '.join(SLO_KEYS)} "
                            "(e.g. --slo ttft=2s,tpot=200ms)")
        v = value.strip().lower()
        scale = 1e-3 if v.endswith("ms") else 1.0
        try:
            seconds = float(v.removesuffix("ms").removesuffix("s")) * scale
        except ValueError:
            raise UserError(f"--slo {key}: {value.strip()!r} is not a duration (e.g. 2s, 200ms)") from None
        if not seconds > 0:
            raise UserError(f"--slo {key}: a limit must be positive, got {value.strip()!r}")
        out[key] = seconds
    return out
