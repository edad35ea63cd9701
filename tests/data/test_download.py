"""Downloading, verifying, unpacking and caching releases, against a real HTTP server on 127.0.0.1."""

from __future__ import annotations

import dataclasses
import errno
import hashlib
import io
import json
import os
import socket
import stat
import threading
import time
import zipfile
from pathlib import Path

import pytest
from conftest import ML100K_SHA256
from httpserver import Cut, Endless, FileServer, Gate, IgnoreRange, Status, Trickle

from movierec import paths
from movierec.data import archive, download, transfer
from movierec.data.registry import DATASETS
from movierec.errors import MovierecError

OFFICIAL_100K_SHA256 = DATASETS["ml-100k"].sha256
FAST = transfer.DownloadConfig(connect_timeout=5, read_timeout=10, retries=3, backoff=0.001, chunk_size=1 << 14)


# ---------------------------------------------------------------------------------------------- helpers


def make_zip(members: dict[str, bytes], symlinks: dict[str, str] | None = None) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
        for name, target in (symlinks or {}).items():
            info = zipfile.ZipInfo(name)
            info.create_system = 3  # unix, so external_attr carries the file type
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            zf.writestr(info, target)
    return buf.getvalue()


def csv_release(folder: str = "ml-latest-small", n_users: int = 4) -> bytes:
    """A tiny release in the official csv layout (ratings.csv + movies.csv)."""
    ratings = ["userId,movieId,rating,timestamp"]
    for user in range(1, n_users + 1):
        for movie in (1, 2, 3):
            ratings.append(f"{user},{movie},{(user + movie) % 5 + 0.5},{964982703 + user * 10 + movie}")
    movies = (
        "movieId,title,genres\n1,Toy Story (1995),Adventure|Animation\n2,Jumanji (1995),Adventure\n"
        "3,Heat (1995),Action\n"
    )
    return make_zip({
        f"{folder}/": b"",
        f"{folder}/ratings.csv": ("\n".join(ratings) + "\n").encode(),
        f"{folder}/movies.csv": movies.encode(),
    })


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def tree(path: Path) -> dict[str, bytes]:
    """Every file under ``path`` with its bytes, to compare states before and after."""
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def server(monkeypatch):
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(var, raising=False)
    with FileServer() as srv:
        yield srv


@pytest.fixture
def real_100k(monkeypatch, ml100k_zip) -> bytes:
    """The real ml-100k archive, with the registry trusting its (rebuilt) sha256."""
    monkeypatch.setitem(DATASETS, "ml-100k", dataclasses.replace(DATASETS["ml-100k"], sha256=ML100K_SHA256))
    return ml100k_zip.read_bytes()


@pytest.fixture
def fast(monkeypatch):
    monkeypatch.setattr(transfer, "DEFAULT_CONFIG", FAST)
    return FAST


def installed(name: str = "ml-100k") -> Path:
    return paths.dataset_dir(name)


# ------------------------------------------------------------------------------------------ downloads


def test_full_download_verifies_unpacks_parses_and_records(home, server, real_100k):
    server.serve("/ml-100k.zip", real_100k)
    seen: list[tuple[int, int | None]] = []
    messages: list[str] = []
    result = download.fetch(
        "ml-100k", mirror=server.url(), config=FAST, progress=lambda d, t: seen.append((d, t)),
        status=messages.append,
    )
    folder = installed()
    assert (result.summary.users, result.summary.items, result.summary.ratings) == (943, 1682, 100_000)
    assert result.verified and not result.already_cached and result.warnings == ()
    assert result.sha256 == ML100K_SHA256
    assert (folder / "ml-100k.zip").read_bytes() == real_100k
    assert (folder / "ml-100k" / "u.data").stat().st_size == 1_979_173
    assert not (folder / "ml-100k.zip.part").exists()
    assert [p.name for p in folder.iterdir() if p.name.startswith(".")] == []
    record = json.loads((folder / "download.json").read_text())
    assert record["sha256"] == ML100K_SHA256 and record["verified"] is True
    assert record["md5"] == hashlib.md5(real_100k).hexdigest()
    assert record["source"] == server.url("/ml-100k.zip")
    done = [d for d, _ in seen]
    assert done == sorted(done) and done[-1] == len(real_100k) and seen[-1][1] == len(real_100k)
    assert any(m.startswith("Verifying") for m in messages)
    assert "Range" not in server.requests_for("/ml-100k.zip")[0].headers

    again = download.fetch("ml-100k", mirror=server.url(), config=FAST)
    assert again.already_cached and again.summary.ratings == 100_000
    assert len(server.requests_for("/ml-100k.zip")) == 1  # nothing downloaded the second time


def test_mirror_from_environment(home, server, monkeypatch):
    data = csv_release()
    server.serve("/m/ml-latest-small.zip", data)
    server.serve("/m/ml-latest-small.zip.md5", f"{hashlib.md5(data).hexdigest()}  ml-latest-small.zip\n".encode())
    monkeypatch.setenv("MOVIEREC_MIRROR", server.url("/m/"))
    result = download.fetch("ml-latest-small", config=FAST)
    assert result.verified and result.source == server.url("/m/ml-latest-small.zip")


