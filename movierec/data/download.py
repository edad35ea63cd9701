"""Getting MovieLens releases onto disk: fetched, verified, atomically installed, listed and removed.

Per dataset, :func:`movierec.paths.dataset_dir` holds::

    NAME.zip         the verified archive
    NAME.zip.part    an incomplete download, kept so the next attempt resumes it with an HTTP Range
    <info.folder>/   the unpacked release, parsed by :mod:`movierec.data.movielens`
    download.json    where the zip came from, its sha256 / md5, whether it was verified, when

A cached copy is only ever replaced after its successor has been downloaded, verified, unpacked and
parsed, so a failed ``--force`` leaves the old copy usable. Library code never prints: progress and
status go to optional callbacks, warnings come back in :class:`FetchResult`. The bytes themselves are
transferred and checked by :mod:`movierec.data.transfer` and unpacked by :mod:`movierec.data.archive`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import shutil
import stat
import tempfile
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from movierec import paths
from movierec.data import transfer
from movierec.data.archive import safe_extract
from movierec.data.catalog import IMPORT_RECORD, get_dataset_info, imported_names
from movierec.data.registry import BASE_URL, DATASETS, DatasetInfo
from movierec.data.transfer import (
    ENV_MIRROR,
    DownloadConfig,
    ProgressCallback,
    RetryCallback,
    copy_hashing,
    disk_error,
    download_file,
    expected_checksum,
    expected_checksum_offline,
    file_hashes,
    verify_checksum,
)
from movierec.errors import MovierecError
from movierec.version import __version__

if TYPE_CHECKING:
    from movierec.data.dataset import DatasetSummary

log = logging.getLogger(__name__)

RECORD_NAME = "download.json"
_TRASH_PREFIX = ".removing-"

StatusCallback = Callable[[str], None]
"""Called with a short sentence when a slow step starts (waiting for a lock, verifying, unpacking...)."""


@dataclass(frozen=True)
class FetchResult:
    """What :func:`fetch` left on disk."""

    name: str
    path: Path
    """The dataset's folder (``paths.dataset_dir(name)``)."""
    verified: bool
    sha256: str
    md5: str
    source: str
    """The URL or file the archive came from."""
    already_cached: bool
    """True when nothing was downloaded or imported because a verified copy was already there."""
    summary: DatasetSummary
    warnings: tuple[str, ...] = field(default=())

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "path": str(self.path),
            "verified": self.verified,
            "sha256": self.sha256,
            "md5": self.md5,
            "source": self.source,
            "users": self.summary.users,
            "items": self.summary.items,
            "ratings": self.summary.ratings,
            "already_cached": self.already_cached,
        }


@dataclass(frozen=True)
class DatasetStatus:
    """One registry entry as it stands on this machine (the ``datasets`` command's row)."""

    name: str
    description: str
    cached: bool
    path: Path
    size_bytes: int | None
    """Everything on disk for this dataset (archive, partial download, unpacked and parsed files)."""
    users: int | None
    items: int | None
    ratings: int | None
    verified: bool | None
    duplicates_dropped: int | None = None
    """Repeated ratings of a movie by the same user dropped while parsing (None until parsed)."""
    imported: bool = False
    """A user's own ratings, imported with `movierec import` (:mod:`movierec.data.importing`)."""

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "imported": self.imported,
            "description": self.description,
            "cached": self.cached,
            "verified": self.verified,
            "users": self.users,
            "items": self.items,
            "ratings": self.ratings,
            "duplicates_dropped": self.duplicates_dropped,
            "size_bytes": self.size_bytes,
            "path": str(self.path),
        }


class _Busy(Exception):
    """The dataset's lock is held by someone else and we were asked not to wait."""


# --------------------------------------------------------------------------------------------- public


