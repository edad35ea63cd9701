"""Finding a movie from what a person types: normalisation, forgiving matching, ambiguity, numeric ids."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from movierec import paths
from movierec.data.dataset import Dataset
from movierec.data.ratings import Ratings
from movierec.data.titles import TitleIndex, normalize
from movierec.errors import MovierecError

# movie id -> title; id 4 is listed but nobody rated it, so it is not in the index space.
TITLES = {
    1: "Toy Story (1995)",
    2: "Toy Story 2 (1999)",
    3: "Usual Suspects, The (1995)",
    4: "Hidden Gem (1990)",
    5: "Heat (1995)",
    7: "Heat (1986)",
    8: "Schindler's List (1993)",
    9: "City of Lost Children, The (Cité des enfants perdus, La) (1995)",
    10: "Se7en (1995)",
    12: "Star Wars (1977)",
    13: "Star Wars: Episode I - The Phantom Menace (1999)",
    14: "Amélie (Fabuleux destin d'Amélie Poulain, Le) (2001)",
    15: "L.A. Confidential (1997)",
    16: "Enfant, L' (2005)",
}
RATED = [m for m in TITLES if m != 4]


def tiny_dataset(titles: dict[int, str], rated: list[int]) -> Dataset:
    """A hand-built Dataset: one user who rated every movie in ``rated``."""
    item_ids = np.asarray(sorted(rated), dtype=np.int64)
    n = len(item_ids)
    ratings = Ratings(
        np.zeros(n, np.int32), np.arange(n, dtype=np.int32), np.full(n, 4.0, np.float32),
        np.arange(n, dtype=np.int64), 1, n,
    )
    ids = sorted(titles)
    years = [int(t[-5:-1]) for t in (titles[i] for i in ids)]
    movies = pd.DataFrame(
        {"title": [titles[i] for i in ids], "year": pd.array(years, dtype="Int64"),
         "genres": pd.Series([["Drama"] for _ in ids], dtype=object).to_numpy()},
        index=pd.Index(np.asarray(ids, dtype=np.int64), name="movie_id"),
    )
    return Dataset(
        name="tiny", ratings=ratings, user_ids=np.array([1], dtype=np.int64), item_ids=item_ids, movies=movies,
        users=None, fingerprint="tiny", rating_values=(1.0, 2.0, 3.0, 4.0, 5.0), path=Path("/nonexistent/tiny"),
    )


@pytest.fixture(scope="module")
def tiny() -> Dataset:
    return tiny_dataset(TITLES, RATED)


@pytest.fixture(scope="module")
def index(tiny) -> TitleIndex:
    return TitleIndex(tiny)


def movie_id(data: Dataset, item: int) -> int:
    return int(data.item_ids[item])


def one_sentence(exc: pytest.ExceptionInfo) -> str:
    text = str(exc.value)
    assert "\n" not in text and text.endswith("."), text
    return text


@pytest.mark.parametrize(
    ("title", "expected"),
    [
        ("Usual Suspects, The (1995)", ("the usual suspects", 1995)),
        ("The Usual Suspects", ("the usual suspects", None)),
        ("  usual SUSPECTS, the  ", ("the usual suspects", None)),
        ("Toy Story (1995)", ("toy story", 1995)),
        ("Heat (1995) ", ("heat", 1995)),
        ("Se7en (1995)", ("se7en", 1995)),
        ("City of Lost Children, The (Cité des enfants perdus, La) (1995)", ("the city of lost children", 1995)),
        ("Amélie (2001)", ("amelie", 2001)),
        ("Schindler's List (1993)", ("schindlers list", 1993)),
        ("Schindlers List", ("schindlers list", None)),
        ("L.A. Confidential (1997)", ("la confidential", 1997)),
        ("Enfant, L' (2005)", ("lenfant", 2005)),
        ("L'Enfant", ("lenfant", None)),
        ("Star Wars: Episode I - The Phantom Menace", ("star wars episode i the phantom menace", None)),
    ],
)
def test_normalize(title, expected):
    assert normalize(title) == expected


@pytest.mark.parametrize(
    ("query", "expected_id"),
    [
        ("Toy Story (1995)", 1),
        ("toy story", 1),  # the exact title wins over "Toy Story 2", which also holds both words
        ("TOY   STORY!!", 1),
        ("Toy Story 2", 2),
        ("The Usual Suspects", 3),
        ("usual suspects", 3),  # leading article missing
        ("Usual Suspects, The", 3),
        ("usual suspects (1995)", 3),
        ("heat (1986)", 7),
        ("Heat (1995)", 5),
        ("Schindlers List", 8),
        ("schindler's list", 8),
        ("city of lost children", 9),
        ("The City of Lost Children (1995)", 9),
        ("se7en", 10),
        ("Star Wars", 12),  # exact title, although "Star Wars: Episode I" holds both words too
        ("phantom menace", 13),
        ("Amelie", 14),
        ("LA Confidential", 15),
        ("l.a. confidential (1997)", 15),
        ("L'Enfant", 16),
        ("5", 5),
        (" 12 ", 12),
    ],
)
def test_find_is_forgiving(index, tiny, query, expected_id):
    assert movie_id(tiny, index.find(query)) == expected_id


def test_ambiguous_title_lists_the_candidates(index):
    with pytest.raises(MovierecError) as exc:
        index.find("Heat")
    text = one_sentence(exc)
    assert "Heat (1995) (id 5)" in text and "Heat (1986) (id 7)" in text
    assert "year" in text and "id" in text


def test_ambiguous_title_shows_at_most_eight():
    titles = {i: f"Sequel Part {i} (19{70 + i})" for i in range(1, 12)}
    index = TitleIndex(tiny_dataset(titles, list(titles)))
    with pytest.raises(MovierecError) as exc:
        index.find("sequel part")
    text = one_sentence(exc)
    assert text.count("(id ") == 8 and "and 3 more" in text


@pytest.mark.parametrize(
    ("query", "fragments"),
    [
        ("Jurassic Park", ["No movie matches 'Jurassic Park'", "MovieLens id"]),
        ("Toy Story (2010)", ["No movie matches"]),  # right title, wrong year
        ("!!!", ["No movie matches"]),
        ("   ", ["empty"]),
        ("999", ["999", "run from 1 to 16"]),
        ("4", ["Movie 4 has no ratings"]),  # listed, but unrated movies are not in the index space
        ("Hidden Gem", ["No movie matches"]),
    ],
)
def test_no_match_is_one_clear_sentence(index, query, fragments):
    with pytest.raises(MovierecError) as exc:
        index.find(query)
    text = one_sentence(exc)
    for fragment in fragments:
        assert fragment in text


# -- the real MovieLens-100K ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def ml100k(tmp_path_factory):
    from conftest import ML100K_ZIP, require_ml100k

    require_ml100k()
    from movierec.data import download
    from movierec.data.movielens import load_dataset

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MOVIEREC_HOME", str(tmp_path_factory.mktemp("titles-home")))
        paths.set_home(None)
        download.fetch("ml-100k", from_file=ML100K_ZIP, verify=False)
        yield load_dataset("ml-100k")
    paths.set_home(None)


@pytest.mark.parametrize(
    ("query", "expected_id"),
    [
        ("Star Wars", 50), ("star wars (1977)", 50), ("50", 50), ("Toy Story", 1), ("the usual suspects", 12),
        ("Usual Suspects", 12), ("Schindlers List", 318), ("LA Confidential", 302), ("return of the jedi", 181),
        ("Godfather: Part II", 187), ("Heat", 273),
    ],
)
def test_real_titles(ml100k, query, expected_id):
    assert movie_id(ml100k, TitleIndex(ml100k).find(query)) == expected_id


def test_real_duplicates_and_series_are_ambiguous(ml100k):
    index = TitleIndex(ml100k)
    # ml-100k lists Chasing Amy twice (ids 246 and 268): only the id can tell them apart.
    with pytest.raises(MovierecError) as exc:
        index.find("Chasing Amy (1997)")
    assert "(id 246)" in str(exc.value) and "(id 268)" in str(exc.value)
    with pytest.raises(MovierecError) as exc:
        index.find("Star Trek")
    text = one_sentence(exc)
    assert "Star Trek: First Contact (1996) (id 222)" in text and "more" not in text
    assert movie_id(ml100k, index.find("268")) == 268
