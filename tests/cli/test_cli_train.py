"""`movierec train`, `models` and `evaluate` end to end on the real MovieLens-100K, with tiny models."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from conftest import ML100K_ZIP, REPO, assert_one_line_error, isolated_home, require_ml100k
from typer.testing import CliRunner

from movierec import paths
from movierec.cli import app
from movierec.models import MODELS

# Tiny settings so each model trains in a second or two; the defaults are other people's business.
TINY = {
    "mf": ["--epochs", "2", "--factors", "8"],
    "als": ["--epochs", "2", "--factors", "8"],
    "rbm": ["--epochs", "1", "--mode", "like", "--hidden", "20", "--gibbs-steps", "1", "--batch-size", "1000"],
    "autoencoder": ["--epochs", "1", "--layers", "8", "--batch-size", "2048"],
    "hybrid": ["--epochs", "2", "--factors", "8"],
}
METRIC_KEYS = ["rmse", "mae", "auc", "precision@{k}", "recall@{k}", "ndcg@{k}", "hit@{k}", "map@{k}", "coverage@{k}"]


def assert_usage_error(result, *fragments: str) -> None:
    """A usage error: exit status 2 and one sentence on stderr naming what was wrong."""
    assert result.exit_code == 2
    assert_one_line_error(result, *fragments)


def invoke(*args: str):
    # A wide terminal: these tests read whole lines and table rows (test_cli_width covers 80 columns).
    result = CliRunner().invoke(app, list(args), env={"COLUMNS": "200"})
    if result.exit_code != 0:
        raise AssertionError(f"movierec {' '.join(args)} failed: {result.stderr}{result.exception!r}")
    return result


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A home with ml-100k and, trained once: mf on the random and temporal splits, then the four models on u1.

    Returns {name: the `train` run's result}: the split runs print JSON, the u1 runs the summary table. The u1
    models are trained last, so one of them is the newest.
    """
    require_ml100k()
    with isolated_home(tmp_path_factory.mktemp("cli-train") / "home"):
        invoke("fetch", "ml-100k", "--from-file", str(ML100K_ZIP), "--no-verify")
        runs = {}
        for split in ("random", "temporal"):
            runs[f"mf-{split}"] = invoke("train", "mf", "--epochs", "1", "--factors", "4", "--split", split,
                                         "--test-fraction", "0.2", "--name", f"mf-{split}", "--json")
        for model, options in TINY.items():
            runs[model] = invoke("train", model, *options, "--device", "cpu", "--name", f"{model}-tiny")
        yield runs


@pytest.fixture(scope="module")
def u1_split(trained):
    from movierec.data.movielens import load_dataset
    from movierec.data.split import make_split

    return make_split(load_dataset("ml-100k"), "u1")


@pytest.fixture(scope="module")
def evaluated(trained) -> list[dict]:
    return json.loads(invoke("evaluate", "--json").stdout)


# -- train ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("model", list(TINY))
def test_train_prints_a_summary(trained, model):
    out = trained[model].stdout
    # ml-100k is the only fetched dataset, so it is the default; the line says so.
    assert (f"Training {model} on ml-100k (the only fetched dataset) split u1: 80,000 training and 20,000 test "
            "ratings") in out
    assert "943 users x 1,682 movies, device cpu" in out
    assert "Training summary" in out
    for row in ("model", "dataset", "epochs", "fit time", "train", "test", "test baseline", "checkpoint"):
        assert f"│ {row} " in out
    # Beside the trivial answer of its kind, the most popular movies' lists, with the verdict on NDCG@10.
    assert "│ test baseline (popularity) " in out and "beaten on ndcg@10" in out
    assert "nan" not in out.lower()
    assert "│ validation " not in out  # no --patience, no --valid-fraction: nothing held out of training
    assert "ml-100k (split u1)" in out and f"{model}-tiny" in out
    assert "epoch   1/" in out  # the training curve is output; only the transient progress goes to stderr
    assert "valid:" not in out


