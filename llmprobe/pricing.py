"""Prices (provider x GPU, USD per GPU-hour) and the cost arithmetic.

Cost per token = hourly price / (TPS x 3600). A run on t GPUs (tensor parallel) pays t x the
per-GPU price. A user price file (same TOML form) overrides or extends the shipped catalog.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path

from .errors import UserError
from .hardware import resolve_gpu

import tomllib


@dataclass(frozen=True)
class Price:
    provider: str
    gpu: str
    usd_per_hour: float
    date: str
    source: str

    def to_dict(self) -> dict:
        return asdict(self)


def tps_per_dollar_hour(tps: float, usd_per_hour: float) -> float:
    """Tokens/s per $/h: the article's 'TPS/$'."""
    return tps / usd_per_hour


def usd_per_million_tokens(tps: float, usd_per_hour: float) -> float:
    return usd_per_hour / (tps * 3600) * 1e6


def workload_cost_usd(tokens: float, tps: float, usd_per_hour: float) -> float:
    return tokens / tps / 3600 * usd_per_hour


def _parse(text: str, origin: str) -> list[Price]:
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise UserError(f"{origin}: {e}") from None   # tomllib's message names the line and column
    entries = doc.get("price")
    if not isinstance(entries, list):
        raise UserError(f"{origin}: no [[price]] entries")
    out = []
    for i, e in enumerate(entries, 1):
        where = f"{origin}: [[price]] entry {i}"
        missing = [k for k in ("provider", "gpu", "usd_per_hour") if k not in e]
        if missing:
            raise UserError(f"{where}: missing {', '.join(missing)}")
        price = e["usd_per_hour"]
        if isinstance(price, bool) or not isinstance(price, (int, float)) or price <= 0:
            raise UserError(f"{where}: usd_per_hour must be a positive number, got {price!r}")
        try:   # "cpu": a CPU instance, what a record made without a GPU is priced at
            gpu = "cpu" if str(e["gpu"]).lower() == "cpu" else resolve_gpu(str(e["gpu"])).id
        except UserError as err:
            raise UserError(f"{where}: {err} (or \"cpu\" for a CPU instance)") from None
        out.append(Price(provider=str(e["provider"]).lower(), gpu=gpu, usd_per_hour=float(price),
                         date=str(e.get("date", "")), source=str(e.get("source", origin))))
    return out


def load_prices(user_file: str | None = None) -> list[Price]:
    """The shipped catalog, with a user file's entries replacing those of the same provider and GPU."""
    prices = {(p.provider, p.gpu): p for p in _parse((resources.files("llmprobe.data") / "prices.toml").read_text(),
                                                     "llmprobe/data/prices.toml")}
    if user_file:
        path = Path(user_file)
        if not path.is_file():
            raise UserError(f"{user_file}: no such price file")
        for p in _parse(path.read_text(), user_file):
            prices[(p.provider, p.gpu)] = p
    return list(prices.values())


def price_for(prices: list[Price], provider: str | None, gpu: str) -> list[Price]:
    """Prices of ``gpu`` at ``provider``, or at every provider when none is known."""
    return [p for p in prices if p.gpu == gpu and (provider is None or p.provider == provider.lower())]
