"""The ``fetch`` and ``datasets`` commands, end to end through the Typer app."""

from __future__ import annotations

import ast
import dataclasses
import hashlib
import io
import json
import zipfile

import pytest
from conftest import ML100K_SHA256, REPO, assert_one_line_error
from httpserver import FileServer

from movierec import paths
from movierec.cli import app
from movierec.data import transfer
from movierec.data.registry import DATASETS


@pytest.fixture
def server(monkeypatch):
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(transfer, "DEFAULT_CONFIG", transfer.DownloadConfig(retries=2, backoff=0.001))
    with FileServer() as srv:
        yield srv


def small_zip(folder: str, members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in members.items():
            zf.writestr(f"{folder}{name}", data)
    return buf.getvalue()


def test_fetch_from_file_then_list_and_remove(home, runner, ml100k_zip):
    result = runner.invoke(app, ["fetch", "ml-100k", "--from-file", str(ml100k_zip), "--no-verify", "--json"])
    assert result.exit_code == 0, result.stderr
    out = json.loads(result.stdout)  # stdout is nothing but the JSON object
    assert out == {
        "name": "ml-100k", "path": str(paths.dataset_dir("ml-100k")), "verified": False,
        "sha256": ML100K_SHA256, "md5": out["md5"], "source": str(ml100k_zip.resolve()),
        "users": 943, "items": 1682, "ratings": 100_000, "already_cached": False,
    }
    assert result.stderr.startswith("Warning: ml-100k.zip was not verified")

    table = runner.invoke(app, ["datasets"])
    assert table.exit_code == 0 and table.stderr == ""
    row = next(line for line in table.stdout.splitlines() if " ml-100k " in line)
    for cell in ("yes*", "943", "1,682", "100,000", "MB"):
        assert cell in row
    assert "accepted with --no-verify" in table.stdout
    ml1m = next(line for line in table.stdout.splitlines() if " ml-1m " in line)
    assert " no " in ml1m

    listing = runner.invoke(app, ["datasets", "--json"])
    rows = json.loads(listing.stdout)
    assert [r["name"] for r in rows] == list(DATASETS)
    by_name = {r["name"]: r for r in rows}
    assert {"name", "cached", "users", "items", "ratings", "path", "size_bytes", "description"} <= set(rows[0])
    ml100k = by_name["ml-100k"]
    assert (ml100k["cached"], ml100k["users"], ml100k["items"], ml100k["ratings"]) == (True, 943, 1682, 100_000)
    assert ml100k["size_bytes"] > ml100k_zip.stat().st_size
    assert ml100k["path"] == str(paths.dataset_dir("ml-100k"))
    assert by_name["ml-1m"]["cached"] is False and by_name["ml-1m"]["users"] is None
    assert by_name["ml-1m"]["size_bytes"] is None

    again = runner.invoke(app, ["fetch", "ml-100k"])
    assert again.exit_code == 0
    assert "ml-100k is already cached" in again.stdout and "943 users, 1,682 movies, 100,000 ratings" in again.stdout
    assert "--force" in again.stderr  # reminds that the cached copy is unverified

    removed = runner.invoke(app, ["datasets", "--remove", "ml-100k"])
    assert removed.exit_code == 0 and removed.stdout.startswith("Removed ml-100k (")
    assert not paths.dataset_dir("ml-100k").exists()
    assert json.loads(runner.invoke(app, ["datasets", "--json"]).stdout)[0]["cached"] is False

    assert_one_line_error(runner.invoke(app, ["datasets", "--remove", "ml-100k"]), "ml-100k is not cached")


def test_fetch_download_through_a_mirror(home, runner, server, monkeypatch, ml100k_zip):
    monkeypatch.setitem(DATASETS, "ml-100k", dataclasses.replace(DATASETS["ml-100k"], sha256=ML100K_SHA256))
    server.serve("/mirror/ml-100k.zip", ml100k_zip.read_bytes())
    result = runner.invoke(app, ["fetch", "ml-100k", "--mirror", server.url("/mirror")])
    assert result.exit_code == 0, result.stderr
    assert f"Downloading {server.url('/mirror/ml-100k.zip')}" in result.stdout
    assert "Fetched ml-100k (verified): 943 users, 1,682 movies, 100,000 ratings" in result.stdout
    assert result.stderr == ""


def test_fetch_draws_a_progress_bar_on_a_terminal(home, runner, server, monkeypatch):
    from movierec.cli.console import err_console

    data = small_zip("ml-latest-small/", {
        "ratings.csv": b"userId,movieId,rating,timestamp\n1,1,4.0,964982703\n2,1,3.5,964982704\n",
        "movies.csv": b"movieId,title,genres\n1,Toy Story (1995),Animation\n",
    })
    server.serve("/ml-latest-small.zip", data)
    server.serve("/ml-latest-small.zip.md5", hashlib.md5(data).hexdigest().encode())
    screen = io.StringIO()
    monkeypatch.setattr(err_console, "_force_terminal", True)
    monkeypatch.setattr(err_console, "_file", screen)
    result = runner.invoke(app, ["fetch", "ml-latest-small", "--mirror", server.url(), "--json"])
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["verified"] is True
    drawn = screen.getvalue()
    assert "Downloading" in drawn and f"{len(data)}/{len(data)} bytes" in drawn


def test_fetch_errors_are_one_sentence(home, runner, server, tmp_path, ml100k_zip):
    assert_one_line_error(runner.invoke(app, ["fetch", "ml-5m"]), "Unknown dataset 'ml-5m'", "ml-100k, ml-1m")

    line = assert_one_line_error(runner.invoke(app, ["fetch", "ml-100k", "--from-file", str(ml100k_zip)]))
    assert f"expected sha256 {DATASETS['ml-100k'].sha256} but got {ML100K_SHA256}" in line

    line = assert_one_line_error(runner.invoke(app, ["fetch", "ml-1m", "--mirror", server.url("/gone")]))
    assert line == f"Error: Not found (HTTP 404): {server.url('/gone/ml-1m.zip')}."

    with __import__("socket").socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    assert_one_line_error(
        runner.invoke(app, ["fetch", "ml-1m", "--mirror", f"http://127.0.0.1:{port}"]),
        "Cannot reach", "--from-file", "--mirror",
    )

    truncated = tmp_path / "ml-100k.zip"
    truncated.write_bytes(ml100k_zip.read_bytes()[:100_000])
    assert_one_line_error(
        runner.invoke(app, ["fetch", "ml-100k", "--from-file", str(truncated), "--no-verify"]),
        "not a valid zip archive",
    )

    flat = tmp_path / "flat.zip"
    flat.write_bytes(small_zip("", {"u.data": b"1\t1\t5\t0\n"}))
    assert_one_line_error(
        runner.invoke(app, ["fetch", "ml-100k", "--from-file", str(flat), "--no-verify"]),
        "expected folder ml-100k/",
    )

    assert_one_line_error(
        runner.invoke(app, ["fetch", "ml-100k", "--from-file", str(tmp_path / "missing.zip")]), "does not exist"
    )
    assert_one_line_error(runner.invoke(app, ["datasets", "--remove", "nope"]), "Unknown dataset 'nope'")
    assert not paths.dataset_dir("ml-100k").exists() and not paths.dataset_dir("ml-1m").exists()


def test_help_lists_the_options(runner):
    result = runner.invoke(app, ["fetch", "--help"], terminal_width=200)
    assert result.exit_code == 0
    for option in ("--from-file", "--mirror", "--no-verify", "--force", "--json"):
        assert option in result.stdout
    result = runner.invoke(app, ["datasets", "--help"], terminal_width=200)
    assert "--remove" in result.stdout and "--json" in result.stdout


@pytest.mark.parametrize("module", ["fetch.py", "datasets.py"])
def test_commands_import_nothing_heavy_at_module_level(module):
    tree = ast.parse((REPO / "movierec" / "cli" / module).read_text())
    imported = set()
    for node in tree.body:  # only statements run at import time
        if isinstance(node, ast.Import):
            imported |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module)
    heavy = {m for m in imported if m.split(".")[0] in ("torch", "pandas", "numpy", "requests")}
    assert heavy == set() and "movierec.data.download" not in imported


