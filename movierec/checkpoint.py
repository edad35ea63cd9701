"""Saved models: one file per model, its metadata readable without reading its arrays, never unpickled.

Format 2 (this version) has the layout of safetensors: an 8-byte little-endian header length ``N``, ``N``
bytes of JSON, then the raw little-endian bytes of every array, back to back::

    {"__metadata__": {"format": "movierec-checkpoint", "format_version": "2",
                      "meta": "<JSON: model, config, dataset, fingerprint, split, seed, history, metrics, ...>",
                      "serving": "<JSON: genre names, neutral score, how the model scores (see serving.py)>"},
     "state.user_factors": {"dtype": "F32", "shape": [943, 32], "data_offsets": [0, 120704]}, ...}

The arrays are the model's ``state_dict`` (``state.*``), the MovieLens ids of every user and movie index
(``user_ids``, ``item_ids``) and what answering needs without the dataset (:mod:`movierec.serving`: each
user's training ratings, each movie's rating count, titles, years, genres). Listing reads the header alone;
answering reads only the arrays it needs (one user's row, not the 22M training ratings), with numpy; only
building a torch model imports torch. Nothing is ever unpickled: JSON and raw numbers only. The suffix stays
``.pt`` so names, paths and scripts keep working across the format change.

Format 1 files (a ``torch.save`` of plain tensors, read with ``torch.load(weights_only=True)``) are still
read; the first time one is used to answer or evaluate, it is rewritten in format 2 (atomically, in place),
since that is when the dataset its serving data comes from is at hand.

Everything read back is checked before it is used: the metadata field by field (:func:`meta_from_dict`,
which knows nothing of the container), the arrays against the metadata, and the id maps against the
dataset (:func:`load_trained`). A file that fails is "damaged", in one sentence, never a traceback.

Writers take a lock per name (``.NAME.lock``) for the whole train-and-save, write to a temporary file
named after their host and pid, and sweep away the temporaries of writers that died (kill -9).
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import itertools
import json
import logging
import math
import os
import re
import socket
import struct
import tempfile
import threading
import time
import types
import typing
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import MISSING, asdict, dataclass, field, fields
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

import numpy as np

from movierec import paths
from movierec.errors import MovierecError
from movierec.files import atomic_file
from movierec.models import migrate_settings
from movierec.version import __version__

if TYPE_CHECKING:
    from movierec.serving import ServingData

FORMAT = "movierec-checkpoint"
FORMAT_VERSION = 2
LEGACY_VERSION = 1
"""``torch.save`` files: still read, rewritten as :data:`FORMAT_VERSION` on first use."""
SUFFIX = ".pt"
MAX_NAME = 150
"""Longest model name: with the temporary file's extra characters it stays within the usual 255-byte limit."""
STALE_SECONDS = 3600
"""A temporary checkpoint older than this is a dead writer's, whoever wrote it."""
MAX_HEADER = 100_000_000
"""A longer header is not a checkpoint's (safetensors' own limit)."""

log = logging.getLogger(__name__)


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

    @property
    def fitted_on_training_ratings(self) -> bool:
        """Whether the model was fitted on exactly its split's training ratings (the ones saved with it): true
        unless a validation slice was held out of them. Then what it derived from them at the end of training
        may be reused (:meth:`~movierec.models.base.Recommender.reuse_fit_state`)."""
        return not self.valid_fraction

    @classmethod
    def from_json(cls, text: str) -> CheckpointMeta:
        """The metadata in ``text``, checked by :func:`meta_from_dict`; raises ValueError saying what is wrong."""
        try:
            data = json.loads(text)
        except (TypeError, ValueError):
            raise ValueError("its metadata is not valid JSON") from None
        return _meta_or_reason(data)


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
def default_name(model: str, mode: str | None = None, default_mode: str | None = None) -> str:
    """The name a model is saved under when none is given: ``als``, or ``als-implicit`` for a mode other than
    the default one. It is a stem: :func:`reserve` with ``fresh=True`` adds ``-2``, ``-3``... when it is taken."""
    return model if not mode or mode == default_mode else f"{model}-{mode}"


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
def reserve(name: str, fresh: bool = False) -> Iterator[Path]:
    """Hold the model name ``name`` for a whole train-and-save; yields the path to save to.

    Fails at once, before any training, when the name is invalid or too long, when the models folder cannot
    be written, or when another process holds the name (it is training a model of that name right now).
    With ``fresh``, ``name`` is a stem (:func:`default_name`): the first of ``name``, ``name-2``, ``name-3``...
    that is neither saved nor held is taken, under its lock, so two runs at once never pick the same one; the
    name taken is the yielded path's stem.
    """
    from filelock import FileLock, Timeout

    path = path_for(name)
    new_folder = not path.parent.exists()
    _check_writable(path)
    for n in itertools.count(1):
        if fresh and n > 1:
            path = path_for(f"{name}-{n}")
        if fresh and path.exists():
            continue
        lock_path = path.parent / f".{path.stem}.lock"
        lock = FileLock(str(lock_path), timeout=0)
        try:
            lock.acquire()
        except Timeout:
            if fresh:
                continue
            raise MovierecError(
                f"Another movierec is training {name} right now; wait for it to finish or choose another name."
            ) from None
        except OSError as exc:
            raise _cannot_write(path.parent, exc) from None
        if fresh and path.exists():  # saved by a run that ended between the look and the lock
            lock.release()
            continue
        break
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


