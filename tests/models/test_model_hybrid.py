"""The hybrid model: movies nobody rated and people nobody knows, from what the release says about them.

On a release whose people's group (occupation, age, gender) decides their favourite genre, the right answers are
known: a movie without a training rating goes to the people of its genre, and a newcomer's first movie is their
group's favourite, not the most popular one."""

from __future__ import annotations

import logging
import types

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import assert_one_line_error
from synthetic import GENRE_TASTE, GROUPS, STARS, TAG_THEMES, genre_taste_archive, group_taste_archive, low_rank

from movierec.data import download
from movierec.data.features import MAX_PER_FIELD, movie_features, people_features, person_features
from movierec.data.movielens import load_dataset
from movierec.data.split import Split
from movierec.device import resolve_device
from movierec.errors import MovierecError
from movierec.loading import load, open_model, serve_unsaved
from movierec.models import build_model
from movierec.options import TrainOptions
from movierec.training import fit, fit_split, train_and_save

PER_GENRE = 40
COLD = [g * PER_GENRE + 6 for g in range(len(GENRE_TASTE))]
"""One movie of each genre, the 7th best known of it, whose ratings are all held out of training."""


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    from conftest import isolated_home

    folder = tmp_path_factory.mktemp("hybrid")
    archive, group = group_taste_archive(per_genre=PER_GENRE)
    (folder / "groups.zip").write_bytes(archive)
    with isolated_home(folder / "home"):
        download.fetch("ml-100k", from_file=folder / "groups.zip", verify=False)
        yield load_dataset("ml-100k"), group


def _fit(data, train, test, **config):
    split = Split("custom", train, test, 0)
    return fit_split(TrainOptions("hybrid", config={"epochs": 30, **config}), data, split,
                     device=resolve_device("cpu"))


def test_a_movie_nobody_rated_goes_to_the_people_of_its_genre(release):
    data, group = release
    ratings = data.ratings
    cold = np.isin(ratings.items, COLD)
    fitted = _fit(data, ratings.take(~cold), ratings.take(cold))
    served = serve_unsaved(fitted.model, ratings.take(~cold), data, picks=fitted.picks)
    cold_ids = {int(data.item_ids[i]): g for g, i in enumerate(COLD)}
    wrong = []
    for u in range(data.n_users):
        rows = served.recommend(int(data.user_ids[u]), data.n_items, include_unrated=True)
        first = next(r["movie_id"] for r in rows if r["movie_id"] in cold_ids)
        if cold_ids[first] != group[u]:
            wrong.append(u)
    assert wrong == []
    # Off by default: a list holds only movies with training ratings.
    listed = {r["movie_id"] for r in served.recommend(int(data.user_ids[0]), data.n_items)}
    assert not listed & set(cold_ids)
    # And `similar` finds its genre for it.
    horror = served.similar(int(data.item_ids[COLD[1]]), 5, min_ratings=1)["similar"]
    assert [r["genres"] for r in horror] == [["Horror"]] * 5



PER_THEME = 30
COLD_TAGGED = {t * PER_THEME + 7: t for t in range(len(TAG_THEMES))}
"""One movie id of each theme of :func:`tag_taste_archive`, the 7th best known of it, its ratings held out."""


@pytest.fixture(scope="module")
def tagged_release(tmp_path_factory):
    """A home with :func:`tag_taste_archive` fetched as ml-20m (enter it with ``isolated_home``: the tags are read
    from it when features are built), and each person's theme."""
    from conftest import isolated_home
    from synthetic import tag_taste_archive

    folder = tmp_path_factory.mktemp("hybrid-tags")
    archive, theme = tag_taste_archive(per_theme=PER_THEME)
    (folder / "tagged.zip").write_bytes(archive)
    with isolated_home(folder / "home"):
        download.fetch("ml-20m", from_file=folder / "tagged.zip", verify=False)
    return folder / "home", theme


