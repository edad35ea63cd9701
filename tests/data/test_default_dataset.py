"""The dataset the user fetched is the default, and the quick-start sequence works on any release."""

from __future__ import annotations

import json
import os
import time

import pytest
from conftest import assert_one_line_error, isolated_home

from benchmarks.synth_release import write_release
from movierec import paths
from movierec.cli import app
from movierec.data.default import default_dataset
from movierec.errors import MovierecError


@pytest.fixture(scope="module")
def archives(tmp_path_factory):
    folder = tmp_path_factory.mktemp("synthetic")
    return {
        "ml-1m": write_release("small-ml-1m", folder / "ml-1m.zip"),
        "ml-latest-small": write_release("small-ml-latest-small", folder / "ml-latest-small.zip"),
    }


def ok(runner, *args: str):
    result = runner.invoke(app, list(args))
    assert result.exit_code == 0, f"movierec {' '.join(args)}: {result.stderr}{result.exception!r}"
    return result


def fetch(runner, archives, name: str):
    return ok(runner, "fetch", name, "--from-file", str(archives[name]), "--no-verify")


def test_nothing_fetched_says_how_to_fetch(home, runner):
    with pytest.raises(MovierecError) as exc:
        default_dataset()
    assert str(exc.value) == "No dataset is fetched yet; run `movierec fetch ml-100k` first."
    result = runner.invoke(app, ["train", "mf", "--epochs", "1"])
    assert_one_line_error(result, "No dataset is fetched yet", "`movierec fetch ml-100k`")
    assert not paths.models_dir().exists()


def test_the_most_recently_fetched_dataset_is_the_default(home, runner, archives):
    fetch(runner, archives, "ml-latest-small")
    assert (default_dataset().name, default_dataset().why) == ("ml-latest-small", "the only fetched dataset")
    fetch(runner, archives, "ml-1m")
    assert (default_dataset().name, default_dataset().why) == ("ml-1m", "the most recently fetched dataset")

    # The fetch time recorded in the dataset folder decides, not the registry's order.
    record = paths.dataset_dir("ml-1m") / "download.json"
    data = json.loads(record.read_text())
    data["date"] = "2001-01-01T00:00:00+00:00"
    record.write_text(json.dumps(data))
    assert default_dataset().name == "ml-latest-small"

    result = ok(runner, "train", "mf", "--epochs", "1", "--factors", "4")
    assert "Training mf on ml-latest-small (the most recently fetched dataset) split random" in result.stdout
    # Naming a dataset still wins, and is not explained.
    result = ok(runner, "train", "mf", "--epochs", "1", "--factors", "4", "--dataset", "ml-1m")
    assert "Training mf on ml-1m split random" in result.stdout


def test_two_fetches_in_the_same_second_are_ordered(home, runner, archives):
    fetch(runner, archives, "ml-1m")
    fetch(runner, archives, "ml-latest-small")
    same = "2020-01-01T00:00:00+00:00"
    for name, mtime in (("ml-1m", 2_000), ("ml-latest-small", 1_000)):
        record = paths.dataset_dir(name) / "download.json"
        record.write_text(json.dumps({**json.loads(record.read_text()), "date": same}))
        os.utime(record, (mtime, mtime))
    assert default_dataset().name == "ml-1m"


@pytest.mark.slow
def test_quick_start_on_ml1m_verbatim(tmp_path, runner, archives):
    """`movierec fetch ml-1m && movierec train rbm --hidden 100 --k 10 && movierec recommend --user 42 --top 10
    && movierec evaluate`, word for word, on an archive in ml-1m's layout."""
    with isolated_home(tmp_path / "home"):
        ok(runner, "fetch", "ml-1m", "--from-file", str(archives["ml-1m"]), "--no-verify")
        start = time.time()
        trained = ok(runner, "train", "rbm", "--hidden", "100", "--k", "10")
        assert "Training rbm on ml-1m (the only fetched dataset) split random" in trained.stdout
        assert "Training summary" in trained.stdout and "ml-1m (split random)" in trained.stdout
        listed = ok(runner, "recommend", "--user", "42", "--top", "10")
        assert "Top 10 for user 42" in listed.stdout
        assert listed.stdout.count("Synthetic Movie Number") >= 10
        evaluated = ok(runner, "evaluate")
        assert "Evaluation on ml-1m, random split, seed 0, 10% held out" in " ".join(evaluated.stdout.split())
        assert "│ rbm " in evaluated.stdout  # the default name: the model's own
        assert time.time() - start < 300  # a guard against a hang, not a timing claim


def test_evaluate_compares_only_models_tested_on_the_newest_split(home, runner, archives):
    fetch(runner, archives, "ml-1m")
    for model, seed, name in (("als", "0", "als-seed0"), ("als", "1", "als-seed1"), ("mf", "1", "mf-seed1")):
        ok(runner, "train", model, "--epochs", "2", "--factors", "4", "--seed", seed, "--name", name)
    result = ok(runner, "evaluate", "--json")
    rows = json.loads(result.stdout)
    assert [(r["model"], r["checkpoint"]) for r in rows] == [
        ("popularity", None), ("global mean", None), ("als", "als-seed1"), ("mf", "mf-seed1")]
    assert {(r["seed"], r["test_fraction"], r["split_label"]) for r in rows} == {
        (1, 0.1, "ml-1m, random split, seed 1, 10% held out")}
    assert result.stderr.strip() == ("Note: 1 saved model tested on other data or splits left out; name it to "
                                     "include it, e.g. `movierec evaluate als-seed0`.")
    # Named, it is evaluated beside its own split's baselines.
    rows = json.loads(ok(runner, "evaluate", "--json", "als-seed0", "mf-seed1").stdout)
    assert [(r["model"], r["seed"]) for r in rows] == [
        ("popularity", 0), ("global mean", 0), ("als", 0), ("popularity", 1), ("global mean", 1), ("mf", 1)]
    table = ok(runner, "evaluate", "als-seed0", "mf-seed1").stdout
    assert "Evaluation on 2 different test splits" in table
    assert "als-seed0 on ml-1m, random split, seed 0, 10% held out" in " ".join(table.split())
