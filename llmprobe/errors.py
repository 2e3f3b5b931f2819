"""The one exception type a user sees: a one-line message and exit code 2 from the CLI."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class UserError(Exception):
    """Bad input or an unmet requirement the user can fix; the CLI prints it as one line."""


class DoesNotFit(UserError):
    """A model that does not fit a card's memory at a scenario; ``advice`` says what would (memory.fit_advice)."""

    def __init__(self, message: str, advice: str):
        super().__init__(f"{message}; {advice}")
        self.advice = advice


class MissingDependency(UserError):
    """An optional extra is not installed; the message names the pip install that adds it."""

    def __init__(self, what: str, extra: str, *alternatives: str, cause: BaseException | None = None):
        more = "".join(f" or 'llmprobe[{a}]'" for a in alternatives)
        # The import that failed, and why: a missing package reads differently from one that is
        # installed but breaks on import (a missing shared library, a package beside it missing).
        why = f" ({type(cause).__name__}: {str(cause).splitlines()[0] if str(cause) else ''})" if cause else ""
        super().__init__(f"{what} is not installed or failed to import{why}: pip install 'llmprobe[{extra}]'{more}")


def unknown_name(kind: str, name: str, known: Iterable[str]) -> UserError:
    known = sorted(set(known))
    close = difflib.get_close_matches(name.lower(), known, n=3, cutoff=0.4)
    hint = ", ".join(close) if close else ", ".join(known[:8]) + (", ..." if len(known) > 8 else "")
    return UserError(f"unknown {kind} {name!r}; closest known: {hint}")
