"""Getting an archive's bytes: streamed over HTTP with retries and resumes, or copied from a file, and checked.

:func:`download_file` streams a URL into a ``.part`` file, resuming what it already holds with an HTTP Range,
retrying timeouts, cut or stalled connections and 5xx answers, and failing at once for a host that cannot be
reached. :func:`expected_checksum` finds what the archive must match (the registry's checksum or GroupLens'
published ``.md5``) and :func:`verify_checksum` holds the bytes to it.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import re
import socket
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO
from urllib.parse import urlsplit

from movierec.errors import MovierecError

if TYPE_CHECKING:
    import requests

    from movierec.data.registry import DatasetInfo

log = logging.getLogger(__name__)

ENV_MIRROR = "MOVIEREC_MIRROR"

ProgressCallback = Callable[[int, "int | None"], None]
"""Called as ``progress(bytes_so_far, total_bytes_or_None)`` while an archive is transferred."""
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


class _Retryable(Exception):
    """A transient failure worth another attempt: a timeout, a cut or stalled transfer, a 5xx answer."""

    def __init__(self, message: str, *, connect_failure: bool = False):
        super().__init__(message)
        self.connect_failure = connect_failure


class _Unreachable(Exception):
    """The host cannot be reached at all (no such name, connection refused, no route): not worth retrying."""


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


def expected_checksum(
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


def expected_checksum_offline(info: DatasetInfo, source: Path) -> tuple[str, str]:
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


def verify_checksum(
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
            raise disk_error(exc, f"writing {part}", kept=part if keep_partial else None) from exc
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


def _reason(exc: BaseException) -> str:
    """The innermost, most specific cause of a requests / urllib3 error, on one line."""
    inner: BaseException = exc
    while inner.__context__ is not None and inner.__context__ is not inner:
        inner = inner.__context__
    text = str(inner) or type(inner).__name__
    text = re.sub(r"<[^>]*>:?\s*", "", text)  # drop "<urllib3.connection.HTTPConnection object at 0x..>"
    return " ".join(text.split()).rstrip(".")


def copy_hashing(source: Path, dest: Path, progress: ProgressCallback | None) -> tuple[str, str]:
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


def disk_error(exc: OSError, doing: str, kept: Path | None = None) -> MovierecError:
    if exc.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)):
        what = f"; the partial download is kept at {kept} and the next attempt resumes it" if kept else ""
        return MovierecError(f"The disk is full while {doing}; free some space and try again{what}.")
    return MovierecError(f"Error while {doing}: {exc.strerror or exc}.")
