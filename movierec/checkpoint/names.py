"""Names, paths, locks and temporaries of saved models: one ``NAME.pt`` per model in the models folder."""

from __future__ import annotations

import contextlib
import errno
import itertools
import logging
import os
import re
import socket
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from movierec import paths
from movierec.checkpoint.meta import _NAME_OK, MAX_NAME
from movierec.errors import MovierecError

if TYPE_CHECKING:
    pass


log = logging.getLogger(__name__)


SUFFIX = ".pt"
STALE_SECONDS = 3600
"""A temporary checkpoint older than this is a dead writer's, whoever wrote it."""

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


def _is_file(path: Path) -> bool:
    try:
        return path.is_file()
    except OSError:  # a name too long for the file system, for one
        return False


def saved_names() -> list[str]:
    """The names of the files in the models folder, sorted (without reading them: damaged ones included)."""
    try:
        entries = list(os.scandir(paths.models_dir()))
    except OSError:
        return []
    names = (e.name[: -len(SUFFIX)] for e in entries if e.name.endswith(SUFFIX))
    return sorted(n for n in names if _NAME_OK.match(n) and _is_file(paths.models_dir() / f"{n}{SUFFIX}"))
