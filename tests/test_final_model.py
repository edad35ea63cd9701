"""The workflow "compare models on a split, then train the chosen one on every rating", end to end on the real
MovieLens-100K: `--split none`, what every command does with such a model, and the note `recommend` gives on
stderr when a model's lists rank below the most popular movies'."""

from __future__ import annotations

import csv
import dataclasses
import json

import pytest
from conftest import assert_one_line_error, isolated_home
from typer.testing import CliRunner

from movierec.cli import app

MF = ["mf", "--epochs", "2", "--factors", "8"]


def invoke(*args: str):
    result = CliRunner().invoke(app, list(args), env={"COLUMNS": "100"})
    if result.exit_code != 0:
        raise AssertionError(f"movierec {' '.join(args)} failed: {result.stderr}{result.exception!r}")
    return result


@pytest.fixture(scope="module")
def home(trained_home):
    """ml-100k; mf (weak lists) and implicit ALS (strong lists) compared on u1, then mf trained on every rating
    (`mf-final`, the newest). Yields {name: the `train` run's result}."""
    with isolated_home(trained_home()) as h:
        runs = {"mf-split": invoke("train", *MF, "--name", "mf-split", "--json"),
                "als-lists": invoke("train", "als", "--mode", "implicit", "--epochs", "4", "--name", "als-lists",
                                    "--json"),
                "mf-final": invoke("train", *MF, "--split", "none", "--name", "mf-final")}
        runs["mf-final-json"] = invoke("train", *MF, "--split", "none", "--name", "mf-final-2", "--json")
        invoke("models", "--remove", "mf-final-2")
        saved_as_weak("mf-split", "mf-weak", 0.1)
        runs["home"] = h
        yield runs


@pytest.fixture(scope="module")
def every_rating(home) -> dict[int, dict[int, float]]:
    """MovieLens user id -> {movie id: stars} of every rating of ml-100k."""
    from movierec.data.movielens import load_dataset

    data = load_dataset("ml-100k")
    r = data.ratings
    out: dict[int, dict[int, float]] = {}
    for u, i, s in zip(data.user_ids[r.users].tolist(), data.item_ids[r.items].tolist(), r.ratings.tolist()):
        out.setdefault(u, {})[i] = s
    return out


def test_train_split_none_says_there_is_no_test_split(home):
    out = home["mf-final"].stdout
    assert "split none: every one of its 100,000 ratings (no test split)" in " ".join(out.split())
    lines = [line for line in out.splitlines() if "│ test" in line]
    assert len(lines) == 1 and "none: trained on every rating (--split none)" in lines[0]
    assert "baseline" not in out and "nan" not in out.lower()
    js = json.loads(home["mf-final-json"].stdout)
    assert js["split"] == "none" and js["metrics"] is None and js["baseline"] is None and js["popularity"] is None
    assert set(js["train"]) >= {"loss", "rmse"}


def test_models_show_the_split_as_none(home):
    rows = {r["name"]: r for r in json.loads(invoke("models", "--json").stdout)}
    assert rows["mf-final"]["split"] == "none" and rows["mf-final"]["metrics"] == {}
    line = next(line for line in invoke("models").stdout.splitlines() if line.startswith("│ mf-final"))
    assert "none" in line and "nan" not in line.lower()


def test_evaluate_leaves_it_out_and_refuses_it_by_name(home):
    result = invoke("evaluate", "--json")
    assert {r["checkpoint"] for r in json.loads(result.stdout)} == {None, "mf-split", "als-lists", "mf-weak"}
    note = result.stderr.strip().splitlines()
    assert note == ["Note: mf-final was trained on every rating (--split none), so it has no test split and is "
                    "left out."]
    for name in ("mf-final", "mf-fin"):
        assert_one_line_error(CliRunner().invoke(app, ["evaluate", name]),
                              "mf-final was trained on every rating, so it has no test split to evaluate on; ")
    import movierec as mr
    from movierec.errors import MovierecError

    with pytest.raises(MovierecError, match="no test split"):
        mr.evaluate_models("mf-final")


def test_other_refusals_point_to_split_none(home):
    assert_one_line_error(CliRunner().invoke(app, ["cv", *MF, "--split", "none"]),
                          "cv cannot use --split none", "`movierec train mf --split none`")
    assert_one_line_error(CliRunner().invoke(app, ["train", *MF, "--test-fraction", "0"]),
                          "--test-fraction must be between 0 and 1", "--split none")


def test_recommend_never_lists_a_rated_movie(home, every_rating):
    for user in (1, 42, 405):  # 405 rated 737 movies
        rated = every_rating[user]
        rows = json.loads(invoke("recommend", "--user", str(user), "--top", "30", "--model", "mf-final",
                                 "--json").stdout)
        assert len(rows) == 30 and not {r["movie_id"] for r in rows} & set(rated)


def test_export_similar_and_the_api_use_it(home, every_rating, tmp_path):
    path = tmp_path / "all.csv"
    invoke("export", "--model", "mf-final", "--top", "5", "-o", str(path), "--user", "1", "--user", "42")
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 10
    assert not {int(r["movie_id"]) for r in rows if r["user_id"] == "1"} & set(every_rating[1])
    similar = json.loads(invoke("similar", "Star Wars", "--model", "mf-final", "--json").stdout)
    assert similar["title"] == "Star Wars (1977)" and len(similar["similar"]) == 10
    import movierec as mr

    with mr.load("mf-final") as model:
        assert model.metrics == {} and model.info["split"] == "none"
        assert not set(model.recommend(42, n=20)["movie_id"]) & set(every_rating[42])