def test_patience_validates_on_part_of_the_training_ratings(trained, runner):
    result = runner.invoke(app, ["train", "mf", "--epochs", "3", "--factors", "4", "--patience", "1",
                                 "--name", "mf-patient", "--json"])
    assert result.exit_code == 0, result.stderr
    out = json.loads(result.stdout)
    assert out["valid_fraction"] == 0.05 and set(out["valid"]) == {"rmse", "mae"}
    assert set(out["metrics"]) == {"rmse", "mae", "ndcg@10"} and out["metrics"] != out["valid"]
    table = runner.invoke(app, ["train", "mf", "--epochs", "2", "--factors", "4", "--valid-fraction", "0.1",
                                "--name", "mf-watched"])
    assert table.exit_code == 0, table.stderr
    assert "80,000 training, 8,000 of them set aside to validate, and 20,000 test ratings" in table.stdout
    assert "│ validation " in table.stdout and "10% of the training ratings" in table.stdout
    assert "valid: rmse" in table.stdout
    for name in ("mf-patient", "mf-watched"):  # not part of the other tests' comparisons
        (paths.models_dir() / f"{name}.pt").unlink()


@pytest.mark.parametrize("split", ["random", "temporal"])
def test_train_json(trained, split):
    out = json.loads(trained[f"mf-{split}"].stdout)  # stdout is nothing but the JSON object
    assert (out["name"], out["model"], out["dataset"], out["split"]) == (f"mf-{split}", "mf", "ml-100k", split)
    assert Path(out["path"]) == paths.models_dir() / f"mf-{split}.pt" and Path(out["path"]).is_file()
    assert out["epochs"] == 1 and out["stopped_early"] is False
    assert out["config"]["epochs"] == 1 and out["config"]["factors"] == 4
    assert set(out["metrics"]) == {"rmse", "mae", "ndcg@10"} and set(out["train"]) >= {"loss"}
    assert all(isinstance(v, float) for v in out["metrics"].values())
    # The most popular movies' lists on the same test split: what the model's lists are compared with.
    assert set(out["popularity"]) == {"ndcg@10"} and 0 < out["popularity"]["ndcg@10"] < 1


def test_model_options_reach_the_config(trained):
    rows = {r["name"]: r for r in json.loads(invoke("models", "--json").stdout)}
    for model, options in TINY.items():
        row = rows[f"{model}-tiny"]
        assert row["epochs"] == row["config"]["epochs"] == int(options[1])
        expected = {"like_error", "accuracy", "auc"} if model == "rbm" else {"rmse", "mae"}  # rbm: like mode
        assert set(row["metrics"]) == expected | {"ndcg@10"}  # every model's lists are ranked once, too
    assert rows["mf-tiny"]["config"]["factors"] == 8
    assert rows["als-tiny"]["config"]["factors"] == 8
    assert rows["rbm-tiny"]["config"]["hidden"] == 20 and rows["rbm-tiny"]["config"]["gibbs_steps"] == 1
    assert "mode" not in rows["rbm-tiny"]["config"]  # the mode picked the class; it is no setting of it
    assert rows["autoencoder-tiny"]["config"]["layers"] == "8"


def test_generated_splits(trained):
    from movierec.data.movielens import load_dataset
    from movierec.data.split import make_split

    # Each model is evaluated on the split it was trained on, next to that split's own baselines.
    rows = json.loads(invoke("evaluate", "--json", "--model", "mf-random", "--model", "mf-temporal").stdout)
    assert [(r["model"], r["split"]) for r in rows] == [
        ("popularity", "random"), ("global mean", "random"), ("mf", "random"),
        ("popularity", "temporal"), ("global mean", "temporal"), ("mf", "temporal"),
    ]
    data = load_dataset("ml-100k")
    random_test = make_split(data, "random", seed=0, test_fraction=0.2).test
    temporal_test = make_split(data, "temporal", seed=0, test_fraction=0.2).test
    assert rows[0]["ratings"] == len(random_test) == 20_000
    assert rows[3]["ratings"] == len(temporal_test)
    assert 18_000 < len(temporal_test) < 22_000  # about a fifth of each user's ratings: their latest


