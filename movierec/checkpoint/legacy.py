"""Format 1 (a ``torch.save`` of plain tensors, read with ``torch.load(weights_only=True)``): still read, and
rewritten in the current format on first use (:func:`movierec.loading.upgrade`). To be removed in movierec 0.3."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from movierec.checkpoint.container import FORMAT, LEGACY_VERSION, _check_version, _unreadable
from movierec.checkpoint.schema import show
from movierec.errors import MovierecError

if TYPE_CHECKING:
    pass


log = logging.getLogger(__name__)


def _read_legacy(path: Path) -> dict[str, Any]:
    """A format-1 payload, read with ``torch.load(weights_only=True)``: plain tensors and strings only."""
    import torch

    try:
        with warnings.catch_warnings():
            # torch warns (two lines on stderr) about some files before refusing them; our sentence is enough.
            warnings.simplefilter("ignore")
            payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:
        raise _unreadable(path) from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise MovierecError(f"{path} is not a movierec checkpoint.")
    version = payload.get("format_version")
    if isinstance(version, str) or _check_version(version, path) != LEGACY_VERSION:
        shown = show(version)
        raise MovierecError(f"{path} is damaged (its format version is {shown}, not a whole number)."
                            if isinstance(version, str) else
                            f"{path} is damaged (it says format {shown} but is laid out as format {LEGACY_VERSION}).")
    return payload


def _legacy_arrays(payload: dict[str, Any], path: Path) -> tuple[dict[str, np.ndarray], Any, Any]:
    """A format-1 payload's state and id maps as numpy arrays, after checking they are tensors."""
    import torch

    state = payload.get("state")
    if not isinstance(state, dict) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()
    ):
        raise MovierecError(f"{path} is damaged (its weights are not a table of named tensors).")
    ids = []
    for key in ("user_ids", "item_ids"):
        value = payload.get(key)
        ids.append(value.numpy() if isinstance(value, torch.Tensor) and not value.is_complex() else None)
    return {f"state.{k}": v.numpy() for k, v in state.items()}, ids[0], ids[1]