def test_mirror_must_be_http(home):
    with pytest.raises(MovierecError, match="not an http"):
        download.fetch("ml-100k", mirror="ftp://example.org/movielens")


def test_resume_within_one_fetch_after_the_connection_is_cut(home, server, real_100k):
    half = len(real_100k) // 2
    server.serve("/ml-100k.zip", real_100k)
    server.fail("/ml-100k.zip", Cut(half))
    result = download.fetch("ml-100k", mirror=server.url(), config=FAST)
    requests = server.requests_for("/ml-100k.zip")
    assert len(requests) == 2 and requests[1].status == 206
    assert requests[1].headers["Range"] == f"bytes={half}-"  # every byte received before the cut was kept
    assert (installed() / "ml-100k.zip").read_bytes() == real_100k
    assert result.verified and result.summary.ratings == 100_000


def test_interrupted_download_resumes_on_the_next_fetch(home, server, real_100k):
    cut = 1_234_567
    server.serve("/ml-100k.zip", real_100k)
    server.fail("/ml-100k.zip", Cut(cut))
    no_retry = dataclasses.replace(FAST, retries=0)
    with pytest.raises(MovierecError, match="next attempt resumes"):
        download.fetch("ml-100k", mirror=server.url(), config=no_retry)
    part = installed() / "ml-100k.zip.part"
    kept = part.read_bytes()
    assert kept == real_100k[:cut]
    assert not (installed() / "ml-100k.zip").exists() and not (installed() / "download.json").exists()

    download.fetch("ml-100k", mirror=server.url(), config=no_retry)
    second = server.requests_for("/ml-100k.zip")[1]
    assert second.headers["Range"] == f"bytes={len(kept)}-" and second.status == 206
    assert (installed() / "ml-100k.zip").read_bytes() == real_100k
    assert not part.exists()


def test_server_ignoring_range_restarts_from_zero(home, server):
    data = csv_release()
    server.serve("/ml-latest-small.zip", data)
    server.serve("/ml-latest-small.zip.md5", f"MD5 (ml-latest-small.zip) = {hashlib.md5(data).hexdigest()}\n".encode())
    folder = installed("ml-latest-small")
    folder.mkdir(parents=True)
    (folder / "ml-latest-small.zip.part").write_bytes(data[:100])
    server.fail("/ml-latest-small.zip", IgnoreRange())
    result = download.fetch("ml-latest-small", mirror=server.url(), config=FAST)
    request = server.requests_for("/ml-latest-small.zip")[0]
    assert request.headers["Range"] == "bytes=100-" and request.status == 200
    assert (folder / "ml-latest-small.zip").read_bytes() == data  # not the 100 old bytes + the whole file
    assert result.verified


def test_complete_part_file_is_finished_with_a_416(home, server):
    data = csv_release()
    server.serve("/ml-latest-small.zip", data)
    server.serve("/ml-latest-small.zip.md5", hashlib.md5(data).hexdigest().encode())
    folder = installed("ml-latest-small")
    folder.mkdir(parents=True)
    (folder / "ml-latest-small.zip.part").write_bytes(data)
    result = download.fetch("ml-latest-small", mirror=server.url(), config=FAST)
    assert [r.status for r in server.requests_for("/ml-latest-small.zip")] == [416]
    assert result.verified and result.summary.ratings == 12


def test_part_file_longer_than_the_served_file_restarts(home, server):
    data = csv_release()
    server.serve("/ml-latest-small.zip", data)
    server.serve("/ml-latest-small.zip.md5", hashlib.md5(data).hexdigest().encode())
    folder = installed("ml-latest-small")
    folder.mkdir(parents=True)
    (folder / "ml-latest-small.zip.part").write_bytes(data + b"stale bytes of an older upload")
    download.fetch("ml-latest-small", mirror=server.url(), config=FAST)
    assert [r.status for r in server.requests_for("/ml-latest-small.zip")] == [416, 200]
    assert (folder / "ml-latest-small.zip").read_bytes() == data


def test_503_is_retried_with_backoff(home, server, monkeypatch):
    data = csv_release()
    server.serve("/ml-latest-small.zip", data)
    server.serve("/ml-latest-small.zip.md5", hashlib.md5(data).hexdigest().encode())
    server.fail("/ml-latest-small.zip", Status(503), Status(503))
    sleeps: list[float] = []
    monkeypatch.setattr(transfer.time, "sleep", sleeps.append)
    config = dataclasses.replace(FAST, backoff=0.5)
    result = download.fetch("ml-latest-small", mirror=server.url(), config=config)
    assert [r.status for r in server.requests_for("/ml-latest-small.zip")] == [503, 503, 200]
    assert sleeps == [0.5, 1.0]  # exponential
    assert result.verified


def test_persistent_503_gives_up_with_one_sentence(home, server):
    server.serve("/ml-latest-small.zip.md5", b"0" * 32)
    server.fail("/ml-latest-small.zip.md5", *[Status(503)] * 10)
    with pytest.raises(MovierecError, match=r"HTTP 503") as err:
        download.fetch("ml-latest-small", mirror=server.url(), config=FAST)
    assert len(server.requests_for("/ml-latest-small.zip.md5")) == FAST.retries + 1
    assert server.url("/ml-latest-small.zip.md5") in str(err.value)


