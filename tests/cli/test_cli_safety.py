"""What the terminal and the process are safe from: hostile titles, huge counts, bad settings, signals.

The data tests use a tiny release in ml-100k's layout whose titles and genres hold rich markup, terminal
escape sequences and bidi overrides; the signal tests run the real `python -m movierec` in a subprocess.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO, assert_one_line_error, isolated_home
from synthetic import ml100k_archive
from torch_lists import similar_list, user_list
from typer.testing import CliRunner

from movierec.cli import app
from movierec.cli.console import clean

HOSTILE_TITLES = [
    "[bold red]Loud[/] (1995)",
    "[link=file:///etc/passwd]Click me[/link] (1996)",
    "Broken [/foo] Tag (1997)",
    "Clear\x1b[2J\x1b]0;pwned\x07 Screen (1998)",  # clear screen, set the window title
    "Evil\u202e txet\u2066 Mirror\u2069 (1999)",  # bidi override and isolate
    "C1\x9b31m Red\x7f Del (2000)",  # 8-bit CSI, DEL
    ":clapper: Emoji (1993)",
]
TITLES = HOSTILE_TITLES + [f"Plain Movie {i} (1990)" for i in range(1, 6)]
GENRES = ["unknown", "Action", "[red]Noir\x1b[5m", "Comedy"]
NOIR = "[red]Noir[5m"  # GENRES[2] as shown
# Nothing from the data may reach the terminal as one of these.
FORBIDDEN = ["\x1b", "\x07", "\x9b", "\x7f", "\u202e", "\u2066", "\u2069", "🎬"]
N_USERS = 40
ZIP_PATH = "/ml-100k.zip"


def tiny_release() -> bytes:
    """A zip in ml-100k's layout (u.data, u.item, u.genre, u.user) with the titles and genres above."""
    rng = np.random.default_rng(0)
    rated = rng.random((N_USERS, len(TITLES))) < 0.6
    rated[:, rng.permutation(len(TITLES))[:2]] = True  # a few movies everybody rated
    rated[0, :3] = False  # user 1 has movies left to recommend
    rated[0, 3:] = True
    return ml100k_archive(rated, TITLES, GENRES, rng)


def invoke(*args: str):
    # A wide terminal: these tests read each title whole off one line of a table.
    result = CliRunner().invoke(app, list(args), env={"COLUMNS": "200"})
    if result.exit_code != 0:
        raise AssertionError(f"movierec {' '.join(args)} failed: {result.stderr}{result.exception!r}")
    return result


def assert_safe(text: str) -> None:
    for bad in FORBIDDEN:
        assert bad not in text, f"{bad!r} reached the terminal"


@pytest.fixture(scope="module")
def hostile_home(tmp_path_factory):
    """A home with the hostile release fetched as ml-100k and a tiny mf (`m`) trained on a random split."""
    root = tmp_path_factory.mktemp("cli-safety")
    archive = root / "ml-100k.zip"
    archive.write_bytes(tiny_release())
    with isolated_home(root / "home") as home:
        invoke("fetch", "ml-100k", "--from-file", str(archive), "--no-verify")
        invoke("train", "mf", "--epochs", "1", "--factors", "2", "--split", "random", "--name", "m")
        yield home


# -- data shown as plain text ----------------------------------------------------------------------------
def test_recommend_shows_titles_as_written_without_escapes(hostile_home):
    # --top far beyond the catalogue: every movie, once (and not a billion-slot list).
    result = invoke("recommend", "--user", "1", "--top", "1000000000", "--include-seen", "--model", "m")
    out = result.stdout
    assert_safe(out + result.stderr)
    for title in TITLES:
        assert clean(title) in out
    assert "[bold red]Loud[/] (1995)" in out and "[link=file:///etc/passwd]Click me[/link]" in out
    assert "Clear[2J]0;pwned Screen (1998)" in out  # the sequences are disarmed, the rest stays readable
    assert ":clapper: Emoji" in out and NOIR in out
    assert len([line for line in out.splitlines() if line.startswith("│")]) == len(TITLES)


