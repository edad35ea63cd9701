"""The shared rich consoles and output helpers; the only place that renders for people."""

from __future__ import annotations

import json
import math
import os
import sys
from typing import Any

from rich.console import Console


def _width(stream: Any) -> int | None:
    # Piped or captured output has no terminal to measure; wide tables would fold into unreadable
    # columns at rich's 80-column fallback, so give them room unless the user set COLUMNS.
    if "COLUMNS" in os.environ or (hasattr(stream, "isatty") and stream.isatty()):
        return None
    return 160


console = Console(highlight=False, width=_width(sys.stdout))
err_console = Console(stderr=True, highlight=False, width=_width(sys.stderr))


def print_error(message: str) -> None:
    err_console.print(f"Error: {message}", markup=False, style="bold red", soft_wrap=True)


def print_warning(message: str) -> None:
    err_console.print(f"Warning: {message}", markup=False, style="yellow", soft_wrap=True)


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
