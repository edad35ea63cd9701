"""Whole checkpoints: saving (arrays and metadata in, atomically), reading their metadata and arrays back,
listing the saved ones and resolving a name."""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Mapping
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from movierec import paths
from movierec.checkpoint.container import FORMAT, FORMAT_VERSION, _meta_from_text, is_legacy, open_file, write_file
from movierec.checkpoint.legacy import _legacy_arrays, _read_legacy
from movierec.checkpoint.meta import CheckpointMeta, check_arrays
from movierec.checkpoint.names import SUFFIX, _is_file, clean_temporaries, path_for, saved_names
from movierec.errors import MovierecError

if TYPE_CHECKING:
    from movierec.serving import ServingData


log = logging.getLogger(__name__)


# -- writing ------------------------------------------------------------------------------------------------
def save(
    state: Mapping[str, np.ndarray], meta: CheckpointMeta, user_ids: Any, item_ids: Any, path: Path | None = None,
    serving: ServingData | None = None,
) -> tuple[Path, CheckpointMeta]:
    """Write the checkpoint atomically (temp file in the same folder, then rename): the model's arrays ``state``
    (``state.*``, :func:`movierec.loading.state_arrays`), its metadata and id maps.

    ``serving`` (:meth:`movierec.serving.ServingData.build`) is what `recommend` and `similar` read instead of
    the dataset; without it the first such command derives it from the dataset once and adds it.
    Returns the path and the metadata as saved (with its ``created`` stamp).
    """
    path = Path(path) if path is not None else path_for(meta.name)
    if not meta.created:
        # Microseconds: `resolve(None)` picks the newest by this stamp, and two saves can share a second.
        created = datetime.now(timezone.utc).isoformat(timespec="microseconds")
        meta = CheckpointMeta(**{**asdict(meta), "created": created})
    write(path, meta, state, user_ids, item_ids, serving)
    return path, meta


def write(
    path: Path, meta: CheckpointMeta, state: Mapping[str, np.ndarray], user_ids: Any, item_ids: Any,
    serving: ServingData | None,
) -> None:
    metadata = {"format": FORMAT, "format_version": str(FORMAT_VERSION),
                "meta": json.dumps(asdict(meta), allow_nan=True)}
    arrays = {**state, "user_ids": np.asarray(user_ids, dtype=np.int64),
              "item_ids": np.asarray(item_ids, dtype=np.int64)}
    if serving is not None:
        metadata["serving"] = serving.info.to_json()
        arrays.update(serving.arrays)
    write_file(path, metadata, arrays)


def read_meta(path: Path) -> CheckpointMeta:
    """The metadata of the checkpoint at ``path``, checked; a format-2 file's arrays are not read."""
    path = Path(path)
    if is_legacy(path):
        return _meta_from_text(_read_legacy(path).get("meta"), path)
    with open_file(path) as saved:
        return saved.meta


def read_all(path: Path) -> tuple[CheckpointMeta, dict[str, np.ndarray], np.ndarray, np.ndarray]:
    """Metadata, state arrays and id maps of either format, checked."""
    if is_legacy(path):
        payload = _read_legacy(path)
        meta = _meta_from_text(payload.get("meta"), path)
        state, user_ids, item_ids = _legacy_arrays(payload, path)
    else:
        with open_file(path) as saved:
            meta = saved.meta
            state = {k: saved.get(k) for k in saved.names() if k.startswith("state.")}
            user_ids = saved.get("user_ids") if "user_ids" in saved else None
            item_ids = saved.get("item_ids") if "item_ids" in saved else None
    check_arrays(state, user_ids, item_ids, meta, path)
    return meta, state, user_ids, item_ids


def scan_checkpoints() -> tuple[list[tuple[Path, CheckpointMeta]], list[Path]]:
    """The readable checkpoints in the models folder, oldest first, and the ``*.pt`` files that are not.

    Only headers are read (format 2), so a file whose arrays are cut short still lists; using it fails."""
    folder = paths.models_dir()
    clean_temporaries(folder)
    found, skipped = [], []
    for p in sorted(folder.glob(f"*{SUFFIX}")) if folder.is_dir() else []:
        try:
            found.append((p, read_meta(p)))
        except MovierecError:
            skipped.append(p)
    found.sort(key=lambda pm: (pm[1].created, pm[0].name))
    return found, skipped


def describe(path: Path, meta: CheckpointMeta, *, newest: bool = False, default: bool = False) -> dict[str, Any]:
    """A saved model as a JSON-able row: what `movierec models --json`, the Python API and the server list."""
    return {"name": meta.name, "model": meta.model, "mode": meta.mode, "dataset": meta.dataset, "split": meta.split,
            "path": str(path), "created": meta.created, "epochs": meta.epochs, "fit_seconds": meta.fit_seconds,
            "metrics": meta.metrics, "config": meta.config, "newest": newest, "default": default}


