"""Saved models: plain tensors plus JSON metadata, written atomically, loaded without unpickling code.

A checkpoint file is a ``torch.save`` of a dict holding only tensors, strings and ints::

    {"format": "movierec-checkpoint", "format_version": 1,
     "meta": "<JSON: model, config, dataset, fingerprint, split, seed, history, metrics, ...>",
     "state": {parameter name: tensor}, "user_ids": tensor, "item_ids": tensor}

and is read back with ``torch.load(weights_only=True)``, which refuses anything that is not plain data.
Everything read back is checked before it is used: the metadata field by field (:func:`meta_from_dict`,
which knows nothing of the container), the tensors against the metadata, and the id maps against the
dataset (:func:`load_trained`). A file that fails is "damaged", in one sentence, never a traceback.

Writers take a lock per name (``.NAME.lock``) for the whole train-and-save, write to a temporary file
named after their host and pid, and sweep away the temporaries of writers that died (kill -9).
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import json
import math
import os
import re
import socket
import tempfile
import time
import types
import typing
import warnings
from collections.abc import Iterator
from dataclasses import MISSING, asdict, dataclass, field, fields
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from movierec import __version__, paths
from movierec.errors import MovierecError
from movierec.models import build_model, migrate_settings
from movierec.models.base import Recommender

FORMAT = "movierec-checkpoint"
FORMAT_VERSION = 1
SUFFIX = ".pt"
MAX_NAME = 150
"""Longest model name: with the temporary file's extra characters it stays within the usual 255-byte limit."""
STALE_SECONDS = 3600
"""A temporary checkpoint older than this is a dead writer's, whoever wrote it."""


@dataclass(frozen=True)
class CheckpointMeta:
    """Everything about a trained model except its tensors; JSON-able."""

    name: str
    model: str
    config: dict[str, Any]
    dataset: str
    fingerprint: str
    split: str
    seed: int
    n_users: int
    n_items: int
    rating_values: list[float]
    mode: str = ""
    """Which of the model's algorithms (its class); empty in checkpoints from before modes were classes."""
    metrics: dict[str, Any] = field(default_factory=dict)
    """The test split's metrics, measured once after training."""
    train_metrics: dict[str, Any] = field(default_factory=dict)
    baseline: dict[str, Any] = field(default_factory=dict)
    """The trivial reference on the same held-out split: {"name": ..., metric: value}."""
    history: list[dict[str, Any]] = field(default_factory=list)
    fit_seconds: float = 0.0
    epochs: int = 0
    device: str = "cpu"
    test_fraction: float = 0.1
    valid_metrics: dict[str, Any] = field(default_factory=dict)
    """The kept epoch's metrics on the validation slice carved from the training ratings (empty: none)."""
    valid_fraction: float = 0.0
    created: str = ""
    version: str = __version__

    @classmethod
    def from_json(cls, text: str) -> CheckpointMeta:
        """The metadata in ``text``, checked by :func:`meta_from_dict`; raises ValueError saying what is wrong."""
        try:
            data = json.loads(text)
        except (TypeError, ValueError):
            raise ValueError("its metadata is not valid JSON") from None
        return _meta_or_reason(data)


@dataclass(frozen=True)
class Checkpoint:
    path: Path
    meta: CheckpointMeta
    model: Recommender
    user_ids: torch.Tensor  # (n_users,) MovieLens user id of each user index
    item_ids: torch.Tensor  # (n_items,) MovieLens movie id of each movie index


_NAME_OK = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


# -- metadata: checked field by field, whatever container carried it ------------------------------------
def meta_from_dict(data: Any, source: str | Path) -> CheckpointMeta:
    """The metadata in ``data`` (decoded JSON), every field checked for type and shape.

    Anything wrong raises one sentence, "SOURCE is damaged (...).", naming the first bad field.
    """
    try:
        return _meta_or_reason(data)
    except ValueError as exc:
        raise MovierecError(f"{source} is damaged ({exc}).") from None