def test_a_movie_nobody_rated_goes_to_the_people_who_love_its_tag(tagged_release):
    # Every movie is a Drama of the 1990s: only the tags say which theme a movie is of.
    from conftest import isolated_home

    home, theme = tagged_release
    with isolated_home(home):
        data = load_dataset("ml-20m")
        ratings = data.ratings
        cold = np.isin(data.item_ids[ratings.items], list(COLD_TAGGED))
        assert int(cold.sum()) > 0
        for features in ("tags", "movies"):
            fitted = _fit(data, ratings.take(~cold), ratings.take(cold), features=features)
            served = serve_unsaved(fitted.model, ratings.take(~cold), data, picks=fitted.picks)
            wrong = []
            for u in range(data.n_users):
                user_id = int(data.user_ids[u])
                rows = served.recommend(user_id, data.n_items, include_unrated=True)
                first = next(r["movie_id"] for r in rows if r["movie_id"] in COLD_TAGGED)
                if COLD_TAGGED[first] != theme[user_id - 1]:
                    wrong.append(user_id)
            if features == "tags":
                assert wrong == []
            else:  # genres and decade alone: one movie first for everyone, right only for the people of its theme
                assert len(wrong) > data.n_users // 2, len(wrong)


def test_tags_asked_of_a_release_without_them_train_with_one_note(trained_home, runner):
    from conftest import isolated_home

    from movierec.cli import app

    with isolated_home(trained_home()):  # the real ml-100k, which has no tags
        result = runner.invoke(app, ["train", "hybrid", "--features", "tags", "--epochs", "1", "--split", "random",
                                     "--name", "untagged"])
        assert result.exit_code == 0, result.stderr
        notes = [line for line in result.stderr.splitlines() if "has no tags" in line]
        assert len(notes) == 1, result.stderr
        assert notes[0].startswith("Warning: ml-100k has no tags")
        assert "(the release ships none); the model learns without" in notes[0]
        served = open_model("untagged")
        try:
            assert served.side is not None and served.side.movies == [] and not served.side.knows_movies
            assert len(served.recommend(1, 3)) == 3
        finally:
            served.close()


def test_a_newcomers_first_movie_is_their_groups_favourite(release):
    data, group = release
    ratings = data.ratings
    fitted = _fit(data, ratings, ratings.take(np.zeros(len(ratings), dtype=bool)))
    served = serve_unsaved(fitted.model, ratings, data, picks=fitted.picks)
    liked = ratings.ratings >= 4
    most_popular = int(np.bincount(ratings.items, minlength=data.n_items).argmax())
    for g, (occupation, age, gender) in enumerate(GROUPS):
        theirs = liked & (group[ratings.users] == g)
        favourite = int(np.bincount(ratings.items[theirs], minlength=data.n_items).argmax())
        rows = served.recommend_new({}, 3, person={"occupation": occupation, "age": age, "gender": gender})
        assert rows[0]["movie_id"] == int(data.item_ids[favourite]), (occupation, rows)
        # Occupation alone says it too; popularity would not (but for the largest group, whose it is).
        alone = served.recommend_new([], 1, person={"occupation": occupation.upper()})
        assert alone[0]["movie_id"] == int(data.item_ids[favourite])
        assert (favourite == most_popular) == (g == 0)
    # With ratings too, the two combine: a doctor who rated two westerns highly gets westerns.
    westerns = {int(data.item_ids[3 * PER_GENRE + k]): 5 for k in range(2)}
    rows = served.recommend_new(westerns, 5, person={"occupation": "doctor"})
    assert sum(r["genres"] == ["Western"] for r in rows) >= 3, rows


def test_a_hybrid_without_features_is_mf():
    train = low_rank(seed=1)
    results = []
    for name, config in (("mf", {"factors": 4, "epochs": 5}), ("hybrid", {"factors": 4, "epochs": 5,
                                                                           "features": "none"})):
        torch.manual_seed(0)
        model = build_model(name, None, config, train.n_users, train.n_items, STARS)
        results.append([r.train["rmse"] for r in fit(model, train, None, seed=0).history])
    np.testing.assert_allclose(results[0], results[1], rtol=1e-5)


def test_saved_and_loaded_with_its_features(release):
    out = train_and_save(TrainOptions("hybrid", config={"epochs": 5}, dataset="ml-100k", split="random", name="hy"))
    loaded = load(out.path).model
    # 4 genres and the 1990s, 4 occupations, 4 age bands, 2 genders; and one padding row each.
    assert loaded.item_feature_factors.shape == (6, 32) and loaded.user_feature_factors.shape == (11, 32)
    assert bool(loaded.item_feature_factors.abs().sum() > 0)
    served = open_model("hy")
    try:
        assert served.side is not None and "occupation:doctor" in served.side.people
        assert "genre:Horror" in served.side.movies and "decade:1990s" in served.side.movies
        vectors = served.scorer.item_vectors()
        np.testing.assert_allclose(vectors, loaded.item_factors.numpy(), rtol=1e-6)
    finally:
        served.close()


