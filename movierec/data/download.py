"""Getting MovieLens releases onto disk: streamed, resumable, verified, atomic, safely unpacked.

Per dataset, :func:`movierec.paths.dataset_dir` holds::

    NAME.zip         the verified archive
    NAME.zip.part    an incomplete download, kept so the next attempt resumes it with an HTTP Range
    <info.folder>/   the unpacked release, parsed by :mod:`movierec.data.movielens`
    download.json    where the zip came from, its sha256 / md5, whether it was verified, when

A cached copy is only ever replaced after its successor has been downloaded, verified, unpacked and
parsed, so a failed ``--force`` leaves the old copy usable. Library code never prints: progress and
status go to optional callbacks, warnings come back in :class:`FetchResult`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import hashlib
import json
import logging
import os
import re
import shutil
import socket
import stat
import tempfile
import time
import uuid
import zipfile
import zlib
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, BinaryIO
from urllib.parse import urlsplit

from movierec import paths
from movierec.data.catalog import IMPORT_RECORD, get_dataset_info, imported_names
from movierec.data.registry import BASE_URL, DATASETS, DatasetInfo
from movierec.errors import MovierecError
from movierec.version import __version__

if TYPE_CHECKING:
    import requests

    from movierec.data.movielens import DatasetSummary

log = logging.getLogger(__name__)

ENV_MIRROR = "MOVIEREC_MIRROR"
RECORD_NAME = "download.json"
_TRASH_PREFIX = ".removing-"

ProgressCallback = Callable[[int, "int | None"], None]
"""Called as ``progress(bytes_so_far, total_bytes_or_None)`` while an archive is transferred."""
StatusCallback = Callable[[str], None]
"""Called with a short sentence when a slow step starts (waiting for a lock, verifying, unpacking...)."""
RetryCallback = Callable[[float, int, int, str], None]
"""Called as ``retry(delay_seconds, next_attempt, attempts, reason)`` before waiting to try a transfer again."""


@dataclass(frozen=True)
class DownloadConfig:
    """How patient a download is."""

    connect_timeout: float = 15.0
    """Seconds to wait for a TCP connection."""
    read_timeout: float = 60.0
    """Seconds to wait for the next bytes of a response before treating the connection as dead."""
    retries: int = 4
    """Extra attempts after a timeout, a dropped or stalled connection or a 5xx answer; an attempt that
    moves the download on by at least :data:`STALL_MIN_BYTES` earns a fresh set."""
    backoff: float = 1.0
    """Seconds before the first retry; doubled for each further one."""
    chunk_size: int = 1 << 16
    """Bytes read from the socket per write to disk."""


DEFAULT_CONFIG = DownloadConfig()

STALL_WINDOW = 30.0
"""Seconds over which a response must deliver :data:`STALL_MIN_BYTES`, or it is dropped as stalled."""
STALL_MIN_BYTES = 64 * 1024
"""Fewest bytes per :data:`STALL_WINDOW` (about 2 KB/s): a server trickling less is treated as dead."""
MAX_CHECKSUM_BYTES = 4096
"""Largest ``.md5`` file accepted; GroupLens' are one line."""
MAX_UNPACKED_BYTES = 4 * 1024**3
"""Most bytes unpacked from one archive (ML-32M's files movierec reads are about 1 GB)."""
MAX_EXPANSION_RATIO = 50
"""Most a member may inflate; MovieLens text compresses 3-5 fold, a zero-filled zip bomb 1000-fold."""
_EXPANSION_FLOOR = 1 << 20
"""Tiny members may compress better than any ratio; up to this many bytes each is never a bomb."""


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


class _Retryable(Exception):
    """A transient failure worth another attempt: a timeout, a cut or stalled transfer, a 5xx answer."""

    def __init__(self, message: str, *, connect_failure: bool = False):
        super().__init__(message)
        self.connect_failure = connect_failure