def _meta_or_reason(data: Any) -> CheckpointMeta:
    if not isinstance(data, dict):
        raise ValueError(f"its metadata is {_kind(data)}, not an object")
    hints = typing.get_type_hints(CheckpointMeta)
    values = {}
    for f in fields(CheckpointMeta):
        if f.name not in data:
            if f.default is MISSING and f.default_factory is MISSING:
                raise ValueError(f"its metadata has no {f.name!r}")
            continue
        value = data[f.name]
        if not _conforms(value, hints[f.name]):
            raise ValueError(f"its {f.name!r} is {_show(value)}, not {_describe(hints[f.name])}")
        values[f.name] = value
    meta = CheckpointMeta(**values)
    problem = _implausible(meta)
    if problem:
        raise ValueError(problem)
    return meta


def _implausible(meta: CheckpointMeta) -> str | None:
    """What is wrong with metadata whose fields all have the right types, if anything."""
    if not _NAME_OK.match(meta.name) or len(meta.name) > MAX_NAME:
        return f"its name {_show(meta.name)} is not a model name"
    if not meta.model:
        return "its 'model' is empty"
    for what, count in (("users", meta.n_users), ("movies", meta.n_items)):
        if count < 1:
            return f"it has {count} {what}"
    stars = meta.rating_values
    if not stars:
        return "its 'rating_values' is empty"
    if not all(math.isfinite(v) for v in stars) or any(a >= b for a, b in zip(stars, stars[1:])):
        return "its 'rating_values' are not ascending finite numbers"
    for key in ("metrics", "train_metrics"):
        if not all(_conforms(v, float) for v in getattr(meta, key).values()):
            return f"its {key!r} are not all numbers"
    if not all(_conforms(v, str | float) for v in meta.baseline.values()):
        return "its 'baseline' holds something that is neither a name nor a number"
    try:
        datetime.fromisoformat(meta.created)
    except ValueError:
        return f"its 'created' is {_show(meta.created)}, not a date and time"
    if meta.epochs < 0 or not math.isfinite(meta.fit_seconds) or meta.fit_seconds < 0:
        return "its epoch count or fit time is negative or not finite"
    if not 0.0 < meta.test_fraction < 1.0:
        return f"its 'test_fraction' is {_show(meta.test_fraction)}, not between 0 and 1"
    return None


def _conforms(value: Any, hint: Any) -> bool:
    """Whether JSON-decoded ``value`` has the type ``hint`` (int is not bool; a float may be written as an int)."""
    if hint is Any:
        return True
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_conforms(value, a) for a in args)
    if origin is typing.Literal:
        return value in args
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if origin is list:
        return isinstance(value, list) and all(_conforms(v, args[0] if args else Any) for v in value)
    if origin is dict:
        key, item = args or (Any, Any)
        return isinstance(value, dict) and all(_conforms(k, key) and _conforms(v, item) for k, v in value.items())
    return isinstance(hint, type) and isinstance(value, hint)


def _describe(hint: Any) -> str:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_describe(a) for a in args)
    if origin is typing.Literal:
        return "one of " + ", ".join(map(repr, args))
    if origin is list:
        return "a list" + (f" of {_plural(args[0])}" if args and args[0] is not Any else "")
    if origin is dict:
        return "an object" + (f" of {_plural(args[1])}" if len(args) == 2 and args[1] is not Any else "")
    names = {str: "text", int: "a whole number", float: "a number", bool: "true or false", type(None): "null"}
    return names.get(hint, getattr(hint, "__name__", str(hint)))


def _plural(hint: Any) -> str:
    plurals = {"text": "texts", "a whole number": "whole numbers", "a number": "numbers", "an object": "objects"}
    single = _describe(hint)
    return plurals.get(single, single)


def _kind(value: Any) -> str:
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, (list, tuple)):
        return "a list"
    if isinstance(value, str):
        return "text"
    if isinstance(value, bool):
        return "true or false"
    if isinstance(value, (int, float)):
        return "a number"
    return "null" if value is None else f"a {type(value).__name__}"


def _show(value: Any) -> str:
    """A short quotation of a bad value for an error sentence: scalars as written, containers by kind."""
    if isinstance(value, (dict, list, tuple)):
        return _kind(value) if value else f"an empty {_kind(value).split()[-1]}"
    if not isinstance(value, (str, int, float, bool, type(None))):
        return _kind(value)
    text = json.dumps(value)
    return text if len(text) <= 30 else text[:27] + "..."


# -- names, paths and writers -----------------------------------------------------------------------------
def default_name(model: str, dataset: str, split: str) -> str:
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    return f"{model}-{dataset}-{split}-{stamp}"


