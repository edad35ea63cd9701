"""The shared rich consoles and output helpers; the only place that renders for people."""

from __future__ import annotations

import json
import math
import os
import sys
from typing import Any

from rich.console import Console
from rich.text import Text


def _width(stream: Any) -> int | None:
    # Piped or captured output has no terminal to measure; wide tables would fold into unreadable
    # columns at rich's 80-column fallback, so give them room unless the user set COLUMNS.
    if "COLUMNS" in os.environ or (hasattr(stream, "isatty") and stream.isatty()):
        return None
    return 160


# No emoji codes either: ":clapper:" in a title stays text.
console = Console(highlight=False, emoji=False, width=_width(sys.stdout))
err_console = Console(stderr=True, highlight=False, emoji=False, width=_width(sys.stderr))


# Terminal control characters: C0 and DEL, C1, and the bidi overrides/isolates that reorder what is shown.
_CONTROLS = [*range(0x20), 0x7F, *range(0x80, 0xA0), *range(0x202A, 0x202F), *range(0x2066, 0x206A)]
# Layout controls become a space (a tab or newline in a title still separates its words); the rest go.
_SANITIZE = {c: " " if chr(c) in "\t\n\r\v\f" else None for c in _CONTROLS}


def clean(text: object) -> str:
    """``text`` safe to write to a terminal: no escape sequences, no control or bidi-override characters.

    Everything that comes from data (titles, genres, checkpoint and dataset names, messages quoting
    them) goes through this before it is shown.
    """
    return str(text).translate(_SANITIZE)


def plain(text: object) -> Text:
    """A table cell or title holding data: shown exactly as written (never read as rich markup), cleaned."""
    return Text(clean(text))


def print_error(message: str) -> None:
    err_console.print(f"Error: {clean(message)}", markup=False, style="bold red", soft_wrap=True)


def print_warning(message: str) -> None:
    err_console.print(f"Warning: {clean(message)}", markup=False, style="yellow", soft_wrap=True)


def print_json(data: Any) -> None:
    """Machine-readable output: plain JSON on stdout, nothing else."""
    sys.stdout.write(json.dumps(_finite(data), indent=2, allow_nan=False, default=_jsonable) + "\n")
    sys.stdout.flush()


def _finite(value: Any) -> Any:
    # JSON has no NaN; an undefined number (e.g. the AUC of an all-liked validation split) becomes null.
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def _jsonable(value: Any) -> Any:
    if hasattr(value, "item"):  # numpy / torch scalars
        return value.item()
    if hasattr(value, "tolist"):
        return value.tolist()
    return str(value)


def human_bytes(n: float | None) -> str:
    if n is None:
        return "-"
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"