def test_recommend_json_keeps_the_titles_exact(hostile_home):
    rows = json.loads(invoke("recommend", "--user", "1", "--top", "1000000000", "--model", "m", "--json").stdout)
    titles = [r["title"] for r in rows]
    assert set(TITLES[:3]) <= set(titles) <= set(TITLES)  # user 1 never rated the first three
    assert all(r["because_you_liked"] in TITLES for r in rows)


def test_similar_with_an_unmatched_closing_tag_in_the_title(hostile_home):
    result = invoke("similar", "3", "--top", "1000000000", "--min-ratings", "0", "--model", "m")
    assert_safe(result.stdout + result.stderr)
    assert "Movies like Broken [/foo] Tag (1997) — m" in result.stdout
    for title in TITLES:
        if title != TITLES[2]:
            assert clean(title) in result.stdout
    rows = json.loads(invoke("similar", "3", "--top", "1000000000", "--min-ratings", "0", "--model", "m",
                             "--json").stdout)["similar"]
    assert len(rows) == len(TITLES) - 1


def test_clusters_show_titles_and_genres_as_written(hostile_home):
    result = invoke("clusters", "--clusters", "3", "--top", "100", "--model", "m")
    assert_safe(result.stdout + result.stderr)
    for title in TITLES:
        assert clean(title) in result.stdout


def test_error_quoting_data_is_one_clean_line(hostile_home):
    result = CliRunner().invoke(app, ["recommend", "--user", "1", "--genre", "western", "--model", "m"])
    line = assert_one_line_error(result, "Unknown genre 'western'", NOIR.lower())
    assert_safe(line)


def test_clean_strips_terminal_controls():
    assert clean("a\x1b[31mb\x07c\x00d\x7fe\x85f\x9bg\u202eh\u2068i") == "a[31mbcdefghi"
    assert clean("two\tlines\nhere") == "two lines here"
    assert clean("Amélie — 天使 (2001)") == "Amélie — 天使 (2001)"  # text itself is untouched


def test_other_tables_render(hostile_home):
    for args in (["models"], ["evaluate", "--model", "m"], ["datasets"]):
        result = invoke(*args)
        assert_safe(result.stdout + result.stderr)
    assert "m (newest)" in invoke("models").stdout


# -- counts that size memory -----------------------------------------------------------------------------
def test_evaluate_k_beyond_the_catalogue_is_refused(hostile_home):
    result = CliRunner().invoke(app, ["evaluate", "--model", "m", "--cutoff", "1000000000"])
    assert_one_line_error(result, f"K must be at most the number of movies in ml-100k, {len(TITLES)}", "1,000,000,000")


def test_library_caps_lists_at_the_catalogue(hostile_home):
    from movierec import recommend as rec
    from movierec.loading import load_trained

    trained = load_trained("m")
    items, _ = similar_list(trained.model, 0, 10**9, counts=rec.item_counts(trained.train))
    assert sorted(items) == list(range(1, len(TITLES)))
    recs = user_list(trained.model, trained.train, 0, 10**9, include_seen=True)
    assert sorted(r.item for r in recs) == list(range(len(TITLES)))


# -- settings --------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("env", "flag", "fragment"),
    [("tpu", "auto", "MOVIEREC_DEVICE=tpu"), (None, "tpu", "--device tpu"), ("cpu", "gpu", "--device gpu")],
)
def test_unknown_device_names_where_it_came_from(home, monkeypatch, env, flag, fragment):
    if env is not None:
        monkeypatch.setenv("MOVIEREC_DEVICE", env)
    result = CliRunner().invoke(app, ["recommend", "--user", "1", "--device", flag])
    assert_one_line_error(result, f"Unknown device in {fragment}", "auto, cpu, cuda")