# -- the container: a JSON header, then raw arrays -------------------------------------------------------
_DTYPES = {
    "F64": "<f8", "F32": "<f4", "F16": "<f2", "I64": "<i8", "I32": "<i4", "I16": "<i2", "I8": "i1",
    "U64": "<u8", "U32": "<u4", "U16": "<u2", "U8": "u1", "BOOL": "?",
}
_DTYPE_NAMES = {np.dtype(v): k for k, v in _DTYPES.items()}
_LEGACY_MAGIC = b"PK\x03\x04"  # torch.save writes a zip archive


def _unreadable(path: Path) -> MovierecError:
    return MovierecError(f"{path} is not a readable movierec checkpoint (truncated, corrupted or not a checkpoint).")


def _header_bytes(metadata: Mapping[str, str], arrays: Mapping[str, np.ndarray]) -> bytes:
    header: dict[str, Any] = {"__metadata__": dict(metadata)}
    offset = 0
    for name, array in arrays.items():
        dtype = _DTYPE_NAMES.get(array.dtype.newbyteorder("<") if array.dtype.byteorder == ">" else array.dtype)
        if dtype is None:
            raise TypeError(f"cannot save an array of {array.dtype}")
        header[name] = {"dtype": dtype, "shape": list(array.shape), "data_offsets": [offset, offset + array.nbytes]}
        offset += array.nbytes
    text = json.dumps(header, separators=(",", ":"), allow_nan=False).encode()
    text += b" " * (-len(text) % 8)  # the arrays start 8-byte aligned
    return struct.pack("<Q", len(text)) + text


