"""Numbers as people read them: SI prefixes, durations, percentages, counts, money. Pure formatting."""

from __future__ import annotations

import math


def si(value: float | None, unit: str, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if value == 0:
        return f"0 {unit}"
    for factor, prefix in ((1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k"), (1, "")):
        if abs(value) >= factor:
            return f"{value / factor:.{digits}g} {prefix}{unit}"
    return f"{value:.{digits}g} {unit}"


def gib(value: float | None) -> str:
    """Memory sizes in binary units: cards are sold in GiB ("80GB" HBM is 80 GiB)."""
    return "-" if value is None else f"{value / (1 << 30):.3g} GiB"


def num(x: float | None) -> str:
    """A rate for a table: thousands separated and one decimal when large, three significant digits when small."""
    if x is None:
        return "-"
    return f"{x:,.1f}" if abs(x) >= 100 else f"{x:.3g}"


def seconds(value: float | None) -> str:
    if value is None:
        return "-"
    if value >= 1:
        return f"{value:.3g} s"
    if value >= 1e-3:
        return f"{value * 1e3:.3g} ms"
    return f"{value * 1e6:.3g} µs"


def pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def efficiency(x: float | None) -> str:
    """A share of a floor or ceiling; above 100% the measurement beat what is possible: not a result."""
    return "n/a (not explained)" if x is not None and x > 1 else pct(x)


def count(n: int) -> str:
    return f"{n:,}"


def money(x: float | None, fmt: str = "{:,.2f}") -> str:
    return "-" if x is None else fmt.format(x)


def throttle_text(fractions: dict[str, float] | None) -> str:
    if fractions is None:
        return "unknown (NVML did not report them)"
    return ", ".join(f"{r} {f:.0%}" for r, f in fractions.items()) or "none"
