"""The ``fetch`` and ``datasets`` commands, end to end through the Typer app."""

from __future__ import annotations

import ast
import dataclasses
import hashlib
import io
import json
import zipfile
from pathlib import Path

import pytest
from conftest import ML100K_SHA256, assert_one_line_error
from httpserver import FileServer

from movierec import paths
from movierec.cli import app
from movierec.data import download
from movierec.data.registry import DATASETS

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def server(monkeypatch):
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(download, "DEFAULT_CONFIG", download.DownloadConfig(retries=2, backoff=0.001))
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
