"""`movierec import NAME FILE` and the Python paths to your own ratings: round trips through train, recommend,
evaluate and cv; every hostile file refused in one sentence, with nothing cached."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import assert_one_line_error, isolated_home

import movierec as mr
from movierec import paths
from movierec.cli import app
from movierec.data import importing, movielens
from movierec.errors import MovierecError

N_USERS, N_ITEMS = 60, 40


def ratings_frame(seed: int = 0, half: bool = False) -> pd.DataFrame:
    """Users who like even or odd movies (the checkerboard): a right answer any model finds from 30 ratings each."""
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(1, N_USERS + 1):
        for i in rng.choice(np.arange(1, N_ITEMS + 1), size=30, replace=False):
            liked = (u % 2) == (i % 2)
            stars = rng.choice([4.5, 5.0] if liked else [1.0, 1.5]) if half else (5 if liked else 1)
            rows.append((u, int(i), float(stars), 1_000_000 + len(rows)))
    return pd.DataFrame(rows, columns=["userId", "movieId", "rating", "timestamp"])


def movies_csv(path: Path) -> Path:
    lines = ["movieId,title,genres"]
    for i in range(1, N_ITEMS + 1):
        kind, genres = ("Even", "Horror") if i % 2 == 0 else ("Odd", "Drama|Comedy")
        lines.append(f'{i},"Film {i}, the {kind} One ({1990 + i})",{genres}')
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def nothing_cached(name: str) -> bool:
    folder = paths.datasets_dir()
    leftovers = [p.name for p in folder.iterdir() if not p.name.endswith(".lock")] if folder.exists() else []
    return not (folder / name).exists() and not [p for p in leftovers if p.startswith(".import-")]


@pytest.fixture(scope="module")
def imported_home(tmp_path_factory):
    """One home holding a CSV import (with titles), a TSV import with string ids and a Parquet import without stars."""
    from typer.testing import CliRunner

    base = tmp_path_factory.mktemp("import")
    frame = ratings_frame()
    frame.to_csv(base / "ratings.csv", index=False)
    strings = frame.assign(userId="user" + frame.userId.astype(str), movieId="tt" + frame.movieId.astype(str))
    strings.rename(columns={"userId": "user", "movieId": "item", "rating": "stars"}).to_csv(
        base / "strings.tsv", sep="\t", index=False)
    frame[["userId", "movieId", "timestamp"]].to_parquet(base / "clicks.parquet")
    movies_csv(base / "movies.csv")
    with isolated_home(base / "home") as home:
        run = CliRunner(env={"COLUMNS": "200"})
        for args in (["import", "mine", str(base / "ratings.csv"), "--movies", str(base / "movies.csv")],
                     ["import", "named", str(base / "strings.tsv")],
                     ["import", "clicks", str(base / "clicks.parquet")]):
            result = run.invoke(app, args)
            assert result.exit_code == 0, result.stderr
        yield home, base


def test_csv_import_says_what_it_read_and_datasets_lists_it(imported_home, runner, tmp_path):
    _, base = imported_home
    result = runner.invoke(app, ["import", "again", str(base / "ratings.csv")])
    assert result.exit_code == 0, result.stderr
    counts = f"{N_USERS} users, {N_ITEMS} movies, {N_USERS * 30:,} ratings"
    assert f"Imported again from ratings.csv: {counts}." in result.stdout
    assert "Scale: stars 1-5 in steps of 1, inferred from the data (set it with --scale)." in result.stdout
    assert "Columns: user=userId, item=movieId, rating=rating, time=timestamp." in result.stdout
    table = runner.invoke(app, ["datasets"])
    for name in ("mine", "named", "clicks", "again"):
        row = next(line for line in table.stdout.splitlines() if f" {name} " in line)
        assert "imported" in row and f"{N_USERS * 30:,}" in row
    rows = json.loads(runner.invoke(app, ["datasets", "--json"]).stdout)
    assert [r["name"] for r in rows if r["imported"]] == ["again", "clicks", "mine", "named"]
    removed = runner.invoke(app, ["datasets", "--remove", "again"])
    assert removed.exit_code == 0 and nothing_cached("again")


def test_csv_round_trip_train_recommend_evaluate_cv(imported_home, runner):
    train = runner.invoke(app, ["train", "als", "--dataset", "mine", "--epochs", "5", "--name", "mine-als"])
    assert train.exit_code == 0, train.stderr
    listed = runner.invoke(app, ["recommend", "--user", "2", "--model", "mine-als", "--top", "5", "--json"])
    assert listed.exit_code == 0, listed.stderr
    rows = json.loads(listed.stdout)
    assert all(r["movie_id"] % 2 == 0 for r in rows), rows  # user 2 likes the even movies
    assert rows[0]["title"].startswith("Film ") and "Even" in rows[0]["title"] and rows[0]["genres"] == ["Horror"]
    assert rows[0]["year"] == 1990 + rows[0]["movie_id"]
    evaluated = runner.invoke(app, ["evaluate", "--model", "mine-als", "--json"])
    assert evaluated.exit_code == 0, evaluated.stderr
    metrics = next(r for r in json.loads(evaluated.stdout) if r["checkpoint"] == "mine-als")
    assert metrics["rmse"] < 1.0 and metrics["dataset"] == "mine"
    cv = runner.invoke(app, ["cv", "als", "--dataset", "mine", "--folds", "2", "--epochs", "2", "--json"])
    assert cv.exit_code == 0, cv.stderr
    assert len(json.loads(cv.stdout)["folds"]) == 2
    temporal = runner.invoke(app, ["train", "als", "--dataset", "mine", "--split", "temporal", "--epochs", "1",
                                   "--name", "mine-t"])
    assert temporal.exit_code == 0, temporal.stderr
    official = runner.invoke(app, ["train", "als", "--dataset", "mine", "--split", "u1", "--epochs", "1"])
    assert_one_line_error(official, "official split of another dataset", "random, temporal")


def test_string_ids_are_kept_through_recommend(imported_home, runner):
    data = movielens.load_dataset("named")
    assert data.user_names[:3] == ("user1", "user10", "user11")  # sorted strings, numbered 1..n
    assert list(data.user_ids[:3]) == [1, 2, 3]
    train = runner.invoke(app, ["train", "als", "--dataset", "named", "--epochs", "5", "--name", "named-als"])
    assert train.exit_code == 0, train.stderr
    listed = runner.invoke(app, ["recommend", "--user", "user2", "--model", "named-als", "--top", "5", "--json"])
    assert listed.exit_code == 0, listed.stderr
    titles = [r["title"] for r in json.loads(listed.stdout)]
    assert all(t.startswith("tt") and int(t[2:]) % 2 == 0 for t in titles), titles  # string movie ids as titles
    table = runner.invoke(app, ["recommend", "--user", "user2", "--model", "named-als", "--top", "3"])
    assert "Top 3 for user user2" in table.stdout
    unknown = runner.invoke(app, ["recommend", "--user", "alice", "--model", "named-als"])
    assert_one_line_error(unknown, "User 'alice' is not in named.")
    new_user = runner.invoke(app, ["recommend", "--rate", "tt2=5", "--rate", "tt4=5", "--model", "named-als",
                                   "--json"])
    assert new_user.exit_code == 0, new_user.stderr
    evaluated = runner.invoke(app, ["evaluate", "--model", "named-als", "--json"])
    assert evaluated.exit_code == 0, evaluated.stderr
    numbers = runner.invoke(app, ["recommend", "--user", "42", "--model", "mine-als"])  # numeric ids still work
    assert numbers.exit_code == 0, numbers.stderr


def test_implicit_parquet_trains_ranking_models_only(imported_home, runner):
    data = movielens.load_dataset("clicks")
    assert data.rating_values == (1.0,) and set(np.unique(data.ratings.ratings)) == {1.0}
    for model in ("mf", "autoencoder", "rbm", "als"):
        refused = runner.invoke(app, ["train", model, "--dataset", "clicks", "--epochs", "1"])
        assert_one_line_error(refused, "learns from stars, and this dataset has none",
                              "train `als --mode implicit` on it instead.")
    trained = runner.invoke(app, ["train", "als", "--mode", "implicit", "--dataset", "clicks", "--epochs", "3",
                                  "--name", "clicks-als"])
    assert trained.exit_code == 0, trained.stderr
    listed = runner.invoke(app, ["recommend", "--user", "3", "--model", "clicks-als", "--json"])
    assert listed.exit_code == 0, listed.stderr
    evaluated = runner.invoke(app, ["evaluate", "--model", "clicks-als", "--json"])
    rows = {r["checkpoint"] or r["model"]: r for r in json.loads(evaluated.stdout)}
    # Every held-out click is relevant (relevance is at most the top of the data), so ranking is measured.
    assert rows["clicks-als"]["ndcg@10"] > 0 and rows["popularity"]["ndcg@10"] > 0
    assert rows["clicks-als"]["users"] == rows["popularity"]["users"] > 0
    exported = runner.invoke(app, ["export", "-o", str(imported_home[1] / "lists.csv"), "--model", "clicks-als"])
    assert exported.exit_code == 0, exported.stderr


def test_implicit_import_says_so(home, runner, tmp_path):
    path = tmp_path / "clicks.csv"
    path.write_text("user,item\na,x\nb,x\na,y\n")
    result = runner.invoke(app, ["import", "c", str(path)])
    assert result.exit_code == 0, result.stderr
    assert "Scale: implicit: every rating is 1 (no rating column)." in result.stdout
    assert "`movierec train als --mode implicit --dataset c`" in result.stdout
    assert "String user and movie ids are kept" in result.stdout


def test_scale_is_inferred_in_half_stars_or_given(home, runner, tmp_path):
    path = tmp_path / "half.csv"
    ratings_frame(half=True).to_csv(path, index=False)
    result = runner.invoke(app, ["import", "half", str(path), "--json"])
    assert result.exit_code == 0, result.stderr
    out = json.loads(result.stdout)
    assert out["scale"] == [1.0, 1.5, 2.0, 2.5, 3.0, 3.5, 4.0, 4.5, 5.0]
    assert out["scale_note"] == "stars 1-5 in steps of 0.5, inferred from the data"
    given = runner.invoke(app, ["import", "half2", str(path), "--scale", "0.5,5"])
    assert "Scale: stars 0.5-5 in steps of 0.5, as given." in given.stdout
    assert movielens.load_dataset("half2").rating_values == tuple(x / 2 for x in range(1, 11))
    assert importing.parse_scale("0,10,2") == (0, 2, 4, 6, 8, 10)
    for bad in ("5,1", "1", "1,5,0", "a,b", "0.3,5"):
        with pytest.raises(MovierecError):
            importing.parse_scale(bad)


def test_duplicates_keep_the_latest_as_releases_do(home, runner, tmp_path):
    path = tmp_path / "dup.csv"
    path.write_text("userId,movieId,rating,timestamp\n1,2,3,5\n1,2,4,9\n1,2,5,7\n2,2,4,1\n2,3,1,1\n")
    result = runner.invoke(app, ["import", "dup", str(path), "--json"])
    assert json.loads(result.stdout)["duplicates_dropped"] == 2
    data = movielens.load_dataset("dup")
    assert data.duplicates_dropped == 2 and list(data.ratings.ratings) == [4.0, 4.0, 1.0]
    text = runner.invoke(app, ["import", "dup", str(path), "--force"])
    assert "Dropped 2 repeated ratings of a movie by the same user (the latest is kept)." in text.stdout
    listed = json.loads(runner.invoke(app, ["datasets", "--json"]).stdout)
    assert next(r for r in listed if r["name"] == "dup")["duplicates_dropped"] == 2


def test_dates_as_times_and_the_temporal_split(home, runner, tmp_path):
    path = tmp_path / "dates.csv"
    path.write_text("user,item,rating,time\n1,1,5,2020-01-02\n1,2,4,2021-05-06T10:00:00Z\n2,1,3,2019-12-31\n"
                    "2,2,2,2020-06-01\n")
    assert runner.invoke(app, ["import", "dates", str(path)]).exit_code == 0
    data = movielens.load_dataset("dates")
    assert list(data.ratings.timestamps[:2]) == [1577923200, 1620295200]


HOSTILE = {
    "semicolons.csv": ("userId;movieId;rating\n1;2;3\n", ["--sep", ","],
                       "has a header of one field, 'userId;movieId;rating', when split at ','"),
    "missing.csv": ("userId,rating\n1,3\n", [], "has no item column"),
    "stars.csv": ("userId,movieId,rating\n1,2,3\n1,3,four\n", [], "line 3 has rating 'four', which is not a number"),
    "off.csv": ("userId,movieId,rating\n1,2,3\n1,3,7\n", ["--scale", "1,5"],
                "line 3 has rating 7, which is not on the scale (stars 1-5 in steps of 1)"),
    "empty.csv": ("", [], "is empty"),
    "header.csv": ("userId,movieId,rating\n", [], "has a header but no ratings"),
    "nan.csv": ("userId,movieId,rating\n1,2,3\n\n1,3,nan\n", [],
                "line 4 has rating 'nan', which is not a finite number"),
    "inf.csv": ("userId,movieId,rating\n1,2,-inf\n", [], "line 2 has rating '-inf', which is not a finite number"),
    "huge.csv": ("userId,movieId,rating\n1,2,3\n" + "x" * 3_000_000 + ",2,3\n", [],
                 "line 3 has a user id over 256 characters long"),
    "headerless.csv": ("a" * (2 << 20), [], "line 1 is over 1 MB long"),
    "extra.csv": ("userId,movieId,rating\n1,2,3\n1,3,4,5\n", [], "line 3 has 4 fields where the header has 3"),
    "short.csv": ("userId,movieId,rating\n1,2,3\n1,3\n", [], "line 3 has no rating"),
    "negative.csv": ("userId,movieId,rating\n1,2,3\n-1,3,4\n", [], "line 3 has a negative user id (-1)"),
    "time.csv": ("userId,movieId,rating,timestamp\n1,2,3,soon\n", [], "line 2 has time 'soon'"),
    "column.csv": ("userId,movieId,rating\n1,2,3\n", ["--rating-col", "stars"], "has no column 'stars' (--rating-col)"),
    "scale.csv": ("userId,movieId,score\n1,2,0.123\n1,3,0.5\n1,4,0.77\n", ["--rating-col", "score"],
                  "are not evenly spaced stars; give --scale MIN,MAX,STEP"),
    "notparquet.parquet": ("PAR1 but not really", [], "is not a Parquet file movierec can read"),
}


@pytest.mark.parametrize("file", sorted(HOSTILE))
def test_hostile_file_is_one_sentence_and_nothing_is_cached(home, runner, tmp_path, file):
    text, options, fragment = HOSTILE[file]
    path = tmp_path / file
    path.write_text(text)
    result = runner.invoke(app, ["import", "bad", str(path), *options])
    assert result.exit_code == 1
    line = assert_one_line_error(result, fragment)
    assert str(path) in line
    assert nothing_cached("bad")


def test_bad_names_and_reimport_need_force(home, runner, tmp_path):
    path = tmp_path / "r.csv"
    ratings_frame().to_csv(path, index=False)
    assert_one_line_error(runner.invoke(app, ["import", "ml-100k", str(path)]), "ml-100k is a MovieLens release")
    assert_one_line_error(runner.invoke(app, ["import", "../up", str(path)]), "Invalid dataset name '../up'")
    assert runner.invoke(app, ["import", "Mine", str(path)]).exit_code == 0  # names are lowercase, as releases'
    assert_one_line_error(runner.invoke(app, ["import", "mine", str(path)]), "already imported; add --force")
    bad = tmp_path / "bad.csv"
    bad.write_text("userId,movieId,rating\n1,2,x\n")
    assert_one_line_error(runner.invoke(app, ["import", "mine", str(bad), "--force"]), "not a number")
    assert len(movielens.load_dataset("mine").ratings) == N_USERS * 30  # a failed --force leaves the old one


def test_an_interrupted_import_leaves_nothing(home, tmp_path, monkeypatch):
    path = tmp_path / "r.csv"
    ratings_frame().to_csv(path, index=False)

    def cut(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(importing, "_swap", cut)
    with pytest.raises(KeyboardInterrupt):
        importing.import_ratings("cut", path)
    assert nothing_cached("cut")


def test_parquet_without_pyarrow_is_one_sentence(home, tmp_path, monkeypatch):
    path = tmp_path / "r.parquet"
    ratings_frame().to_parquet(path)
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    with pytest.raises(MovierecError, match=r"needs pyarrow, which is not installed; pip install 'movierec\[parquet"):
        importing.import_ratings("p", path)
    assert nothing_cached("p")


def test_python_dataframe_paths(home):
    frame = ratings_frame()
    data = mr.load_dataset(frame)
    assert repr(data) == f"<MovieLens dataframe: {N_USERS} users, {N_ITEMS} movies, {N_USERS * 30:,} ratings>"
    pd.testing.assert_frame_equal(data.ratings.sort_values(["user_id", "movie_id"]).reset_index(drop=True),
                                  frame.rename(columns={"userId": "user_id", "movieId": "movie_id"})
                                  .sort_values(["user_id", "movie_id"]).reset_index(drop=True), check_dtype=False)
    model = mr.train("als", data=frame, epochs=5, name="from-df")
    assert all(m % 2 == 0 for m in model.recommend(2, n=5)["movie_id"])
    assert mr.train("als", dataset=frame, epochs=1, name="from-df2").info["dataset"] == "dataframe"
    assert mr.train("als", data=data, epochs=1, name="from-df3").info["dataset"] == "dataframe"
    strings = frame.assign(userId="u" + frame.userId.astype(str))
    assert mr.load_dataset(strings).ratings["user_id"].iloc[0].startswith("u")
    with pytest.raises(MovierecError, match="data= takes a pandas DataFrame"):
        mr.train("als", data=[1, 2])
    with pytest.raises(MovierecError, match="Give the ratings once"):
        mr.train("als", "ml-100k", data=frame)
    with pytest.raises(MovierecError, match="Unknown option for reading ratings: stars"):
        mr.load_dataset(frame, stars="rating")
    with pytest.raises(MovierecError, match="The DataFrame row 0 has rating 'x'"):
        mr.load_dataset(frame.astype({"rating": object}).assign(rating=["x"] + [3.0] * (len(frame) - 1)))
    saved = mr.import_ratings("saved", frame)
    assert saved["ratings"] == N_USERS * 30 and saved["source"] == "a DataFrame"
    assert mr.train("als", dataset="saved", epochs=1, name="saved-als").info["dataset"] == "saved"
    assert "saved" in set(mr.datasets()["name"])
