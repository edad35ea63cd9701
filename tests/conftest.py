"""Shared fixtures: an isolated movierec home per test, the real MovieLens-100K archive, a CLI runner."""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

import movierec  # noqa: F401  (first: it sets OMP_WAIT_POLICY before any test imports torch, as the CLI has it)

REPO = Path(__file__).resolve().parents[1]
TEST_DATA_ENV = "MOVIEREC_TEST_DATA"


def _ml100k_zip() -> Path:
    """$MOVIEREC_TEST_DATA (ml-100k.zip, or a folder holding it), else ../shared/data/ml-100k.zip."""
    given = os.environ.get(TEST_DATA_ENV, "").strip()
    if not given:
        return REPO.parent / "shared" / "data" / "ml-100k.zip"
    path = Path(given).expanduser()
    return path / "ml-100k.zip" if path.is_dir() else path


ML100K_ZIP = _ml100k_zip()
ML100K_SHA256 = hashlib.sha256(ML100K_ZIP.read_bytes()).hexdigest() if ML100K_ZIP.is_file() else None
ML100K_MISSING = (
    f"the real MovieLens-100K archive is not at {ML100K_ZIP}; to run these tests, "
    f"set {TEST_DATA_ENV}=/path/to/ml-100k.zip (or a folder holding it)"
)


def pytest_configure(config) -> None:
    if os.environ.get(TEST_DATA_ENV, "").strip() and not ML100K_ZIP.is_file():
        # Asked for by name: skipping the real-data tests would hide the mistake.
        raise pytest.UsageError(f"{TEST_DATA_ENV} names {ML100K_ZIP}, which is not a file.")


def require_ml100k() -> Path:
    """The real MovieLens-100K archive, or skip the test saying how to provide it."""
    if not ML100K_ZIP.is_file():
        pytest.skip(ML100K_MISSING)
    return ML100K_ZIP


@contextlib.contextmanager
def isolated_home(path: Path) -> Iterator[Path]:
    """Point movierec at an empty home ``path`` (and no mirror or device from the environment) meanwhile."""
    from movierec import paths

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MOVIEREC_HOME", str(path))
        mp.delenv("MOVIEREC_MIRROR", raising=False)
        mp.delenv("MOVIEREC_DEVICE", raising=False)
        paths.set_home(None)
        try:
            yield path
        finally:
            paths.set_home(None)


@contextlib.contextmanager
def small_release_home(folder: Path) -> Iterator[Path]:
    """An isolated home in ``folder`` with a small synthetic release in ml-latest-small's layout fetched."""
    from benchmarks.synth_release import write_release
    from movierec.data import download

    archive = write_release("small-ml-latest-small", folder / "ml-latest-small.zip")
    with isolated_home(folder / "home") as h:
        download.fetch("ml-latest-small", from_file=archive, verify=False)
        yield h


@contextlib.contextmanager
def ml100k_home(path: Path, *commands: list[str]) -> Iterator[Path]:
    """An isolated home at ``path`` with the real ml-100k fetched and each CLI command (a tiny ``train``, say) run
    in it; skips without the archive. For module-scoped fixtures that several tests share."""
    from typer.testing import CliRunner

    from movierec.cli import app

    archive = require_ml100k()
    with isolated_home(path) as h:
        runner = CliRunner()
        for args in (["fetch", "ml-100k", "--from-file", str(archive), "--no-verify"], *commands):
            result = runner.invoke(app, list(args))
            assert result.exit_code == 0, result.stderr
        yield h


def _fetched(folder: Path, dataset: str) -> None:
    """Fetch ``dataset`` into a new home at ``folder / "home"``: the real ml-100k (skips without it), or a small
    synthetic release in ml-latest-small's layout."""
    if dataset == "ml-100k":
        with ml100k_home(folder / "home"):
            pass
    elif dataset == "ml-latest-small":
        with small_release_home(folder):
            pass
    else:
        raise ValueError(f"no test home is made for {dataset!r}")


@pytest.fixture(scope="session")
def trained_home(tmp_path_factory):
    """``trained_home(*commands, dataset="ml-100k")``: a new folder holding a movierec home with ``dataset`` fetched
    and each CLI command (``["train", ...]``) run in it, in order; skips where ml-100k is wanted and missing.

    Each distinct (dataset, commands) home is built once per session, each from a copy of the fetched home; every
    call gets a copy of its own to use and change freely. It sets no environment: enter it with
    :func:`isolated_home`, as a module-scoped ``home`` fixture does."""
    from typer.testing import CliRunner

    from movierec.cli import app

    built: dict[tuple[str, tuple[tuple[str, ...], ...]], Path] = {}

    def build(dataset: str, commands: tuple[tuple[str, ...], ...]) -> Path:
        key = (dataset, commands)
        if key not in built:
            folder = tmp_path_factory.mktemp(f"cached-{dataset}")
            if not commands:
                _fetched(folder, dataset)
            else:
                shutil.copytree(build(dataset, ()), folder / "home", symlinks=True)
                with isolated_home(folder / "home"):
                    runner = CliRunner()
                    for args in commands:
                        result = runner.invoke(app, list(args))
                        assert result.exit_code == 0, f"movierec {' '.join(args)}: {result.stderr}"
            built[key] = folder / "home"
        return built[key]

    def copy(*commands: list[str], dataset: str = "ml-100k") -> Path:
        cached = build(dataset, tuple(tuple(args) for args in commands))
        home = tmp_path_factory.mktemp(f"home-{dataset}") / "home"
        shutil.copytree(cached, home, symlinks=True)
        return home

    return copy


@pytest.fixture
def home(tmp_path) -> Iterator[Path]:
    """A fresh, empty movierec home (MOVIEREC_HOME) for one test."""
    with isolated_home(tmp_path / "home") as h:
        yield h


@pytest.fixture
def ml100k_zip() -> Path:
    return require_ml100k()


@pytest.fixture
def runner():
    from typer.testing import CliRunner

    # A wide terminal, as tables are read whole here; tests/cli/test_cli_width.py sets 80 and 120 itself.
    return CliRunner(env={"COLUMNS": "200"})


def assert_one_line_error(result, *fragments: str) -> str:
    """A CLI failure as users must see it: non-zero exit, one "Error: ..." line on stderr, no traceback."""
    assert result.exit_code != 0
    assert "Traceback" not in result.stdout + result.stderr
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("Error: ")
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


def run_cli_in_subprocess(home: Path, *args: str) -> subprocess.CompletedProcess:
    """``movierec ARGS`` in a fresh Python with home ``home``; its stdout ends with ``IMPORTED <torch> <pandas>``:
    whether the command imported torch and pandas."""
    code = textwrap.dedent("""
        import sys
        from movierec.cli import app
        try:
            app(sys.argv[1:], standalone_mode=False)
        finally:
            print("\\nIMPORTED", "torch" in sys.modules, "pandas" in sys.modules)
    """)
    env = {"MOVIEREC_HOME": str(home), "OMP_NUM_THREADS": "1", "COLUMNS": "200", "PATH": "/usr/bin:/bin"}
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, env=env, timeout=120)
