"""Model names people can type: short default names that never collide, unique prefixes, whole names in tables."""

from __future__ import annotations

import dataclasses
import os
import re
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import assert_one_line_error, isolated_home
from typer.testing import CliRunner

from movierec import checkpoint, loading, paths
from movierec.cli import app
from movierec.errors import MovierecError
from movierec.models import build_model

STARS = (1.0, 2.0, 3.0, 4.0, 5.0)


def save(name: str) -> Path:
    torch.manual_seed(0)
    model = build_model("mf", None, {"factors": 3}, 7, 5, STARS)
    meta = checkpoint.CheckpointMeta(
        name=name, model="mf", config={"factors": 3}, dataset="synthetic", fingerprint="abc", split="holdout",
        seed=4, n_users=7, n_items=5, rating_values=list(STARS), mode="explicit",
    )
    return checkpoint.save(loading.state_arrays(model), dataclasses.replace(meta), np.arange(7) + 1,
                           np.arange(5) + 1)[0]


# -- default names -----------------------------------------------------------------------------------------
def test_default_names_are_the_model_and_a_mode_other_than_the_default():
    assert checkpoint.default_name("als", "explicit", "explicit") == "als"
    assert checkpoint.default_name("als", "implicit", "explicit") == "als-implicit"
    assert checkpoint.default_name("rbm", "rating", "like") == "rbm-rating"
    assert checkpoint.default_name("mf") == "mf"


def test_a_fresh_name_is_the_first_one_neither_saved_nor_held(home):
    with checkpoint.reserve("als", fresh=True) as path:
        assert path == paths.models_dir() / "als.pt"
    save("als")
    save("als-3")
    with checkpoint.reserve("als", fresh=True) as second:
        assert second.stem == "als-2"
        with checkpoint.reserve("als", fresh=True) as third:  # als-2 is held, als-3 saved
            assert third.stem == "als-4"
    # A run that ended without saving leaves its name free again.
    with checkpoint.reserve("als", fresh=True) as again:
        assert again.stem == "als-2"
    # An explicit name is that name, saved or not (it is replaced on save, as before).
    with checkpoint.reserve("als") as explicit:
        assert explicit == paths.models_dir() / "als.pt"