def test_a_release_without_demographics_uses_the_movies_features_with_one_note(tmp_path, home, caplog):
    archive, titles = genre_taste_archive(n_users=60, per_genre=10, ratings_per_user=12)
    (tmp_path / "latest.zip").write_bytes(archive)
    download.fetch("ml-latest-small", from_file=tmp_path / "latest.zip", verify=False)
    with caplog.at_level(logging.WARNING, logger="movierec"):
        train_and_save(TrainOptions("hybrid", config={"epochs": 3}, dataset="ml-latest-small", name="latest"))
    notes = [r.getMessage() for r in caplog.records if "ages, genders or occupations" in r.getMessage()]
    assert len(notes) == 1, caplog.records
    served = open_model("latest")
    try:
        assert served.side.people == [] and served.side.knows_movies
        with pytest.raises(MovierecError, match="knows nobody's age"):
            served.recommend_new({}, 3, person={"age": 30})
        assert len(served.recommend_new({titles[0]: 5}, 3)) == 3
    finally:
        served.close()


def _fake_release(movies: pd.DataFrame, people: pd.DataFrame | None):
    return types.SimpleNamespace(name="fake", movies=movies, item_ids=movies.index.to_numpy(), users=people,
                                 user_ids=None if people is None else people.index.to_numpy(),
                                 n_users=0 if people is None else len(people))


def test_hostile_metadata_is_left_out_with_a_note(caplog):
    genres = [["Comedy"], ["Comedy", "Horror"], ["Horror"], [f"Genre {k}" for k in range(10_000)]]
    movies = pd.DataFrame({"title": ["a", "b", "c", "d"], "year": pd.array([1994, 1995, None, 2001], dtype="Int64"),
                           "genres": pd.Series(genres, dtype=object).to_numpy()},
                          index=pd.Index([1, 2, 3, 4], name="movie_id"))
    people = pd.DataFrame({"gender": ["M", "F", "F", "M", "F"], "age": [0, 300, 25, 27, 61],
                           "occupation": ["student", "student", "99", "writer", "writer"],
                           "zip": ["0"] * 5}, index=pd.Index([1, 2, 3, 4, 5], name="user_id"))
    with caplog.at_level(logging.WARNING, logger="movierec"):
        items = movie_features(_fake_release(movies, people))
        users = people_features(_fake_release(movies, people))
    assert items.names == ("decade:1990s", "genre:Comedy", "genre:Horror")  # 2000s and the 10,000: alone or absurd
    assert items.index.shape == (4, 3) and items.weight[1].tolist() == [0.5, 0.5, 1.0]  # genres share one weight
    assert users.names == ("age:25-34", "gender:F", "gender:M", "occupation:student", "occupation:writer")
    notes = [r.getMessage() for r in caplog.records]
    assert len(notes) == 4, notes  # too many genres; a lone decade and genres; ages 0 and 300; a lone occupation
    assert any(f"more than {MAX_PER_FIELD} genres" in n for n in notes)
    assert any("2 person(s) have an age outside 1 to 120" in n for n in notes)

    names = list(users.names)
    for typed, message in (({"age": 0}, "from 1 to 120, not 0"), ({"age": 300}, "not 300"),
                           ({"age": "old"}, "not 'old'"), ({"age": 61}, "nobody aged 56+"),
                           ({"occupation": "astronaut"}, "Unknown occupation 'astronaut'; this model knows: "
                                                          "student, writer."),
                           ({"gender": "X"}, "Unknown gender 'X'")):
        with pytest.raises(MovierecError, match=message):
            person_features(names, **typed)
    index, weight = person_features(names, age=30, gender="female", occupation=" Writer ")
    assert [names[i] for i in index] == ["age:25-34", "gender:F", "occupation:writer"] and weight.tolist() == [1] * 3


