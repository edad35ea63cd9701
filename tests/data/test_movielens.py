"""Parsing every MovieLens layout, the parsed cache, and the errors users see."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from movierec import paths
from movierec.data import cache
from movierec.data import movielens as ml
from movierec.data.dataset import DatasetSummary, fingerprint_of
from movierec.errors import MovierecError

GENRES_100K = [
    "unknown",
    "Action",
    "Adventure",
    "Animation",
    "Children's",
    "Comedy",
    "Crime",
    "Documentary",
    "Drama",
    "Fantasy",
    "Film-Noir",
    "Horror",
    "Musical",
    "Mystery",
    "Romance",
    "Sci-Fi",
    "Thriller",
    "War",
    "Western",
]


def release_folder(name: str) -> Path:
    """The extracted folder download.py leaves behind, e.g. <home>/datasets/ml-10m/ml-10M100K."""
    folder = ml.extracted_dir(name)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def write(path: Path, text: str, encoding: str = "utf-8") -> Path:
    path.write_bytes(text.encode(encoding))
    return path


def flags(*names: str) -> str:
    return "|".join("1" if g in names else "0" for g in GENRES_100K)


def make_100k() -> Path:
    folder = release_folder("ml-100k")
    # Users 7 and 3, movies 20 and 10: ids are neither contiguous nor in file order.
    write(
        folder / "u.data",
        "7\t20\t4\t881250949\n3\t10\t1\t878887116\n7\t10\t5\t891717742\n3\t30\t2\t880000000\n",
    )
    write(folder / "u.genre", "".join(f"{g}|{i}\n" for i, g in enumerate(GENRES_100K)) + "\n")
    write(
        folder / "u.item",
        f"10|Misérables, Les (1995)|01-Jan-1995||http://x|{flags('Drama', 'Musical')}\n"
        f"20|unknown||||{flags('unknown')}\n"
        f"30|Heidi Fleiss: Hollywood Madam (1995) |09-Feb-1996||http://y|{flags('Documentary')}\n"
        f"40|Never Rated (1990)|01-Jan-1990||http://z|{flags('Comedy')}\n",
        encoding="latin-1",
    )
    write(folder / "u.user", "3|23|M|writer|32067\n7|57|F|other|T8H1N\n")
    return folder


def make_1m() -> Path:
    folder = release_folder("ml-1m")
    write(folder / "ratings.dat", "2::1193::5::978300760\n1::661::3::978302109\n1::1193::4::978301968\n")
    write(
        folder / "movies.dat",
        "661::James and the Giant Peach (1996)::Animation|Children's|Musical\n"
        "1193::Crème brûlée: The Movie (1975)::Drama\n",
        encoding="latin-1",
    )
    write(folder / "users.dat", "1::F::1::10::48067\n2::M::56::16::70072\n")
    return folder


def make_10m() -> Path:
    folder = release_folder("ml-10m")
    write(folder / "ratings.dat", "1::122::5::838985046\n1::185::4.5::838983525\n9::122::0.5::838983392\n")
    write(
        folder / "movies.dat",
        "122::Boomerang (1992)::Comedy|Romance\n185::Net, The (1995)::(no genres listed)\n",
    )
    return folder


def make_csv(name: str = "ml-25m") -> Path:
    folder = release_folder(name)
    write(
        folder / "ratings.csv",
        "userId,movieId,rating,timestamp\n"
        "5,3,3.5,1147880044\n"
        "1,3,0.5,1147868817\n"
        "1,200000,5.0,1147868828\n"
        "5,1,4,1147878820\n",
    )
    write(
        folder / "movies.csv",
        "movieId,title,genres\n"
        '1,"American President, The (1995)",Comedy|Drama|Romance\n'
        "3,Amélie (Fabuleux destin d'Amélie Poulain) (2001),(no genres listed)\n"
        "4,Unrated Movie (2010),Drama\n"
        '200000,"Untitled, No Year",Documentary\n',
    )
    return folder


# ---------------------------------------------------------------------------------------------------
# Each layout


def test_100k_layout(home):
    make_100k()
    d = ml.parse_release("ml-100k")
    np.testing.assert_array_equal(d.user_ids, [3, 7])
    np.testing.assert_array_equal(d.item_ids, [10, 20, 30])
    r = d.ratings
    assert (r.n_users, r.n_items, len(r)) == (2, 3, 4)
    np.testing.assert_array_equal(r.users, [1, 0, 1, 0])  # file order kept, ids mapped
    np.testing.assert_array_equal(r.items, [1, 0, 0, 2])
    np.testing.assert_array_equal(r.ratings, [4, 1, 5, 2])
    np.testing.assert_array_equal(r.timestamps, [881250949, 878887116, 891717742, 880000000])
    assert (r.users.dtype, r.items.dtype, r.ratings.dtype, r.timestamps.dtype) == (
        np.int32,
        np.int32,
        np.float32,
        np.int64,
    )
    assert d.rating_values == (1, 2, 3, 4, 5)
    m = d.movies
    assert m.index.name == "movie_id" and m.index.dtype == np.int64
    assert m.at[10, "title"] == "Misérables, Les (1995)"  # latin-1 decoded
    assert m.at[10, "year"] == 1995 and m.at[10, "genres"] == ["Drama", "Musical"]
    assert m.at[20, "title"] == "unknown" and pd.isna(m.at[20, "year"]) and m.at[20, "genres"] == []
    assert m.at[30, "title"] == "Heidi Fleiss: Hollywood Madam (1995)" and m.at[30, "year"] == 1995
    assert 40 in m.index  # unrated movies stay in the table, outside the index space
    assert str(m["year"].dtype) == "Int64"
    u = d.users
    assert u is not None and list(u.columns) == ["gender", "age", "occupation", "zip"]
    assert u.loc[7].tolist() == ["F", 57, "other", "T8H1N"]
    assert d.title(d.item_index(10)) == "Misérables, Les (1995)"


def test_1m_layout(home):
    make_1m()
    d = ml.parse_release("ml-1m")
    np.testing.assert_array_equal(d.user_ids, [1, 2])
    np.testing.assert_array_equal(d.item_ids, [661, 1193])
    np.testing.assert_array_equal(d.ratings.users, [1, 0, 0])
    np.testing.assert_array_equal(d.ratings.items, [1, 0, 1])
    np.testing.assert_array_equal(d.ratings.ratings, [5, 3, 4])
    assert d.rating_values == (1, 2, 3, 4, 5)
    assert d.movies.at[1193, "title"] == "Crème brûlée: The Movie (1975)"  # ':' in a title, latin-1
    assert d.movies.at[1193, "year"] == 1975
    assert d.movies.at[661, "genres"] == ["Animation", "Children's", "Musical"]
    assert d.users is not None
    assert d.users.loc[1].tolist() == ["F", 1, "K-12 student", "48067"]  # occupation code 10 named
    assert d.users.loc[2, "occupation"] == "self-employed"


def test_10m_layout_half_stars_and_folder(home):
    folder = make_10m()
    assert folder.name == "ml-10M100K"
    d = ml.parse_release("ml-10m")
    np.testing.assert_array_equal(d.ratings.ratings, np.array([5, 4.5, 0.5], dtype=np.float32))
    assert d.rating_values == (0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 3.5, 4.0, 4.5, 5.0)
    assert d.movies.at[185, "genres"] == [] and d.movies.at[185, "title"] == "Net, The (1995)"
    assert d.users is None


@pytest.mark.parametrize("name", ["ml-20m", "ml-25m", "ml-32m", "ml-latest", "ml-latest-small"])
def test_csv_layout(home, name):
    make_csv(name)
    d = ml.parse_release(name)
    np.testing.assert_array_equal(d.user_ids, [1, 5])
    np.testing.assert_array_equal(d.item_ids, [1, 3, 200000])
    np.testing.assert_array_equal(d.ratings.users, [1, 0, 0, 1])
    np.testing.assert_array_equal(d.ratings.items, [1, 1, 2, 0])
    np.testing.assert_array_equal(d.ratings.ratings, np.array([3.5, 0.5, 5.0, 4.0], dtype=np.float32))
    assert d.rating_values[0] == 0.5 and len(d.rating_values) == 10
    m = d.movies
    assert m.at[1, "title"] == "American President, The (1995)"  # quoted, with a comma
    assert m.at[1, "genres"] == ["Comedy", "Drama", "Romance"]
    assert m.at[3, "title"] == "Amélie (Fabuleux destin d'Amélie Poulain) (2001)"  # utf-8
    assert m.at[3, "year"] == 2001 and m.at[3, "genres"] == []
    assert m.at[200000, "title"] == "Untitled, No Year" and pd.isna(m.at[200000, "year"])
    assert d.users is None


def test_year_forms(home):
    folder = make_csv("ml-latest-small")
    write(
        folder / "movies.csv",
        "movieId,title,genres\n"
        '1,"Babylon 5 (1994-1998)",Sci-Fi\n'
        '3,"Land Before Time III (1995) (V)",Animation\n'
        "200000,2001: A Space Odyssey (1968),Sci-Fi\n",
    )
    m = ml.parse_release("ml-latest-small").movies
    assert m["year"].tolist() == [1994, 1995, 1968]


def test_rated_movie_missing_from_movies_file_gets_a_placeholder(home):
    folder = make_csv()
    write(folder / "movies.csv", "movieId,title,genres\n1,Only One (1999),Drama\n")
    d = ml.parse_release("ml-25m")
    assert set(d.item_ids) <= set(d.movies.index)
    assert d.movies.at[3, "title"] == "Movie 3" and d.movies.at[3, "genres"] == []


# ---------------------------------------------------------------------------------------------------
# The real ml-100k


@pytest.fixture
def real_100k(home, ml100k_zip) -> Path:
    target = paths.dataset_dir("ml-100k")
    target.mkdir(parents=True)
    with zipfile.ZipFile(ml100k_zip) as z:
        z.extractall(target)
    return target


def test_real_ml100k(real_100k):
    s = ml.prepare("ml-100k")
    assert (s.users, s.items, s.ratings) == (943, 1682, 100000)
    assert s.path == real_100k and s.size_bytes > 16_000_000  # extracted files + cache
    d = ml.load_dataset("ml-100k")
    assert (d.n_users, d.n_items, len(d.ratings)) == (943, 1682, 100000)
    np.testing.assert_array_equal(d.user_ids, np.arange(1, 944))
    np.testing.assert_array_equal(d.item_ids, np.arange(1, 1683))
    assert set(np.unique(d.ratings.ratings)) == {1, 2, 3, 4, 5}
    toy = d.movies.loc[1]
    assert toy["title"] == "Toy Story (1995)" and toy["year"] == 1995 and "Animation" in toy["genres"]
    assert d.title(d.item_index(1)) == "Toy Story (1995)"
    assert d.movies.loc[267, "genres"] == [] and pd.isna(d.movies.loc[267, "year"])  # "unknown"
    assert d.users is not None and len(d.users) == 943
    assert d.users.loc[1].tolist() == ["M", 24, "technician", "85711"]
    # First line of u.data: user 196 rated movie 242 three stars.
    assert (d.user_ids[d.ratings.users[0]], d.item_ids[d.ratings.items[0]], d.ratings.ratings[0]) == (
        196,
        242,
        3,
    )


# ---------------------------------------------------------------------------------------------------
# The cache


def test_cache_round_trip_and_fingerprint(home):
    make_csv()
    assert cache.summary("ml-25m") is None
    direct = ml.parse_release("ml-25m")
    s = ml.prepare("ml-25m")
    assert (s.name, s.users, s.items, s.ratings) == ("ml-25m", 2, 3, 4)
    assert cache.summary("ml-25m") == DatasetSummary(
        "ml-25m", 2, 3, 4, home / "datasets" / "ml-25m", s.size_bytes
    )
    loaded = ml.load_dataset("ml-25m")
    for field in ("users", "items", "ratings", "timestamps"):
        a, b = getattr(direct.ratings, field), getattr(loaded.ratings, field)
        assert a.dtype == b.dtype
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(direct.user_ids, loaded.user_ids)
    np.testing.assert_array_equal(direct.item_ids, loaded.item_ids)
    pd.testing.assert_frame_equal(direct.movies, loaded.movies)
    assert loaded.rating_values == direct.rating_values
    assert loaded.fingerprint == direct.fingerprint
    assert fingerprint_of(loaded.ratings, loaded.user_ids, loaded.item_ids) == loaded.fingerprint
    # Stable across runs, and it changes with the data.
    assert ml.prepare("ml-25m") and ml.load_dataset("ml-25m").fingerprint == direct.fingerprint
    folder = ml.extracted_dir("ml-25m")
    write(folder / "ratings.csv", (folder / "ratings.csv").read_text().replace("5,1,4,", "5,1,4.5,"))
    ml.prepare("ml-25m")  # replaces the older cache
    assert ml.load_dataset("ml-25m").fingerprint != direct.fingerprint
    # No temporary or old cache folders are left behind.
    assert sorted(p.name for p in (home / "datasets" / "ml-25m").iterdir()) == ["ml-25m", "parsed"]


def test_loaded_arrays_are_writable_copies(home):
    make_csv()
    ml.prepare("ml-25m")
    first = ml.load_dataset("ml-25m")
    assert first.ratings.ratings.flags.writeable
    first.ratings.ratings[:] = 1.0  # must never reach the cache on disk
    first.user_ids[0] = 42
    again = ml.load_dataset("ml-25m")
    np.testing.assert_array_equal(again.ratings.ratings, np.array([3.5, 0.5, 5.0, 4.0], dtype=np.float32))
    assert again.user_ids[0] == 1
    assert fingerprint_of(again.ratings, again.user_ids, again.item_ids) == again.fingerprint


def test_cache_round_trip_users_table(home):
    make_1m()
    direct = ml.parse_release("ml-1m")
    ml.prepare("ml-1m")
    loaded = ml.load_dataset("ml-1m")
    pd.testing.assert_frame_equal(direct.users, loaded.users)
    pd.testing.assert_frame_equal(direct.movies, loaded.movies)


def test_cache_has_no_pickles(home):
    make_100k()
    ml.prepare("ml-100k")
    for npy in cache.parsed_dir("ml-100k").glob("*.npy"):
        np.load(npy, allow_pickle=False)  # raises if any array needed pickle
    assert not list(cache.parsed_dir("ml-100k").glob("*.pkl"))


def test_load_parses_when_only_extracted(home):
    make_10m()
    d = ml.load_dataset("ml-10m")
    assert len(d.ratings) == 3 and d.path == home / "datasets" / "ml-10m"
    assert cache.summary("ml-10m") is not None


def test_damaged_cache_is_reparsed_or_reported(home):
    folder = make_10m()
    ml.prepare("ml-10m")
    (cache.parsed_dir("ml-10m") / "items.npy").write_bytes(b"not an array")
    assert len(ml.load_dataset("ml-10m").ratings) == 3  # re-parsed from the extracted files
    (cache.parsed_dir("ml-10m") / "items.npy").unlink()
    for f in folder.iterdir():
        f.unlink()
    folder.rmdir()
    with pytest.raises(MovierecError, match="damaged.*movierec fetch ml-10m"):
        ml.load_dataset("ml-10m")


# ---------------------------------------------------------------------------------------------------
# Errors


def test_not_fetched(home):
    with pytest.raises(MovierecError) as e:
        ml.load_dataset("ml-1m")
    assert str(e.value) == "Dataset ml-1m is not fetched yet; run `movierec fetch ml-1m`."
    with pytest.raises(MovierecError, match="Unknown dataset"):
        ml.load_dataset("ml-3m")


@pytest.mark.parametrize(
    ("make", "name", "file", "bad_line", "lineno", "reason"),
    [
        (make_100k, "ml-100k", "u.data", "3\t10\t4\n", 3, "expected 4 fields"),
        (make_100k, "ml-100k", "u.data", "3\t10\t4\t5\t6\n", 3, "expected 4 fields"),
        (make_100k, "ml-100k", "u.data", "3\tx\t4\t5\n", 3, "as numbers"),
        (make_100k, "ml-100k", "u.data", "3\t10\t4.5\t5\n", 3, "not one of 1, 2, 3, 4, 5"),
        (make_100k, "ml-100k", "u.data", "3\t10\t9\t5\n", 1, "not one of"),
        (make_100k, "ml-100k", "u.data", "3\t10\t4\t5\t6\n", 1, "expected 4 fields"),
        (make_1m, "ml-1m", "ratings.dat", "1::2::3::4::5\n", 2, "expected 4 fields"),
        (make_1m, "ml-1m", "ratings.dat", "1:2::3::4\n", 3, "expected 4 fields"),
        (make_10m, "ml-10m", "ratings.dat", "1::2::3.25::4\n", 2, "rating 3.25"),
        (make_csv, "ml-25m", "ratings.csv", "1,2,,4\n", 3, "as numbers"),
        (make_csv, "ml-25m", "ratings.csv", "-1,2,3,4\n", 4, "negative id"),
        (make_csv, "ml-25m", "ratings.csv", "1,2,nan,4\n", 2, "not one of"),
    ],
)
def test_malformed_line_names_file_and_line(home, make, name, file, bad_line, lineno, reason):
    folder = make()
    lines = (folder / file).read_text().splitlines(keepends=True)
    lines.insert(lineno - 1, bad_line)
    write(folder / file, "".join(lines))
    with pytest.raises(MovierecError) as e:
        ml.prepare(name)
    message = str(e.value)
    assert f"{folder / file} line {lineno} is malformed" in message
    assert reason in message


def test_blank_lines_are_skipped_but_counted(home):
    folder = make_csv()
    write(folder / "ratings.csv", "userId,movieId,rating,timestamp\n1,3,4,5\n\n1,3,oops,5\n")
    with pytest.raises(MovierecError, match=r"ratings.csv line 4 is malformed"):
        ml.prepare("ml-25m")


@pytest.mark.parametrize(
    ("make", "name", "missing"),
    [
        (make_100k, "ml-100k", "u.item"),
        (make_100k, "ml-100k", "u.data"),
        (make_1m, "ml-1m", "users.dat"),
        (make_10m, "ml-10m", "movies.dat"),
        (make_csv, "ml-latest-small", "ratings.csv"),
    ],
)
def test_missing_file_is_named(home, make, name, missing):
    folder = make() if make is not make_csv else make_csv(name)
    (folder / missing).unlink()
    with pytest.raises(MovierecError, match=f"{missing} is missing"):
        ml.load_dataset(name)


def test_wrong_csv_header(home):
    folder = make_csv()
    write(folder / "ratings.csv", "user,movie,rating,timestamp\n1,3,4,5\n")
    with pytest.raises(MovierecError, match="does not start with the MovieLens header"):
        ml.prepare("ml-25m")


def test_id_lookups(home):
    make_csv()
    d = ml.load_dataset("ml-25m")
    assert d.user_index(5) == 1 and d.item_index(200000) == 2
    with pytest.raises(MovierecError, match="User 3 has no ratings in ml-25m"):
        d.user_index(3)
    with pytest.raises(MovierecError, match="User 99 is not in ml-25m: its user ids run from 1 to 5"):
        d.user_index(99)
    with pytest.raises(MovierecError, match="Movie 4 has no ratings"):
        d.item_index(4)
    with pytest.raises(MovierecError, match="Movie 0 is not in ml-25m"):
        d.item_index(0)
    with pytest.raises(MovierecError, match="out of range"):
        d.title(3)
    assert d.title(0) == "American President, The (1995)"


# ---------------------------------------------------------------------------------------------------
# A damaged parsed cache is never used


def _edit_array(name: str, key: str, edit) -> None:
    path = cache.parsed_dir(name) / f"{key}.npy"
    arr = np.load(path, allow_pickle=False)
    edit(arr)
    np.save(path, arr, allow_pickle=False)


def _edit_json(name: str, file: str, edit) -> None:
    import json

    path = cache.parsed_dir(name) / file
    data = json.loads(path.read_text(encoding="utf-8"))
    edit(data)
    path.write_text(json.dumps(data), encoding="utf-8")


def _set(key, value):
    def edit(arr):
        arr[1] = value

    return edit


DAMAGE = {
    "user index out of range": lambda: _edit_array("ml-1m", "users", _set("users", 2)),
    "negative movie index": lambda: _edit_array("ml-1m", "items", _set("items", -1)),
    "NaN stars": lambda: _edit_array("ml-1m", "ratings", _set("ratings", np.nan)),
    "stars off the scale": lambda: _edit_array("ml-1m", "ratings", _set("ratings", 7.0)),
    "ids out of order": lambda: _edit_array("ml-1m", "item_ids", lambda a: a.__setitem__(slice(None), a[::-1].copy())),
    "a changed timestamp (fingerprint)": lambda: _edit_array("ml-1m", "timestamps", _set("timestamps", 123)),
    "shortened movies table": lambda: _edit_json("ml-1m", "movies.json", lambda m: [m[k].pop() for k in m]),
    "uneven movies columns": lambda: _edit_json("ml-1m", "movies.json", lambda m: m["title"].pop()),
    "people without zip codes": lambda: _edit_json("ml-1m", "people.json", lambda p: p.pop("zip")),
    "users count not a number": lambda: _edit_json("ml-1m", "meta.json", lambda m: m.__setitem__("users", "abc")),
    "no items count": lambda: _edit_json("ml-1m", "meta.json", lambda m: m.pop("items")),
    "another star scale": lambda: _edit_json(
        "ml-1m", "meta.json", lambda m: m.__setitem__("rating_values", [0.5, 1.0])
    ),
}


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_damaged_cache_is_reparsed_never_used(home, damage):
    make_1m()
    direct = ml.parse_release("ml-1m")
    ml.prepare("ml-1m")
    DAMAGE[damage]()
    assert cache.check_cache("ml-1m") is None
    loaded = ml.load_dataset("ml-1m")  # parsed again from the extracted files
    for field in ("users", "items", "ratings", "timestamps"):
        np.testing.assert_array_equal(getattr(loaded.ratings, field), getattr(direct.ratings, field))
    pd.testing.assert_frame_equal(loaded.movies, direct.movies)
    assert loaded.fingerprint == direct.fingerprint
    assert cache.check_cache("ml-1m") == cache.summary("ml-1m")  # and the cache is whole again


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_damaged_cache_without_extracted_files_is_one_sentence(home, damage):
    folder = make_1m()
    ml.prepare("ml-1m")
    DAMAGE[damage]()
    for f in folder.iterdir():
        f.unlink()
    folder.rmdir()
    with pytest.raises(MovierecError, match=r"parsed cache of ml-1m in .* (is damaged|cannot be read).*"
                                            r"run `movierec fetch ml-1m` again\.$"):
        ml.load_dataset("ml-1m")


def test_big_caches_skip_only_the_fingerprint(home, monkeypatch):
    make_1m()
    ml.prepare("ml-1m")
    monkeypatch.setattr(cache, "FINGERPRINT_CHECK_MAX_RATINGS", 2)  # the cache has 3 ratings
    _edit_array("ml-1m", "timestamps", _set("timestamps", 123))
    assert cache.check_cache("ml-1m") is not None  # an in-range change goes unseen above the threshold...
    _edit_array("ml-1m", "ratings", _set("ratings", np.nan))
    assert cache.check_cache("ml-1m") is None  # ...but nothing that could break a model does


# ---------------------------------------------------------------------------------------------------
# Files as they are found in the wild


@pytest.mark.parametrize(
    ("make", "name", "file"),
    [
        (make_csv, "ml-25m", "ratings.csv"),
        (make_csv, "ml-25m", "movies.csv"),
        (make_1m, "ml-1m", "ratings.dat"),
        (make_1m, "ml-1m", "movies.dat"),
        (make_1m, "ml-1m", "users.dat"),
        (make_100k, "ml-100k", "u.data"),
        (make_100k, "ml-100k", "u.item"),
        (make_100k, "ml-100k", "u.user"),
    ],
)
def test_utf8_byte_order_mark_is_ignored(home, make, name, file):
    folder = make()
    plain = ml.parse_release(name)
    path = folder / file
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())
    marked = ml.parse_release(name)
    assert marked.fingerprint == plain.fingerprint
    pd.testing.assert_frame_equal(marked.movies, plain.movies)
    if plain.users is not None:
        pd.testing.assert_frame_equal(marked.users, plain.users)


def test_tab_inside_a_dat_ratings_file_is_refused(home):
    folder = make_1m()
    lines = (folder / "ratings.dat").read_text().splitlines(keepends=True)
    lines.insert(1, "3\t1193\t4\t978300760\n")
    write(folder / "ratings.dat", "".join(lines))
    with pytest.raises(MovierecError) as e:
        ml.prepare("ml-1m")
    assert str(e.value) == (
        f"{folder / 'ratings.dat'} line 2 is malformed: it has a tab, but its fields are separated by '::'."
    )


@pytest.mark.parametrize(
    ("make", "name", "file", "bad_line", "lineno"),
    [
        (make_csv, "ml-25m", "ratings.csv", f"{2**70},3,4,5\n", 3),
        (make_100k, "ml-100k", "u.data", f"3\t{2**64}\t4\t5\n", 2),
        (make_1m, "ml-1m", "ratings.dat", f"1::661::3::{2**63}\n", 3),
    ],
)
def test_id_too_large_for_64_bits_names_file_and_line(home, make, name, file, bad_line, lineno):
    folder = make()
    lines = (folder / file).read_text().splitlines(keepends=True)
    lines.insert(lineno - 1, bad_line)
    write(folder / file, "".join(lines))
    with pytest.raises(MovierecError) as e:
        ml.prepare(name)
    assert str(e.value).startswith(f"{folder / file} line {lineno} is malformed: a number too large for a 64-bit")


def test_movie_id_too_large_for_64_bits_is_an_error(home):
    folder = make_csv()
    write(folder / "movies.csv", f"movieId,title,genres\n{2**70},Huge (2000),Drama\n")
    with pytest.raises(MovierecError, match=r"movies.csv has a movieId that is not a whole number"):
        ml.prepare("ml-25m")
    folder = make_1m()
    write(folder / "movies.dat", f"{2**70}::Huge (2000)::Drama\n")
    with pytest.raises(MovierecError, match=r"movies.dat line 1 is not `MovieID::Title::Genres`"):
        ml.prepare("ml-1m")


def test_repeated_ratings_keep_the_latest_and_are_counted(home):
    folder = make_csv()
    write(
        folder / "ratings.csv",
        "userId,movieId,rating,timestamp\n"
        "5,3,3.5,1000\n"
        "1,3,0.5,2000\n"
        "5,3,2.0,900\n"  # older than the first line: dropped
        "1,3,4.5,2500\n"  # newer: replaces line 2
        "1,200000,5.0,10\n"
        "1,200000,1.0,10\n"  # same time: the later line wins
        "5,1,4,7\n",
    )
    d = ml.parse_release("ml-25m")
    assert d.duplicates_dropped == 3 and len(d.ratings) == 4
    rows = {
        (int(d.user_ids[u]), int(d.item_ids[i])): (float(r), int(t))
        for u, i, r, t in zip(d.ratings.users, d.ratings.items, d.ratings.ratings, d.ratings.timestamps)
    }
    assert rows == {(5, 3): (3.5, 1000), (1, 3): (4.5, 2500), (1, 200000): (1.0, 10), (5, 1): (4.0, 7)}
    # Kept ratings stay in file order.
    np.testing.assert_array_equal(d.ratings.timestamps, [1000, 2500, 10, 7])
    s = ml.prepare("ml-25m")
    assert s.duplicates_dropped == 3 and cache.summary("ml-25m").duplicates_dropped == 3
    assert ml.load_dataset("ml-25m").duplicates_dropped == 3


def test_no_repeated_ratings_drop_nothing(home):
    make_csv()
    d = ml.parse_release("ml-25m")
    assert d.duplicates_dropped == 0 and len(d.ratings) == 4
    assert ml.prepare("ml-25m").duplicates_dropped == 0