# -- models --------------------------------------------------------------------------------------------
def test_models_lists_every_checkpoint(trained):
    result = invoke("models")
    for name in ("mf-random", "mf-temporal", *(f"{m}-tiny" for m in TINY)):
        assert name in result.stdout
    assert "hybrid-tiny (newest)" in result.stdout

    rows = json.loads(invoke("models", "--json").stdout)
    assert [r["name"] for r in rows] == ["mf-random", "mf-temporal", *(f"{m}-tiny" for m in TINY)]
    for r in rows:
        assert {"name", "model", "dataset", "split", "path", "metrics"} <= set(r)
        assert r["dataset"] == "ml-100k" and Path(r["path"]).is_file() and r["metrics"]
        assert r["path"] == str(paths.models_dir() / f"{r['name']}.pt")
    assert [r["newest"] for r in rows] == [False] * (len(rows) - 1) + [True]
    assert {r["model"] for r in rows} == set(MODELS)


# -- train errors --------------------------------------------------------------------------------------
def test_dataset_not_fetched(home, runner):
    result = runner.invoke(app, ["train", "mf", "--epochs", "1"])
    assert_one_line_error(result, "No dataset is fetched yet", "`movierec fetch ml-100k`")
    result = runner.invoke(app, ["train", "mf", "--epochs", "1", "--dataset", "ml-100k"])
    assert_one_line_error(result, "ml-100k is not fetched", "`movierec fetch ml-100k`")
    assert not paths.models_dir().exists()


def test_other_dataset_not_fetched(trained, runner):
    result = runner.invoke(app, ["train", "mf", "--epochs", "1", "--dataset", "ml-1m"])
    assert_one_line_error(result, "`movierec fetch ml-1m`")


def test_unknown_dataset(trained, runner):
    result = runner.invoke(app, ["train", "mf", "--epochs", "1", "--dataset", "ml-7"])
    assert_one_line_error(result, "ml-7", "ml-100k")


def test_unknown_model(trained, runner):
    result = runner.invoke(app, ["train", "nonsense"])
    assert_one_line_error(result, "Unknown model 'nonsense'", "rbm, autoencoder, mf, als")


def test_cuda_without_a_gpu(trained, runner):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA GPU")
    result = runner.invoke(app, ["train", "mf", "--epochs", "1", "--device", "cuda", "--name", "never"])
    assert_one_line_error(result, "no CUDA GPU is available", "--device cpu")
    assert not (paths.models_dir() / "never.pt").exists()


def test_unknown_split_lists_the_valid_ones(trained, runner):
    result = runner.invoke(app, ["train", "mf", "--epochs", "1", "--split", "u9"])
    assert_one_line_error(result, "Unknown split 'u9'", "u1, u2, u3, u4, u5, ua, ub, random, temporal")


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (["rbm", "--mode", "nonsense"], ["'--mode'", "'nonsense' is not one of", "'like'", "'rating'"]),
        (["mf", "--optimizer", "lbfgs"], ["'--optimizer'", "'lbfgs'", "'sgd'"]),
        (["mf", "--epochs", "many"], ["Invalid value for '--epochs'"]),
        (["mf", "--no-such-option"], ["No such option", "--no-such-option"]),
    ],
)
def test_model_options_are_validated(trained, runner, args, fragments):
    assert_usage_error(runner.invoke(app, ["train", *args]), *fragments)


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (["--name", "../escape"], ["Invalid model name '../escape'"]),
        (["--test-fraction", "1.5"], ["--test-fraction must be between 0 and 1"]),
        (["--epochs", "0"], ["at least 1"]),
        (["--patience", "0"], ["--patience must be at least 1"]),
        (["--valid-fraction", "1"], ["--valid-fraction must be at least 0 and below 1"]),
        (["--split", "random", "--test-fraction", "1e-9"], ["has no test ratings", "larger --test-fraction"]),
    ],
)
def test_bad_common_options(trained, runner, args, fragments):
    assert_one_line_error(runner.invoke(app, ["train", "mf", *args]), *fragments)


