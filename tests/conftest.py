"""Shared fixtures: an isolated movierec home per test, the real MovieLens-100K archive, a CLI runner."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
ML100K_ZIP = REPO.parent / "shared" / "data" / "ml-100k.zip"
ML100K_SHA256 = "46b92e76e6cd9ac8d4a0e382acc90908807f45019b985d21cb9d12ba25861e15"


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    """A fresh, empty movierec home (MOVIEREC_HOME) for one test."""
    from movierec import paths

    h = tmp_path / "home"
    monkeypatch.setenv("MOVIEREC_HOME", str(h))
    monkeypatch.delenv("MOVIEREC_MIRROR", raising=False)
    monkeypatch.delenv("MOVIEREC_DEVICE", raising=False)
    paths.set_home(None)
    yield h
    paths.set_home(None)


@pytest.fixture
def ml100k_zip() -> Path:
    if not ML100K_ZIP.exists():
        pytest.skip(f"{ML100K_ZIP} is not present")
    return ML100K_ZIP


@pytest.fixture
def runner():
    from typer.testing import CliRunner

    return CliRunner()
