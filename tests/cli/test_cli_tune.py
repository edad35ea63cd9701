"""`movierec tune MODEL` and `movierec plot tune`: the table and JSON, --save, one study shared by two processes
at once, and bad input as one sentence."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

pytest.importorskip("optuna")

from conftest import REPO, assert_one_line_error  # noqa: E402

from movierec.cli import app  # noqa: E402

TINY = ["--epochs", "2", "--batch-size", "256"]


@pytest.fixture(scope="module")
def fetched(trained_home):
    """A home with a small synthetic release in ml-latest-small's layout, fetched."""
    from conftest import isolated_home

    with isolated_home(trained_home(dataset="ml-latest-small")) as h:
        yield h


def test_tune_prints_a_line_per_trial_a_table_within_80_columns_and_the_best(fetched):
    from typer.testing import CliRunner

    result = CliRunner(env={"COLUMNS": "80"}).invoke(
        app, ["tune", "als", "--mode", "implicit", "--iters", "2", "--trials", "3", "--study", "table"])
    assert result.exit_code == 0, result.stderr
    lines = result.stdout.splitlines()
    assert [line.split()[:2] for line in lines if line.startswith("trial ")] == [
        ["trial", "0"], ["trial", "1"], ["trial", "2"]]
    table = [line for line in lines if line[:1] in "┏┃┡│└"]
    assert table and max(len(line) for line in table) <= 80
    assert any("ndcg@10" in line for line in table)  # a top-N model is tuned by its lists
    best = next(line for line in lines if line.startswith("Best: trial "))
    assert "ndcg@10" in best and "on the validation slice" in best
    command = next(line for line in lines if line.startswith("Train it: "))
    assert command.startswith("Train it: movierec train als --mode implicit --split random --epochs 2 --factors ")


def test_tune_json_parses_and_save_trains_a_model_recommend_loads(fetched, runner):
    result = runner.invoke(app, ["tune", "mf", *TINY, "--trials", "2", "--study", "saved", "--save", "tuned",
                                 "--json"])
    assert result.exit_code == 0, result.stderr
    out = json.loads(result.stdout)
    assert out["study"] == "saved" and out["ran"] == 2 and len(out["trials"]) == 2
    assert out["best"]["trial"] in (0, 1) and out["best"]["config"]["epochs"] == 2
    assert out["saved"]["name"] == "tuned" and out["saved"]["metrics"]["rmse"] > 0
    assert {k: out["saved"]["config"][k] for k in out["best"]["config"]} == out["best"]["config"]
    listed = runner.invoke(app, ["recommend", "--model", "tuned", "--user", "1", "--json"])
    assert listed.exit_code == 0, listed.stderr
    assert len(json.loads(listed.stdout)) == 10


def _tune_process(home, storage, trials):
    env = {**os.environ, "MOVIEREC_HOME": str(home), "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "movierec", "tune", "mf", *TINY, "--trials", str(trials),
                             "--storage", storage, "--study", "shared", "--json"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.mark.parametrize("kind", ["sqlite", "journal"])
def test_two_processes_work_on_one_study_at_once(fetched, tmp_path, kind):
    from movierec.tuning import load_study

    storage = f"sqlite:///{tmp_path / 'shared.db'}" if kind == "sqlite" else f"journal:{tmp_path / 'shared.log'}"
    procs = [_tune_process(fetched, storage, 3), _tune_process(fetched, storage, 4)]
    outs = [p.communicate(timeout=300) for p in procs]
    for p, (_, stderr) in zip(procs, outs):
        assert p.returncode == 0, stderr
    ran = [json.loads(stdout)["ran"] for stdout, _ in outs]
    assert sorted(ran) == [3, 4]
    study = load_study("shared", storage)
    assert len(study.records) == 7 and sorted(r.number for r in study.records) == list(range(7))
    assert all(r.state in ("complete", "pruned") for r in study.records)
    draws = [tuple(sorted(r.params.items())) for r in study.records]
    assert len(set(draws)) == 7  # the two processes did not draw the same trials
    assert study.best_trial is not None


def test_plot_tune_draws_the_search_history(fetched, runner, tmp_path):
    pytest.importorskip("matplotlib")
    assert runner.invoke(app, ["tune", "mf", *TINY, "--trials", "3", "--study", "drawn"]).exit_code == 0
    out = tmp_path / "history.png"
    result = runner.invoke(app, ["plot", "tune", "--study", "drawn", "-o", str(out), "--json"])
    assert result.exit_code == 0, result.stderr
    drawn = json.loads(result.stdout)
    assert drawn["kind"] == "tune" and drawn["trials"] == 3 and drawn["metric"] == "rmse"
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    missing = runner.invoke(app, ["plot", "tune", "--study", "nothing-here", "-o", str(out)])
    assert_one_line_error(missing, "No study nothing-here is stored in")


@pytest.mark.parametrize(("args", "fragment"), [
    (["tune", "nosuch"], "Unknown model 'nosuch'; choose one of:"),
    (["tune", "mf", "--trials", "0"], "--trials must be at least 1, not 0."),
    (["tune", "mf", "--metric", "speed"], "Unknown metric 'speed'"),
    (["tune", "mf", "--storage", "nosuchdb://x", "--trials", "1"], "Cannot open the study storage 'nosuchdb://x'"),
    (["tune", "mf", "--save", "../x", "--trials", "1"], "Invalid model name '../x'"),
    (["tune", "mf", "--factors", "4", "--lr", "0.1", "--reg", "0.1"], "Nothing is left to tune in mf"),
])
def test_bad_input_is_one_sentence(fetched, runner, args, fragment):
    assert_one_line_error(runner.invoke(app, args), fragment)


def test_a_study_made_for_another_model_is_refused(fetched, runner):
    assert runner.invoke(app, ["tune", "mf", *TINY, "--trials", "1", "--study", "taken"]).exit_code == 0
    result = runner.invoke(app, ["tune", "als", "--iters", "1", "--trials", "1", "--study", "taken"])
    assert_one_line_error(result, "Study taken tunes mf (explicit)", "not als (explicit)")


def test_without_optuna_tune_says_how_to_get_it(fetched, runner, monkeypatch):
    monkeypatch.setitem(sys.modules, "optuna", None)  # import optuna now fails
    assert_one_line_error(runner.invoke(app, ["tune", "mf", "--trials", "1"]),
                          "tune needs the tune extra: pip install 'movierec[tune]'.")