def test_model_help_lists_its_options(trained, runner):
    result = runner.invoke(app, ["train", "rbm", "--help"])
    assert result.exit_code == 0
    for option in ("--hidden", "--gibbs-steps", "--mode", "like", "rating", "--dataset", "--split", "--patience"):
        assert option in result.stdout


def _run_python(code: str) -> subprocess.CompletedProcess:
    env = {"PATH": "/usr/bin:/bin", "COLUMNS": "200", "HOME": str(REPO), "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, env=env,
                          cwd=REPO, timeout=120)


def test_train_help_lists_the_models_without_importing_torch():
    proc = _run_python("""
        import sys
        from movierec.cli import app
        code = app(["train", "--help"], standalone_mode=False, prog_name="movierec")
        assert code == 0, code
        assert "torch" not in sys.modules, "movierec train --help imported torch"
        print("NO-TORCH")
    """)
    assert proc.returncode == 0, proc.stderr
    assert "NO-TORCH" in proc.stdout
    for name, summary in ((n, e.summary) for n, e in MODELS.items()):
        assert f" {name} " in proc.stdout and summary[:40] in proc.stdout


def test_root_help_imports_neither_torch_nor_pandas():
    proc = _run_python("""
        import sys
        from movierec.cli import app
        code = app(["--help"], standalone_mode=False, prog_name="movierec")
        assert code == 0, code
        heavy = sorted({"torch", "pandas", "numpy", "optuna"} & set(sys.modules))
        assert not heavy, f"movierec --help imported {heavy}"
        code = app(["tune", "--help"], standalone_mode=False, prog_name="movierec")
        assert code == 0, code
        heavy = sorted({"torch", "pandas", "numpy", "optuna"} & set(sys.modules))
        assert not heavy, f"movierec tune --help imported {heavy}"
        print("LIGHT")
    """)
    assert proc.returncode == 0, proc.stderr
    assert "LIGHT" in proc.stdout
    for command in ("fetch", "datasets", "train", "tune", "models", "evaluate", "recommend", "similar", "clusters"):
        assert f" {command} " in proc.stdout


# -- evaluate ------------------------------------------------------------------------------------------
def test_evaluate_json(evaluated):
    # By default: the models trained on the newest checkpoint's data and split (u1), after the baselines.
    assert [r["model"] for r in evaluated] == ["popularity", "global mean", *TINY]
    assert [r["checkpoint"] for r in evaluated] == [None, None, *(f"{m}-tiny" for m in TINY)]
    for r in evaluated:
        assert {"model", "checkpoint", *(k.format(k=10) for k in METRIC_KEYS)} <= set(r)
        assert (r["dataset"], r["split"], r["ratings"]) == ("ml-100k", "u1", 20_000)
        assert r["split_label"] == "ml-100k, split u1" and r["seed"] == 0
    by_model = {r["model"]: r for r in evaluated}
    # Not applicable -> null: popularity predicts no stars; a constant ranks nothing; like-mode rbm has no stars.
    assert by_model["popularity"]["rmse"] is None and by_model["popularity"]["auc"] is not None
    assert by_model["global mean"]["precision@10"] is None and by_model["global mean"]["auc"] is None
    assert by_model["rbm"]["rmse"] is None and by_model["rbm"]["auc"] is not None
    for model in ("mf", "als", "autoencoder"):
        assert all(by_model[model][k.format(k=10)] is not None for k in METRIC_KEYS)
        assert 0.5 < by_model[model]["rmse"] < 1.5
    for r in evaluated:
        for key in ("precision@10", "recall@10", "ndcg@10", "hit@10", "map@10", "coverage@10", "auc"):
            assert r[key] is None or 0.0 <= r[key] <= 1.0


