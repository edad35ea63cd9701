"""`movierec recommend`, `similar` and `clusters` on the real MovieLens-100K with tiny trained models."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from conftest import ML100K_ZIP, assert_one_line_error, isolated_home, require_ml100k
from typer.testing import CliRunner

from movierec.cli import app

MF = ["--model", "rec-mf"]
STAR_WARS = 50


def invoke(*args: str):
    result = CliRunner().invoke(app, list(args))
    if result.exit_code != 0:
        raise AssertionError(f"movierec {' '.join(args)} failed: {result.stderr}{result.exception!r}")
    return result


def invoke_json(*args: str):
    return json.loads(invoke(*args, "--json").stdout)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """A home with ml-100k, a tiny mf (`rec-mf`) and a tiny like-mode rbm (`rec-rbm`, the newest); the dataset."""
    require_ml100k()
    with isolated_home(tmp_path_factory.mktemp("cli-recommend") / "home"):
        invoke("fetch", "ml-100k", "--from-file", str(ML100K_ZIP), "--no-verify")
        invoke("train", "mf", "--epochs", "2", "--factors", "8", "--name", "rec-mf")
        invoke("train", "rbm", "--epochs", "1", "--mode", "like", "--hidden", "20", "--gibbs-steps", "1",
               "--batch-size", "1000", "--name", "rec-rbm")
        from movierec.data.movielens import load_dataset

        yield load_dataset("ml-100k")


@pytest.fixture(scope="module")
def user1_training(data) -> dict[int, float]:
    """MovieLens id -> stars of user 1's ratings in the u1 training split (what the model was trained on)."""
    from movierec.data.split import make_split

    train = make_split(data, "u1").train
    mine = train.users == data.user_index(1)
    return {int(data.item_ids[i]): float(r) for i, r in zip(train.items[mine], train.ratings[mine])}


@pytest.fixture(scope="module")
def train_counts(data) -> dict[int, int]:
    """MovieLens id -> number of ratings in the u1 training split."""
    from movierec.data.split import make_split

    counts = np.bincount(make_split(data, "u1").train.items, minlength=data.n_items)
    return {int(m): int(c) for m, c in zip(data.item_ids, counts)}


def movie_years(data) -> dict[int, int | None]:
    return {int(m): (None if pd.isna(y) else int(y)) for m, y in data.movies["year"].items()}


# -- recommend for a known user --------------------------------------------------------------------------
def test_recommend_table(data):
    out = invoke("recommend", "--user", "1", "--top", "5", *MF).stdout
    assert "Top 5 for user 1 — rec-mf" in out
    # The score's header is shortened when the terminal is narrow (80 columns here, when piped).
    # Ordered by, and showing, the chance the user picks and likes each movie; the predicted stars beside it
    # when titles still fit whole (not at the 80 columns of a pipe, here).
    assert "because you liked" in out and " match " in out and " stars " not in out
    wide = CliRunner().invoke(app, ["recommend", "--user", "1", "--top", "5", *MF], env={"COLUMNS": "160"}).stdout
    assert " match " in wide and " stars " in wide
    ranks = [line.split("│")[1].strip() for line in out.splitlines() if line.startswith("│")]
    assert [r for r in ranks if r] == ["1", "2", "3", "4", "5"]  # a long title or reason wraps onto a second line


def test_recommend_json_leaves_out_seen_movies(data, user1_training):
    rows = invoke_json("recommend", "--user", "1", "--top", "5", *MF)
    assert [r["rank"] for r in rows] == [1, 2, 3, 4, 5]
    for r in rows:
        assert {"rank", "movie_id", "title", "score", "predicted", "because_you_liked"} <= set(r)
        assert r["title"] == data.movies.at[r["movie_id"], "title"]
        assert 0.0 <= r["score"] <= 1.0  # P(picked and liked)
        assert 1.0 <= r["predicted"] <= 5.0  # stars
        assert r["movie_id"] not in user1_training
        # The explanation is one of the user's own highly rated training movies.
        liked = {data.movies.at[m, "title"] for m, stars in user1_training.items() if stars >= 4}
        assert r["because_you_liked"] in liked
    scores = [r["score"] for r in rows]
    assert scores == sorted(scores, reverse=True)


def test_recommend_every_movie(data, user1_training, train_counts):
    # Every movie with training ratings: those without have nothing learned of them in mf (only a model that
    # knows movies by their features lists them, with --include-unrated: tests/test_hybrid.py).
    rated = {m for m, n in train_counts.items() if n > 0}
    assert len(rated) < data.n_items  # u1.base leaves some movies out
    rows = invoke_json("recommend", "--user", "1", "--top", str(data.n_items), *MF)
    ids = [r["movie_id"] for r in rows]
    assert len(ids) == len(set(ids)) == len(rated) - len(user1_training)
    assert not set(ids) & set(user1_training)

    with_seen = invoke_json("recommend", "--user", "1", "--top", str(data.n_items), "--include-seen", *MF)
    assert {r["movie_id"] for r in with_seen} == rated
    # Seen movies slot into the same ranking: dropping them gives back the list without them.
    assert [r["movie_id"] for r in with_seen if r["movie_id"] not in user1_training] == ids