def mirror_base(mirror: str | None = None) -> str:
    """The base URL archives are fetched from: ``mirror``, then ``$MOVIEREC_MIRROR``, then GroupLens."""
    base = (mirror or "").strip() or (os.environ.get(ENV_MIRROR) or "").strip()
    if not base:
        return BASE_URL
    label = f"Mirror {base!r}" if (mirror or "").strip() else f"${ENV_MIRROR} {base!r}"
    try:
        parts = urlsplit(base)
        parts.port  # noqa: B018 (raises ValueError for a port that is not a number from 0 to 65535)
    except ValueError as exc:
        raise MovierecError(f"{label} is not a valid URL ({_first_line(exc)}).") from None
    if parts.scheme not in ("http", "https"):
        raise MovierecError(f"{label} is not an http:// or https:// URL.")
    if not parts.hostname:
        raise MovierecError(f"{label} has no host name.")
    return base.rstrip("/")


def fetch(
    name: str,
    *,
    mirror: str | None = None,
    from_file: str | Path | None = None,
    verify: bool = True,
    force: bool = False,
    progress: ProgressCallback | None = None,
    status: StatusCallback | None = None,
    config: DownloadConfig | None = None,
    on_retry: RetryCallback | None = None,
) -> FetchResult:
    """Make sure release ``name`` is downloaded, verified, unpacked and parsed, and say what is there.

    ``from_file`` imports a zip the user already has (it is copied, never moved or changed) instead of
    downloading. ``verify=False`` accepts an archive whose checksum does not match or cannot be known;
    the result then carries a warning and ``verified=False``. ``force`` replaces a cached copy, but
    only once the new one is fully in place. ``on_retry`` hears of each transient network failure
    before the wait for the next attempt.
    """
    info = get_dataset_info(name)
    config = config or transfer.DEFAULT_CONFIG  # read at each call, so a changed default applies
    say = status or (lambda _msg: None)
    if from_file is not None and mirror:
        raise MovierecError("--from-file and --mirror cannot be used together; pick one source.")
    source_file = _check_source_file(from_file) if from_file is not None else None
    base = mirror_base(mirror) if source_file is None else ""
    target = paths.dataset_dir(info.name)

    _empty_trash()
    with _locked(info.name, wait=True, on_wait=say):
        target.mkdir(parents=True, exist_ok=True)
        _clean_leftovers(target)
        try:
            if not force:
                cached = _cached_result(info, say)
                if cached is not None:
                    return cached
            if source_file is not None:
                return _import_file(info, source_file, verify, progress, say)
            return _download_release(info, base, verify, progress, say, config, on_retry)
        except BaseException:
            with contextlib.suppress(OSError):
                target.rmdir()  # only succeeds when the failed attempt left nothing at all
            raise


def record_path(name: str) -> Path:
    """Where a dataset's record is: ``download.json`` of a release, ``import.json`` of an imported dataset."""

    info = get_dataset_info(name)
    return paths.dataset_dir(info.name) / (IMPORT_RECORD if info.imported else RECORD_NAME)


