"""The shared rich consoles and output helpers; the only place that renders for people."""

from __future__ import annotations

import json
import math
import sys
from typing import Any

from rich.console import Console
from rich.text import Text

# No fixed width: rich measures at every print, from $COLUMNS when set, else the terminal (also when
# output is piped, e.g. into `less`, it asks stdin/stderr), else 80. Tables choose their columns from it.
# No emoji codes either: ":clapper:" in a title stays text.
console = Console(highlight=False, emoji=False)
err_console = Console(stderr=True, highlight=False, emoji=False)


def table_room(n_columns: int) -> int:
    """Characters left for the cells of a default-boxed rich table of ``n_columns`` at the console's width.

    Each column takes one space of padding on either side and a border after it, plus the left border.
    """
    return console.width - 3 * n_columns - 1


def pack(items: list[str], width: int, sep: str = "  ") -> str:
    """``items`` joined by ``sep``, starting a new line rather than splitting an item across two."""
    lines: list[str] = []
    for item in items:
        if lines and len(lines[-1]) + len(sep) + len(item) <= width:
            lines[-1] += sep + item
        else:
            lines.append(item)
    return "\n".join(lines)


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


def print_note(message: str) -> None:
    """One line on stderr (never stdout, so --json stays clean)."""
    err_console.print(clean(message), markup=False, soft_wrap=True)


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