def path_for(name: str) -> Path:
    if not _NAME_OK.match(name) or name.endswith(SUFFIX):
        raise MovierecError(
            f"Invalid model name {name!r}: use letters, digits, '.', '_' and '-' (no path, no {SUFFIX})."
        )
    if len(name) > MAX_NAME:
        raise MovierecError(f"Invalid model name: {len(name)} characters is too long; use at most {MAX_NAME}.")
    return paths.models_dir() / f"{name}{SUFFIX}"


# Temporary checkpoints are ".NAME.pt.HOST-PID.RANDOM.tmp": a later writer or listing on the same host can tell
# a dead writer's leftovers from a live writer's file. (Older ones, ".NAME.pt.RANDOM.tmp", only age out.)
_HOST = re.sub(r"[^A-Za-z0-9]", "", socket.gethostname())[:24]
_TEMP = re.compile(r"^\..+\.pt\.(?:(?P<host>[A-Za-z0-9]*)-(?P<pid>\d+)\.)?[A-Za-z0-9_]+\.tmp$")


def _temp_prefix(path: Path) -> str:
    return f".{path.name}.{_HOST}-{os.getpid()}."


def _alive(pid: int) -> bool:
    if pid <= 0 or os.name == "nt":  # on Windows os.kill(pid, 0) would end the process
        return pid > 0
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # someone else's live process
        return True
    return True


def clean_temporaries(folder: Path | None = None) -> int:
    """Delete the temporary checkpoints of writers that died mid-save (kill -9, power cut); return how many.

    A temporary file goes when its writer (same host) is no longer running, or when it is over an hour old.
    Folders that cannot be read or written are left as they are.
    """
    folder = Path(folder) if folder is not None else paths.models_dir()
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return 0
    removed, now = 0, time.time()
    for entry in entries:
        found = _TEMP.match(entry.name)
        if not found:
            continue
        try:
            if not entry.is_file(follow_symlinks=False):
                continue
            age = now - entry.stat(follow_symlinks=False).st_mtime
            dead = found["pid"] is not None and found["host"] == _HOST and not _alive(int(found["pid"]))
            if dead or age > STALE_SECONDS:
                os.unlink(entry.path)
                removed += 1
        except OSError:
            continue
    return removed


def _cannot_write(folder: Path, exc: OSError) -> MovierecError:
    return MovierecError(f"Cannot save models in {folder}: {exc.strerror or exc}.")


def _check_writable(path: Path) -> None:
    """Prove that a checkpoint can be written at ``path``: create and remove a temporary file of the longest
    name a save uses, where the save will write it."""
    folder = path.parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
        clean_temporaries(folder)
        fd, probe = tempfile.mkstemp(prefix=_temp_prefix(path), suffix=".tmp", dir=folder)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        if exc.errno == errno.ENAMETOOLONG:
            raise MovierecError(
                f"A model name of {len(path.stem)} characters is too long for the file system of {folder}; "
                "choose a shorter one."
            ) from None
        raise _cannot_write(folder, exc) from None


@contextlib.contextmanager
def reserve(name: str) -> Iterator[Path]:
    """Hold the model name ``name`` for a whole train-and-save; yields the path to save to.

    Fails at once, before any training, when the name is invalid or too long, when the models folder cannot
    be written, or when another process holds the name (it is training a model of that name right now).
    """
    from filelock import FileLock, Timeout

    path = path_for(name)
    new_folder = not path.parent.exists()
    _check_writable(path)
    lock_path = path.parent / f".{name}.lock"
    lock = FileLock(str(lock_path), timeout=0)
    try:
        lock.acquire()
    except Timeout:
        raise MovierecError(
            f"Another movierec is training {name} right now; wait for it to finish or choose another name."
        ) from None
    except OSError as exc:
        raise _cannot_write(path.parent, exc) from None
    try:
        yield path
    except BaseException:
        if new_folder:
            # A run that failed (bad dataset, no GPU, Ctrl-C) leaves the home as it found it. Removed while
            # still held, so no other writer can be holding this lock file.
            with contextlib.suppress(OSError):
                lock_path.unlink()
                path.parent.rmdir()  # only if empty
        raise
    finally:
        lock.release()