def test_stalled_response_hits_the_read_timeout_and_is_retried(home, server):
    data = csv_release()
    server.serve("/ml-latest-small.zip", data)
    server.serve("/ml-latest-small.zip.md5", hashlib.md5(data).hexdigest().encode())
    never = threading.Event()
    server.fail("/ml-latest-small.zip", Gate(never))  # headers, then silence
    try:
        started = time.monotonic()
        result = download.fetch(
            "ml-latest-small", mirror=server.url(), config=dataclasses.replace(FAST, read_timeout=0.5)
        )
        assert time.monotonic() - started < 10
    finally:
        never.set()
    assert [r.status for r in server.requests_for("/ml-latest-small.zip")] == [200, 200]
    assert result.verified


def test_404_names_the_url(home, server, real_100k):
    with pytest.raises(MovierecError) as err:
        download.fetch("ml-100k", mirror=server.url("/nothing"), config=FAST)
    assert str(err.value) == f"Not found (HTTP 404): {server.url('/nothing/ml-100k.zip')}."
    assert len(server.requests) == 1  # a 404 is not retried
    assert not installed().exists()


def test_no_network_says_what_to_do(home):
    with pytest.raises(MovierecError) as err:
        download.fetch("ml-100k", mirror=f"http://127.0.0.1:{free_port()}", config=FAST)
    message = str(err.value)
    assert message.startswith("Cannot reach 127.0.0.1")
    assert "--from-file" in message and "MOVIEREC_MIRROR" in message and "\n" not in message
    assert not installed().exists()


# ------------------------------------------------------------------------------------------ checksums


def test_checksum_mismatch_names_both_hashes_and_installs_nothing(home, server, ml100k_zip):
    server.serve("/ml-100k.zip", ml100k_zip.read_bytes())  # registry still has the official sha256
    with pytest.raises(MovierecError) as err:
        download.fetch("ml-100k", mirror=server.url(), config=FAST)
    assert f"expected sha256 {OFFICIAL_100K_SHA256} but got {ML100K_SHA256}" in str(err.value)
    assert not installed().exists()  # no .part (a complete bad file cannot be resumed), no zip, no record


def test_checksum_mismatch_leaves_the_cached_copy_intact(home, server, real_100k, ml100k_zip):
    download.fetch("ml-100k", from_file=ml100k_zip)
    before = tree(installed())
    server.serve("/ml-100k.zip", real_100k[:-10] + b"0123456789")
    with pytest.raises(MovierecError, match=f"expected sha256 {ML100K_SHA256} but got"):
        download.fetch("ml-100k", mirror=server.url(), force=True, config=FAST)
    assert tree(installed()) == before
    assert download.fetch("ml-100k").already_cached


def test_md5_file_is_used_for_changing_releases(home, server):
    data = csv_release()
    digest = hashlib.md5(data).hexdigest()
    server.serve("/ml-latest-small.zip", data)
    server.serve("/ml-latest-small.zip.md5", f"MD5 (ml-latest-small.zip) = {digest}\n".encode())
    result = download.fetch("ml-latest-small", mirror=server.url(), config=FAST)
    assert result.verified and result.md5 == digest
    assert [r.path for r in server.requests] == ["/ml-latest-small.zip.md5", "/ml-latest-small.zip"]
    assert (result.summary.users, result.summary.items, result.summary.ratings) == (4, 3, 12)


def test_changing_release_with_wrong_md5_is_rejected(home, server):
    data = csv_release()
    server.serve("/ml-latest-small.zip", data)
    server.serve("/ml-latest-small.zip.md5", b"d41d8cd98f00b204e9800998ecf8427e  ml-latest-small.zip\n")
    with pytest.raises(MovierecError, match=f"expected md5 d41d8cd98f00b204e9800998ecf8427e but got "
                                            f"{hashlib.md5(data).hexdigest()}"):
        download.fetch("ml-latest-small", mirror=server.url(), config=FAST)
    assert not installed("ml-latest-small").exists()


def test_changing_release_without_published_md5(home, server):
    server.serve("/ml-latest-small.zip", csv_release())
    with pytest.raises(MovierecError, match=r"Not found \(HTTP 404\): .*/ml-latest-small\.zip\.md5"):
        download.fetch("ml-latest-small", mirror=server.url(), config=FAST)
    assert [r.path for r in server.requests] == ["/ml-latest-small.zip.md5"]  # failed before the big file
    result = download.fetch("ml-latest-small", mirror=server.url(), config=FAST, verify=False)
    assert not result.verified and "not verified" in result.warnings[0]


# ---------------------------------------------------------------------------------------- --from-file


def test_from_file_is_verified_and_copied_not_moved(home, tmp_path, real_100k, ml100k_zip):
    source = tmp_path / "my copy.zip"
    source.write_bytes(real_100k)
    os.chmod(source, 0o444)
    mtime = source.stat().st_mtime_ns
    result = download.fetch("ml-100k", from_file=source)
    assert result.verified and result.source == str(source) and result.summary.users == 943
    assert source.read_bytes() == real_100k and source.stat().st_mtime_ns == mtime
    assert (installed() / "ml-100k.zip").read_bytes() == real_100k