def test_cuda_from_the_environment_without_a_gpu(home, monkeypatch):
    import torch

    if torch.cuda.is_available():
        pytest.skip("needs a machine without CUDA")
    monkeypatch.setenv("MOVIEREC_DEVICE", "cuda")
    result = CliRunner().invoke(app, ["recommend", "--user", "1", "--device", "auto"])
    assert_one_line_error(result, "MOVIEREC_DEVICE=cuda asks for a GPU, but no CUDA GPU is available")


@pytest.mark.parametrize(("requested", "env", "message"), [
    ("cuda:3", None, "--device cuda:3 names a GPU that does not exist: this machine has 1 CUDA device(s)."),
    ("auto", "cuda:3", "MOVIEREC_DEVICE=cuda:3 names a GPU that does not exist"),
    ("cudax", None, "Unknown device in --device cudax"),
    ("auto", "CUDA:x", "Unknown device in MOVIEREC_DEVICE=CUDA:x"),
])
def test_gpu_choices_on_a_one_gpu_machine(monkeypatch, requested, env, message):
    import torch

    from movierec.device import resolve_device
    from movierec.errors import MovierecError

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.delenv("MOVIEREC_DEVICE", raising=False)
    assert resolve_device("cuda:0") == torch.device("cuda:0")
    if env is not None:
        monkeypatch.setenv("MOVIEREC_DEVICE", env)
    with pytest.raises(MovierecError) as err:
        resolve_device(requested)
    assert message in str(err.value)


def test_no_help_offers_shell_completion(runner):
    from movierec.models import MODELS

    commands = [[], ["train"], *[["train", m] for m in MODELS], ["fetch"], ["datasets"], ["models"],
                ["evaluate"], ["recommend"], ["similar"], ["clusters"]]
    for cmd in commands:
        result = runner.invoke(app, [*cmd, "--help"])
        assert result.exit_code == 0, cmd
        assert "completion" not in result.stdout.lower(), cmd
    assert runner.invoke(app, ["--install-completion"]).exit_code != 0


def _python(code: str, **env: str) -> str:
    clean_env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    out = subprocess.run([sys.executable, "-c", code], env={**clean_env, **env}, cwd=REPO, capture_output=True,
                         text=True, check=True)
    return out.stdout.strip()


def test_importing_movierec_sets_a_passive_openmp_wait_policy():
    code = "import os, sys, movierec; print(os.environ.get('OMP_WAIT_POLICY'), 'torch' in sys.modules)"
    assert _python(code) == "PASSIVE False"
    assert _python(code, OMP_WAIT_POLICY="ACTIVE") == "ACTIVE False"  # the user's own setting wins
    assert os.environ.get("OMP_WAIT_POLICY")  # and the test suite runs with one


