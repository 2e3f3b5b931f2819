"""Where output goes: stdout for the one result (a table or a JSON document), stderr for progress and notes."""

from __future__ import annotations

import contextlib
import json
import os
import sys
from collections.abc import Callable, Iterator
from typing import Any

from rich.console import Console

from .tables import Section, fit, rich_table

# Piped output has no terminal width: COLUMNS where the user set it, else 140 columns.
console = Console(soft_wrap=False, width=None if sys.stdout.isatty() or os.environ.get("COLUMNS") else 140)
err_console = Console(stderr=True, log_path=False)


def emit_json(doc: Any) -> None:
    """Exactly one JSON document on stdout."""
    sys.stdout.write(json.dumps(doc, indent=2, default=_default) + "\n")
    sys.stdout.flush()


def _default(o: Any) -> Any:
    if hasattr(o, "to_dict"):
        return o.to_dict()
    raise TypeError(f"not JSON serializable: {type(o).__name__}")


def print_sections(sections: list[Section]) -> None:
    for title, cols, rows in sections:
        if cols:
            print_table(title, cols, rows)
        else:
            console.print(title)


def print_table(title: str, columns: list[str], rows: list[list[Any]], caption: str | None = None,
                prose: tuple[str, ...] = (), optional: tuple[str, ...] = (), keys: int = 1) -> None:
    """A table that fits the terminal (or COLUMNS) without cutting an ID or a number: optional columns
    go first, then it is stacked in parts; prose columns wrap; the caption goes under the last part."""
    parts = fit(title, columns, rows, console.width, prose, optional, keys)
    for i, (t, cols, rs) in enumerate(parts):
        console.print(rich_table(t, cols, rs, caption if i == len(parts) - 1 else None, prose))


@contextlib.contextmanager
def progress(label: str) -> Iterator[Callable[[str], None]]:
    """Progress on stderr, also under --json: a spinner with the current stage and the time elapsed in it
    (an engine that takes minutes to start shows it ticking), and each stage logged as it starts."""
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
    with Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), console=err_console,
                  transient=True) as bar:
        task = bar.add_task(label, total=None)

        def say(msg: str) -> None:
            bar.reset(task, description=msg)
            bar.log(msg)
        yield say


@contextlib.contextmanager
def stdout_to_stderr():
    """Engines and their child processes print to fd 1; keep stdout for our one document."""
    sys.stdout.flush()
    saved = os.dup(1)
    os.dup2(2, 1)
    try:
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)