def test_recommend_with_a_like_model(data, user1_training):
    rows = invoke_json("recommend", "--user", "1", "--top", "5", "--model", "rec-rbm")
    assert len(rows) == 5 and all(0.0 <= r["score"] <= 1.0 for r in rows)
    assert not {r["movie_id"] for r in rows} & set(user1_training)
    # Without --model, the newest checkpoint (rec-rbm) is used.
    assert invoke_json("recommend", "--user", "1", "--top", "5") == rows


def test_unknown_user(data):
    result = CliRunner().invoke(app, ["recommend", "--user", "5000", *MF])
    assert_one_line_error(result, "User 5000 is not in ml-100k", "from 1 to 943")


# -- filters ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("genres", [["Comedy"], ["comedy"], ["Horror", "Western"]])
def test_genre_filter(data, genres):
    args = [a for g in genres for a in ("--genre", g)]
    rows = invoke_json("recommend", "--user", "1", "--top", "10", *args, *MF)
    assert len(rows) == 10
    wanted = {g.lower() for g in genres}
    for r in rows:
        assert wanted & {g.lower() for g in r["genres"]}, r
        assert r["genres"] == list(data.movies.at[r["movie_id"], "genres"])


def test_year_filter(data):
    rows = invoke_json("recommend", "--user", "1", "--top", "10", "--min-year", "1990", "--max-year", "1995", *MF)
    years = movie_years(data)
    assert len(rows) == 10
    for r in rows:
        assert 1990 <= r["year"] <= 1995 and years[r["movie_id"]] == r["year"]


def test_filters_combine(data):
    rows = invoke_json("recommend", "--user", "1", "--top", "5", "--genre", "Drama", "--min-year", "1996", *MF)
    assert len(rows) == 5 and all("Drama" in r["genres"] and r["year"] >= 1996 for r in rows)


def test_unknown_genre_lists_the_genres(data):
    result = CliRunner().invoke(app, ["recommend", "--user", "1", "--genre", "Telenovela", *MF])
    assert_one_line_error(result, "Unknown genre 'telenovela'", "comedy", "sci-fi", "western")


def test_filters_that_leave_nothing(data):
    result = CliRunner().invoke(app, ["recommend", "--user", "1", "--min-year", "1999", "--max-year", "1990", *MF])
    assert_one_line_error(result, "No movie passes")


# -- a new user ------------------------------------------------------------------------------------------
def test_new_user_from_rate_options(data):
    rows = invoke_json("recommend", "--rate", "Toy Story (1995)=5", "--rate", "Heat=4", "--top", "10", *MF)
    assert len(rows) == 10
    ids = {r["movie_id"] for r in rows}
    assert not ids & {1, 273}  # the movies just rated
    assert {r["because_you_liked"] for r in rows} <= {"Toy Story (1995)", "Heat (1995)"}
    out = invoke("recommend", "--rate", "Toy Story (1995)=5", "--rate", "Heat=4", "--top", "3", *MF).stdout
    assert "Top 3 for a new user (2 ratings)" in out


def test_new_user_lists_are_not_filled_with_movies_almost_nobody_rated(data, train_counts):
    rate = ["--rate", "Toy Story (1995)=5", "--rate", "Heat=4", "--rate", "Fargo=5", "--rate", "Jaws=2", "--top", "10"]
    listed = [train_counts[r["movie_id"]] for r in invoke_json("recommend", *rate, *MF)]
    # Ordered by the chance of picking and liking: a movie almost nobody picked is unlikely to be picked
    # next, so every listed movie is one many people rated.
    assert min(listed) >= 20, listed
    # --shrink still pulls rarely rated movies' scores towards neutral, when asked.
    shrunk = [train_counts[r["movie_id"]] for r in invoke_json("recommend", *rate, "--shrink", "2000", *MF)]
    assert sum(shrunk) > sum(listed)
    assert_one_line_error(CliRunner().invoke(app, ["recommend", *rate, "--shrink", "-1", *MF]),
                          "--shrink must be 0 or more")


def test_new_user_by_movie_id_and_half_stars(data):
    rows = invoke_json("recommend", "--rate", "50=4.5", "--rate", "Toy Story=2", *MF)
    assert len(rows) == 10 and not {r["movie_id"] for r in rows} & {1, STAR_WARS}