# -- signals ---------------------------------------------------------------------------------------------
def _movierec(home: Path, *args: str) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MOVIEREC_")}
    env.update(MOVIEREC_HOME=str(home), OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    # Started with Ctrl-C's default action, as from a terminal, even when the test run itself ignores SIGINT (a
    # background job of a shell without job control).
    return subprocess.Popen([sys.executable, "-m", "movierec", *args], env=env, cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def _files(folder: Path) -> set[str]:
    """Every file under ``folder``, except the empty lock files that hold a model's name while it trains."""
    return {str(p.relative_to(folder)) for p in folder.rglob("*") if not p.name.endswith(".lock")}


@pytest.mark.parametrize(("sig", "code", "message"), [
    (signal.SIGTERM, 143, "Error: Terminated."), (signal.SIGINT, 130, "Error: Interrupted."),
])
def test_a_signal_stops_training_cleanly(hostile_home, sig, code, message):
    before = _files(hostile_home)
    proc = _movierec(hostile_home, "train", "rbm", "--epochs", "1000000", "--hidden", "8", "--split", "random",
                     "--name", "never-saved")
    try:
        assert proc.stdout is not None
        for line in proc.stdout:  # the first line is printed once training starts
            if line.startswith("Training rbm"):
                break
        else:
            pytest.fail(f"training did not start: {proc.stderr.read() if proc.stderr else ''}")
        time.sleep(0.5)  # well into the epochs
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == code
    assert "Traceback" not in err
    assert err.strip().splitlines()[-1] == message
    assert _files(hostile_home) == before  # no checkpoint, no temp file


def test_sigterm_keeps_a_partial_download_for_resuming(tmp_path):
    from httpserver import Cut, FileServer, Gate

    # Large enough to be written in several chunks (the chunk being read when a connection breaks is lost);
    # the download never finishes, so these need not be a zip.
    archive = np.random.default_rng(0).bytes(400_000)
    half = len(archive) // 2
    home = tmp_path / "home"
    gate = threading.Event()
    with FileServer() as server:
        server.serve(ZIP_PATH, archive)
        # The first answer breaks off halfway; the resumed one hangs until the process is stopped.
        server.fail(ZIP_PATH, Cut(after=half), Gate(gate))
        proc = _movierec(home, "fetch", "ml-100k", "--mirror", server.url(), "--no-verify")
        try:
            while len(server.requests_for(ZIP_PATH)) < 2 and proc.poll() is None:
                time.sleep(0.05)
            time.sleep(0.3)  # into the read of the body
            proc.send_signal(signal.SIGTERM)
            _, err = proc.communicate(timeout=120)
        finally:
            gate.set()
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    assert proc.returncode == 143, err
    assert "Traceback" not in err
    assert err.strip().splitlines()[-1] == "Error: Terminated."
    part = home / "datasets" / "ml-100k" / "ml-100k.zip.part"
    kept = part.read_bytes()
    assert 0 < len(kept) <= half and kept == archive[:len(kept)]  # kept: the next fetch resumes from here
    assert [r.headers.get("Range") for r in server.requests_for(ZIP_PATH)] == [None, f"bytes={len(kept)}-"]
    assert _files(part.parent) == {part.name}  # nothing unpacked, no temp files


def test_a_home_path_with_brackets_is_shown_as_written(tmp_path):
    archive = tmp_path / "ml-100k.zip"
    archive.write_bytes(tiny_release())
    short = Path(tempfile.mkdtemp())  # short enough that no table folds the path
    try:
        with isolated_home(short / "[bold]my[/x]"):
            invoke("fetch", "ml-100k", "--from-file", str(archive), "--no-verify")
            outputs = [invoke("train", "mf", "--epochs", "1", "--factors", "2", "--split", "random", "--name", "b")
                       .stdout, invoke("models").stdout, invoke("datasets").stdout]
    finally:
        shutil.rmtree(short)
    for out in outputs:
        assert f"{short}/[bold]my[/x]/" in out


def test_the_real_data_can_be_pointed_at(tmp_path, monkeypatch):
    import conftest

    archive = tmp_path / "ml-100k.zip"
    monkeypatch.setenv("MOVIEREC_TEST_DATA", str(archive))
    assert conftest._ml100k_zip() == archive
    monkeypatch.setenv("MOVIEREC_TEST_DATA", str(tmp_path))  # or the folder that holds it
    assert conftest._ml100k_zip() == archive
    assert "set MOVIEREC_TEST_DATA=/path/to/ml-100k.zip" in conftest.ML100K_MISSING


@pytest.mark.parametrize("args", [
    ["--bogus"], ["train", "als", "--solver", "foo"], ["train", "rbm", "--hidden", "x"], ["recommend", "--top", "0"],
])
def test_usage_errors_are_one_sentence(home, args):
    result = CliRunner().invoke(app, args)
    line = assert_one_line_error(result, "--help`")
    assert result.exit_code == 2 and "Usage:" not in result.stdout + result.stderr, line