def test_from_file_mismatch_is_an_error_and_keeps_the_source(home, ml100k_zip):
    with pytest.raises(MovierecError) as err:
        download.fetch("ml-100k", from_file=ml100k_zip)
    assert f"expected sha256 {OFFICIAL_100K_SHA256} but got {ML100K_SHA256}" in str(err.value)
    assert ml100k_zip.is_file() and sha256(ml100k_zip.read_bytes()) == ML100K_SHA256
    assert not installed().exists()


def test_from_file_no_verify_accepts_with_a_warning(home, ml100k_zip):
    result = download.fetch("ml-100k", from_file=ml100k_zip, verify=False)
    assert not result.verified and result.warnings and "not verified" in result.warnings[0]
    assert json.loads((installed() / "download.json").read_text())["verified"] is False
    assert result.summary.ratings == 100_000
    assert download.dataset_status("ml-100k").verified is False


def test_from_file_changing_release_uses_a_sidecar_md5(home, tmp_path):
    data = csv_release()
    source = tmp_path / "ml-latest-small.zip"
    source.write_bytes(data)
    with pytest.raises(MovierecError, match="--no-verify"):
        download.fetch("ml-latest-small", from_file=source)
    Path(f"{source}.md5").write_text(f"{hashlib.md5(data).hexdigest()}  ml-latest-small.zip\n")
    assert download.fetch("ml-latest-small", from_file=source).verified


def test_from_file_missing(home, tmp_path):
    with pytest.raises(MovierecError, match="does not exist"):
        download.fetch("ml-100k", from_file=tmp_path / "nope.zip")


# ------------------------------------------------------------------------------------- bad archives


@pytest.mark.parametrize(
    ("members", "symlinks", "message"),
    [
        ({"ml-latest-small/ratings.csv": b"x", "ml-latest-small/../../escaped.txt": b"x"}, None, "unsafe path"),
        ({"ml-latest-small/ratings.csv": b"x", "/tmp/escaped-absolute.txt": b"x"}, None, "unsafe path"),
        ({"ml-latest-small/ratings.csv": b"x", "ml-latest-small\\..\\..\\escaped.txt": b"x"}, None, "unsafe"),
        ({"ml-latest-small/ratings.csv": b"x"}, {"ml-latest-small/link": "/etc/passwd"}, "symbolic link"),
    ],
)
def test_zip_slip_archives_are_refused(home, tmp_path, members, symlinks, message):
    source = tmp_path / "evil.zip"
    source.write_bytes(make_zip(members, symlinks))
    with pytest.raises(MovierecError, match=message):
        download.fetch("ml-latest-small", from_file=source, verify=False)
    assert not list(tmp_path.rglob("escaped*")) and not Path("/tmp/escaped-absolute.txt").exists()
    assert not installed("ml-latest-small").exists()


def test_truncated_zip_is_refused(home, tmp_path, ml100k_zip):
    source = tmp_path / "ml-100k.zip"
    source.write_bytes(ml100k_zip.read_bytes()[:2_000_000])
    with pytest.raises(MovierecError, match="not a valid zip archive"):
        download.fetch("ml-100k", from_file=source, verify=False)
    assert not installed().exists()


def test_corrupted_zip_is_refused(home, tmp_path):
    data = bytearray(make_zip({"ml-latest-small/ratings.csv": os.urandom(4000)}))
    data[200:260] = bytes(60)  # damage the compressed data, keep the central directory
    source = tmp_path / "ml-latest-small.zip"
    source.write_bytes(bytes(data))
    with pytest.raises(MovierecError, match="corrupted"):
        download.fetch("ml-latest-small", from_file=source, verify=False)
    assert not installed("ml-latest-small").exists()


def test_wrong_layout_is_refused(home, tmp_path):
    source = tmp_path / "ml-latest-small.zip"
    source.write_bytes(make_zip({"ratings.csv": b"userId,movieId,rating,timestamp\n", "movies.csv": b""}))
    with pytest.raises(MovierecError, match="expected folder ml-latest-small/"):
        download.fetch("ml-latest-small", from_file=source, verify=False)
    assert not installed("ml-latest-small").exists()


def test_release_folder_without_any_needed_file_is_refused(home, tmp_path):
    source = tmp_path / "ml-latest-small.zip"
    source.write_bytes(make_zip({"ml-latest-small/links.csv": b"movieId,imdbId,tmdbId\n"}))
    with pytest.raises(MovierecError, match=r"has none of the files movierec reads in ml-latest-small/ "
                                            r"\(ratings.csv, movies.csv, tags.csv\)"):
        download.fetch("ml-latest-small", from_file=source, verify=False)
    assert not installed("ml-latest-small").exists()


def test_release_that_does_not_parse_is_not_installed(home, tmp_path):
    source = tmp_path / "ml-latest-small.zip"
    source.write_bytes(make_zip({"ml-latest-small/ratings.csv": b"not,a,movielens,file\n"}))
    with pytest.raises(MovierecError):
        download.fetch("ml-latest-small", from_file=source, verify=False)
    assert not installed("ml-latest-small").exists()


# ------------------------------------------------------------------------------------------- --force