class _Unreachable(Exception):
    """The host cannot be reached at all (no such name, connection refused, no route): not worth retrying."""


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
    config = config or DEFAULT_CONFIG
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
        from movierec.data import movielens

        return movielens.summary(info.name) is not None
    return read_record(info.name) is not None and (folder / info.folder).is_dir()


def dataset_status(name: str) -> DatasetStatus:
    """Cached or not, size on disk and, once parsed, how many users / movies / ratings."""
    from movierec.data import movielens

    info = get_dataset_info(name)
    folder = paths.dataset_dir(info.name)
    record = read_record(info.name)
    cached = is_cached(info.name)
    summary = movielens.summary(info.name) if cached else None
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


def file_hashes(path: Path, chunk_size: int = 1 << 20) -> tuple[str, str]:
    """``(sha256, md5)`` of a file, read once."""
    sha256, md5 = hashlib.sha256(), hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as fh:
        while chunk := fh.read(chunk_size):
            sha256.update(chunk)
            md5.update(chunk)
    return sha256.hexdigest(), md5.hexdigest()


def download_file(
    session: requests.Session,
    url: str,
    part: Path,
    *,
    progress: ProgressCallback | None = None,
    config: DownloadConfig = DEFAULT_CONFIG,
    dataset: str = "NAME",
    on_retry: RetryCallback | None = None,
    limit: int | None = None,
    keep_partial: bool = True,
) -> None:
    """Stream ``url`` into ``part``, resuming whatever ``part`` already holds, retrying transient failures.

    On success ``part`` holds the whole response body. On failure ``part`` keeps the bytes received so
    far (a correct prefix), so calling again resumes; the error is a one-sentence MovierecError, which
    says so when ``keep_partial`` (the caller keeps ``part``). A host that cannot be reached at all fails
    at once; a body longer than ``limit`` bytes is refused. Retries are counted while the download makes
    no progress: an attempt that gets :data:`STALL_MIN_BYTES` further than any before starts the count again.
    """
    failures = 0
    best = part.stat().st_size if part.exists() else 0
    ever_connected = False
    while True:
        try:
            _download_once(session, url, part, progress, config, limit, keep_partial)
            return
        except _Unreachable as exc:
            raise MovierecError(_unreachable_message(url, str(exc), dataset)) from None
        except _Retryable as exc:
            ever_connected = ever_connected or not exc.connect_failure
            have = part.stat().st_size if part.exists() else 0
            if have >= best + STALL_MIN_BYTES:
                failures = 0
            best = max(best, have)
            if failures >= config.retries:
                if not ever_connected:
                    raise MovierecError(_unreachable_message(url, str(exc), dataset)) from None
                kept = ""
                if keep_partial and have:
                    kept = f"; the {have:,} bytes received are kept and the next attempt resumes"
                raise MovierecError(f"Download of {url} failed: {exc}{kept}.") from None
            delay = config.backoff * 2**failures
            failures += 1
            log.info("retrying %s in %.1fs (attempt %d): %s", url, delay, failures + 1, exc)
            if on_retry:
                on_retry(delay, failures + 1, config.retries + 1, str(exc))
            time.sleep(delay)


def _unreachable_message(url: str, reason: str, dataset: str) -> str:
    return (
        f"Cannot reach {urlsplit(url).netloc} ({reason}); without network access, download the archive "
        f"elsewhere and run 'movierec fetch {dataset} --from-file PATH', or point --mirror or ${ENV_MIRROR} "
        "at a reachable copy."
    )


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
    from movierec.data import movielens

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
    summary = movielens.check_cache(info.name) if whole else None
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
            raise _disk_error(exc, f"unpacking {info.filename} into {folder}") from exc
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
            expected = _expected_checksum(info, session, base, config, on_retry)
        say(f"Downloading {url}")
        download_file(session, url, part, progress=progress, config=config, dataset=info.name, on_retry=on_retry)

    say(f"Verifying {info.filename}")
    sha256, md5 = file_hashes(part)
    try:
        verified, warnings = _verify(info, expected, sha256, md5, verify, url)
    except MovierecError:
        # A complete file with the wrong bytes cannot be resumed into a right one.
        part.unlink(missing_ok=True)
        raise
    try:
        return _install(info, part, sha256, md5, url, verified, warnings, say)
    except OSError as exc:
        # The verified bytes stay as .part (the next attempt's Range request finds them complete).
        raise _disk_error(exc, f"unpacking {info.filename} into {folder}") from exc
    except Exception:
        part.unlink(missing_ok=True)
        raise