@pytest.fixture(scope="module")
def cli_home(tmp_path_factory):
    from conftest import isolated_home
    from typer.testing import CliRunner

    from movierec.cli import app

    folder = tmp_path_factory.mktemp("hybrid-cli")
    (folder / "groups.zip").write_bytes(group_taste_archive(per_genre=PER_GENRE)[0])
    with isolated_home(folder / "home"):
        runner = CliRunner()
        for args in (["fetch", "ml-100k", "--from-file", str(folder / "groups.zip"), "--no-verify"],
                     ["train", "mf", "--epochs", "2", "--split", "random"],
                     ["train", "hybrid", "--epochs", "10", "--split", "random"]):
            result = runner.invoke(app, args)
            assert result.exit_code == 0, result.stderr
        yield


def test_the_command_line_describes_a_newcomer(cli_home, runner):
    from movierec.cli import app

    result = runner.invoke(app, ["recommend", "--occupation", "lawyer", "--age", "38", "--top", "3", "--json"])
    assert result.exit_code == 0, result.stderr
    import json

    assert all(r["genres"] == ["Romance"] for r in json.loads(result.stdout))
    result = runner.invoke(app, ["recommend", "--occupation", "lawyer", "--top", "3"])
    assert "a new user (0 ratings; lawyer)" in result.stdout
    for args, fragment in ((["--age", "300"], "An age is a whole number"),
                           (["--occupation", "[bold]astronaut"], "Unknown occupation '[bold]astronaut'"),
                           (["--age", "30", "--model", "mf"], "does not know people by their age"),
                           (["--user", "1", "--include-unrated", "--model", "mf"], "learned nothing about movies")):
        assert_one_line_error(runner.invoke(app, ["recommend", *args]), fragment)


def test_the_python_api_describes_a_newcomer_too(cli_home):
    import movierec

    with movierec.load("hybrid") as model:
        assert model.about_people["occupation"] == ["artist", "doctor", "lawyer", "student"]
        assert model.about_people["age"] == ["18-24", "25-34", "35-44", "45-49"]
        rows = model.recommend_new(occupation="lawyer", age=38, n=3)
        assert [g for g in rows["genres"]] == [["Romance"]] * 3
        # The movies nobody rated in training are listed on request only (here: none, every movie has ratings).
        assert len(model.recommend(1, 5, include_unrated=True)) == 5
    with movierec.load("mf") as model, pytest.raises(MovierecError, match="does not know people"):
        model.recommend_new(age=30)


def test_the_server_and_its_page_describe_a_newcomer(cli_home):
    pytest.importorskip("fastapi")
    pytest.importorskip("uvicorn")
    from servers import Server

    server = Server("--model", "hybrid")
    try:
        health = server.get("/health")
        assert health["people"]["gender"] == ["F", "M"] and health["unrated_movies"] is True
        status, _, rows = server.call("POST", "/recommend?n=3&occupation=lawyer&age=38", [])
        assert status == 200 and [r["genres"] for r in rows] == [["Romance"]] * 3
        # The same list as the command line's.
        from movierec.loading import open_model

        served = open_model("hybrid")
        try:
            assert rows == served.recommend_new([], 3, person={"occupation": "lawyer", "age": 38})
        finally:
            served.close()
        for path, says in (("/recommend?age=300", "An age is a whole number"),
                           ("/recommend?occupation=astronaut", "Unknown occupation 'astronaut'"),
                           ("/recommend", "No ratings were given")):
            status, _, answer = server.call("POST", path, [])
            assert status == 400 and says in answer["error"], answer
        status, _, rows = server.call("GET", "/recommend?user=1&n=4&include_unrated=true")
        assert status == 200 and len(rows) == 4
        page = server.get("/")
        assert b'id="about"' in page and b'id="unrated"' in page
    finally:
        server.stop()
    server = Server("--model", "mf")
    try:
        health = server.get("/health")
        assert health["people"] == {} and health["unrated_movies"] is False
        status, _, answer = server.call("POST", "/recommend?gender=F", [])
        assert status == 400 and "does not know people" in answer["error"]
        status, _, answer = server.call("GET", "/recommend?user=1&include_unrated=true")
        assert status == 400 and "learned nothing about movies" in answer["error"]
    finally:
        server.stop()
