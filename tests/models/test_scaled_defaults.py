"""Defaults that follow the size of the data: the largest releases train in affordable time, small ones keep the
tuned defaults, options the user gives always win, and `train` says what it chose and saves it."""

from __future__ import annotations

import json

import pytest
from conftest import ML100K_ZIP, isolated_home, require_ml100k
from typer.testing import CliRunner

from movierec.cli import app
from movierec.models import model_class, scaled_defaults

# (users, movies, training ratings) of the default split of each release shape.
ML100K = (943, 1682, 90_000)
ML1M = (6040, 3706, 900_188)
ML10M = (69_878, 10_677, 9_000_049)
ML25M = (162_541, 59_047, 22_500_085)

SCALED = [("rbm", "like"), ("rbm", "rating"), ("autoencoder", "user"), ("autoencoder", "item")]


@pytest.mark.parametrize(("name", "mode"), SCALED + [("mf", None), ("als", "explicit"), ("als", "implicit")])
@pytest.mark.parametrize("size", [ML100K, ML1M])
def test_small_releases_keep_the_tuned_defaults(name, mode, size):
    assert scaled_defaults(name, mode, {}, *size) == {}


@pytest.mark.parametrize(("name", "mode"), SCALED)
def test_the_largest_releases_read_fewer_ratings_in_all(name, mode):
    defaults = model_class(name, mode).config_class()
    small, large = scaled_defaults(name, mode, {}, *ML10M), scaled_defaults(name, mode, {}, *ML25M)
    assert large, "ML-25M trains with the small-data defaults"
    # Fewer epochs (never none) on ML-25M than the defaults, and than on ML-10M.
    assert 1 <= large["epochs"] < defaults.epochs
    assert large["epochs"] <= small.get("epochs", defaults.epochs)
    # Every choice is a real field of the config, and a valid one.
    model_class(name, mode).config_class(**large)


@pytest.mark.parametrize(("name", "mode", "at_10m", "at_25m"), [
    ("rbm", "like", {}, {"epochs": 5}),
    ("rbm", "rating", {"hidden": 50, "batch_size": 166, "epochs": 11}, {"hidden": 50, "batch_size": 922, "epochs": 4}),
    ("autoencoder", "user", {"epochs": 25}, {"epochs": 10}),
    ("autoencoder", "item", {"layers": "100", "batch_size": 166, "epochs": 20},
     {"layers": "100", "batch_size": 922, "epochs": 8}),
])
def test_the_documented_choices(name, mode, at_10m, at_25m):
    """What the README and each config's docstring promise for the two largest shapes."""
    assert scaled_defaults(name, mode, {}, *ML10M) == at_10m
    assert scaled_defaults(name, mode, {}, *ML25M) == at_25m


@pytest.mark.parametrize(("name", "mode"), SCALED)
def test_options_the_user_gives_are_never_changed(name, mode):
    chosen = scaled_defaults(name, mode, {}, *ML25M)
    given = {key: getattr(model_class(name, mode).config_class(), key) for key in chosen}
    assert scaled_defaults(name, mode, given, *ML25M) == {}
    one = next(iter(chosen))
    assert one not in scaled_defaults(name, mode, {one: given[one]}, *ML25M)


@pytest.fixture(scope="module")
def ml100k(tmp_path_factory):
    require_ml100k()
    home = tmp_path_factory.mktemp("scaled") / "home"
    with isolated_home(home):
        fetched = CliRunner().invoke(app, ["fetch", "ml-100k", "--from-file", str(ML100K_ZIP), "--no-verify"])
        assert fetched.exit_code == 0, fetched.stderr
    return home


def test_train_says_which_defaults_it_scaled_and_saves_them(ml100k, monkeypatch):
    # ML-100K is small, so the rule is replaced by one that scales it: what is tested is the plumbing.
    from movierec.models.mf import MFConfig

    monkeypatch.setattr(MFConfig, "for_data", classmethod(lambda cls, u, i, n: {"epochs": 1, "factors": 4}))
    with isolated_home(ml100k):
        result = CliRunner().invoke(app, ["train", "mf", "--name", "scaled"], env={"COLUMNS": "200"})
        assert result.exit_code == 0, result.stderr
        assert ("Defaults for 80,000 training ratings: --epochs 1 (not 20), --factors 4 (not 32). "
                "Pass --epochs, --factors to change.") in result.stdout
        assert "epoch   1/1" in result.stdout
        shown = json.loads(CliRunner().invoke(app, ["models", "--json"]).stdout)
        config = next(m for m in shown if m["name"] == "scaled")["config"]
        assert (config["epochs"], config["factors"]) == (1, 4)

        given = CliRunner().invoke(app, ["train", "mf", "--epochs", "2", "--name", "given", "--json"])
        assert given.exit_code == 0, given.stderr
        out = json.loads(given.stdout)
        assert (out["epochs"], out["config"]["epochs"], out["config"]["factors"]) == (2, 2, 4)


def test_cv_says_which_defaults_it_scaled(ml100k, monkeypatch):
    from movierec.models.mf import MFConfig

    monkeypatch.setattr(MFConfig, "for_data", classmethod(lambda cls, u, i, n: {"epochs": 1, "factors": 4}))
    with isolated_home(ml100k):
        result = CliRunner().invoke(app, ["cv", "mf"], env={"COLUMNS": "200"})
        assert result.exit_code == 0, result.stderr
        assert result.stdout.count("Defaults for 80,000 training ratings: --epochs 1 (not 20), --factors 4") == 1
        assert "u5: trained on 80,000 ratings (1 epoch, " in result.stdout