def describe_all(found: list[tuple[Path, CheckpointMeta]]) -> list[dict[str, Any]]:
    """:func:`describe` of every checkpoint in ``found`` (oldest first), the newest and the default marked (none,
    while the pin names a model no longer saved: listing still works, using one says so)."""
    try:
        chosen = default_of(found)
    except MovierecError:
        chosen = None
    return [describe(p, m, newest=i == len(found) - 1, default=chosen is not None and p == chosen[0])
            for i, (p, m) in enumerate(found)]


# -- the default model -----------------------------------------------------------------------------------------
PIN_FILE = "default.json"
"""The model the user chose as the default (`movierec models --default NAME`), in the models folder."""


def _pin_path() -> Path:
    return paths.models_dir() / PIN_FILE


def pinned() -> str | None:
    """The name of the model pinned as the default, or None (no pin: the newest is the default)."""
    try:
        data = json.loads(_pin_path().read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        raise MovierecError(f"The default-model file {_pin_path()} is damaged; `movierec models --default none` "
                            "removes it.") from None
    name = data.get("name") if isinstance(data, dict) else None
    return name if isinstance(name, str) and name else None


def set_default(name: str | None) -> str | None:
    """Pin the saved model ``name`` (a name or its unique beginning, not a path) as the default of every command
    that names none; ``None`` removes the pin, so the newest is the default again. Returns the full name pinned.

    The pin is written atomically, under the models folder's pin lock."""
    from filelock import FileLock

    from movierec.files import atomic_file

    full = None
    if name is not None:
        path = resolve(name)
        if path.parent.resolve() != paths.models_dir().resolve():
            raise MovierecError(f"Only a saved model can be the default; {name!r} is a file outside the models "
                                "folder.")
        full = path.stem
    folder = paths.models_dir()
    folder.mkdir(parents=True, exist_ok=True)
    with FileLock(str(folder / ".default.lock")):
        if full is None:
            _pin_path().unlink(missing_ok=True)
        else:
            with atomic_file(_pin_path(), f"Could not save the default model to {_pin_path()}") as f:
                f.write(json.dumps({"name": full}).encode() + b"\n")
    return full


def default_of(found: list[tuple[Path, CheckpointMeta]]) -> tuple[Path, CheckpointMeta] | None:
    """Of ``found`` (oldest first), the pinned model, else the newest; None when ``found`` is empty.

    A pin naming a model no longer saved (deleted by hand) is one sentence."""
    name = pinned()
    if name is None:
        return found[-1] if found else None
    for p, m in found:
        if p.stem == name:
            return p, m
    raise MovierecError(f"The default model {name!r} is no longer saved; pin another with `movierec models "
                        "--default NAME`, or `movierec models --default none` to use the newest.")


def list_checkpoints() -> list[tuple[Path, CheckpointMeta]]:
    """Every readable checkpoint in the models folder, oldest first (unreadable files are skipped)."""
    return scan_checkpoints()[0]


MAX_CANDIDATES = 10
"""An ambiguous name lists at most this many of the saved names it begins."""


def resolve(name: str | None) -> Path:
    """A checkpoint by path, name, or the beginning of one name; ``None`` means the default one: the one pinned
    with :func:`set_default`, else the newest.

    An exact name always wins; otherwise ``name`` must begin exactly one saved name (``als-i`` for
    ``als-implicit``), and when it begins several the error lists them.
    """
    if name is None:
        chosen = default_of(list_checkpoints())
        if chosen is None:
            raise MovierecError("No trained models yet; train one with `movierec train MODEL`.")
        return chosen[0]
    candidate = Path(name).expanduser()
    if candidate.suffix == SUFFIX and _is_file(candidate):
        return candidate
    path = path_for(name)
    if path.is_file():
        return path
    matches = [n for n in saved_names() if n.startswith(name)]
    if len(matches) == 1:
        return path_for(matches[0])
    if not matches:
        raise _not_saved(name)
    shown = ", ".join(matches[:MAX_CANDIDATES]) + (f" and {len(matches) - MAX_CANDIDATES} more"
                                                    if len(matches) > MAX_CANDIDATES else "")
    raise MovierecError(f"{name!r} begins the names of {len(matches)} saved models ({shown}); type more of the name.")


def remove(name: str) -> Path:
    """Delete the saved model called ``name`` and return the path it had; a pin of it as the default goes too.

    Only names are taken, never paths, so nothing outside the models folder can be deleted.
    """
    path = path_for(name)
    if not (path.is_file() or path.is_symlink()):
        raise _not_saved(name)
    try:
        path.unlink()
    except OSError as exc:
        raise MovierecError(f"Could not remove {path}: {exc.strerror or exc}.") from None
    with contextlib.suppress(MovierecError):
        if pinned() == name:
            set_default(None)
    return path


def _not_saved(name: str) -> MovierecError:
    names = [p.stem for p, _ in list_checkpoints()]
    hint = f" Saved models: {', '.join(names[-10:])}." if names else " No models are saved yet."
    return MovierecError(f"No saved model named {name!r}.{hint}")
