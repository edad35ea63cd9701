"""Cross-validation: the folds (disjoint, covering, seeded), `cross_validate` on ml-100k's u1..u5, `movierec cv`."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from conftest import assert_one_line_error, isolated_home
from recording import Recorder
from synthetic import synthetic_dataset
from typer.testing import CliRunner

from movierec.cli import app
from movierec.crossval import cross_validate
from movierec.data.split import fold_of_ratings, fold_split, official_folds
from movierec.errors import MovierecError
from movierec.options import TrainOptions

TINY_ALS = ["--factors", "4", "--epochs", "2"]


# -- the folds --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("n", "k"), [(10, 2), (101, 5), (7, 7), (1000, 3)])
def test_random_folds_are_disjoint_cover_every_rating_and_are_even(n, k):
    fold = fold_of_ratings(n, k, seed=4)
    assert fold.shape == (n,)
    assert set(fold.tolist()) == set(range(k))  # every rating in exactly one fold, every fold used
    sizes = np.bincount(fold, minlength=k)
    assert sizes.sum() == n and sizes.max() - sizes.min() <= 1


def test_same_seed_same_folds_another_seed_others():
    assert np.array_equal(fold_of_ratings(500, 5, seed=1), fold_of_ratings(500, 5, seed=1))
    assert not np.array_equal(fold_of_ratings(500, 5, seed=1), fold_of_ratings(500, 5, seed=2))


def test_fold_splits_partition_the_ratings():
    data = synthetic_dataset()
    ratings = data.ratings
    key = ratings.users.astype(np.int64) * ratings.n_items + ratings.items  # one (user, movie) per rating
    tested = []
    for i in range(1, 4):
        split = fold_split(data, i, 3, seed=9)
        assert split.name == f"fold {i}/3"
        train_key = split.train.users.astype(np.int64) * ratings.n_items + split.train.items
        test_key = split.test.users.astype(np.int64) * ratings.n_items + split.test.items
        assert len(split.train) + len(split.test) == len(ratings)
        assert not set(train_key.tolist()) & set(test_key.tolist())
        tested.extend(test_key.tolist())
    assert sorted(tested) == sorted(key.tolist())  # the test folds cover every rating exactly once
    again = fold_split(data, 2, 3, seed=9)
    assert np.array_equal(again.test.users, fold_split(data, 2, 3, seed=9).test.users)


@pytest.mark.parametrize(("n", "k", "fragment"), [
    (10, 1, "at least 2 folds, not 1"),
    (10, 0, "at least 2 folds, not 0"),
    (3, 4, "4 folds is more than the 3 ratings"),
])
def test_impossible_fold_counts_are_one_sentence(n, k, fragment):
    with pytest.raises(MovierecError, match=fragment):
        fold_of_ratings(n, k)


def test_official_folds():
    assert official_folds("ml-100k") == ("u1", "u2", "u3", "u4", "u5")
    assert official_folds("ml-1m") == ()


# -- cross_validate and `movierec cv` on ml-100k --------------------------------------------------------------
@pytest.fixture(scope="module")
def ml100k(trained_home):
    with isolated_home(trained_home()) as h:
        yield h


def test_cross_validate_trains_once_per_official_fold_and_tests_each_fold_once(ml100k, monkeypatch):
    import movierec.evaluate
    import movierec.training as training

    fits, validated, tested = [], [], []
    real_fit, real_heldout, real_evaluate = training.fit, training.heldout_metrics, movierec.evaluate.evaluate

    def fit(model, train, valid, **kwargs):
        fits.append((model.kind, len(train), None if valid is None else len(valid)))
        return real_fit(model, train, valid, **kwargs)

    def heldout(model, train, held_out, progress=None):
        validated.append(len(held_out))
        return real_heldout(model, train, held_out, progress)

    def evaluate(model, train, test, **kwargs):
        tested.append((len(fits), len(test), train.nnz))
        return real_evaluate(model, train, test, **kwargs)

    monkeypatch.setattr(training, "fit", fit)
    monkeypatch.setattr(training, "heldout_metrics", heldout)
    monkeypatch.setattr(movierec.evaluate, "evaluate", evaluate)
    heard = Recorder()
    options = TrainOptions("als", config={"factors": 4, "epochs": 2}, dataset="ml-100k", patience=1)
    result = cross_validate(options, events=heard)
    steps = heard.of("step")

    assert result.folds == ["u1", "u2", "u3", "u4", "u5"]
    assert (result.model, result.mode, result.dataset) == ("als", "explicit", "ml-100k")
    # One training per fold through the one loop, on the fold's training ratings less a 5% validation slice,
    # then its picks model's on the same ratings; every epoch validates on that slice, and each test fold
    # (20,000 ratings) is scored once, after its training, with all 80,000 training ratings as the users' history.
    assert fits == [("rating", 76_000, 4_000), ("rank", 76_000, None)] * 5
    assert validated and set(validated) == {4_000}
    assert tested == [(2 * i, 20_000, 80_000) for i in range(1, 6)]
    assert any(s.startswith("u3: Epoch 1/2") for s in steps)
    assert result.config["factors"] == 4

    assert len(result.metrics) == 5 and "rmse" in result.mean and "ndcg@10" in result.mean
    for key, mean in result.mean.items():
        values = [m[key] for m in result.metrics]
        assert mean == pytest.approx(np.mean(values))
        assert result.std[key] == pytest.approx(np.std(values))
    assert 0.85 < result.mean["rmse"] < 1.1
    assert result.baseline_name == "global mean"
    assert result.mean["rmse"] < result.baseline_mean["rmse"]


def test_top_n_models_report_ranking_metrics_only(ml100k):
    options = TrainOptions("als", mode="implicit", config={"factors": 4, "epochs": 1}, dataset="ml-100k")
    result = cross_validate(options, 2)
    assert result.folds == ["fold 1/2", "fold 2/2"]  # another number of folds: random ones
    assert "rmse" not in result.mean and result.mean["ndcg@10"] > 0
    assert result.baseline_name == "popularity"


def cv(*args: str, columns: int = 200):
    return CliRunner(env={"COLUMNS": str(columns)}).invoke(app, ["cv", *args])


def test_cv_table_fits_80_columns(ml100k):
    result = cv("als", *TINY_ALS, columns=80)
    assert result.exit_code == 0, result.stderr
    lines = result.stdout.splitlines()
    assert max(map(len, lines)) <= 80, result.stdout
    for fold in ("u1", "u2", "u3", "u4", "u5"):
        assert any(line.startswith(f"{fold}: trained on 80,000 ratings") for line in lines)
        assert any(line.startswith(f"│ {fold} ") for line in lines)
    assert any("│ mean" in line for line in lines) and any("± std" in line for line in lines)
    assert "RMSE" in result.stdout and "NDCG@10" in result.stdout
    assert "Baseline (global mean), mean over the folds: rmse" in result.stdout
    assert "Not shown at this width:" in result.stdout  # and named, not cut


def test_cv_json_same_seed_same_numbers(ml100k):
    first = cv("als", *TINY_ALS, "--folds", "3", "--seed", "5", "--json")
    assert first.exit_code == 0, first.stderr
    out = json.loads(first.stdout)
    assert [f["fold"] for f in out["folds"]] == ["fold 1/3", "fold 2/3", "fold 3/3"]
    assert sum(f["test_ratings"] for f in out["folds"]) == 100_000
    assert out["mean"]["rmse"] == pytest.approx(np.mean([f["metrics"]["rmse"] for f in out["folds"]]))
    again = json.loads(cv("als", *TINY_ALS, "--folds", "3", "--seed", "5", "--json").stdout)
    assert [f["metrics"] for f in again["folds"]] == [f["metrics"] for f in out["folds"]]
    other = json.loads(cv("als", *TINY_ALS, "--folds", "3", "--seed", "6", "--json").stdout)
    assert other["folds"][0]["metrics"]["rmse"] != out["folds"][0]["metrics"]["rmse"]
    assert all(math.isfinite(v) for v in out["std"].values())


@pytest.mark.parametrize(("args", "fragments"), [
    (["nomodel"], ["Unknown model 'nomodel'", "als"]),
    (["als", "--folds", "1"], ["at least 2 folds, not 1"]),
    (["als", "--folds", "100001"], ["100,001 folds is more than the 100,000 ratings"]),
    (["als", "--lr", "0.1"], ["No such option: --lr"]),
    (["mf", "--dataset", "ml-1m"], ["ml-1m"]),
])
def test_cv_errors_are_one_sentence(ml100k, args, fragments):
    assert_one_line_error(cv(*args), *fragments)


def test_cv_help_lists_the_model_options_of_train(ml100k):
    result = cv("als", "--help", columns=120)
    assert result.exit_code == 0
    for option in ("--folds", "--factors", "--mode", "--patience", "--seed", "--json"):
        assert option in result.stdout
    assert "--name" not in result.stdout and "--split" not in result.stdout