@pytest.mark.parametrize("header", [True, False])
def test_new_user_from_a_ratings_file(data, tmp_path, header):
    lines = ['"Usual Suspects, The (1995)",5', "Star Wars (1977),4", "1,3", ""]  # a quoted comma, an id
    path = tmp_path / "mine.csv"
    path.write_text(("movie,stars\n" if header else "") + "\n".join(lines), encoding="utf-8")
    rows = invoke_json("recommend", "--ratings-file", str(path), *MF)
    assert len(rows) == 10 and not {r["movie_id"] for r in rows} & {12, STAR_WARS, 1}
    assert {r["because_you_liked"] for r in rows} <= {"Usual Suspects, The (1995)", "Star Wars (1977)"}


def test_movielens_style_ratings_file_and_extra_columns(data, tmp_path):
    path = tmp_path / "mine.csv"
    path.write_text("userId,movieId,rating,timestamp\n1,50,5,881250949\n1,100,4,881250950\n", encoding="utf-8")
    result = CliRunner().invoke(app, ["recommend", "--ratings-file", str(path), "--json", *MF])
    assert result.exit_code == 0, result.stderr
    assert "MovieLens userId,movieId,rating" in result.stderr
    assert not {r["movie_id"] for r in json.loads(result.stdout)} & {STAR_WARS, 100}
    path.write_text("movie,stars,comment\nHeat,5,loved it\nFargo,4,\n", encoding="utf-8")
    result = CliRunner().invoke(app, ["recommend", "--ratings-file", str(path), "--json", *MF])
    assert result.exit_code == 0, result.stderr
    assert "movie,stars with a header" in result.stderr
    assert not {r["movie_id"] for r in json.loads(result.stdout)} & {273, 100}


def test_a_movie_listed_twice_the_last_one_counts_and_is_said(data, tmp_path):
    path = tmp_path / "mine.csv"
    path.write_text("Heat,1\nFargo,4\n273,5\n", encoding="utf-8")
    result = CliRunner().invoke(app, ["recommend", "--ratings-file", str(path), "--json", *MF])
    assert result.exit_code == 0, result.stderr
    assert "Heat (1995) is rated on lines 1, 3" in result.stderr and "the last one counts" in result.stderr


def test_ratings_file_and_rate_together(data, tmp_path):
    path = tmp_path / "mine.csv"
    path.write_text("Heat,5\n", encoding="utf-8")
    rows = invoke_json("recommend", "--ratings-file", str(path), "--rate", "Fargo=4", "--top", "20", *MF)
    assert not {r["movie_id"] for r in rows} & {273, 100}


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (["--rate", "Star Trek=5"], ["'Star Trek' matches several movies", "(id 222)", "Add the year or use the id"]),
        (["--rate", "Heat=6"], ["Rating '6' for 'Heat'", "from 1 to 5"]),
        (["--rate", "Heat=0"], ["Rating '0'", "from 1 to 5"]),
        (["--rate", "Heat=great"], ["Rating 'great'"]),
        (["--rate", "Heat"], ['"Title=stars"']),
        (["--rate", "No Such Movie At All=4"], ["No movie matches 'No Such Movie At All'"]),
        (["--rate", "99999=4"], ["Movie 99999 is not in ml-100k"]),
        (["--user", "1", "--rate", "Heat=4"], ["Give either --user ID, or a new user's ratings"]),
        ([], ["Give either --user ID, or a new user's ratings"]),
    ],
)
def test_bad_new_user_input(data, args, fragments):
    assert_one_line_error(CliRunner().invoke(app, ["recommend", *args, *MF]), *fragments)


@pytest.mark.parametrize(
    ("content", "fragments"),
    [("Heat\n", ["line 1", "expected 'movie,stars'"]), ("movie,stars\n", ["holds no ratings"]),
     ("Heat,5\nFargo,great\n", ["mine.csv, line 2", "'great'", "not a number"]),
     ("movie,stars\nHeat,5\nFargo,9\n", ["mine.csv, line 3", "Rating '9' for 'Fargo'", "from 1 to 5"]),
     ("Heat,5\nNo Such Movie At All,4\n", ["mine.csv, line 2", "No movie matches 'No Such Movie At All'"]),
     ("userId,movieId,rating\n1,50,5\n2,100,4\n", ["ratings of 2 users", "one person's"]),
     (b"\xff\xfe\x00bad", ["not a UTF-8 text file"]), (None, ["Cannot read"])],
)
def test_bad_ratings_file(data, tmp_path, content, fragments):
    path = tmp_path / "mine.csv"
    if isinstance(content, str):
        path.write_text(content, encoding="utf-8")
    elif content is not None:
        path.write_bytes(content)
    result = CliRunner().invoke(app, ["recommend", "--ratings-file", str(path), *MF])
    assert_one_line_error(result, *fragments)


