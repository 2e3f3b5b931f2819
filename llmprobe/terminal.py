"""Where output goes: stdout for the one result (a table or a JSON document), stderr for progress and notes."""

from __future__ import annotations

import contextlib
import json
import os
import sys
from collections.abc import Callable, Iterator
from typing import Any

from rich.console import Console

from .tables import Section, rich_table

# Piped output has no terminal width; 140 columns keeps the wide tables on one line each.
console = Console(soft_wrap=False, width=None if sys.stdout.isatty() else 140)
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
        console.print(rich_table(title, cols, rows) if cols else title)


@contextlib.contextmanager
def progress(label: str, show: bool = True) -> Iterator[Callable[[str], None]]:
    """A spinner on stderr and a callback that logs each message under it (silent if not ``show``)."""
    with err_console.status(label) as status:
        def say(msg: str) -> None:
            if show:
                status.update(msg)
                err_console.log(msg)
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