def _import_file(
    info: DatasetInfo, source: Path, verify: bool, progress: ProgressCallback | None, say: StatusCallback,
) -> FetchResult:
    folder = paths.dataset_dir(info.name)
    expected = None
    if verify:
        expected = _expected_checksum_offline(info, source)
    staged = folder / f"{info.filename}.import"
    say(f"Copying {source}")
    try:
        sha256, md5 = _copy_hashing(source, staged, progress)
        verified, warnings = _verify(info, expected, sha256, md5, verify, str(source))
        return _install(info, staged, sha256, md5, str(source), verified, warnings, say)
    except OSError as exc:
        raise _disk_error(exc, f"importing {source} into {folder}") from exc
    finally:
        staged.unlink(missing_ok=True)


def _expected_checksum(
    info: DatasetInfo, session: requests.Session, base: str, config: DownloadConfig,
    on_retry: RetryCallback | None,
) -> tuple[str, str]:
    """``(algorithm, hex digest)`` the archive must match: the registry's, or the published ``.md5``."""
    if info.sha256:
        return "sha256", info.sha256
    if info.md5:
        return "md5", info.md5
    md5_url = info.md5_url(base)
    with tempfile.TemporaryDirectory() as tmp:
        md5_file = Path(tmp) / f"{info.filename}.md5"
        download_file(
            session, md5_url, md5_file, config=config, dataset=info.name, on_retry=on_retry,
            limit=MAX_CHECKSUM_BYTES, keep_partial=False,
        )
        return "md5", _parse_md5(md5_file.read_text(encoding="utf-8", errors="replace"), md5_url)


def _expected_checksum_offline(info: DatasetInfo, source: Path) -> tuple[str, str]:
    """The checksum for an imported file: the registry's, else a ``.md5`` file lying beside it."""
    if info.sha256:
        return "sha256", info.sha256
    if info.md5:
        return "md5", info.md5
    sidecar = source.with_name(source.name + ".md5")
    if sidecar.is_file():
        with open(sidecar, "rb") as fh:
            text = fh.read(MAX_CHECKSUM_BYTES + 1)
        if len(text) > MAX_CHECKSUM_BYTES:
            raise MovierecError(f"{sidecar} is longer than the {MAX_CHECKSUM_BYTES:,} bytes of a checksum file.")
        return "md5", _parse_md5(text.decode("utf-8", errors="replace"), str(sidecar))
    raise MovierecError(
        f"{info.name} is re-published over time, so its checksum is not known offline; put "
        f"{info.filename}.md5 from GroupLens next to {source}, or pass --no-verify to use the file unverified."
    )


def _parse_md5(text: str, where: str) -> str:
    # GroupLens publishes "MD5 (name.zip) = hex"; md5sum writes "hex  name.zip". Accept either.
    match = re.search(r"\b[0-9a-fA-F]{32}\b", text)
    if not match:
        raise MovierecError(f"{where} does not contain an md5 checksum.")
    return match.group(0).lower()


def _verify(
    info: DatasetInfo, expected: tuple[str, str] | None, sha256: str, md5: str, verify: bool, source: str,
) -> tuple[bool, tuple[str, ...]]:
    """``(verified, warnings)``; a mismatch is an error unless ``verify`` is off."""
    if expected is None:
        known = info.sha256 or info.md5
        actual = sha256 if info.sha256 else md5
        if known and actual == known:
            return True, ()
        return False, (f"{info.filename} was not verified (--no-verify); recorded as unverified.",)
    algorithm, want = expected
    got = sha256 if algorithm == "sha256" else md5
    if got == want.lower():
        return True, ()
    raise MovierecError(
        f"Checksum mismatch for {info.filename} from {source}: expected {algorithm} {want} but got {got}; "
        f"the archive was not installed (use another source, or --no-verify to accept it anyway)."
    )


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


