"""The Python API: the README's example runs as written, and the API answers what the command line answers."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pandas as pd
import pytest
from conftest import REPO, isolated_home

import movierec as mr
from movierec.cli import app
from movierec.data.movielens import extracted_dir
from movierec.errors import MovierecError, NotFound


@pytest.fixture(scope="module")
def home(trained_home):
    trains = [["train", "als", "--factors", "8", "--epochs", "2", "--device", "cpu", "--name", "als8", "--json"],
              ["train", "rbm", "--hidden", "8", "--epochs", "1", "--device", "cpu", "--name", "rbm8", "--json"]]
    with isolated_home(trained_home(*trains)) as h:
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


# -- many users at once -----------------------------------------------------------------------------------------
def test_lists_for_many_users_are_each_users_list(home):
    for name in ("als8", "rbm8"):
        with mr.load(name) as model:
            users = [900, 1, 42]
            many = model.recommend(users, n=5, genres="Drama")
            assert list(many.columns) == ["user_id", "rank", "movie_id", "title", "year", "genres", "score",
                                          "predicted"]
            assert many.user_id.tolist() == [u for u in users for _ in range(5)]
            for user in users:
                one, rows = model.recommend(user, n=5, genres="Drama"), many[many.user_id == user]
                assert rows.movie_id.tolist() == one.movie_id.tolist() and rows["rank"].tolist() == [1, 2, 3, 4, 5]
                assert rows.title.tolist() == one.title.tolist()
                assert rows.score.to_numpy() == pytest.approx(one.score.to_numpy(), abs=1e-4)
                assert rows.predicted.to_numpy() == pytest.approx(one.predicted.to_numpy(), abs=1e-4)
            ids, scores = model.recommend(pd.Series(users), n=5, genres="Drama", as_arrays=True)
            assert ids.shape == scores.shape == (3, 5)
            assert ids.ravel().tolist() == many.movie_id.tolist()
            one_ids, one_scores = model.recommend(42, n=5, genres="Drama", as_arrays=True)
            assert one_ids.tolist() == ids[2].tolist() and one_scores.shape == (5,)


def test_a_list_longer_than_the_allowed_movies_is_padded(home):
    with mr.load("als8") as model:
        ids, scores = model.recommend([1, 2], n=2000, as_arrays=True)
        rated = len(mr.load_dataset("ml-100k").split("u1")[0].query("user_id == 1"))
        assert ids.shape == (2, 1682) and (ids[0] == -1).sum() >= rated  # its training movies are left out
        assert pd.isna(scores[ids == -1]).all() and not pd.isna(scores[ids != -1]).any()


def test_predictions_for_many_pairs_are_the_single_predictions(home):
    data = mr.load_dataset("ml-100k")
    _, test = data.split("u1")
    for name in ("als8", "rbm8"):
        with mr.load(name) as model:
            sample = test.iloc[::400]
            many = model.predict(sample.user_id.tolist(), sample.movie_id.to_numpy())
            assert many.shape == (len(sample),)
            single = [model.predict(int(u), int(m)) for u, m in zip(sample.user_id, sample.movie_id)]
            assert many == pytest.approx(single, abs=1e-5)
            films = model.predict(42, [50, "Fargo", 100])  # one user with every movie
            assert films == pytest.approx([model.predict(42, 50), model.predict(42, 100), model.predict(42, 100)],
                                          abs=1e-5)
    with mr.load("als8") as model:
        scored = model.predict_frame(test)
        assert list(scored.columns) == [*test.columns, "prediction"] and len(scored) == len(test)
        rmse = float(((scored.prediction - scored.rating) ** 2).mean() ** 0.5)
        assert rmse == pytest.approx(model.metrics["rmse"], abs=1e-4)  # the test RMSE measured after training


def test_a_factor_model_shows_its_factors(home):
    with mr.load("als8") as model:
        f = model.factors()
        assert f["user_factors"].shape == (943, 8) and f["item_factors"].shape == (1682, 8)
        assert model.user_ids.tolist() == f["user_ids"].tolist() == list(range(1, 944))
        u, i = int(list(model.user_ids).index(42)), int(list(model.item_ids).index(50))
        raw = f["user_factors"][u] @ f["item_factors"][i] + f["user_bias"][u] + f["item_bias"][i] + f["mean"]
        assert model.predict(42, 50) == pytest.approx(min(5.0, max(1.0, float(raw))), abs=1e-4)
        assert (model.item_factors == f["item_factors"]).all()
    with mr.load("rbm8") as model, pytest.raises(MovierecError, match="rbm model, which has no user and movie"):
        model.user_factors  # noqa: B018


@pytest.mark.parametrize(("call", "says"), [
    (lambda m: m.predict(42.5, 50), "User ids are whole numbers or names; 42.5 is neither"),
    (lambda m: m.predict([1, None], [50, 50]), "User ids are whole numbers or names; None is neither"),
    (lambda m: m.predict([1, 2], [50, 51, 52]), "Give as many movies as users (2 users, 3 movies)"),
    (lambda m: m.predict([1, 5000], 50), "User 5000 is not in ml-100k"),
    (lambda m: m.predict(1, [50, 99999]), "Movie 99999 is not in ml-100k"),
    (lambda m: m.predict("Ann", 50), "User 'Ann' is not in ml-100k"),
    (lambda m: m.recommend([[1, 2]], as_arrays=True), "User ids are a flat list"),
    (lambda m: m.recommend([1, 2], n=0), "at least 1"),
    (lambda m: m.predict_frame([1, 2]), "predict_frame takes a pandas DataFrame, not a list"),
    (lambda m: m.predict_frame(pd.DataFrame({"user": [1]})), "The frame has no 'user_id' column"),
    (lambda m: m.save(), "als8 is already saved"),
])
def test_batch_mistakes_are_one_sentence(home, call, says):
    with mr.load("als8") as model, pytest.raises(MovierecError) as err:
        call(model)
    assert says in str(err.value) and "\n" not in str(err.value)
    assert mr.MovierecError is MovierecError and mr.NotFound is NotFound  # catchable from the package itself


@pytest.mark.slow
def test_a_model_fitted_in_memory_answers_and_saves_as_trained(home):
    before = set(mr.saved_models().name)
    model = mr.fit("als", "ml-100k", factors=4, epochs=1)
    assert not model.saved and set(mr.saved_models().name) == before  # nothing written
    listed = model.recommend(42, n=5)
    saved = model.save("fitted-als")
    try:
        assert saved.saved and saved.name == "fitted-als" and "fitted-als" in set(mr.saved_models().name)
        assert saved.recommend(42, n=5).equals(listed)
        assert saved.metrics == model.metrics and saved.info["config"] == model.info["config"]
        again = mr.train("als", "ml-100k", factors=4, epochs=1, name="trained-als")
        assert again.recommend(42, n=5).equals(listed)  # same seed, same model as `train` saves
        again.close()
        mr.remove("trained-als")
    finally:
        saved.close()
        mr.remove("fitted-als")


def test_a_split_of_your_own_trains_as_the_named_split_does(home):
    data = mr.load_dataset("ml-100k")
    train, test = data.split("u1")
    named = mr.fit("als", "ml-100k", split="u1", factors=4, epochs=2)
    own = mr.fit("als", "ml-100k", train=train, test=test[["user_id", "movie_id"]], factors=4, epochs=2)
    assert own.info["split"] == "own" and own.info["dataset"] == "ml-100k"
    assert own.metrics["rmse"] == pytest.approx(named.metrics["rmse"], abs=1e-4)
    assert own.predict_frame(test).prediction.to_numpy() == pytest.approx(
        named.predict_frame(test).prediction.to_numpy(), abs=1e-3)
    # Without a dataset the two frames are the ratings; names of your own stay names.
    frames = [f.assign(user_id="u" + f.user_id.astype(str)) for f in (train, test)]
    mine = mr.fit("als", train=frames[0], test=frames[1], factors=4, epochs=2)
    assert mine.info["dataset"] == "dataframe" and mine.metrics["rmse"] == pytest.approx(own.metrics["rmse"], abs=1e-3)
    assert mine.recommend(["u42", "u1"], n=3).user_id.tolist() == ["u42"] * 3 + ["u1"] * 3
    saved = own.save("own-split")
    try:
        with pytest.raises(MovierecError, match="is one you gave .train= and test=., which movierec cannot draw"):
            mr.evaluate_models(["own-split"])
    finally:
        saved.close()
        mr.remove("own-split")


@pytest.mark.parametrize(("frames", "says"), [
    (lambda tr, te: (tr, pd.concat([te, tr.head(3)])), "3 (user, movie) pairs are in both the training and the test"),
    (lambda tr, te: (tr, te.iloc[:0]), "The test ratings are empty"),
    (lambda tr, te: (tr, None), "give both train= and test="),
    (lambda tr, te: (tr, te.assign(movie_id=te.movie_id + 5000)), "Movie 5"),
    (lambda tr, te: (tr.rename(columns={"user_id": "who"}), te), "The training DataFrame has no user column"),
    (lambda tr, te: (tr, te.assign(user_id="someone")), "user ids that are not numbers, such as 'someone'"),
])
def test_a_split_of_your_own_that_cannot_be_is_one_sentence(home, frames, says):
    train, test = mr.load_dataset("ml-100k").split("u1")
    given_train, given_test = frames(train, test)
    with pytest.raises(MovierecError) as err:
        mr.fit("als", "ml-100k", train=given_train, test=given_test, factors=4, epochs=1)
    assert says in str(err.value) and "\n" not in str(err.value)
