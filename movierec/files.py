"""Writing a file so that it is either what it was or the whole new file: the one place that does it."""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from movierec.errors import MovierecError


@contextlib.contextmanager
def atomic_file(path: Path, failure: str, *, prefix: str | None = None, suffix: str = ".tmp",
                private: bool = False) -> Iterator[BinaryIO]:
    """A binary file to write ``path`` through: a temporary file in the same folder, flushed to disk and
    renamed over ``path`` when the block ends; if anything goes wrong (Ctrl-C included) it is removed and
    ``path`` is left as it was. An OSError becomes one sentence, ``"{failure}: {reason}."``.

    The new file keeps the permissions of the file it replaces, else those of an ordinary new file (the
    umask's); ``private`` keeps the temporary file's owner-only 0600 (saved models)."""
    try:
        fd, temp = tempfile.mkstemp(prefix=prefix or f".{path.name}.", suffix=suffix, dir=path.parent)
    except OSError as exc:
        raise MovierecError(f"{failure}: {exc.strerror or exc}.") from None
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        if not private:
            os.chmod(temp, _mode_for(path))
        os.replace(temp, path)
    except OSError as exc:
        raise MovierecError(f"{failure}: {exc.strerror or exc}.") from None
    finally:
        with contextlib.suppress(OSError):
            os.unlink(temp)  # gone already once renamed


def _mode_for(path: Path) -> int:
    try:
        return stat.S_IMODE(path.stat().st_mode)
    except OSError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask
