"""A table is (title, columns, rows) of strings; here it becomes a terminal, markdown or HTML table."""

from __future__ import annotations

import html
from typing import Any

Section = tuple[str, list[str], list[list[Any]]]


PROSE_MIN = 24   # a wrapping column gets at least this many characters


def rich_table(title: str, columns: list[str], rows: list[list[Any]], caption: str | None = None,
               prose: tuple[str, ...] = ()):
    """A terminal table. Every column keeps its cells whole (IDs and numbers are never cut or
    wrapped) except the ``prose`` columns, which wrap; lay it out with ``fit`` first."""
    from rich.table import Table
    t = Table(title=title, caption=caption, title_justify="left", caption_justify="left")
    for i, c in enumerate(columns):
        whole = c not in prose
        t.add_column(c, justify="left" if i == 0 or not whole else "right", no_wrap=whole,
                     min_width=_cell_width(c, [r[i] for r in rows]) if whole else PROSE_MIN)
    for r in rows:
        t.add_row(*[str(x) for x in r])
    return t


def _cell_width(header: str, cells: list[Any]) -> int:
    """The narrowest a whole column can be: its longest cell or its header (neither wraps)."""
    return max([len(str(x)) for x in cells] + [len(header)])


def table_width(columns: list[str], rows: list[list[Any]], prose: tuple[str, ...] = ()) -> int:
    """Characters a table needs at least: whole columns at their longest cell, prose at PROSE_MIN,
    plus rich's borders and padding (3 per column and 1)."""
    return sum(PROSE_MIN if c in prose else _cell_width(c, [r[i] for r in rows]) for i, c in enumerate(columns)) \
        + 3 * len(columns) + 1


def fit(title: str, columns: list[str], rows: list[list[Any]], width: int, prose: tuple[str, ...] = (),
        optional: tuple[str, ...] = (), keys: int = 1) -> list[Section]:
    """The same table laid out for ``width`` columns without cutting anything: first without the
    ``optional`` columns (in order), then, if still too wide, stacked as several tables that each
    repeat the first ``keys`` columns."""
    cols, rs = list(columns), [list(r) for r in rows]
    for name in optional:
        if table_width(cols, rs, prose) <= width:
            break
        if name in cols:
            i = cols.index(name)
            cols.pop(i)
            for r in rs:
                r.pop(i)
    if table_width(cols, rs, prose) <= width or len(cols) <= keys + 1:
        return [(title, cols, rs)]
    parts, start = [], keys
    while start < len(cols):
        end = start + 1
        while end < len(cols) and table_width(cols[:keys] + cols[start:end + 1], [r[:keys] + r[start:end + 1]
                                                                               for r in rs], prose) <= width:
            end += 1
        parts.append((f"{title} ({len(parts) + 1})", cols[:keys] + cols[start:end], [r[:keys] + r[start:end] for r in rs]))
        start = end
    return parts


def markdown_table(columns: list[str], rows: list[list[Any]]) -> str:
    out = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    out += ["| " + " | ".join(str(x) for x in r) + " |" for r in rows]
    return "\n".join(out)


PROSE_COLUMNS = ("message", "value", "reason", "source", "setting")   # left-aligned text, in HTML too


def html_table(columns: list[str], rows: list[list[Any]]) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    cls = [' class="prose"' if c in PROSE_COLUMNS else "" for c in columns]
    body = "".join("<tr>" + "".join(f"<td{k}>{html.escape(str(x))}</td>" for k, x in zip(cls, r)) + "</tr>"
                   for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
