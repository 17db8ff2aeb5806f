"""The one error type a user can fix from its message, and the "did you mean" helper every check uses."""
from __future__ import annotations

import difflib
import typing


class ConfigError(ValueError):
    """A config problem the user can fix; the message says which key and what was expected."""


def closest(name: str, valid: typing.Iterable[str]) -> str:
    """'did you mean' text naming the closest valid names (or all of them when few)."""
    valid = sorted(valid)
    near = difflib.get_close_matches(name, valid, n=3, cutoff=0.5)
    if near:
        return "did you mean " + " or ".join(repr(v) for v in near) + "?"
    return "valid: " + ", ".join(valid[:40]) + (" ..." if len(valid) > 40 else "")


def first_line(e: Exception) -> str:
    """`Type: first line of the message` — how a third-party exception appears inside one of our one-line errors."""
    text = str(e).strip()
    return f"{type(e).__name__}: {text.splitlines()[0] if text else ''}"