# ------------------------------------------------------------------------------------------ transfers


def _download_once(
    session: requests.Session, url: str, part: Path, progress: ProgressCallback | None, config: DownloadConfig,
    limit: int | None, keep_partial: bool,
) -> None:
    """One attempt: ask for what ``part`` lacks and append the body to it; a failure worth retrying is
    :class:`_Retryable`, one that is not a :class:`MovierecError`."""
    have = part.stat().st_size if part.exists() else 0
    with _request(session, url, have, config) as response:
        offset = _resumed_at(response, url, part, have)
        if offset is None:  # the .part is already whole
            if progress:
                progress(have, have)
            return
        # 200 means the server ignored (or was not sent) the Range header: the body starts at byte 0.
        length = response.headers.get("Content-Length")
        total = offset + int(length) if length and length.isdigit() else None
        if limit is not None and total is not None and total > limit:
            raise _too_long(url, limit)
        try:
            with open(part, "ab" if offset else "wb") as out:
                done = _stream_body(response, out, url, offset, total, progress, config, limit)
        except OSError as exc:
            raise _disk_error(exc, f"writing {part}", kept=part if keep_partial else None) from exc
        if total is not None and done != total:
            raise _Retryable(f"the connection broke after {done:,} of {total:,} bytes")


def _request(session: requests.Session, url: str, have: int, config: DownloadConfig) -> requests.Response:
    """The streamed response for ``url`` from byte ``have`` on; a failure to connect is sorted into
    unreachable (not retried) and retryable."""
    import requests

    headers = {"Range": f"bytes={have}-"} if have else {}
    try:
        return session.get(url, headers=headers, stream=True, timeout=(config.connect_timeout, config.read_timeout))
    except requests.exceptions.ConnectionError as exc:  # refused, DNS, no route, connect timeout
        if _is_unreachable(exc):
            raise _Unreachable(_reason(exc)) from None
        raise _Retryable(_reason(exc), connect_failure=True) from None
    except requests.exceptions.RequestException as exc:
        raise _Retryable(_reason(exc)) from None


def _resumed_at(response: requests.Response, url: str, part: Path, have: int) -> int | None:
    """The byte the response's body starts at, judged by its status (None: nothing is left to fetch)."""
    code = response.status_code
    if code == 416 and have:
        # Nothing left after our offset: either the .part is already whole, or it is longer than
        # the file now served (a different upload) and has to start over.
        if _total_from_content_range(response.headers.get("Content-Range", "")) == have:
            return None
        part.unlink()
        raise _Retryable("the partial download did not match the file on the server; restarting")
    if code == 404:
        raise MovierecError(f"Not found (HTTP 404): {url}.")
    if code >= 500:
        raise _Retryable(f"HTTP {code} {response.reason or ''}".strip())
    if code not in (200, 206):
        raise MovierecError(f"Downloading {url} failed with HTTP {code} {response.reason or ''}".strip() + ".")
    if code == 200:
        return 0
    offset = _start_from_content_range(response.headers.get("Content-Range", ""))
    if offset != have:
        part.unlink(missing_ok=True)
        raise _Retryable(f"the server resumed at byte {offset} instead of {have}; restarting")
    return offset