# ------------------------------------------------------------------------------ hostile input, end to end


def home_tree() -> dict[str, bytes]:
    """Every file of every dataset folder (lock files beside them are not data)."""
    root = paths.datasets_dir()
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and not p.name.endswith(".lock")}


def test_repeated_ratings_are_a_warning_at_fetch_and_counted_in_the_listing(home, runner, tmp_path):
    source = tmp_path / "ml-latest-small.zip"
    source.write_bytes(small_zip("ml-latest-small/", {
        "ratings.csv": b"userId,movieId,rating,timestamp\n1,1,4.0,10\n2,1,3.5,11\n1,1,2.0,12\n",
        "movies.csv": b"movieId,title,genres\n1,Toy Story (1995),Animation\n",
    }))
    result = runner.invoke(app, ["fetch", "ml-latest-small", "--from-file", str(source), "--no-verify"])
    assert result.exit_code == 0, result.stderr
    assert result.stderr.splitlines() == [
        "Warning: ml-latest-small.zip was not verified (--no-verify); recorded as unverified.",
        "Warning: ml-latest-small has 1 repeated rating (a user rating the same movie again); only the latest "
        "of each was kept.",
    ]
    assert "2 users, 1 movies, 2 ratings" in result.stdout
    rows = {r["name"]: r for r in json.loads(runner.invoke(app, ["datasets", "--json"]).stdout)}
    assert rows["ml-latest-small"]["duplicates_dropped"] == 1 and rows["ml-1m"]["duplicates_dropped"] is None