def read_record(name: str) -> dict[str, Any] | None:
    """The ``download.json`` of a dataset (``import.json`` of an imported one), or None when it was never
    fetched (or the file is unreadable)."""
    record_path_ = record_path(name)
    try:
        record = json.loads(record_path_.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def is_cached(name: str) -> bool:
    """True when the archive was fetched and its unpacked folder is on disk (parsed or not)."""
    info = get_dataset_info(name)
    folder = paths.dataset_dir(info.name)
    if info.imported:  # nothing but the parsed cache is kept
        from movierec.data import cache

        return cache.summary(info.name) is not None
    return read_record(info.name) is not None and (folder / info.folder).is_dir()


def dataset_status(name: str) -> DatasetStatus:
    """Cached or not, size on disk and, once parsed, how many users / movies / ratings."""
    from movierec.data import cache

    info = get_dataset_info(name)
    folder = paths.dataset_dir(info.name)
    record = read_record(info.name)
    cached = is_cached(info.name)
    summary = cache.summary(info.name) if cached else None
    return DatasetStatus(
        name=info.name,
        description=info.description,
        cached=cached,
        path=folder,
        size_bytes=disk_usage(folder) if folder.exists() else None,
        users=summary.users if summary else None,
        items=summary.items if summary else None,
        ratings=summary.ratings if summary else None,
        verified=None if info.imported or not record else bool(record.get("verified")),
        duplicates_dropped=summary.duplicates_dropped if summary else None,
        imported=info.imported,
    )


def list_datasets() -> list[DatasetStatus]:
    """:func:`dataset_status` of every release in the registry, in registry order, then of every imported
    dataset by name."""

    return [dataset_status(name) for name in (*DATASETS, *imported_names())]


def remove(name: str) -> int:
    """Delete everything on disk for dataset ``name`` and return the bytes freed.

    The folder is first renamed to a hidden trash name in one atomic step, so an interruption leaves
    either the whole dataset or none of it; a trash folder left behind is deleted by the next fetch or
    removal.
    """
    info = get_dataset_info(name)
    folder = paths.dataset_dir(info.name)
    try:
        _empty_trash()
        with _locked(info.name, wait=False):
            with contextlib.suppress(OSError):
                folder.rmdir()  # an empty folder is not a cached dataset
            if not folder.exists():
                raise MovierecError(
                    f"{info.name} is not cached in {paths.datasets_dir()}; there is nothing to remove."
                )
            trash = folder.with_name(f"{_TRASH_PREFIX}{info.name}-{uuid.uuid4().hex}")
            os.rename(folder, trash)
        freed = disk_usage(trash)
        # Another process may be emptying the trash too; only what is still there afterwards is a failure.
        shutil.rmtree(trash, ignore_errors=True)
        if trash.exists():
            shutil.rmtree(trash)
    except _Busy:
        raise MovierecError(
            f"{info.name} is being fetched by another movierec process; try again when it has finished."
        ) from None
    except OSError as exc:
        raise MovierecError(f"Could not remove {folder}: {exc.strerror or exc}.") from exc
    return freed


def _empty_trash() -> None:
    """Finish removals that were interrupted after their folder was renamed to a trash name."""
    with contextlib.suppress(OSError):
        for leftover in paths.datasets_dir().glob(f"{_TRASH_PREFIX}*"):
            shutil.rmtree(leftover, ignore_errors=True)


def disk_usage(path: Path) -> int:
    """Bytes of all regular files under ``path`` (symlinks are not followed)."""
    total = 0
    for root, _dirs, files in os.walk(path):
        for filename in files:
            with contextlib.suppress(OSError):
                st = os.lstat(os.path.join(root, filename))
                if stat.S_ISREG(st.st_mode):
                    total += st.st_size
    return total


# ------------------------------------------------------------------------------------------- fetching


def _check_source_file(from_file: str | Path) -> Path:
    source = Path(from_file).expanduser()
    if not source.is_file():
        raise MovierecError(f"{source} does not exist or is not a file.")
    return source.resolve()


def _cached_result(info: DatasetInfo, say: StatusCallback) -> FetchResult | None:
    """The result for a copy already in place, or None when there is none worth keeping.

    A parsed cache that is missing or damaged is rebuilt from the unpacked files; when those are
    incomplete too (an interrupted removal, files deleted by hand), the kept archive is unpacked
    again, provided it still has the checksum recorded when it was fetched.
    """
    from movierec.data import cache, movielens

    folder = paths.dataset_dir(info.name)
    record = read_record(info.name)
    archive = folder / info.filename
    if record is None or not archive.is_file() or archive.stat().st_size != record.get("size"):
        return None
    verified = bool(record.get("verified"))
    warnings: tuple[str, ...] = () if verified else (
        f"The cached {info.filename} was accepted unverified; use --force to fetch a verified copy.",
    )
    live = folder / info.folder
    files = record.get("files")
    whole = live.is_dir() and (
        not isinstance(files, list) or all(isinstance(f, str) and (live / f).is_file() for f in files)
    )
    summary = cache.check_cache(info.name) if whole else None
    if whole and summary is None:
        say(f"Parsing {info.name}")
        try:
            summary = movielens.prepare(info.name)
        except MovierecError as exc:
            log.info("the unpacked %s does not parse (%s); unpacking the archive again", info.name, exc)
        else:
            warnings += _parse_warnings(summary)
    if summary is None:
        say(f"Verifying {info.filename}")
        sha256, md5 = file_hashes(archive)
        if sha256 != record.get("sha256"):
            return None  # the archive changed since it was fetched: fetch it again
        try:
            result = _install(
                info, archive, sha256, md5, str(record.get("source")), verified, warnings, say, record=record
            )
        except OSError as exc:
            raise disk_error(exc, f"unpacking {info.filename} into {folder}") from exc
        return dataclasses.replace(result, already_cached=True)
    return FetchResult(
        name=info.name, path=folder, verified=verified,
        sha256=str(record.get("sha256")), md5=str(record.get("md5")), source=str(record.get("source")),
        already_cached=True, summary=summary, warnings=warnings,
    )


def _parse_warnings(summary: DatasetSummary) -> tuple[str, ...]:
    if not summary.duplicates_dropped:
        return ()
    n = summary.duplicates_dropped
    return (
        f"{summary.name} has {n:,} repeated rating{'s' if n != 1 else ''} (a user rating the same movie again); "
        "only the latest of each was kept.",
    )


def _download_release(
    info: DatasetInfo, base: str, verify: bool, progress: ProgressCallback | None,
    say: StatusCallback, config: DownloadConfig, on_retry: RetryCallback | None,
) -> FetchResult:
    import requests

    folder = paths.dataset_dir(info.name)
    url = info.url(base)
    part = folder / f"{info.filename}.part"
    with requests.Session() as session:
        session.headers["User-Agent"] = f"movierec/{__version__}"
        # Byte ranges must address the file itself, not a compressed rendering of it.
        session.headers["Accept-Encoding"] = "identity"
        expected = None
        if verify:
            expected = expected_checksum(info, session, base, config, on_retry)
        say(f"Downloading {url}")
        download_file(session, url, part, progress=progress, config=config, dataset=info.name, on_retry=on_retry)

    say(f"Verifying {info.filename}")
    sha256, md5 = file_hashes(part)
    try:
        verified, warnings = verify_checksum(info, expected, sha256, md5, verify, url)
    except MovierecError:
        # A complete file with the wrong bytes cannot be resumed into a right one.
        part.unlink(missing_ok=True)
        raise
    try:
        return _install(info, part, sha256, md5, url, verified, warnings, say)
    except OSError as exc:
        # The verified bytes stay as .part (the next attempt's Range request finds them complete).
        raise disk_error(exc, f"unpacking {info.filename} into {folder}") from exc
    except Exception:
        part.unlink(missing_ok=True)
        raise


def _import_file(
    info: DatasetInfo, source: Path, verify: bool, progress: ProgressCallback | None, say: StatusCallback,
) -> FetchResult:
    folder = paths.dataset_dir(info.name)
    expected = None
    if verify:
        expected = expected_checksum_offline(info, source)
    staged = folder / f"{info.filename}.import"
    say(f"Copying {source}")
    try:
        sha256, md5 = copy_hashing(source, staged, progress)
        verified, warnings = verify_checksum(info, expected, sha256, md5, verify, str(source))
        return _install(info, staged, sha256, md5, str(source), verified, warnings, say)
    except OSError as exc:
        raise disk_error(exc, f"importing {source} into {folder}") from exc
    finally:
        staged.unlink(missing_ok=True)


# -------------------------------------------------------------------------------------- installation


def _install(
    info: DatasetInfo, archive: Path, sha256: str, md5: str, source: str, verified: bool,
    warnings: tuple[str, ...], say: StatusCallback, record: dict[str, Any] | None = None,
) -> FetchResult:
    """Unpack ``archive``, parse it and only then let it replace the cached copy (if any).

    ``record`` is the ``download.json`` of the archive being unpacked again, kept as it was.
    """
    from movierec.data import movielens

    folder = paths.dataset_dir(info.name)
    live = folder / info.folder
    say(f"Unpacking {info.filename}")
    extracted = safe_extract(archive, folder, info.folder, info.members, label=info.filename)
    unpacked = sorted(p.name for p in (extracted / info.folder).iterdir() if p.is_file())
    old: Path | None = None
    moved_in = False
    try:
        if live.exists():
            old = Path(tempfile.mkdtemp(prefix=".old-", dir=folder))
            os.replace(live, old / info.folder)
        os.replace(extracted / info.folder, live)
        moved_in = True
        say(f"Parsing {info.name}")
        summary = movielens.prepare(info.name)
    except BaseException:
        # Put the previous copy back exactly as it was; the parsed cache is written atomically by
        # movielens.prepare, so a failed parse left the old one alone.
        if moved_in:
            shutil.rmtree(live, ignore_errors=True)
        if old is not None and (old / info.folder).exists():
            os.replace(old / info.folder, live)
            shutil.rmtree(old, ignore_errors=True)
        raise
    finally:
        shutil.rmtree(extracted, ignore_errors=True)

    os.replace(archive, folder / info.filename)
    record = dict(record) if record is not None else {
        "name": info.name,
        "file": info.filename,
        "size": (folder / info.filename).stat().st_size,
        "sha256": sha256,
        "md5": md5,
        "source": source,
        "verified": verified,
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "movierec": __version__,
    }
    record["files"] = unpacked
    _write_json_atomic(folder / RECORD_NAME, record)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    # A stale partial download of an older attempt would only be resumed into garbage later.
    (folder / f"{info.filename}.part").unlink(missing_ok=True)
    return FetchResult(
        name=info.name, path=folder, verified=verified, sha256=sha256, md5=md5, source=source,
        already_cached=False, summary=summary, warnings=warnings + _parse_warnings(summary),
    )


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0].rstrip(".") if lines else type(exc).__name__