def test_force_failure_keeps_the_old_copy(home, server, real_100k, ml100k_zip):
    download.fetch("ml-100k", from_file=ml100k_zip)
    before = tree(installed())
    # 1) the download itself fails
    with pytest.raises(MovierecError, match="404"):
        download.fetch("ml-100k", mirror=server.url(), force=True, config=FAST)
    assert tree(installed()) == before
    # 2) the new archive downloads and unpacks, but its ratings do not parse: rolled back after the swap
    broken = make_zip({"ml-100k/u.data": b"this is not tab separated\n", "ml-100k/u.item": b"", "ml-100k/u.genre": b""})
    server.serve("/ml-100k.zip", broken)
    with pytest.raises(MovierecError):
        download.fetch("ml-100k", mirror=server.url(), force=True, verify=False, config=FAST)
    assert tree(installed()) == before
    cached = download.fetch("ml-100k")
    assert cached.already_cached and cached.summary.users == 943


def test_force_replaces_the_cached_copy(home, server, real_100k, ml100k_zip):
    download.fetch("ml-100k", from_file=ml100k_zip, verify=False)
    server.serve("/ml-100k.zip", real_100k)
    result = download.fetch("ml-100k", mirror=server.url(), force=True, config=FAST)
    assert not result.already_cached and result.verified
    assert json.loads((installed() / "download.json").read_text())["source"] == server.url("/ml-100k.zip")
    assert not any(p.name.startswith((".old-", ".extract-")) for p in installed().iterdir())


# -------------------------------------------------------------------------------------- disk and locks


def test_disk_full_keeps_the_part_file_for_resume(home, server, real_100k, monkeypatch):
    server.serve("/ml-100k.zip", real_100k)
    limit = 1_000_000
    real_open = open

    class FullDisk(io.RawIOBase):
        """A .part file on a disk that fills up after ``limit`` bytes."""

        def __init__(self, path, mode):
            self._f = real_open(path, mode)

        def writable(self):
            return True

        def write(self, data):
            room = limit - self._f.tell()
            if room <= 0:
                raise OSError(errno.ENOSPC, "No space left on device")
            return self._f.write(bytes(data[:room]))

        def close(self):
            self._f.close()
            super().close()

    def fake_open(path, mode="r", *args, **kwargs):
        if str(path).endswith(".part") and "b" in mode and ("a" in mode or "w" in mode):
            return io.BufferedWriter(FullDisk(path, mode.replace("b", "") + "b"))
        return real_open(path, mode, *args, **kwargs)

    monkeypatch.setattr(transfer, "open", fake_open, raising=False)
    with pytest.raises(MovierecError, match="disk is full.*partial download is kept"):
        download.fetch("ml-100k", mirror=server.url(), config=FAST)
    part = installed() / "ml-100k.zip.part"
    kept = part.read_bytes()
    assert 0 < len(kept) <= limit and real_100k.startswith(kept)
    assert not (installed() / "ml-100k.zip").exists() and not (installed() / "download.json").exists()
    assert len(server.requests) == 1  # a full disk is not retried

    monkeypatch.delattr(transfer, "open")  # space freed
    download.fetch("ml-100k", mirror=server.url(), config=FAST)
    assert server.requests[1].headers["Range"] == f"bytes={len(kept)}-"
    assert (installed() / "ml-100k.zip").read_bytes() == real_100k


def test_concurrent_fetches_end_with_one_good_copy(home, server):
    data = csv_release(n_users=50)
    server.serve("/ml-latest-small.zip", data)
    server.serve("/ml-latest-small.zip.md5", hashlib.md5(data).hexdigest().encode())
    gate = threading.Event()
    server.fail("/ml-latest-small.zip", Gate(gate))
    second_waiting = threading.Event()
    results: dict[str, download.FetchResult] = {}
    errors: list[BaseException] = []

    def run(tag: str, status) -> None:
        try:
            results[tag] = download.fetch("ml-latest-small", mirror=server.url(), config=FAST, status=status)
        except BaseException as exc:  # surfaced by the assertions below
            errors.append(exc)

    first = threading.Thread(target=run, args=("first", lambda m: None))
    first.start()
    for _ in range(500):  # the first fetch holds the lock and is mid-download
        if server.requests_for("/ml-latest-small.zip"):
            break
        time.sleep(0.01)
    second = threading.Thread(
        target=run, args=("second", lambda m: second_waiting.set() if m.startswith("Waiting") else None)
    )
    second.start()
    assert second_waiting.wait(10), "the second fetch did not wait for the lock"
    gate.set()
    first.join(30)
    second.join(30)
    assert errors == []
    assert not results["first"].already_cached and results["second"].already_cached
    assert len(server.requests_for("/ml-latest-small.zip")) == 1
    assert (installed("ml-latest-small") / "ml-latest-small.zip").read_bytes() == data
    assert results["second"].summary.users == 50


def test_remove_frees_the_space(home, ml100k_zip):
    with pytest.raises(MovierecError, match="not cached"):
        download.remove("ml-100k")
    download.fetch("ml-100k", from_file=ml100k_zip, verify=False)
    size = download.dataset_status("ml-100k").size_bytes
    assert size and size > ml100k_zip.stat().st_size
    assert download.remove("ml-100k") == size
    assert not installed().exists() and not download.dataset_status("ml-100k").cached
    with pytest.raises(MovierecError, match="Unknown dataset 'ml-7m'; choose one of: ml-100k, ml-1m"):
        download.remove("ml-7m")