def test_runs_starting_together_never_share_a_default_name(home):
    n = 8
    start, holding = threading.Barrier(n), threading.Barrier(n)
    names: list[str] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            start.wait()
            with checkpoint.reserve("mf", fresh=True) as path:
                names.append(path.stem)
                holding.wait()  # every run holds its name at the same time
        except BaseException as exc:  # noqa: BLE001 - reported by the test below
            errors.append(exc)
            holding.abort()

    threads = [threading.Thread(target=run) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    assert sorted(names) == sorted(["mf", *(f"mf-{i}" for i in range(2, n + 1))])


# -- prefixes ----------------------------------------------------------------------------------------------
def test_a_unique_beginning_finds_the_model_and_an_exact_name_wins(home):
    for name in ("als", "als-2", "als-implicit", "mf"):
        save(name)
    folder = paths.models_dir()
    assert checkpoint.resolve("als-i") == folder / "als-implicit.pt"
    assert checkpoint.resolve("m") == folder / "mf.pt"
    assert checkpoint.resolve("als") == folder / "als.pt"  # also begins als-2 and als-implicit
    assert checkpoint.resolve("als-2") == folder / "als-2.pt"
    with pytest.raises(MovierecError) as exc:
        checkpoint.resolve("al")
    text = str(exc.value)
    assert "\n" not in text and text.endswith(".")
    assert "'al' begins the names of 3 saved models (als, als-2, als-implicit)" in text
    with pytest.raises(MovierecError) as exc:
        checkpoint.resolve("x")
    assert "No saved model named 'x'" in str(exc.value)


def test_an_ambiguous_beginning_lists_at_most_ten(home):
    for i in range(1, 14):
        save(f"mf-{i:02d}")
    with pytest.raises(MovierecError) as exc:
        checkpoint.resolve("mf-")
    text = str(exc.value)
    assert "13 saved models" in text and "mf-10 and 3 more" in text and "mf-11" not in text


# -- end to end on ml-100k -----------------------------------------------------------------------------------
TINY = ["--epochs", "1", "--factors", "4", "--device", "cpu"]
LONG = "a-rather-long-name-for-a-saved-model-of-2026"


@pytest.fixture(scope="module")
def trained(trained_home) -> Path:
    """ml-100k with tiny models: two default-named mf started together, an implicit ALS, one long name."""
    with isolated_home(trained_home()) as h:
        runner = CliRunner()
        env = {**os.environ, "MOVIEREC_HOME": str(h), "OMP_NUM_THREADS": "1"}
        both = [subprocess.Popen([sys.executable, "-m", "movierec", "train", "mf", *TINY, "--json"], env=env,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
        for proc in both:
            out, err = proc.communicate(timeout=300)
            assert proc.returncode == 0, err
        for args in (["als", "--mode", "implicit"], ["mf", "--name", LONG]):
            result = runner.invoke(app, ["train", *args, *TINY, "--json"])
            assert result.exit_code == 0, result.stderr
        yield h


@pytest.fixture
def in_trained(trained):
    with isolated_home(trained):
        yield trained


def test_concurrent_trainings_get_short_distinct_names(in_trained):
    names = sorted(p.stem for p in paths.models_dir().glob("*.pt"))
    assert names == sorted(["mf", "mf-2", "als-implicit", LONG])


def test_models_shows_every_name_whole_at_80_columns(in_trained):
    env = {**os.environ, "MOVIEREC_HOME": str(in_trained), "COLUMNS": "80"}
    proc = subprocess.run([sys.executable, "-m", "movierec", "models"], capture_output=True, text=True, env=env,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert max(len(line) for line in proc.stdout.splitlines()) <= 80
    words = set(re.findall(r"[A-Za-z0-9._-]+", proc.stdout))
    for name in ("mf", "mf-2", "als-implicit", LONG):
        assert name in words, proc.stdout


def test_a_beginning_of_a_name_is_enough_for_model(in_trained, runner):
    result = runner.invoke(app, ["recommend", "--user", "1", "--model", "als-i", "--json"])
    assert result.exit_code == 0, result.stderr
    result = runner.invoke(app, ["recommend", "--user", "1", "--model", "a-rather", "--json"])
    assert result.exit_code == 0, result.stderr
    result = runner.invoke(app, ["recommend", "--user", "1", "--model", "m"])
    assert_one_line_error(result, "'m' begins the names of 2 saved models (mf, mf-2)", "type more")


def test_evaluate_rows_are_the_saved_names(in_trained):
    result = CliRunner().invoke(app, ["evaluate", "mf-2", "als-i", LONG[:8]], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.stderr
    first_cells = [line.split("│")[1].strip() for line in result.stdout.splitlines() if line.startswith("│")]
    assert first_cells == ["popularity*", "global mean*", "mf-2", "als-implicit", f"{LONG} mf"], result.stdout
    assert "(1)" not in result.stdout and "(2)" not in result.stdout


def test_evaluate_takes_a_saved_name_before_a_model_family(home, ml100k_zip):
    """`evaluate als` means the saved model named als, as `recommend --model als` does."""
    from movierec.data import download
    from movierec.evaluate import select_checkpoints
    from movierec.options import TrainOptions
    from movierec.training import train_and_save

    download.fetch("ml-100k", from_file=ml100k_zip, verify=False)
    options = TrainOptions("als", config={"epochs": 1, "factors": 2}, device="cpu")
    train_and_save(options)
    newer = train_and_save(options)
    assert newer.meta.name == "als-2"
    chosen = select_checkpoints(["als"]).paths
    assert [p.rsplit("/", 1)[-1] for p in chosen] == ["als.pt"]