# ------------------------------------------------------------------------------------ files and locks


def _write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def _clean_leftovers(folder: Path) -> None:
    """Remove temporary folders a killed process left behind (we hold the lock, so none is in use)."""
    for leftover in folder.glob(".extract-*"):
        shutil.rmtree(leftover, ignore_errors=True)
    for leftover in folder.glob(".old-*"):
        shutil.rmtree(leftover, ignore_errors=True)
    for leftover in folder.glob("*.zip.import"):
        leftover.unlink(missing_ok=True)


@contextlib.contextmanager
def _locked(name: str, *, wait: bool, on_wait: StatusCallback | None = None) -> Iterator[None]:
    """Hold the dataset's lock; ``wait=False`` raises :class:`_Busy` instead of waiting.

    The lock file lives beside (not inside) the dataset folder, so removing the folder never
    pulls a lock out from under a waiting process. The operating system releases it when a
    process dies, so a killed fetch never leaves a dataset locked.
    """
    import filelock

    lock_path = paths.datasets_dir() / f".{name}.lock"
    try:
        lock_path.parent.mkdir(parents=True, exist_ok=True)
        lock = filelock.FileLock(lock_path)
        try:
            lock.acquire(timeout=0)
        except filelock.Timeout:
            if not wait:
                raise _Busy(name) from None
            if on_wait:
                on_wait(f"Waiting for another movierec process to finish with {name}")
            lock.acquire(timeout=-1)
    except OSError as exc:
        raise MovierecError(f"Cannot write to {lock_path.parent}: {exc.strerror or exc}.") from exc
    try:
        yield
    finally:
        lock.release()