def test_serve_answers_from_it(home, every_rating):
    from servers import Server

    server = Server("--model", "mf-final")
    try:
        rows = server.get("/recommend?user=42&n=15")
        assert len(rows) == 15 and not {r["movie_id"] for r in rows} & set(every_rating[42])
        models = {m["name"]: m for m in server.get("/models")["models"]}
        assert models["mf-final"]["split"] == "none" and models["mf-final"]["served"]
    finally:
        server.kill()


def test_the_python_api_trains_on_every_rating_too(home):
    import movierec as mr

    with mr.train("als", split="none", epochs=1, factors=4, name="api-final") as model:
        assert model.info["split"] == "none" and model.metrics == {}
    mr.remove("api-final")


# -- explanations ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("seen", [[], ["--include-seen"]])
def test_explanations_are_true(home, every_rating, seen):
    from movierec.data.movielens import load_dataset

    titles = load_dataset("ml-100k").movies["title"]
    listed_liked = 0
    for user in (1, 42, 181):
        liked = {titles[m] for m, stars in every_rating[user].items() if stars >= 4}
        rows = json.loads(invoke("recommend", "--user", str(user), "--top", "40", "--model", "mf-final",
                                 *seen, "--json").stdout)
        assert any(r["because_you_liked"] for r in rows)
        for r in rows:
            assert r["because_you_liked"] is None or r["because_you_liked"] in liked, r
            assert r["because_you_liked"] != r["title"]  # --include-seen lists liked movies: never their own reason
        listed_liked += len({r["title"] for r in rows} & liked)
    assert listed_liked > 0 if seen else listed_liked == 0  # with --include-seen the case is met: liked movies listed


def test_no_explanation_without_a_movie_of_four_stars(home):
    args = ["recommend", "--rate", "Toy Story=3.5", "--rate", "Heat=3", "--rate", "Fargo=1", "--model", "mf-final"]
    rows = json.loads(invoke(*args, "--json").stdout)
    assert rows and all(r["because_you_liked"] is None for r in rows)
    assert "because you liked" not in invoke(*args).stdout  # no column of blanks
    import movierec as mr

    with mr.load("mf-final") as model:
        frame = model.recommend_new({"Toy Story": 3.5, "Heat": 3})
        assert frame["because_you_liked"].isna().all()
        four = model.recommend_new({"Toy Story": 4, "Heat": 3})
        assert set(four["because_you_liked"]) == {"Toy Story (1995)"}


# -- the note on weak lists ------------------------------------------------------------------------------------
def saved_as_weak(name: str, to: str, ndcg: float) -> None:
    """A copy of saved model ``name`` as ``to``, whose saved test NDCG@10 says its lists ranked at ``ndcg``: a model
    whose lists lose to popularity (every default model's lists now beat it on ml-100k)."""
    from movierec import checkpoint

    source = checkpoint.resolve(name)
    with checkpoint.open_file(source) as saved:
        arrays = {k: saved.get(k) for k in saved.names()}
        metadata = dict(saved.metadata)
        meta = dataclasses.replace(saved.meta, name=to, metrics={**saved.meta.metrics, "ndcg@10": ndcg})
    metadata["meta"] = json.dumps(dataclasses.asdict(meta))
    checkpoint.write_file(source.with_name(f"{to}.pt"), metadata, arrays)


def best_for_lists() -> tuple[str, float]:
    from movierec import checkpoint

    scored = [(m.metrics["ndcg@10"], m.name) for _, m in checkpoint.list_checkpoints() if "ndcg@10" in m.metrics]
    ndcg, name = max(scored)
    return name, ndcg


def test_recommend_notes_lists_weaker_than_popularity_on_stderr_only(home):
    from movierec import checkpoint

    weak = checkpoint.read_meta(checkpoint.resolve("mf-weak"))
    best, best_ndcg = best_for_lists()
    for name in ("mf-split", "als-lists"):  # both lead "most popular" on u1
        meta = checkpoint.read_meta(checkpoint.resolve(name))
        assert meta.metrics["ndcg@10"] > meta.popularity["ndcg@10"]
    assert weak.metrics["ndcg@10"] < weak.popularity["ndcg@10"] < best_ndcg  # the case is met
    for args in (["--user", "1"], ["--rate", "Star Wars=5", "--rate", "Fargo=4"]):
        result = invoke("recommend", *args, "--model", "mf-weak", "--json")
        json.loads(result.stdout)  # stdout is the JSON alone
        assert result.stderr.strip().splitlines() == [
            f"Note: mf-weak's lists ranked below 'most popular' on its test split (NDCG@10 "
            f"{weak.metrics['ndcg@10']:.3f} vs {weak.popularity['ndcg@10']:.3f}); the best saved model for lists "
            f"is {best} ({best_ndcg:.3f})."]
        assert "Note:" not in invoke("recommend", *args, "--model", "mf-weak").stdout
    for model in ("als-lists", "mf-split", "mf-final"):  # strong lists; no test split: nothing to say
        assert invoke("recommend", "--user", "1", "--model", model).stderr.strip() == ""
    assert invoke("similar", "Star Wars", "--model", "mf-weak").stderr.strip() == ""


def test_the_note_needs_saved_numbers(home):
    from movierec import checkpoint
    from movierec.advice import weak_lists

    weak = checkpoint.read_meta(checkpoint.resolve("mf-weak"))
    found = weak_lists(weak)
    assert (found.name, found.best) == ("mf-weak", best_for_lists()[0])
    assert weak_lists(dataclasses.replace(weak, popularity={})) is None  # a checkpoint from before: unknown
    assert weak_lists(dataclasses.replace(weak, metrics={"rmse": 0.9})) is None
    lonely = weak_lists(dataclasses.replace(weak, dataset="ml-1m"))  # no saved model of its data beats popularity
    assert lonely is not None and lonely.best is None
