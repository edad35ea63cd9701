"""Shared fixtures: an isolated movierec home per test, the real MovieLens-100K archive, a CLI runner."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
ML100K_ZIP = REPO.parent / "shared" / "data" / "ml-100k.zip"
ML100K_SHA256 = "46b92e76e6cd9ac8d4a0e382acc90908807f45019b985d21cb9d12ba25861e15"


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


@pytest.fixture
def home(tmp_path) -> Iterator[Path]:
    """A fresh, empty movierec home (MOVIEREC_HOME) for one test."""
    with isolated_home(tmp_path / "home") as h:
        yield h


@pytest.fixture
def ml100k_zip() -> Path:
    if not ML100K_ZIP.exists():
        pytest.skip(f"{ML100K_ZIP} is not present")
    return ML100K_ZIP


@pytest.fixture
def runner():
    from typer.testing import CliRunner

    return CliRunner()


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
