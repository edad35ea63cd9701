"""Unpacking a MovieLens archive safely: only the files movierec reads, and nothing a hostile archive could do.

:func:`safe_extract` refuses the whole archive for an absolute path, a ``..`` that climbs out, a symbolic link or
an encrypted member, and stops a zip bomb by the bytes it actually writes.
"""

from __future__ import annotations

import errno
import re
import shutil
import stat
import tempfile
import zipfile
import zlib
from collections.abc import Collection
from pathlib import Path, PurePosixPath

from movierec.errors import MovierecError

MAX_UNPACKED_BYTES = 4 * 1024**3
"""Most bytes unpacked from one archive (ML-32M's files movierec reads are about 1 GB)."""
MAX_EXPANSION_RATIO = 50
"""Most a member may inflate; MovieLens text compresses 3-5 fold, a zero-filled zip bomb 1000-fold."""
_EXPANSION_FLOOR = 1 << 20
"""Tiny members may compress better than any ratio; up to this many bytes each is never a bomb."""


def safe_extract(
    archive: Path, parent: Path, top_folder: str, wanted: Collection[str], label: str | None = None
) -> Path:
    """Unpack the files ``wanted`` of ``top_folder/`` in ``archive`` into a new temporary folder in ``parent``.

    Returns the temporary folder (which holds ``top_folder/``). Other members are not unpacked. The
    whole archive is refused if any member is an absolute path, climbs out with ``..`` or is a symbolic
    link, if a wanted member is encrypted, if it lacks ``top_folder/``, or if unpacking would write more
    than :data:`MAX_UNPACKED_BYTES` or inflate a member more than :data:`MAX_EXPANSION_RATIO`-fold.
    The limits are checked on the bytes actually written, not only on the sizes the archive declares.
    Errors call the archive ``label`` (default: its file name).
    """
    label = label or archive.name
    try:
        zf = zipfile.ZipFile(archive)
    except (zipfile.BadZipFile, EOFError) as exc:
        raise MovierecError(
            f"{label} is not a valid zip archive (truncated or corrupted: {exc}); fetch it again."
        ) from None
    with zf:
        members = _safe_members(zf, label, top_folder, wanted)
        declared = sum(m.file_size for m in members)
        if declared > MAX_UNPACKED_BYTES:
            raise _too_big(label, declared)
        free = shutil.disk_usage(parent).free
        if declared > free:
            raise OSError(errno.ENOSPC, f"{declared:,} bytes needed, {free:,} free")
        archive_size = archive.stat().st_size
        tmp = Path(tempfile.mkdtemp(prefix=".extract-", dir=parent))
        try:
            root = tmp.resolve()
            written = 0
            for member in members:
                dest = (tmp / _member_name(member)).resolve()
                if root not in dest.parents:  # belt and braces after _safe_members
                    raise MovierecError(f"{label} has a member escaping its folder; refusing to unpack.")
                dest.parent.mkdir(parents=True, exist_ok=True)
                # A member cannot hold more compressed bytes than the whole archive, whatever it declares.
                allowed = max(MAX_EXPANSION_RATIO * min(member.compress_size, archive_size), _EXPANSION_FLOOR)
                produced = 0
                with zf.open(member) as src, open(dest, "wb") as out:
                    while chunk := src.read(1 << 20):
                        produced += len(chunk)
                        written += len(chunk)
                        if written > MAX_UNPACKED_BYTES:
                            raise _too_big(label, written)
                        if produced > allowed:
                            raise MovierecError(
                                f"{label} is not a MovieLens release: {member.filename} inflates more "
                                f"than {MAX_EXPANSION_RATIO}-fold (over {produced:,} bytes from "
                                f"{member.compress_size:,}), like a zip bomb; refusing to unpack it."
                            )
                        out.write(chunk)
        except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError) as exc:
            shutil.rmtree(tmp, ignore_errors=True)
            raise MovierecError(f"{label} is corrupted ({exc}); fetch it again.") from None
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return tmp


def _too_big(label: str, size: int) -> MovierecError:
    return MovierecError(
        f"{label} unpacks to more than {MAX_UNPACKED_BYTES:,} bytes ({size:,} so far), far more than any "
        "MovieLens release; refusing to unpack it."
    )


def _member_name(member: zipfile.ZipInfo) -> str:
    # Archives made on Windows may use backslashes; treat them as the separators they are meant as.
    return member.filename.replace("\\", "/")


def _safe_members(
    zf: zipfile.ZipFile, label: str, top_folder: str, wanted: Collection[str]
) -> list[zipfile.ZipInfo]:
    """The members to unpack: files ``top_folder/NAME`` with NAME in ``wanted``, each once."""
    members: dict[str, zipfile.ZipInfo] = {}
    has_file = False
    for member in zf.infolist():
        name = _member_name(member)
        parts = PurePosixPath(name).parts
        if name.startswith("/") or re.match(r"^[A-Za-z]:", name) or ".." in parts or "\0" in name:
            raise MovierecError(f"{label} contains the unsafe path {member.filename!r}; refusing to unpack it.")
        if stat.S_ISLNK(member.external_attr >> 16):
            raise MovierecError(f"{label} contains the symbolic link {member.filename!r}; refusing to unpack it.")
        if not parts or parts[0] != top_folder or member.is_dir():
            continue
        has_file = True
        if len(parts) != 2 or parts[1] not in wanted:
            continue
        if member.flag_bits & 0x1:
            raise MovierecError(
                f"{label} has the encrypted member {member.filename!r}; MovieLens releases are not "
                "password-protected, so this is not one (movierec cannot unpack it)."
            )
        # A name listed twice would be unpacked twice over the same file; the later entry wins, as in unzip.
        members[parts[1]] = member
    if not has_file:
        raise MovierecError(
            f"{label} does not contain the expected folder {top_folder}/, so it is not this MovieLens release."
        )
    if not members:
        raise MovierecError(
            f"{label} has none of the files movierec reads in {top_folder}/ ({', '.join(wanted)}), so it is not "
            "this MovieLens release."
        )
    return list(members.values())