def test_hostile_sources_are_one_sentence_and_keep_the_cached_copy(home, runner, server, tmp_path, monkeypatch,
                                                                  ml100k_zip):
    from httpserver import Endless, Trickle

    assert runner.invoke(app, ["fetch", "ml-100k", "--from-file", str(ml100k_zip), "--no-verify"]).exit_code == 0
    before = home_tree()

    assert_one_line_error(runner.invoke(app, ["fetch", "ml-1m", "--mirror", "http://[::1"]),
                          "Mirror 'http://[::1' is not a valid URL")
    monkeypatch.setenv("MOVIEREC_MIRROR", "http://[::1")
    assert_one_line_error(runner.invoke(app, ["fetch", "ml-1m"]), "$MOVIEREC_MIRROR 'http://[::1'")
    monkeypatch.delenv("MOVIEREC_MIRROR")

    bomb = io.BytesIO()
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("ml-100k/u.data", bytes(32 << 20))
    (tmp_path / "bomb.zip").write_bytes(bomb.getvalue())
    assert_one_line_error(
        runner.invoke(app, ["fetch", "ml-100k", "--from-file", str(tmp_path / "bomb.zip"), "--no-verify", "--force"]),
        "inflates more than 50-fold",
    )

    server.serve("/ml-latest-small.zip.md5", b"")
    server.fail("/ml-latest-small.zip.md5", Endless())
    line = assert_one_line_error(runner.invoke(app, ["fetch", "ml-latest-small", "--mirror", server.url()]),
                                 "is longer than the 4,096 bytes expected of it")
    assert "kept" not in line

    monkeypatch.setattr(transfer, "STALL_WINDOW", 0.2)
    monkeypatch.setattr(transfer, "STALL_MIN_BYTES", 1000)
    monkeypatch.setattr(transfer, "DEFAULT_CONFIG", transfer.DownloadConfig(retries=0))
    server.serve("/ml-1m.zip", bytes(5000))
    server.fail("/ml-1m.zip", Trickle(0.02))
    part = paths.dataset_dir("ml-1m") / "ml-1m.zip.part"
    line = assert_one_line_error(runner.invoke(app, ["fetch", "ml-1m", "--mirror", server.url()]),
                                 "the transfer stalled after", "bytes received are kept")
    assert f"the {part.stat().st_size:,} bytes received are kept" in line

    part.unlink()
    part.parent.rmdir()
    assert home_tree() == before and not paths.dataset_dir("ml-latest-small").exists()