def save(
    model: Recommender, meta: CheckpointMeta, user_ids: Any, item_ids: Any, path: Path | None = None
) -> tuple[Path, CheckpointMeta]:
    """Write the checkpoint atomically (temp file in the same folder, then rename).

    Returns its path and the metadata as saved (with its ``created`` stamp).
    """
    path = Path(path) if path is not None else path_for(meta.name)
    if not meta.created:
        # Microseconds: `resolve(None)` picks the newest by this stamp, and two saves can share a second.
        created = datetime.now(timezone.utc).isoformat(timespec="microseconds")
        meta = CheckpointMeta(**{**asdict(meta), "created": created})
    payload = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "meta": json.dumps(asdict(meta), allow_nan=True),
        "state": {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()},
        "user_ids": torch.as_tensor(user_ids, dtype=torch.int64).cpu(),
        "item_ids": torch.as_tensor(item_ids, dtype=torch.int64).cpu(),
    }
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        clean_temporaries(path.parent)
        fd, tmp = tempfile.mkstemp(prefix=_temp_prefix(path), suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise MovierecError(f"Could not save the model to {path}: {exc.strerror or exc}.") from None
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(payload, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise MovierecError(f"Could not save the model to {path}: {exc.strerror or exc}.") from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path, meta


def remove(name: str) -> Path:
    """Delete the saved model called ``name`` and return the path it had.

    Only names are taken, never paths, so nothing outside the models folder can be deleted.
    """
    path = path_for(name)
    if not (path.is_file() or path.is_symlink()):
        raise _not_saved(name)
    try:
        path.unlink()
    except OSError as exc:
        raise MovierecError(f"Could not remove {path}: {exc.strerror or exc}.") from None
    return path


# -- reading ----------------------------------------------------------------------------------------------
def _read(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise MovierecError(f"No checkpoint at {path}.")
    try:
        with warnings.catch_warnings():
            # torch warns (two lines on stderr) about some files before refusing them; our sentence is enough.
            warnings.simplefilter("ignore")
            payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:
        raise MovierecError(
            f"{path} is not a readable movierec checkpoint (truncated, corrupted or not a checkpoint)."
        ) from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise MovierecError(f"{path} is not a movierec checkpoint.")
    version = payload.get("format_version")
    if not _conforms(version, int) or version < 1:
        raise MovierecError(f"{path} is damaged (its format version is {_show(version)}, not a whole number).")
    if version > FORMAT_VERSION:
        raise MovierecError(
            f"{path} was written by a newer movierec (checkpoint format {version}); upgrade movierec to read it."
        )
    return payload


def _meta_of(payload: dict[str, Any], path: Path) -> CheckpointMeta:
    text = payload.get("meta")
    if not isinstance(text, str):
        raise MovierecError(f"{path} is damaged (its metadata is {_show(text)}, not JSON text).")
    try:
        return CheckpointMeta.from_json(text)
    except ValueError as exc:
        raise MovierecError(f"{path} is damaged ({exc}).") from None


def _check_tensors(payload: dict[str, Any], meta: CheckpointMeta, path: Path) -> None:
    """The tensors agree with the metadata and are finite: checked before a model is built from them."""
    state = payload.get("state")
    if not isinstance(state, dict) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()
    ):
        raise MovierecError(f"{path} is damaged (its weights are not a table of named tensors).")
    for key, count, what in (("user_ids", meta.n_users, "user"), ("item_ids", meta.n_items, "movie")):
        ids = payload.get(key)
        if (
            not isinstance(ids, torch.Tensor) or ids.dim() != 1 or ids.dtype == torch.bool
            or ids.dtype.is_floating_point or ids.dtype.is_complex
        ):
            raise MovierecError(f"{path} is damaged (its {what} ids are not a list of whole numbers).")
        if len(ids) != count:
            raise MovierecError(f"{path} is damaged (it has {len(ids):,} {what} ids for {count:,} {what}s).")
        if len(torch.unique(ids)) != count:
            raise MovierecError(f"{path} is damaged (its {what} ids repeat).")
    for key, tensor in state.items():
        if (tensor.is_floating_point() or tensor.is_complex()) and not bool(torch.isfinite(tensor).all()):
            raise MovierecError(f"{path} holds non-finite weights (in {key}); retrain it.")


def read_meta(path: Path) -> CheckpointMeta:
    path = Path(path)
    return _meta_of(_read(path), path)


def load(path: Path, device: torch.device | str = "cpu") -> Checkpoint:
    """Rebuild the model saved at ``path`` on ``device``."""
    path = Path(path)
    payload = _read(path)
    meta = _meta_of(payload, path)
    _check_tensors(payload, meta, path)
    try:
        if not meta.mode:  # written before each mode had its own class
            mode, config = migrate_settings(meta.model, meta.config)
            meta = dataclasses.replace(meta, mode=mode, config=config)
        model = build_model(meta.model, meta.mode, meta.config, meta.n_users, meta.n_items, tuple(meta.rating_values))
        model.load_state_dict(payload["state"])
        user_ids, item_ids = payload["user_ids"], payload["item_ids"]
    except MovierecError:
        raise
    except (KeyError, TypeError, ValueError, RuntimeError):
        raise MovierecError(f"{path} is damaged: its tensors do not match its model description.") from None
    model.to(device)
    model.eval()
    return Checkpoint(path, meta, model, user_ids, item_ids)


def scan_checkpoints() -> tuple[list[tuple[Path, CheckpointMeta]], list[Path]]:
    """The readable checkpoints in the models folder, oldest first, and the ``*.pt`` files that are not."""
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


def list_checkpoints() -> list[tuple[Path, CheckpointMeta]]:
    """Every readable checkpoint in the models folder, oldest first (unreadable files are skipped)."""
    return scan_checkpoints()[0]


def _not_saved(name: str) -> MovierecError:
    names = [p.stem for p, _ in list_checkpoints()]
    hint = f" Saved models: {', '.join(names[-10:])}." if names else " No models are saved yet."
    return MovierecError(f"No saved model named {name!r}.{hint}")


def _is_file(path: Path) -> bool:
    try:
        return path.is_file()
    except OSError:  # a name too long for the file system, for one
        return False


def resolve(name: str | None) -> Path:
    """A checkpoint by name or path; ``None`` means the newest one."""
    if name is None:
        found = list_checkpoints()
        if not found:
            raise MovierecError("No trained models yet; train one with `movierec train MODEL`.")
        return found[-1][0]
    candidate = Path(name).expanduser()
    if candidate.suffix == SUFFIX and _is_file(candidate):
        return candidate
    path = path_for(name)
    if not path.is_file():
        raise _not_saved(name)
    return path



@dataclass(frozen=True)
class Trained:
    """A checkpoint together with the dataset and split it was trained on: what later commands need."""

    checkpoint: Checkpoint
    dataset: Any  # movierec.data.movielens.Dataset
    split: Any  # movierec.data.split.Split
    train: Any  # RatingMatrix of the training ratings (users x movies), on the model's device

    @property
    def model(self) -> Recommender:
        return self.checkpoint.model

    @property
    def meta(self) -> CheckpointMeta:
        return self.checkpoint.meta


def load_trained(name: str | None = None, device: torch.device | str = "cpu") -> Trained:
    """Load a checkpoint (newest when ``name`` is None), its dataset and its training split."""
    from movierec.data.movielens import load_dataset
    from movierec.data.split import make_split

    ckpt = load(resolve(name), device)
    meta = ckpt.meta
    data = load_dataset(meta.dataset)
    if data.fingerprint != meta.fingerprint:
        raise MovierecError(
            f"The cached {meta.dataset} ratings differ from the ones {meta.name} was trained on; retrain it."
        )
    _check_against_dataset(ckpt, data)
    split = make_split(data, meta.split, seed=meta.seed, test_fraction=meta.test_fraction)
    return Trained(ckpt, data, split, split.train.matrix(ckpt.model.device))


def _check_against_dataset(ckpt: Checkpoint, data: Any) -> None:
    """The checkpoint's users and movies are the dataset's, index for index: otherwise every answer is wrong."""
    meta = ckpt.meta
    if (meta.n_users, meta.n_items) != (data.n_users, data.n_items):
        raise MovierecError(
            f"{ckpt.path} is damaged (it has {meta.n_users:,} users and {meta.n_items:,} movies, {meta.dataset} "
            f"has {data.n_users:,} and {data.n_items:,}); retrain it."
        )
    for what, saved, actual in (("user", ckpt.user_ids, data.user_ids), ("movie", ckpt.item_ids, data.item_ids)):
        if not torch.equal(saved.to(torch.int64).cpu(), torch.as_tensor(actual, dtype=torch.int64)):
            raise MovierecError(f"{ckpt.path} is damaged (its {what} ids are not those of {meta.dataset}); retrain it.")
