"""Lists people trust: a new user's list follows their taste, not the chart, whatever the model.

On a synthetic release where genre decides taste (tests/synthetic.py: half the users love comedies, so "most
popular" is all comedies), someone who rates three horror films 5 stars must get mostly horror, from every
default model, and every list shows its scores in the order it ranks them.
"""

from __future__ import annotations

import pytest
from conftest import isolated_home
from synthetic import GENRE_TASTE, genre_taste_archive

from movierec.data import download
from movierec.loading import open_model
from movierec.options import TrainOptions
from movierec.training import train_and_save

CASES = {  # case: (model, mode)
    "rbm": ("rbm", "like"), "rbm-rating": ("rbm", "rating"), "autoencoder": ("autoencoder", "user"),
    "autoencoder-item": ("autoencoder", "item"), "mf": ("mf", None), "als": ("als", "explicit"),
    "als-implicit": ("als", "implicit"),
}
PER_GENRE = 40


@pytest.fixture(scope="module")
def genre_home(tmp_path_factory):
    folder = tmp_path_factory.mktemp("lists")
    archive, titles = genre_taste_archive(per_genre=PER_GENRE)
    (folder / "genres.zip").write_bytes(archive)
    with isolated_home(folder / "home"):
        download.fetch("ml-latest-small", from_file=folder / "genres.zip", verify=False)
        yield titles


@pytest.mark.slow
@pytest.mark.parametrize("case", list(CASES))
def test_three_horror_films_give_a_horror_list(genre_home, case):
    model_name, mode = CASES[case]
    out = train_and_save(TrainOptions(model_name, mode=mode, dataset="ml-latest-small", split="random", name=case))
    horror = GENRE_TASTE.index("Horror")
    # Three of the horror films horror fans rated most.
    rated = {genre_home[horror * PER_GENRE + i]: 5 for i in range(3)}
    served = open_model(out.meta.name)
    try:
        rows = served.recommend_new(rated, 10)
    finally:
        served.close()
    genres = [r["genres"][0] for r in rows]
    assert genres.count("Horror") >= 7, f"{case}: {genres}"
    scores = [r["score"] for r in rows]
    assert scores == sorted(scores, reverse=True), f"{case}: shown out of order: {scores}"
    assert not set(rated) & {r["title"] for r in rows}  # never what they just rated