def test_remove_refuses_while_a_fetch_holds_the_lock(home, ml100k_zip):
    download.fetch("ml-100k", from_file=ml100k_zip, verify=False)
    with download._locked("ml-100k", wait=False), pytest.raises(MovierecError, match="another movierec process"):
        download.remove("ml-100k")
    assert download.is_cached("ml-100k")


def test_unwritable_home_is_a_one_sentence_error(home, tmp_path, monkeypatch):
    blocker = tmp_path / "a file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("MOVIEREC_HOME", str(blocker))
    with pytest.raises(MovierecError, match="Cannot write to"):
        download.fetch("ml-100k", from_file=blocker)


def test_one_source_at_a_time(home, ml100k_zip):
    with pytest.raises(MovierecError, match="cannot be used together"):
        download.fetch("ml-100k", from_file=ml100k_zip, mirror="http://127.0.0.1:1")


def test_unknown_dataset_lists_valid_names(home):
    with pytest.raises(MovierecError, match="choose one of: ml-100k, ml-1m, ml-10m"):
        download.fetch("ml-3m")


def test_status_of_every_registry_entry(home):
    rows = download.list_datasets()
    assert [r.name for r in rows] == list(DATASETS)
    assert all(not r.cached and r.size_bytes is None and r.users is None for r in rows)


# ------------------------------------------------------------------------------ hostile servers and archives


