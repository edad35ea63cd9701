"""The container: an 8-byte header length, a JSON header, then raw little-endian arrays (the safetensors layout).
Knows nothing of models or serving: it writes and reads named arrays and string metadata."""

from __future__ import annotations

import io
import json
import logging
import math
import os
import struct
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

import numpy as np

from movierec.checkpoint.meta import CheckpointMeta
from movierec.checkpoint.names import _temp_prefix, clean_temporaries
from movierec.checkpoint.schema import conforms, show
from movierec.errors import MovierecError
from movierec.files import atomic_file

if TYPE_CHECKING:
    pass


log = logging.getLogger(__name__)


FORMAT = "movierec-checkpoint"
FORMAT_VERSION = 2
LEGACY_VERSION = 1
"""``torch.save`` files: still read, rewritten as :data:`FORMAT_VERSION` on first use."""
MAX_HEADER = 100_000_000
"""A longer header is not a checkpoint's (safetensors' own limit)."""


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
        f.write(np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<")).reshape(-1).view(np.uint8).data)


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

    def __init__(self, path: Path, f: io.BufferedReader, metadata: dict[str, str], entries: dict[str, _Entry],
                 base: int):
        self.path = path
        self._f = f
        self.metadata = metadata
        self._entries = entries
        self._base = base  # where the arrays start
        self._lock = threading.Lock()  # where positioned reads are missing (Windows, which cannot fork either)
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
                # Positioned reads share no file offset: threads, and the worker processes forked from one
                # server, may read one file at once.
                while view:
                    got = os.preadv(self._f.fileno(), [view], offset)
                    if got <= 0:
                        break
                    view, offset = view[got:], offset + got
            elif hasattr(os, "pread"):  # every system that forks has it
                while view:
                    chunk = os.pread(self._f.fileno(), len(view), offset)
                    if not chunk:
                        break
                    view[:len(chunk)] = chunk
                    view, offset = view[len(chunk):], offset + len(chunk)
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
            ok = all(conforms(d, int) and d >= 0 for d in (*shape, start, stop))
            ok = ok and stop - start == dtype.itemsize * math.prod(shape)
        except (KeyError, TypeError, ValueError):
            ok = False
        if not ok:
            raise MovierecError(f"{path} is damaged (its array {show(name)} is not described right).")
        entries[name] = _Entry(dtype, shape, start, stop)
    return metadata, entries, 8 + n


def _check_version(version: Any, path: Path) -> int:
    if isinstance(version, str) and version.isdigit() and version.isascii():
        version = int(version)
    elif isinstance(version, str):
        raise MovierecError(f"{path} is damaged (its format version is {show(version)}, not a whole number).")
    if not conforms(version, int) or version < 1:
        raise MovierecError(f"{path} is damaged (its format version is {show(version)}, not a whole number).")
    if version > FORMAT_VERSION:
        raise MovierecError(
            f"{path} was written by a newer movierec (checkpoint format {version}); upgrade movierec to read it."
        )
    return version


def _meta_from_text(text: Any, path: Path) -> CheckpointMeta:
    if not isinstance(text, str):
        raise MovierecError(f"{path} is damaged (its metadata is {show(text)}, not JSON text).")
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