def test_evaluate_baselines_by_hand(evaluated, u1_split):
    train, test = u1_split.train, u1_split.test
    mean = train.ratings.astype(np.float64).mean()
    by_model = {r["model"]: r for r in evaluated}
    assert by_model["global mean"]["rmse"] == pytest.approx(np.sqrt(np.mean((test.ratings - mean) ** 2)), rel=1e-5)
    assert by_model["global mean"]["mae"] == pytest.approx(np.mean(np.abs(test.ratings - mean)), rel=1e-5)
    ranked_users = len(np.unique(test.users[test.ratings >= 4.0]))
    assert all(r["users"] == ranked_users for r in evaluated)

    # Popularity's hit@10, by hand: each user's 10 most-rated unseen movies (ties: lower index first).
    counts = np.bincount(train.items, minlength=train.n_items)
    order = np.lexsort((np.arange(train.n_items), -counts))
    hits = []
    for user in np.unique(test.users[test.ratings >= 4.0]):
        seen = set(train.items[train.users == user].tolist())
        top = [i for i in order[: 10 + len(seen)] if i not in seen][:10]
        relevant = set(test.items[(test.users == user) & (test.ratings >= 4.0)].tolist())
        hits.append(bool(relevant & set(top)))
    assert by_model["popularity"]["hit@10"] == pytest.approx(np.mean(hits))


def test_evaluate_table(trained):
    result = invoke("evaluate")
    out = result.stdout
    assert "Evaluation on ml-100k, split u1: " in out
    # The checkpoints tested on other splits are left out, with one line saying how to include them.
    note = result.stderr.strip().splitlines()
    assert len(note) == 1 and note[0].startswith("Note: 2 saved models tested on other data or splits left out")
    assert "`movierec evaluate mf-temporal`" in note[0]
    assert "popularity*" in out and "global mean*" in out and "* baseline" in out
    for model in TINY:  # each row is the saved name, what --model takes; no numbered footnote
        assert f"│ {model}-tiny " in out
    assert "(1)" not in out
    for header in ("RMSE", "AUC", "P@10", "NDCG@10", "Cov@10"):
        assert header in out
    assert "mf-random" not in out  # another split: not in the default comparison


def test_evaluate_csv_has_the_same_rows(evaluated):
    out = invoke("evaluate", "--csv", "--model", "rbm", "--model", "mf").stdout
    rows = list(csv.DictReader(io.StringIO(out)))
    by_checkpoint = {r["checkpoint"]: r for r in evaluated}
    expected = evaluated[:2] + [by_checkpoint["rbm-tiny"], by_checkpoint["mf-tiny"]]  # in the order asked for
    assert list(rows[0]) == list(expected[0])
    assert len(rows) == len(expected)
    for got, want in zip(rows, expected):
        for key, value in want.items():
            if value is None:
                assert got[key] == ""
            elif isinstance(value, (int, float)):
                assert float(got[key]) == pytest.approx(value, rel=1e-12), key
            else:
                assert got[key] == value


def test_evaluate_k_changes_the_keys(trained):
    rows = json.loads(invoke("evaluate", "--json", "--cutoff", "5", "--model", "als").stdout)
    assert [r["model"] for r in rows] == ["popularity", "global mean", "als"]
    for key in METRIC_KEYS:
        if "{k}" in key:
            assert all(key.format(k=5) in r and key.format(k=10) not in r for r in rows)
    assert all(rows[-1][k.format(k=5)] is not None for k in METRIC_KEYS)


@pytest.mark.parametrize("selector", [["--model", "mf"], ["mf-tiny"]], ids=["model", "checkpoint"])
def test_evaluate_selects_a_model(trained, evaluated, selector):
    rows = json.loads(invoke("evaluate", "--json", *selector).stdout)
    assert [(r["model"], r["checkpoint"]) for r in rows] == [("popularity", None), ("global mean", None),
                                                            ("mf", "mf-tiny")]
    assert rows[-1] == next(r for r in evaluated if r["checkpoint"] == "mf-tiny")  # deterministic


def test_evaluate_unknown_model(trained, runner):
    result = runner.invoke(app, ["evaluate", "--model", "missing"])
    assert_one_line_error(result, "No saved model named 'missing'", "mf-tiny")


def test_evaluate_without_models(home, runner):
    result = runner.invoke(app, ["evaluate"])
    assert_one_line_error(result, "No trained models yet", "movierec train MODEL")
    result = runner.invoke(app, ["evaluate", "--model", "mf"])
    assert_one_line_error(result, "No trained models yet")
