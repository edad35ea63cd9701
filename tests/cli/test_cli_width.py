"""Every table is readable at 80 and 120 columns: no line wider than the terminal, no number or model name cut,
whatever the width (COLUMNS, else the terminal, else 80 when piped)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from conftest import REPO, assert_one_line_error, isolated_home
from typer.testing import CliRunner

from movierec.cli import app

NAMES = ("a-rather-long-model-name-mf", "als-tiny")
RBM = "rbm-tiny"  # the like/dislike RBM
IMPLICIT = "als-rank"  # a top-N model


@pytest.fixture(scope="module")
def home(trained_home):
    """ml-100k and tiny saved models: two with names of different lengths, a like RBM and a top-N model."""
    with isolated_home(trained_home(
                     ["train", "mf", "--epochs", "1", "--factors", "4", "--name", NAMES[0], "--json"],
                     ["train", "rbm", "--epochs", "1", "--hidden", "10", "--gibbs-steps", "1", "--name", RBM, "--json"],
                     ["train", "als", "--mode", "implicit", "--epochs", "1", "--factors", "4", "--name", IMPLICIT,
                      "--json"],
                     ["train", "als", "--epochs", "1", "--factors", "4", "--name", NAMES[1], "--json"])) as h:
        yield h


def run(width: int, *args: str) -> str:
    result = CliRunner().invoke(app, list(args), env={"COLUMNS": str(width)})
    assert result.exit_code == 0, result.stderr
    return result.stdout


def assert_fits(text: str, width: int) -> None:
    too_long = [line for line in text.splitlines() if len(line) > width]
    assert not too_long, "\n".join(too_long)
    assert "…" not in text, text


def header_of(text: str) -> list[str]:
    line = next(line for line in text.splitlines() if line.startswith("┃"))
    return [h.strip() for h in line.strip("┃").split("┃")]


@pytest.mark.parametrize("width", [80, 120])
def test_evaluate_fits_with_every_number_whole(home, width):
    out = run(width, "evaluate", *NAMES)
    assert_fits(out, width)
    rows = json.loads(run(width, "evaluate", *NAMES, "--json"))
    every = {"RMSE": "rmse", "MAE": "mae", "AUC": "auc", "NDCG@10": "ndcg@10", "R@10": "recall@10",
             "P@10": "precision@10", "Hit@10": "hit@10", "MAP@10": "map@10", "Cov@10": "coverage@10",
             "acc": "accuracy", "error": "like_error"}
    header = header_of(out)
    assert header[0] == "model" and header[-1] == "fit"
    # The most telling metrics come first; what does not fit is named, never cut.
    assert "RMSE" in header and "NDCG@10" in header
    hidden = out.split("Not shown at this width:", 1)[1] if "Not shown at this width:" in out else ""
    for head, key in every.items():
        measured = any(r.get(key) is not None for r in rows if r["checkpoint"] is not None)
        if head in header:
            for r in rows:
                if r.get(key) is not None:
                    assert f"{r[key]:.3f}" in out, (key, r[key])
        elif measured:
            assert head in hidden, head
    for name in (*NAMES, "popularity*", "global mean*"):
        assert name in out
    if width < 120:
        assert hidden


def headers_of(text: str) -> list[str]:
    """The headers of every table in ``text`` (a wide table goes on in a second one)."""
    return [h.strip() for line in text.splitlines() if line.startswith("┃") for h in line.strip("┃").split("┃")]


@pytest.mark.parametrize(("names", "judged"), [
    ((NAMES[1], RBM), {"RMSE", "NDCG@10", "error", "acc", "AUC"}),  # a rating model and the like RBM
    ((RBM, IMPLICIT), {"error", "acc", "AUC", "NDCG@10", "R@10", "P@10"}),
    ((*NAMES, RBM, IMPLICIT), {"RMSE", "NDCG@10", "error", "acc", "AUC", "R@10", "P@10"}),
])
def test_evaluate_at_80_columns_keeps_what_judges_each_model(home, names, judged):
    out = run(80, "evaluate", *names)
    assert_fits(out, 80)
    shown = set(headers_of(out))
    assert judged <= shown, judged - shown  # other columns were dropped first
    hidden = out.split("Not shown at this width:", 1)[1] if "Not shown at this width:" in out else ""
    assert not any(f" {head}," in f" {hidden}" or f" {head} (" in f" {hidden}" for head in judged), hidden
    if len(names) == 2:  # these fit one table
        assert sum(line.startswith("┃ model ") for line in out.splitlines()) == 1


def test_evaluate_metrics_chosen_explicitly(home):
    out = run(80, "evaluate", *NAMES, "--metrics", "ndcg@10,map,hit@10")
    assert_fits(out, 80)
    assert header_of(out) == ["model", "NDCG@10", "MAP@10", "Hit@10", "fit"]
    # More than fits one table: the rest follow in another, each led by the model names.
    out = run(60, "evaluate", *NAMES, "--metrics", "rmse,mae,auc,precision,recall,ndcg,hit,map")
    assert_fits(out, 60)
    assert sum(line.startswith("┃ model ") for line in out.splitlines()) >= 2
    for head in ("RMSE", "MAE", "AUC", "P@10", "R@10", "NDCG@10", "Hit@10", "MAP@10"):
        assert f" {head} " in out
    # --json keeps every metric whatever --metrics says.
    rows = json.loads(run(80, "evaluate", *NAMES, "--metrics", "rmse", "--json"))
    assert all("ndcg@10" in r for r in rows)


def test_evaluate_unknown_metric_is_one_error(home):
    result = CliRunner().invoke(app, ["evaluate", "--metrics", "rmse,nope"], env={"COLUMNS": "80"})
    assert_one_line_error(result, "'nope'")


@pytest.mark.parametrize("width", [80, 120])
def test_recommend_similar_clusters_models_fit(home, width):
    out = run(width, "recommend", "--user", "1", "--model", NAMES[0])
    assert_fits(out, width)
    rows = json.loads(run(width, "recommend", "--user", "1", "--model", NAMES[0], "--json"))
    for r in rows:
        assert f"{r['score']:.3f}" in out
    # Ten recommendations: the title line, a 3-line header, the bottom border and at most two lines a movie.
    assert len(out.splitlines()) <= 25
    if width < 120:
        assert "genres" not in header_of(out)
    else:  # shown from 120 columns unless the titles need the room (Dr. Strangelove's 74 characters do at 120)
        assert "genres" in header_of(out) or max(len(r["title"]) for r in rows) > 60
        assert "genres" in header_of(run(160, "recommend", "--user", "1", "--model", NAMES[0]))
    out = run(width, "similar", "Toy Story", "--model", NAMES[1])
    assert_fits(out, width)
    for r in json.loads(run(width, "similar", "Toy Story", "--model", NAMES[1], "--json"))["similar"]:
        assert f"{r['score']:.3f}" in out
    out = run(width, "clusters", "--clusters", "4", "--model", NAMES[1])
    assert_fits(out, width)
    sizes = [line.split("│")[2].strip() for line in out.splitlines() if line.startswith("│")]
    for c in json.loads(run(width, "clusters", "--clusters", "4", "--model", NAMES[1], "--json")):
        assert str(c["size"]) in sizes
    out = run(width, "models")
    assert_fits(out, width)
    for m in json.loads(run(width, "models", "--json")):
        assert m["name"] in out
        for key, v in m["metrics"].items():
            assert f"{key} {v:.4f}" in out


def test_piped_output_is_as_wide_as_columns_else_80():
    code = "from movierec.cli.console import console, err_console; print(console.width, err_console.width)"
    env = {k: v for k, v in os.environ.items() if k != "COLUMNS"}
    for extra, expected in (({}, "80 80"), ({"COLUMNS": "100"}, "100 100")):
        proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, env={**env, **extra}, capture_output=True,
                              stdin=subprocess.DEVNULL, text=True, timeout=60)
        assert proc.stdout.split() == expected.split(), proc.stderr