def test_transient_failures_print_a_retry_line(home, runner, server):
    from httpserver import Status

    data = small_zip("ml-latest-small/", {
        "ratings.csv": b"userId,movieId,rating,timestamp\n1,1,4.0,964982703\n",
        "movies.csv": b"movieId,title,genres\n1,Toy Story (1995),Animation\n",
    })
    server.serve("/ml-latest-small.zip", data)
    server.serve("/ml-latest-small.zip.md5", hashlib.md5(data).hexdigest().encode())
    server.fail("/ml-latest-small.zip", Status(503))
    result = runner.invoke(app, ["fetch", "ml-latest-small", "--mirror", server.url(), "--json"])
    assert result.exit_code == 0, result.stderr
    assert result.stderr.splitlines() == ["Retrying in 0.001 s (attempt 2 of 3): HTTP 503 Service Unavailable…"]
    assert json.loads(result.stdout)["verified"] is True


def test_damaged_dataset_is_repaired_by_fetch_and_never_trained_on(home, runner, ml100k_zip):
    import numpy as np

    assert runner.invoke(app, ["fetch", "ml-100k", "--from-file", str(ml100k_zip), "--no-verify"]).exit_code == 0
    folder = paths.dataset_dir("ml-100k")
    users = folder / "parsed" / "users.npy"
    damaged = np.load(users)
    damaged[5] = 10_000  # a user index out of range
    np.save(users, damaged)
    meta = json.loads((folder / "parsed" / "meta.json").read_text())
    meta["users"] = "abc"
    (folder / "parsed" / "meta.json").write_text(json.dumps(meta))
    for name in ("u.data", "u.item"):
        (folder / "ml-100k" / name).unlink()

    listing = runner.invoke(app, ["datasets", "--json"])
    assert listing.exit_code == 0 and json.loads(listing.stdout)[0]["users"] is None
    train = ["train", "mf", "--epochs", "1", "--factors", "2", "--device", "cpu", "--name", "tiny"]
    assert_one_line_error(runner.invoke(app, train), "movierec fetch ml-100k")

    fixed = runner.invoke(app, ["fetch", "ml-100k"])
    assert fixed.exit_code == 0, fixed.stderr
    assert "ml-100k is already cached" in fixed.stdout and "943 users, 1,682 movies, 100,000 ratings" in fixed.stdout
    assert (folder / "ml-100k" / "u.data").stat().st_size == 1_979_173
    trained = runner.invoke(app, train)
    assert trained.exit_code == 0, trained.stderr


def test_datasets_lists_a_cached_release_without_importing_torch(home, runner, ml100k_zip):
    import os
    import subprocess
    import sys

    assert runner.invoke(app, ["fetch", "ml-100k", "--from-file", str(ml100k_zip), "--no-verify"]).exit_code == 0
    script = (
        "import sys\nfrom movierec.cli import main\nsys.argv = ['movierec', 'datasets', '--json']\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\nprint('torch' in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO, timeout=120,
                          env={**os.environ, "MOVIEREC_HOME": str(home)})
    assert done.returncode == 0, done.stderr
    listing, _, torch_loaded = done.stdout.rstrip().rpartition("\n")
    assert json.loads(listing)[0]["ratings"] == 100_000 and torch_loaded == "False"


def test_library_warnings_reach_the_user_as_one_warning_line(home, runner, ml100k_zip):
    import numpy as np

    assert runner.invoke(app, ["fetch", "ml-100k", "--from-file", str(ml100k_zip), "--no-verify"]).exit_code == 0
    stars = paths.dataset_dir("ml-100k") / "parsed" / "ratings.npy"
    damaged = np.load(stars)
    damaged[3] = np.nan
    np.save(stars, damaged)

    result = runner.invoke(app, ["train", "mf", "--epochs", "1", "--factors", "2", "--device", "cpu", "--json"])
    assert result.exit_code == 0, result.stderr
    warnings = [line for line in result.stderr.splitlines() if line.startswith("Warning: ")]
    assert len(warnings) == 1 and "damaged" in warnings[0] and "parsing the release again" in warnings[0], result.stderr
    assert json.loads(result.stdout)["epochs"] == 1
