"""The Python API: the README's example runs as written, and the API answers what the command line answers."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pandas as pd
import pytest
from conftest import REPO, ml100k_home

import movierec as mr
from movierec.cli import app
from movierec.data.movielens import extracted_dir
from movierec.errors import MovierecError, NotFound


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    trains = [["train", "als", "--factors", "8", "--epochs", "2", "--device", "cpu", "--name", "als8", "--json"],
              ["train", "rbm", "--hidden", "8", "--epochs", "1", "--device", "cpu", "--name", "rbm8", "--json"]]
    with ml100k_home(tmp_path_factory.mktemp("api") / "home", *trains) as h:
        yield h


def readme_python() -> str:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    section = text[text.index("\n## Python\n"):]
    section = section[: section.index("\n## ", 1)]
    blocks = re.findall(r"```python\n(.*?)```", section, re.S)
    assert len(blocks) == 1, "the README's Python section holds one example"
    return blocks[0]


@pytest.mark.slow
def test_the_readme_example_runs_as_written(home, tmp_path):
    env = {**os.environ, "MOVIEREC_HOME": str(home), "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-c", readme_python()], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "80000 20000"
    assert [line.split()[0] for line in lines[1:11]] == [str(e) for e in range(1, 11)]  # progress, every epoch
    assert "Godfather, The (1972)" in done.stdout and "Return of the Jedi (1983)" in done.stdout
    assert "notebook-als" in done.stdout and "global mean" in done.stdout


def test_importing_movierec_loads_neither_torch_nor_pandas():
    code = "import sys, movierec; print(sorted({'torch', 'pandas'} & set(sys.modules)), 'train' in dir(movierec))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert done.stdout.split() == ["[]", "True"], done.stderr
    assert mr.train is mr.api.train
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        mr.nothing  # noqa: B018


def test_answers_are_the_command_lines(home, runner):
    cli = json.loads(runner.invoke(app, ["recommend", "--model", "als8", "--user", "42", "--top", "7",
                                         "--json"]).stdout)
    with mr.load("als8") as model:
        frame = model.recommend(42, n=7)
        assert list(frame.columns) == ["rank", "movie_id", "title", "year", "genres", "score", "predicted",
                                       "because_you_liked"]
        assert frame.astype(object).where(frame.notna(), None).to_dict("records") == cli
        seen_too = model.recommend(42, n=200, filter_already_liked_items=False)
        assert set(seen_too.movie_id) - set(model.recommend(42, n=200).movie_id)  # rated movies come back
        cli = json.loads(runner.invoke(app, ["similar", "Fargo", "--model", "als8", "--json"]).stdout)
        assert model.similar_items("fargo").to_dict("list")["movie_id"] == [r["movie_id"] for r in cli["similar"]]
        new = model.recommend_new({"Star Wars (1977)": 5, 100: 4}, n=5, genres="Drama")
        assert len(new) == 5 and all("Drama" in g for g in new.genres)


def test_predict_is_what_the_lists_show(home):
    with mr.load("als8") as rating_model, mr.load("rbm8") as like_model:
        top = rating_model.recommend(42, n=3)
        for movie, stars in zip(top.movie_id, top.predicted):
            assert rating_model.predict(42, int(movie)) == pytest.approx(stars, abs=1e-4)
        assert top.score.is_monotonic_decreasing  # the list shows what it is ordered by, beside the stars
        liked = like_model.recommend(42, n=3)
        for movie, p_like in zip(liked.movie_id, liked.predicted):
            assert like_model.predict(42, int(movie)) == pytest.approx(p_like, abs=1e-4)
        assert 1.0 <= rating_model.predict(42, "Star Wars (1977)") <= 5.0  # stars, clipped to the scale
        assert 0.0 <= like_model.predict(42, "Star Wars (1977)") <= 1.0  # P(liked)
        with pytest.raises(NotFound, match="User 5000 is not in ml-100k"):
            rating_model.predict(5000, 50)


def test_a_model_describes_itself(home, tmp_path):
    with mr.load("als8") as model:
        assert model.name == "als8" and repr(model) == "<Model als8: als explicit on ml-100k (u1)>"
        assert set(model.metrics) >= {"rmse", "mae"} and model.info["config"]["factors"] == 8
        assert list(model.history.epoch) == [1, 2] and "train_rmse" in model.history
        assert model.search("star wa").title.tolist()[0] == "Star Wars (1977)"
        assert model.plot_curves(tmp_path / "c.png").read_bytes().startswith(b"\x89PNG")
        assert model.plot_map(tmp_path / "m.png", color_by="genre").stat().st_size > 1000
        assert model.export(tmp_path / "top.csv", users=[1, 42], n=3) == 6
        assert (tmp_path / "top.csv").read_text().splitlines()[0] == "user_id,rank,movie_id,title,score"
        clusters = model.clusters(3)
        assert clusters["size"].sum() == 1682 and list(clusters.cluster) == [1, 2, 3]
    listed = mr.saved_models()
    assert {"als8", "rbm8"} <= set(listed.name) and listed.newest.sum() == 1


def test_datasets_and_splits_carry_movielens_ids(home):
    data = mr.load_dataset("ml-100k")
    assert repr(data) == "<MovieLens ml-100k: 943 users, 1,682 movies, 100,000 ratings>"
    ratings = data.ratings
    assert len(ratings) == 100_000 and ratings.user_id.between(1, 943).all() and ratings.rating.isin(range(1, 6)).all()
    train, test = data.split("u1")
    official = pd.read_csv(extracted_dir("ml-100k") / "u1.test", sep="\t", header=None)
    assert (len(train), len(test)) == (80_000, 20_000)
    assert sorted(zip(official[0], official[1])) == sorted(zip(test.user_id, test.movie_id))
    assert data.movies.loc[50, "title"] == "Star Wars (1977)" and data.users.loc[1, "age"] == 24
    assert "u1" in data.splits and "random" in data.splits
    one, two = data.split("random", seed=3), data.split("random", seed=3)
    assert one[1].equals(two[1])  # same seed, same split
    listed = mr.datasets()
    assert listed.set_index("name").loc["ml-100k", "cached"]


@pytest.mark.parametrize(("call", "says"), [
    (lambda: mr.train("svd"), "Unknown model 'svd'; choose one of"),
    (lambda: mr.train("als", dataset="ml-100k", factorz=8), "Invalid als settings: unknown"),
    (lambda: mr.model_config("als", factorz=8), "Invalid als settings: unknown"),
    (lambda: mr.train("als", config=mr.model_config("mf")), "A MFConfig is not the config of als"),
    (lambda: mr.train("als", mode="implicit", config=mr.model_config("als")), "is not the config of als --mode "),
    (lambda: mr.cross_validate("als", "ml-100k", folds=1), "fold"),
    (lambda: mr.load("no-such-model"), "No saved model named 'no-such-model'"),
    (lambda: mr.load_dataset("ml-1m"), "ml-1m"),
    (lambda: mr.evaluate_models("als8", k=0), "K must be at least 1"),
])
def test_mistakes_are_one_sentence(home, call, says):
    with pytest.raises(MovierecError) as err:
        call()
    assert says in str(err.value) and "\n" not in str(err.value)


@pytest.mark.slow
def test_train_from_python_saves_and_reports_every_epoch(home):
    epochs = []
    config = mr.model_config("mf", factors=4, epochs=3)
    assert config.factors == 4 and config.lr > 0  # the defaults, shown and checked
    model = mr.train("mf", dataset="ml-100k", config=config, epochs=2, name="py-mf", progress=epochs.append)
    try:
        assert [e.epoch for e in epochs] == [1, 2] and model.name == "py-mf"  # settings override the config
        assert model.info["config"]["factors"] == 4
        assert "py-mf" in set(mr.saved_models().name)
        table = mr.evaluate_models(["py-mf"])
        assert table.model.tolist() == ["popularity", "global mean", "mf"] and table.rmse.iloc[-1] > 0
    finally:
        model.close()
        mr.remove("py-mf")
    assert "py-mf" not in set(mr.saved_models().name)


@pytest.mark.slow
def test_cross_validate_gives_each_fold_then_mean_and_std(home):
    before = set(mr.saved_models().name)
    table = mr.cross_validate("als", "ml-100k", factors=4, epochs=2)
    assert table.fold.tolist() == ["u1", "u2", "u3", "u4", "u5", "mean", "std"]
    assert table.rmse.iloc[5] == pytest.approx(table.rmse.iloc[:5].mean())
    assert table.rmse.iloc[6] == pytest.approx(table.rmse.iloc[:5].std(ddof=0))
    assert set(mr.saved_models().name) == before  # nothing saved