def _stream_body(
    response: requests.Response, out: BinaryIO, url: str, done: int, total: int | None,
    progress: ProgressCallback | None, config: DownloadConfig, limit: int | None,
) -> int:
    """Append the body to ``out`` as it arrives, from byte ``done``; the bytes written by the end.

    read1 returns whatever has arrived, so every byte received is on disk when the connection breaks, and a
    trickle is noticed: the body must bring STALL_MIN_BYTES every STALL_WINDOW.
    """
    if progress:
        progress(done, total)
    raw = response.raw
    read = getattr(raw, "read1", None) or raw.read
    transfer_errors = _transfer_errors()
    window_start, window_bytes = time.monotonic(), 0
    while True:
        try:
            chunk = read(config.chunk_size)
        except transfer_errors as exc:  # connection dropped or timed out mid-body
            raise _Retryable(f"the connection broke after {done:,} bytes ({_reason(exc)})") from None
        if not chunk:
            return done
        out.write(chunk)
        done += len(chunk)
        window_bytes += len(chunk)
        if limit is not None and done > limit:
            raise _too_long(url, limit)
        if progress:
            progress(done, total)
        now = time.monotonic()
        if now - window_start >= STALL_WINDOW:
            if window_bytes < STALL_MIN_BYTES:
                raise _Retryable(f"the transfer stalled after {done:,} bytes (only {window_bytes:,} bytes in "
                                 f"{now - window_start:.0f} s)")
            window_start, window_bytes = now, 0


def _too_long(url: str, limit: int) -> MovierecError:
    return MovierecError(f"{url} is longer than the {limit:,} bytes expected of it; refusing to download it.")


def _transfer_errors() -> tuple[type[BaseException], ...]:
    import http.client

    import requests
    import urllib3

    return (urllib3.exceptions.HTTPError, requests.exceptions.RequestException, http.client.HTTPException, OSError)


def _is_unreachable(exc: BaseException) -> bool:
    """True when ``exc`` comes from a failed name lookup, a refused connection or a missing route."""
    pending: list[object] = [exc]
    seen: set[int] = set()
    while pending:
        inner = pending.pop()
        if not isinstance(inner, BaseException) or id(inner) in seen:
            continue
        seen.add(id(inner))
        if isinstance(inner, (socket.gaierror, ConnectionRefusedError)):
            return True
        if isinstance(inner, OSError) and inner.errno in (errno.ENETUNREACH, errno.EHOSTUNREACH):
            return True
        # urllib3 keeps the cause of a failed connection in ``reason`` as well as in the exception chain.
        pending += [inner.__cause__, inner.__context__, getattr(inner, "reason", None)]
    return False


def _start_from_content_range(value: str) -> int:
    match = re.match(r"\s*bytes\s+(\d+)-\d+/(\d+|\*)", value)
    return int(match.group(1)) if match else -1


def _total_from_content_range(value: str) -> int | None:
    match = re.match(r"\s*bytes\s+(?:\*|\d+-\d+)/(\d+)", value)
    return int(match.group(1)) if match else None


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0].rstrip(".") if lines else type(exc).__name__


def _reason(exc: BaseException) -> str:
    """The innermost, most specific cause of a requests / urllib3 error, on one line."""
    inner: BaseException = exc
    while inner.__context__ is not None and inner.__context__ is not inner:
        inner = inner.__context__
    text = str(inner) or type(inner).__name__
    text = re.sub(r"<[^>]*>:?\s*", "", text)  # drop "<urllib3.connection.HTTPConnection object at 0x..>"
    return " ".join(text.split()).rstrip(".")


def _copy_hashing(source: Path, dest: Path, progress: ProgressCallback | None) -> tuple[str, str]:
    """Copy ``source`` to ``dest`` and return ``(sha256, md5)`` of the bytes written, in one pass."""
    sha256, md5 = hashlib.sha256(), hashlib.md5(usedforsecurity=False)
    total = source.stat().st_size
    done = 0
    with open(source, "rb") as src, open(dest, "wb") as out:
        while chunk := src.read(1 << 20):
            out.write(chunk)
            sha256.update(chunk)
            md5.update(chunk)
            done += len(chunk)
            if progress:
                progress(done, total)
    return sha256.hexdigest(), md5.hexdigest()


def _disk_error(exc: OSError, doing: str, kept: Path | None = None) -> MovierecError:
    if exc.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)):
        what = f"; the partial download is kept at {kept} and the next attempt resumes it" if kept else ""
        return MovierecError(f"The disk is full while {doing}; free some space and try again{what}.")
    return MovierecError(f"Error while {doing}: {exc.strerror or exc}.")


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