def bomb_zip(folder: str, name: str, zeros: int, extra: dict[str, bytes] | None = None) -> bytes:
    """A zip whose member ``folder/name`` is ``zeros`` zero bytes (about 1000-fold compressed), plus ``extra``."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for member, data in (extra or {}).items():
            zf.writestr(member, data)
        with zf.open(f"{folder}/{name}", "w", force_zip64=True) as out:
            block = bytes(1 << 20)
            for _ in range(zeros >> 20):
                out.write(block)
    return buf.getvalue()


def test_members_outside_the_layout_are_not_unpacked(home, tmp_path, ml100k_zip):
    # The real release plus 200 MB of zeros (200 KB compressed) under ml-100k/: only u.* and splits unpack.
    with zipfile.ZipFile(ml100k_zip) as zf:
        members = {i.filename: zf.read(i) for i in zf.infolist()}
    source = tmp_path / "ml-100k.zip"
    source.write_bytes(bomb_zip("ml-100k", "padding.bin", 200 << 20, members))
    result = download.fetch("ml-100k", from_file=source, verify=False)
    assert result.summary.ratings == 100_000
    unpacked = sorted(p.name for p in (installed() / "ml-100k").iterdir())
    assert unpacked == sorted(DATASETS["ml-100k"].members)  # no padding.bin, README, allbut.pl or mku.sh
    assert json.loads((installed() / "download.json").read_text())["files"] == unpacked
    assert download.disk_usage(installed()) < 40_000_000


def test_zip_bomb_in_a_needed_member_is_refused_while_unpacking(home, tmp_path, ml100k_zip):
    download.fetch("ml-100k", from_file=ml100k_zip, verify=False)
    before = tree(installed())
    source = tmp_path / "bomb.zip"
    source.write_bytes(bomb_zip("ml-100k", "u.data", 64 << 20))
    with pytest.raises(MovierecError, match=r"ml-100k.zip is not a MovieLens release: ml-100k/u.data inflates more "
                                            r"than 50-fold .*refusing to unpack it"):
        download.fetch("ml-100k", from_file=source, verify=False, force=True)
    assert tree(installed()) == before  # nothing of the bomb is left, the cached copy is untouched


def test_unpacked_size_is_capped(home, ml100k_zip, monkeypatch):
    monkeypatch.setattr(archive, "MAX_UNPACKED_BYTES", 1_000_000)
    with pytest.raises(MovierecError, match=r"ml-100k.zip unpacks to more than 1,000,000 bytes"):
        download.fetch("ml-100k", from_file=ml100k_zip, verify=False)
    assert not installed().exists()


def test_encrypted_member_is_refused(home, tmp_path):
    data = bytearray(csv_release())
    # Set the "encrypted" flag of ratings.csv in its local header and its central directory entry.
    with zipfile.ZipFile(io.BytesIO(bytes(data))) as zf:
        member = zf.getinfo("ml-latest-small/ratings.csv")
    data[member.header_offset + 6] |= 0x1
    central = data.index(b"PK\x01\x02")
    while data[central + 46 : central + 46 + len(member.filename)] != member.filename.encode():
        central = data.index(b"PK\x01\x02", central + 4)
    data[central + 8] |= 0x1
    source = tmp_path / "ml-latest-small.zip"
    source.write_bytes(bytes(data))
    with zipfile.ZipFile(source) as zf, pytest.raises(RuntimeError, match="encrypted"):
        zf.read("ml-latest-small/ratings.csv")  # what unpacking it used to run into
    with pytest.raises(MovierecError, match="encrypted member 'ml-latest-small/ratings.csv'"):
        download.fetch("ml-latest-small", from_file=source, verify=False)
    assert not installed("ml-latest-small").exists()


def test_endless_md5_file_is_cut_off(home, server):
    server.serve("/ml-latest-small.zip", csv_release())
    server.serve("/ml-latest-small.zip.md5", b"")
    server.fail("/ml-latest-small.zip.md5", Endless())
    with pytest.raises(MovierecError) as err:
        download.fetch("ml-latest-small", mirror=server.url(), config=FAST)
    assert str(err.value) == (
        f"{server.url('/ml-latest-small.zip.md5')} is longer than the {transfer.MAX_CHECKSUM_BYTES:,} bytes "
        "expected of it; refusing to download it."
    )
    assert not installed("ml-latest-small").exists()  # nothing kept, and the message does not claim otherwise


def test_md5_file_announcing_a_huge_length_is_not_read(home, server):
    server.serve("/ml-latest-small.zip.md5", b"0" * 100_000)
    with pytest.raises(MovierecError, match="longer than the 4,096 bytes expected"):
        download.fetch("ml-latest-small", mirror=server.url(), config=FAST)
    assert [r.path for r in server.requests] == ["/ml-latest-small.zip.md5"]


def test_md5_download_that_keeps_failing_claims_nothing_is_kept(home, server):
    server.serve("/ml-latest-small.zip.md5", b"0" * 32 + b"  ml-latest-small.zip\n")
    server.fail("/ml-latest-small.zip.md5", *[Cut(10)] * 10)
    with pytest.raises(MovierecError) as err:
        download.fetch("ml-latest-small", mirror=server.url(), config=FAST)
    assert "Download of" in str(err.value) and "kept" not in str(err.value)
    assert not installed("ml-latest-small").exists()


def test_trickling_server_is_dropped_as_stalled_and_retried(home, server, monkeypatch):
    monkeypatch.setattr(transfer, "STALL_WINDOW", 0.3)
    monkeypatch.setattr(transfer, "STALL_MIN_BYTES", 1000)
    data = csv_release()
    server.serve("/ml-latest-small.zip", data)
    server.serve("/ml-latest-small.zip.md5", hashlib.md5(data).hexdigest().encode())
    server.fail("/ml-latest-small.zip", Trickle(0.02))
    retries: list[tuple[float, int, int, str]] = []
    started = time.monotonic()
    result = download.fetch(
        "ml-latest-small", mirror=server.url(), config=FAST, on_retry=lambda *a: retries.append(a)
    )
    assert time.monotonic() - started < 10
    assert result.verified and (installed("ml-latest-small") / "ml-latest-small.zip").read_bytes() == data
    requests = server.requests_for("/ml-latest-small.zip")
    assert len(requests) == 2 and requests[1].status == 206  # the trickled bytes were kept and resumed
    assert len(retries) == 1 and retries[0][1:3] == (2, FAST.retries + 1) and "stalled" in retries[0][3]


def test_a_server_that_always_trickles_gives_up_with_one_sentence(home, server, monkeypatch):
    monkeypatch.setattr(transfer, "STALL_WINDOW", 0.2)
    monkeypatch.setattr(transfer, "STALL_MIN_BYTES", 1000)
    data = csv_release()
    server.serve("/ml-latest-small.zip", data)
    server.serve("/ml-latest-small.zip.md5", hashlib.md5(data).hexdigest().encode())
    server.fail("/ml-latest-small.zip", *[Trickle(0.02)] * 10)
    with pytest.raises(MovierecError, match=r"failed: the transfer stalled after \d+ bytes .*next attempt resumes"):
        download.fetch("ml-latest-small", mirror=server.url(), config=dataclasses.replace(FAST, retries=1))
    # Trickled bytes are progress of a kind, but far from enough to earn fresh retries.
    assert len(server.requests_for("/ml-latest-small.zip")) == 2
    assert data.startswith((installed("ml-latest-small") / "ml-latest-small.zip.part").read_bytes())


def test_twenty_cuts_finish_in_one_fetch_without_losing_a_byte(home, server, real_100k):
    step = 200_000
    server.serve("/ml-100k.zip", real_100k)
    server.fail("/ml-100k.zip", *[Cut(step)] * 20)
    result = download.fetch("ml-100k", mirror=server.url(), config=FAST)
    assert result.verified and (installed() / "ml-100k.zip").read_bytes() == real_100k
    starts = [int(r.headers.get("Range", "bytes=0-").removeprefix("bytes=").rstrip("-"))
              for r in server.requests_for("/ml-100k.zip")]
    assert starts == [i * step for i in range(21)]  # each attempt resumes exactly where the last one stopped


def test_retries_without_progress_are_counted_and_reported(home, server, monkeypatch):
    data = csv_release()
    server.serve("/ml-latest-small.zip", data)
    server.serve("/ml-latest-small.zip.md5", hashlib.md5(data).hexdigest().encode())
    server.fail("/ml-latest-small.zip", Status(503), Cut(10), Status(502))
    monkeypatch.setattr(transfer.time, "sleep", lambda s: None)
    heard: list[tuple[float, int, int, str]] = []
    config = dataclasses.replace(FAST, backoff=1.0)
    download.fetch("ml-latest-small", mirror=server.url(), config=config, on_retry=lambda *a: heard.append(a))
    assert [(d, n, of) for d, n, of, _ in heard] == [(1.0, 2, 4), (2.0, 3, 4), (4.0, 4, 4)]
    assert heard[0][3] == "HTTP 503 Service Unavailable" and heard[2][3] == "HTTP 502 Bad Gateway"


def test_refused_connection_fails_at_once(home, monkeypatch):
    sleeps: list[float] = []
    monkeypatch.setattr(transfer.time, "sleep", sleeps.append)
    started = time.monotonic()
    with pytest.raises(MovierecError, match=r"^Cannot reach 127\.0\.0\.1:\d+ \(.*refused"):
        download.fetch("ml-100k", mirror=f"http://127.0.0.1:{free_port()}", config=transfer.DownloadConfig())
    assert time.monotonic() - started < 2 and sleeps == []


def test_failed_name_lookup_fails_at_once(home, monkeypatch):
    def no_dns(*args, **kwargs):
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", no_dns)
    sleeps: list[float] = []
    monkeypatch.setattr(transfer.time, "sleep", sleeps.append)
    started = time.monotonic()
    with pytest.raises(MovierecError) as err:
        download.fetch("ml-100k", config=transfer.DownloadConfig())
    assert time.monotonic() - started < 2 and sleeps == []
    message = str(err.value)
    assert message.startswith("Cannot reach files.grouplens.org (") and "Name or service not known" in message
    assert "--from-file" in message and not installed().exists()


@pytest.mark.parametrize(
    ("mirror", "message"),
    [
        ("http://[::1", r"Mirror 'http://\[::1' is not a valid URL \(Invalid IPv6 URL\)\."),
        ("http://example.org:99999/x", r"is not a valid URL \(Port out of range 0-65535\)\."),
        ("http://:80/movielens", r"Mirror 'http://:80/movielens' has no host name\."),
        ("file:///srv/movielens", r"is not an http:// or https:// URL\."),
    ],
)
def test_malformed_mirror_is_refused_before_anything_happens(home, mirror, message):
    with pytest.raises(MovierecError, match=message):
        download.fetch("ml-100k", mirror=mirror)
    assert not paths.datasets_dir().exists()


def test_malformed_mirror_from_the_environment_is_named(home, monkeypatch):
    monkeypatch.setenv("MOVIEREC_MIRROR", "http://[::1")
    with pytest.raises(MovierecError, match=r"^\$MOVIEREC_MIRROR 'http://\[::1' is not a valid URL"):
        download.fetch("ml-100k")


def test_half_removed_dataset_is_unpacked_again_from_the_kept_archive(home, ml100k_zip):
    download.fetch("ml-100k", from_file=ml100k_zip, verify=False)
    good = (installed() / "ml-100k" / "u.data").read_bytes()
    # What an interrupted removal (or a hand-made cleanup) can leave: no parsed cache, a raw file gone.
    for f in (installed() / "parsed").iterdir():
        f.unlink()
    (installed() / "parsed").rmdir()
    (installed() / "ml-100k" / "u.data").unlink()
    messages: list[str] = []
    result = download.fetch("ml-100k", status=messages.append)
    assert result.already_cached and result.summary.ratings == 100_000
    assert (installed() / "ml-100k" / "u.data").read_bytes() == good
    assert any(m.startswith("Unpacking") for m in messages)
    assert download.fetch("ml-100k").already_cached  # and now it is whole again


def test_unparseable_cache_meta_is_rebuilt_by_fetch(home, ml100k_zip):
    download.fetch("ml-100k", from_file=ml100k_zip, verify=False)
    meta_path = installed() / "parsed" / "meta.json"
    meta = json.loads(meta_path.read_text())
    meta["users"] = "abc"
    del meta["items"]
    meta_path.write_text(json.dumps(meta))
    assert download.dataset_status("ml-100k").users is None  # listed as not parsed, no crash
    result = download.fetch("ml-100k")
    assert (result.summary.users, result.summary.items) == (943, 1682)
    assert json.loads(meta_path.read_text())["items"] == 1682


def test_damaged_archive_and_files_fall_back_to_a_new_download(home, server, real_100k, ml100k_zip):
    download.fetch("ml-100k", from_file=ml100k_zip)
    (installed() / "ml-100k" / "u.item").unlink()
    with open(installed() / "ml-100k.zip", "r+b") as f:  # same size, different bytes
        f.seek(1000)
        f.write(b"\0" * 16)
    server.serve("/ml-100k.zip", real_100k)
    result = download.fetch("ml-100k", mirror=server.url(), config=FAST)
    assert not result.already_cached and (installed() / "ml-100k.zip").read_bytes() == real_100k
    assert result.summary.items == 1682


def test_interrupted_remove_leaves_all_or_nothing(home, ml100k_zip, monkeypatch):
    download.fetch("ml-100k", from_file=ml100k_zip, verify=False)

    def killed(path):
        raise KeyboardInterrupt

    monkeypatch.setattr(download, "disk_usage", killed)  # interrupted right after the rename
    with pytest.raises(KeyboardInterrupt):
        download.remove("ml-100k")
    monkeypatch.undo()
    assert not installed().exists() and not download.dataset_status("ml-100k").cached
    assert [p.name for p in paths.datasets_dir().iterdir() if p.name.startswith(".removing-")]
    download.fetch("ml-100k", from_file=ml100k_zip, verify=False)  # a fresh start, and the trash is gone
    assert not [p for p in paths.datasets_dir().iterdir() if p.name.startswith(".removing-")]
