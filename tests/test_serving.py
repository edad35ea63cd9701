"""Answering from the saved model alone: the numpy path gives the torch path's lists, imports neither torch nor
pandas for factor models (nor for the RBMs and autoencoders: tests/test_numpy_scorers.py), reads only headers to
list, and converts format-1 checkpoints on first use."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from conftest import assert_one_line_error, isolated_home, run_cli_in_subprocess
from torch_lists import new_user_list, similar_list, user_list

from movierec import checkpoint, loading, paths
from movierec import recommend as rec
from movierec.cli import app
from movierec.errors import MovierecError, NotFound
from movierec.loading import open_model
from movierec.scorers import FactorScorer, NumpyScorer

FACTOR_MODELS = {
    "mf": ["mf", "--epochs", "2", "--factors", "8"],
    "als": ["als", "--epochs", "2", "--factors", "8"],
    "implicit": ["als", "--mode", "implicit", "--epochs", "2", "--factors", "8"],
}
MODELS = {**FACTOR_MODELS, "rbm": ["rbm", "--epochs", "1", "--hidden", "8"]}
USERS = [0, 41, 500, 942]
NEW_USER = (np.array([0, 49, 180, 126, 99]), np.array([5.0, 4.0, 1.0, 3.5, 2.0], dtype=np.float32))


@pytest.fixture(scope="module")
def home(trained_home):
    trains = [["train", *args, "--device", "cpu", "--name", name, "--json"] for name, args in MODELS.items()]
    with isolated_home(trained_home(*trains)) as h:
        yield h


def same_lists(a: list[rec.Recommendation], b: list[rec.Recommendation]) -> None:
    assert [r.item for r in a] == [r.item for r in b]
    assert [r.because for r in a] == [r.because for r in b]
    np.testing.assert_allclose([r.score for r in a], [r.score for r in b], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", list(FACTOR_MODELS))
def test_numpy_serving_matches_the_torch_model(home, name):
    served = open_model(name)
    trained = loading.load_trained(name)
    model, train, picks = trained.model, trained.train, trained.picks
    if model.kind == "rank":  # its scores are its lists
        assert picks is None and isinstance(served.scorer, FactorScorer)
        own = served.scorer
    else:  # a rating model's lists rank through its picks model, answered in numpy too
        assert isinstance(served.scorer, rec.ListScorer) and picks is not None
        own = served.scorer.own
        assert isinstance(own, FactorScorer) and isinstance(served.scorer.picks, FactorScorer)
    counts = rec.item_counts(train).numpy()
    assert np.array_equal(served.counts, counts)
    for user in USERS:
        items, stars = served.seen(user)
        _, want_items, want_stars = train.entries(torch.tensor([user]))
        assert items.tolist() == want_items.tolist() and stars.tolist() == want_stars.tolist()
        want = model.score(torch.tensor([user]), train)[0].numpy()
        np.testing.assert_allclose(served.scorer.scores(user), want, rtol=1e-5, atol=1e-5)
        for include_seen in (False, True):
            same_lists(rec.for_user(served.scorer, user, items, stars, 30, counts=served.counts,
                                    include_seen=include_seen),
                       user_list(model, train, user, 30, include_seen=include_seen, picks=picks))
    items, stars = NEW_USER
    vector, bias = model.fold_in_factors(torch.from_numpy(items), torch.from_numpy(stars))
    got_vector, got_bias = own.fold_in_factors(items, stars)
    np.testing.assert_allclose(got_vector, vector.numpy(), rtol=1e-4, atol=1e-5)
    assert got_bias == pytest.approx(float(bias), abs=1e-5)
    np.testing.assert_allclose(served.scorer.fold_in(items, stars),
                               model.fold_in(torch.from_numpy(items), torch.from_numpy(stars)).numpy(),
                               rtol=1e-5, atol=1e-5)
    for shrink in (None, 0.0):
        same_lists(rec.for_new_user(served.scorer, items, stars, 30, counts=served.counts, neutral=served.neutral,
                                    shrink=shrink),
                   new_user_list(model, train, torch.from_numpy(items), torch.from_numpy(stars), 30,
                                          shrink=shrink, picks=picks))
    assert served.neutral == pytest.approx(rec.neutral_score(model, train))
    sims = rec.similar_to(served.scorer, 49, 15, counts=served.counts, allowed=served.counts >= 20)
    want_items, want_sims = similar_list(model, 49, 15, counts=counts, allowed=counts >= 20)
    assert sims[0] == want_items and np.allclose(sims[1], want_sims, atol=1e-5)
    served.close()


def test_other_models_use_the_saved_training_ratings(home):
    served = open_model("rbm")
    assert isinstance(served.scorer.own, NumpyScorer)  # the RBM's pass in numpy reads them (models/forward.py)
    trained = loading.load_trained("rbm")
    items, stars = served.seen(41)
    same_lists(rec.for_user(served.scorer, 41, items, stars, 20, counts=served.counts),
               user_list(trained.model, trained.train, 41, 20, picks=trained.picks))


@pytest.mark.parametrize("name", list(FACTOR_MODELS))
def test_factor_models_answer_without_torch_or_pandas(home, name):
    for args in (["recommend", "--user", "42", "--genre", "comedy", "--min-year", "1990"],
                 ["recommend", "--rate", "Toy Story=5", "--rate", "50=4", "--json"],
                 ["similar", "star wars", "--json"]):
        proc = run_cli_in_subprocess(home, *args, "--model", name)
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.rstrip().endswith("IMPORTED False False"), args


def test_listing_reads_headers_only(home, runner):
    models = paths.models_dir()
    cut = models / "cut.pt"
    shutil.copy(models / "mf.pt", cut)
    cut.write_bytes(cut.read_bytes()[:4096])  # the header and a little of the first array
    listed = json.loads(runner.invoke(app, ["models", "--json"]).stdout)
    assert str(cut) in [m["path"] for m in listed]
    assert checkpoint.read_meta(cut).name == "mf"
    for args in (["recommend", "--user", "42"], ["similar", "1"]):
        result = runner.invoke(app, [*args, "--model", "cut"])
        assert_one_line_error(result, "cut.pt is not a readable movierec checkpoint (truncated")
    cut.unlink()


def legacy_copy(home, name: str, to: str) -> None:
    """Write model ``name`` as movierec wrote checkpoints before format 2 (``torch.save``), as ``to``."""
    ckpt = loading.load(checkpoint.resolve(name))
    meta = json.dumps({**ckpt.meta.__dict__, "name": to})
    payload = {"format": checkpoint.FORMAT, "format_version": 1, "meta": meta,
               "state": {k: v.contiguous() for k, v in ckpt.model.state_dict().items()},
               "user_ids": ckpt.user_ids, "item_ids": ckpt.item_ids}
    torch.save(payload, paths.models_dir() / f"{to}.pt")


def own_lists(name: str, user_id: int) -> list[int]:
    """The movie ids of ``user_id``'s top 10 by model ``name``'s own scores: what a checkpoint saved before
    lists ranked through a picks model answers."""
    trained = loading.load_trained(name)
    user = int(np.searchsorted(trained.dataset.user_ids, user_id))
    return [int(trained.dataset.item_ids[r.item]) for r in user_list(trained.model, trained.train, user, 10)]


def test_format_1_checkpoints_are_converted_on_first_use(home, runner):
    legacy_copy(home, "mf", "old-mf")
    path = paths.models_dir() / "old-mf.pt"
    assert path.read_bytes()[:4] == b"PK\x03\x04"
    assert checkpoint.read_meta(path).name == "old-mf"  # listed as it is
    want = own_lists("mf", 42)
    got = runner.invoke(app, ["recommend", "--user", "42", "--json", "--model", "old-mf"])
    assert got.exit_code == 0, got.stderr
    assert [r["movie_id"] for r in json.loads(got.stdout)] == want
    with checkpoint.open_file(path) as saved:  # rewritten in place, in format 2, with its serving data
        assert saved.metadata["format_version"] == str(checkpoint.FORMAT_VERSION) and "serving" in saved.metadata
        assert saved.meta.name == "old-mf"
    again = run_cli_in_subprocess(home, "recommend", "--user", "42", "--json", "--model", "old-mf")
    assert again.returncode == 0 and again.stdout.rstrip().endswith("IMPORTED False False")
    assert [r["movie_id"] for r in json.loads(again.stdout.rsplit("\n", 2)[0])] == want
    path.unlink()


def test_a_format_1_checkpoint_that_cannot_be_rewritten_still_answers(home, runner, monkeypatch):
    legacy_copy(home, "als", "old-als")
    path = paths.models_dir() / "old-als.pt"
    before = path.read_bytes()

    def read_only(target, *args, **kwargs):
        raise MovierecError(f"Could not save the model to {target}: Read-only file system.")

    monkeypatch.setattr(checkpoint.files, "write_file", read_only)
    got = runner.invoke(app, ["recommend", "--user", "42", "--json", "--model", "old-als"])
    monkeypatch.undo()
    assert got.exit_code == 0, got.stderr
    assert [r["movie_id"] for r in json.loads(got.stdout)] == own_lists("als", 42)
    assert got.stderr.startswith("Warning: Could not convert") and "Read-only file system" in got.stderr
    assert path.read_bytes() == before
    path.unlink()


# -- the answers shared by the CLI, the Python API and the server ---------------------------------------------
def test_answers_are_the_cli_json(home, runner):
    served = open_model("als")
    try:
        cli = json.loads(runner.invoke(app, ["recommend", "--model", "als", "--user", "42", "--json"]).stdout)
        assert served.recommend(42) == cli
        cli = json.loads(runner.invoke(app, ["recommend", "--model", "als", "--rate", "Star Wars (1977)=5",
                                             "--rate", "50=4", "--json"]).stdout)  # 50 = Star Wars' id
        assert served.recommend_new({"star wars": 5, 50: 4}) == cli  # the last rating of a movie wins
        assert served.recommend_new([(50, 4)]) == cli
        cli = json.loads(runner.invoke(app, ["similar", "Toy Story", "--model", "als", "--json"]).stdout)
        assert served.similar("Toy Story") == served.similar(1) == cli
        cli = json.loads(runner.invoke(app, ["clusters", "--model", "als", "--clusters", "4", "--json"]).stdout)
        assert served.clusters(4) == cli
    finally:
        served.close()


def test_recommend_filters_and_seen_movies(home):
    served = open_model("als")
    try:
        rows = served.recommend(42, 15, genres=["comedy"], min_year=1990)
        assert len(rows) == 15 and [r["rank"] for r in rows] == list(range(1, 16))
        assert all("Comedy" in r["genres"] and r["year"] >= 1990 for r in rows)
        seen = {int(served.catalogue.item_ids[i]) for i in served.seen(served.user_index(42))[0]}
        assert not seen & {r["movie_id"] for r in served.recommend(42, 50)}
        assert seen & {r["movie_id"] for r in served.recommend(42, 50, include_seen=True)}
    finally:
        served.close()


def test_search_finds_titles_as_people_type_them(home):
    served = open_model("als")
    try:
        found = [r["title"] for r in served.search("star wa")]
        assert found[0] == "Star Wars (1977)"  # the best-known of the titles that start with the words
        assert all("star" in t.lower() and "wa" in t.lower() for t in found)
        assert [r["title"] for r in served.search("godfather", 3)][:2] == ["Godfather, The (1972)",
                                                                          "Godfather: Part II, The (1974)"]
        assert served.search("50") == [{**served.search("Star Wars (1977)")[0]}]
        assert served.search("50")[0]["ratings"] == int(served.counts[served.find(50)])
        assert served.search("no such film at all") == [] and served.search("   ") == []
    finally:
        served.close()


@pytest.mark.parametrize(("call", "kind", "says"), [
    (lambda s: s.recommend(10**6), NotFound, "User 1000000 is not in ml-100k"),
    (lambda s: s.similar(10**6), NotFound, "Movie 1000000 is not in ml-100k"),
    (lambda s: s.similar("qwertyuiop"), NotFound, "No movie matches 'qwertyuiop'"),
    (lambda s: s.recommend_new({"Star Wars": 6}), MovierecError, "Rating 6 for 'Star Wars' is not a number of "
                                                                  "stars from 1 to 5."),
    (lambda s: s.recommend_new({"Star Wars": float("nan")}), MovierecError, "is not a number of stars"),
    (lambda s: s.recommend_new({"Star Wars": True}), MovierecError, "is not a number of stars"),
    (lambda s: s.recommend_new({}), MovierecError, "No ratings were given"),
    (lambda s: s.recommend_new([("Star Wars",)]), MovierecError, "is a (movie, stars) pair"),
    (lambda s: s.recommend_new({None: 4}), MovierecError, "A movie is a title or a MovieLens id"),
    (lambda s: s.recommend(42, 0), MovierecError, "number of movies to list"),
    (lambda s: s.recommend(42, genres=["Western Noir"]), MovierecError, "Unknown genre 'western noir'"),
    (lambda s: s.similar("Star Wars", min_ratings=-1), MovierecError, "minimum number of ratings"),
])
def test_bad_questions_are_one_sentence(home, call, kind, says):
    served = open_model("als")
    try:
        with pytest.raises(kind) as err:
            call(served)
    finally:
        served.close()
    assert says in str(err.value) and "\n" not in str(err.value)