def _write_body(f: BinaryIO, header: bytes, arrays: Mapping[str, np.ndarray]) -> None:
    f.write(header)
    for array in arrays.values():
        f.write(np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<")).reshape(-1).view(np.uint8))


def write_file(path: Path, metadata: Mapping[str, str], arrays: Mapping[str, np.ndarray]) -> None:
    """Write a format-2 file atomically: a temporary file in the same folder, flushed to disk, then renamed
    over ``path``. Whatever goes wrong, ``path`` is either what it was or the whole new file."""
    arrays = {k: np.asarray(v) for k, v in arrays.items()}
    header = _header_bytes(metadata, arrays)
    failure = f"Could not save the model to {path}"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        clean_temporaries(path.parent)
    except OSError as exc:
        raise MovierecError(f"{failure}: {exc.strerror or exc}.") from None
    # Private (0600), as the temporary file is made: a model holds what its users rated.
    with atomic_file(path, failure, prefix=_temp_prefix(path), private=True) as f:
        _write_body(f, header, arrays)


@dataclass(frozen=True)
class _Entry:
    dtype: np.dtype
    shape: tuple[int, ...]
    start: int
    stop: int


class SavedFile:
    """An open format-2 checkpoint: its checked metadata, and its arrays read on demand.

    The file stays open, so every array comes from the same file even if a new save replaces it meanwhile.
    """

    def __init__(self, path: Path, f: BinaryIO, metadata: dict[str, str], entries: dict[str, _Entry], base: int):
        self.path = path
        self._f = f
        self.metadata = metadata
        self._entries = entries
        self._base = base  # where the arrays start
        self._lock = threading.Lock()  # where positioned reads are missing (Windows)
        self.meta = _meta_from_text(metadata.get("meta"), path)

    def close(self) -> None:
        self._f.close()

    def __enter__(self) -> SavedFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def names(self) -> list[str]:
        return list(self._entries)

    def __contains__(self, name: str) -> bool:
        return name in self._entries

    def shape(self, name: str) -> tuple[int, ...]:
        return self._entry(name).shape

    def get(self, name: str) -> np.ndarray:
        """The whole array ``name``."""
        e = self._entry(name)
        return self._read(e, e.start, e.stop).reshape(e.shape)

    def rows(self, name: str, start: int, stop: int) -> np.ndarray:
        """Rows ``start:stop`` of array ``name`` (along its first axis), reading nothing else."""
        e = self._entry(name)
        row = e.dtype.itemsize * math.prod(e.shape[1:])
        start, stop = max(0, min(start, e.shape[0])), max(0, min(stop, e.shape[0]))
        stop = max(start, stop)
        return self._read(e, e.start + start * row, e.start + stop * row).reshape((stop - start, *e.shape[1:]))

    def _entry(self, name: str) -> _Entry:
        try:
            return self._entries[name]
        except KeyError:
            raise MovierecError(f"{self.path} is damaged (it has no {name!r} array).") from None

    def _read(self, e: _Entry, start: int, stop: int) -> np.ndarray:
        buf = bytearray(stop - start)  # writable, so torch can take it without a copy
        view, offset = memoryview(buf), self._base + start
        try:
            if hasattr(os, "preadv"):
                # Positioned reads share no file offset: threads (a server's) may read one file at once.
                while view:
                    got = os.preadv(self._f.fileno(), [view], offset)
                    if got <= 0:
                        break
                    view, offset = view[got:], offset + got
            else:
                with self._lock:
                    self._f.seek(offset)
                    view = view[self._f.readinto(view) or 0:]
        except OSError:
            raise _unreadable(self.path) from None
        if len(view):
            raise _unreadable(self.path)
        return np.frombuffer(buf, dtype=e.dtype)


def _parse_header(path: Path, f: BinaryIO) -> tuple[dict[str, str], dict[str, _Entry], int]:
    """The metadata and array table of a format-2 file; one sentence when it is anything else."""
    try:
        size = os.fstat(f.fileno()).st_size
        head = f.read(8)
        if len(head) != 8:
            raise _unreadable(path)
        (n,) = struct.unpack("<Q", head)
        if n > min(MAX_HEADER, size - 8):
            raise _unreadable(path)
        header = json.loads(f.read(n))
    except (OSError, ValueError):  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise _unreadable(path) from None
    if not isinstance(header, dict):
        raise _unreadable(path)
    metadata = header.pop("__metadata__", None)
    if not isinstance(metadata, dict) or metadata.get("format") != FORMAT:
        raise MovierecError(f"{path} is not a movierec checkpoint.")
    version = _check_version(metadata.get("format_version"), path)
    if version != FORMAT_VERSION:
        raise MovierecError(f"{path} is damaged (it says format {version} but is laid out as format {FORMAT_VERSION}).")
    if not all(isinstance(v, str) for v in metadata.values()):
        raise MovierecError(f"{path} is damaged (its header's metadata is not all text).")
    entries = {}
    for name, spec in header.items():
        try:
            dtype = np.dtype(_DTYPES[spec["dtype"]])
            shape = tuple(spec["shape"])
            start, stop = spec["data_offsets"]
            ok = all(_conforms(d, int) and d >= 0 for d in (*shape, start, stop))
            ok = ok and stop - start == dtype.itemsize * math.prod(shape)
        except (KeyError, TypeError, ValueError):
            ok = False
        if not ok:
            raise MovierecError(f"{path} is damaged (its array {_show(name)} is not described right).")
        entries[name] = _Entry(dtype, shape, start, stop)
    return metadata, entries, 8 + n


def _check_version(version: Any, path: Path) -> int:
    if isinstance(version, str) and version.isdigit() and version.isascii():
        version = int(version)
    elif isinstance(version, str):
        raise MovierecError(f"{path} is damaged (its format version is {_show(version)}, not a whole number).")
    if not _conforms(version, int) or version < 1:
        raise MovierecError(f"{path} is damaged (its format version is {_show(version)}, not a whole number).")
    if version > FORMAT_VERSION:
        raise MovierecError(
            f"{path} was written by a newer movierec (checkpoint format {version}); upgrade movierec to read it."
        )
    return version


def _meta_from_text(text: Any, path: Path) -> CheckpointMeta:
    if not isinstance(text, str):
        raise MovierecError(f"{path} is damaged (its metadata is {_show(text)}, not JSON text).")
    try:
        return CheckpointMeta.from_json(text)
    except ValueError as exc:
        raise MovierecError(f"{path} is damaged ({exc}).") from None


def is_legacy(path: Path) -> bool:
    """Whether ``path`` is a format-1 file (a torch zip archive); one sentence if it cannot be read at all."""
    if not path.is_file():
        raise MovierecError(f"No checkpoint at {path}.")
    try:
        with open(path, "rb") as f:
            return f.read(4) == _LEGACY_MAGIC
    except OSError:
        raise _unreadable(path) from None


def open_file(path: Path) -> SavedFile:
    """Open the format-2 checkpoint at ``path``: header and metadata read and checked, no array read yet.

    A format-1 file raises :class:`LegacyCheckpoint` (its reader needs torch: :func:`load`)."""
    path = Path(path)
    if is_legacy(path):
        raise LegacyCheckpoint(path)
    try:
        f = open(path, "rb")  # noqa: SIM115 (the SavedFile keeps it open and closes it)
    except OSError:
        raise _unreadable(path) from None
    try:
        return SavedFile(path, f, *_parse_header(path, f))
    except BaseException:
        f.close()
        raise


class LegacyCheckpoint(MovierecError):
    """The file is in format 1 (``torch.save``); :func:`load` reads it."""

    def __init__(self, path: Path):
        super().__init__(f"{path} is in checkpoint format {LEGACY_VERSION}.")
        self.path = path


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
        metadata["serving"] = json.dumps(serving.info, allow_nan=False)
        arrays.update(serving.arrays)
    write_file(path, metadata, arrays)


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
        shown = _show(version)
        raise MovierecError(f"{path} is damaged (its format version is {shown}, not a whole number)."
                            if isinstance(version, str) else
                            f"{path} is damaged (it says format {shown} but is laid out as format {LEGACY_VERSION}).")
    return payload


def read_meta(path: Path) -> CheckpointMeta:
    """The metadata of the checkpoint at ``path``, checked; a format-2 file's arrays are not read."""
    path = Path(path)
    if is_legacy(path):
        return _meta_from_text(_read_legacy(path).get("meta"), path)
    with open_file(path) as saved:
        return saved.meta


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


def check_arrays(
    state: Mapping[str, np.ndarray], user_ids: Any, item_ids: Any, meta: CheckpointMeta, path: Path
) -> None:
    """The arrays agree with the metadata and are finite: checked before a model is built from them."""
    for ids, count, what in ((user_ids, meta.n_users, "user"), (item_ids, meta.n_items, "movie")):
        if not isinstance(ids, np.ndarray) or ids.ndim != 1 or ids.dtype.kind not in "iu":
            raise MovierecError(f"{path} is damaged (its {what} ids are not a list of whole numbers).")
        if len(ids) != count:
            raise MovierecError(f"{path} is damaged (it has {len(ids):,} {what} ids for {count:,} {what}s).")
        if len(np.unique(ids)) != count:
            raise MovierecError(f"{path} is damaged (its {what} ids repeat).")
    for key, array in state.items():
        if array.dtype.kind in "fc" and not bool(np.isfinite(array).all()):
            raise MovierecError(f"{path} holds non-finite weights (in {key.removeprefix('state.')}); retrain it.")


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


def current_meta(meta: CheckpointMeta) -> CheckpointMeta:
    if not meta.mode:  # written before each mode had its own class
        mode, config = migrate_settings(meta.model, meta.config)
        meta = dataclasses.replace(meta, mode=mode, config=config)
    return meta


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


def describe(path: Path, meta: CheckpointMeta, *, newest: bool = False) -> dict[str, Any]:
    """A saved model as a JSON-able row: what `movierec models --json`, the Python API and the server list."""
    return {"name": meta.name, "model": meta.model, "mode": meta.mode, "dataset": meta.dataset, "split": meta.split,
            "path": str(path), "created": meta.created, "epochs": meta.epochs, "fit_seconds": meta.fit_seconds,
            "metrics": meta.metrics, "config": meta.config, "newest": newest}


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


MAX_CANDIDATES = 10
"""An ambiguous name lists at most this many of the saved names it begins."""


def saved_names() -> list[str]:
    """The names of the files in the models folder, sorted (without reading them: damaged ones included)."""
    try:
        entries = list(os.scandir(paths.models_dir()))
    except OSError:
        return []
    names = (e.name[: -len(SUFFIX)] for e in entries if e.name.endswith(SUFFIX))
    return sorted(n for n in names if _NAME_OK.match(n) and _is_file(paths.models_dir() / f"{n}{SUFFIX}"))


def resolve(name: str | None) -> Path:
    """A checkpoint by path, name, or the beginning of one name; ``None`` means the newest one.

    An exact name always wins; otherwise ``name`` must begin exactly one saved name (``als-i`` for
    ``als-implicit``), and when it begins several the error lists them.
    """
    if name is None:
        found = list_checkpoints()
        if not found:
            raise MovierecError("No trained models yet; train one with `movierec train MODEL`.")
        return found[-1][0]
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