# -- similar ---------------------------------------------------------------------------------------------
def test_similar_by_title(data):
    out = invoke("similar", "Star Wars", "--top", "5", *MF).stdout
    assert "Movies like Star Wars (1977) — rec-mf" in out and "cosine" in out
    ranks = [line.split("│")[1].strip() for line in out.splitlines() if line.startswith("│")]
    assert [r for r in ranks if r] == ["1", "2", "3", "4", "5"]  # a long title or reason wraps onto a second line


@pytest.mark.parametrize("model", ["rec-mf", "rec-rbm"])
def test_similar_by_id_json(data, train_counts, model):
    out = invoke_json("similar", str(STAR_WARS), "--model", model)
    assert (out["movie_id"], out["title"]) == (STAR_WARS, "Star Wars (1977)")
    similar = out["similar"]
    assert [r["rank"] for r in similar] == list(range(1, 11))
    ids = [r["movie_id"] for r in similar]
    assert STAR_WARS not in ids and len(set(ids)) == 10
    scores = [r["score"] for r in similar]
    assert scores == sorted(scores, reverse=True) and all(-1.0 <= s <= 1.0 for s in scores)
    assert all(r["title"] == data.movies.at[r["movie_id"], "title"] for r in similar)
    # Rarely rated movies (fewer than --min-ratings, 20 by default, training ratings) are left out.
    assert all(train_counts[r["movie_id"]] >= 20 for r in similar)
    assert invoke_json("similar", "star wars (1977)", "--model", model) == out  # the title finds the same movie


def test_similar_min_ratings(data, train_counts):
    rows = invoke_json("similar", str(STAR_WARS), "--top", "30", "--min-ratings", "200", *MF)["similar"]
    assert len(rows) == 30 and all(train_counts[r["movie_id"]] >= 200 for r in rows)
    everything = invoke_json("similar", str(STAR_WARS), "--top", str(data.n_items), "--min-ratings", "0", *MF)
    assert len(everything["similar"]) == data.n_items - 1  # every movie but Star Wars itself


@pytest.mark.parametrize(
    ("movie", "fragments"),
    [("Jurassic Park 7", ["No movie matches 'Jurassic Park 7'"]), ("Star Trek", ["matches several movies"]),
     ("99999", ["Movie 99999 is not in ml-100k"])],
)
def test_similar_unknown_movie(data, movie, fragments):
    assert_one_line_error(CliRunner().invoke(app, ["similar", movie, *MF]), *fragments)


# -- clusters --------------------------------------------------------------------------------------------
def test_clusters_json(data):
    clusters = invoke_json("clusters", "--clusters", "5", *MF)
    assert 1 <= len(clusters) <= 5
    assert sum(c["size"] for c in clusters) == data.n_items
    assert len({c["cluster"] for c in clusters}) == len(clusters) and all(1 <= c["cluster"] <= 5 for c in clusters)
    assert [c["size"] for c in clusters] == sorted((c["size"] for c in clusters), reverse=True)
    titles = set(data.movies["title"])
    known_genres = {g for gs in data.movies["genres"] for g in gs}
    for c in clusters:
        assert c["size"] >= 1 and 1 <= len(c["movies"]) <= min(5, c["size"])
        assert set(c["movies"]) <= titles
        assert len(c["genres"]) <= 3 and set(c["genres"]) <= known_genres
    # Every listed movie is in exactly one cluster.
    listed = [m for c in clusters for m in c["movies"]]
    assert len(listed) == len(set(listed))
    assert invoke_json("clusters", "--clusters", "5", *MF) == clusters  # seeded: the same clusters again


def test_the_old_spelling_of_the_cluster_count_still_works_with_a_note(data):
    """`--k` was the number of clusters before 0.2; it is read for one more release, saying what to write."""
    old = invoke("clusters", "--k", "5", "--json", *MF)
    assert json.loads(old.stdout) == invoke_json("clusters", "--clusters", "5", *MF)
    assert "--k is now --clusters" in old.stderr and "next release" in old.stderr


def test_clusters_table(data):
    out = invoke("clusters", "--clusters", "3", "--top", "2", *MF).stdout
    assert "movie clusters — rec-mf" in out and "dominant genres" in out


def test_too_many_clusters(data):
    result = CliRunner().invoke(app, ["clusters", "--clusters", "5000", *MF])
    assert_one_line_error(result, "The number of clusters must be between 1 and the number of movies (1682)")


# -- without a model -------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "args", [["recommend", "--user", "1"], ["similar", "Star Wars"], ["clusters"]], ids=lambda a: a[0]
)
def test_commands_without_models(home, runner, args):
    assert_one_line_error(runner.invoke(app, args), "No trained models yet", "movierec train MODEL")
