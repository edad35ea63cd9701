"""`movierec plot curves` / `plot map` and movierec.plot: PNG files of saved models, on a small synthetic release."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from conftest import REPO, assert_one_line_error, isolated_home
from typer.testing import CliRunner

from movierec import plot
from movierec.cli import app
from movierec.errors import MovierecError

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def invoke(*args: str):
    result = CliRunner().invoke(app, list(args))
    if result.exit_code != 0:
        raise AssertionError(f"movierec {' '.join(args)} failed: {result.stderr}{result.exception!r}")
    return result


@pytest.fixture(scope="module")
def home(trained_home):
    """A fetched synthetic release and three tiny models: als (no validation), mf (validated each epoch) and rbm
    (a torch model)."""
    trains = (["train", "als", "--epochs", "3", "--factors", "4", "--name", "als-tiny", "--json"],
              ["train", "mf", "--epochs", "4", "--factors", "4", "--valid-fraction", "0.1", "--name", "mf-valid",
               "--json"],
              ["train", "rbm", "--epochs", "1", "--hidden", "6", "--gibbs-steps", "1", "--name", "rbm-tiny", "--json"])
    with isolated_home(trained_home(*trains, dataset="ml-latest-small")) as h:
        yield h


def assert_png(path: Path, width: int, height: int) -> None:
    import matplotlib.image

    data = path.read_bytes()
    assert data.startswith(PNG_SIGNATURE) and len(data) > 1000
    assert matplotlib.image.imread(path).shape[:2] == (height, width)


def captured(monkeypatch) -> list:
    """The figures movierec.plot saves, to count what was drawn."""
    figures = []
    real = plot._save

    def spy(figure, path):
        figures.append(figure)
        return real(figure, path)

    monkeypatch.setattr(plot, "_save", spy)
    return figures


# -- curves ---------------------------------------------------------------------------------------------------
def test_curves_of_a_validated_model(home, tmp_path):
    out = tmp_path / "curves.png"
    drawn = json.loads(invoke("plot", "curves", "--model", "mf-valid", "--output", str(out), "--json").stdout)
    assert drawn["path"] == str(out) and drawn["model"] == "mf-valid" and drawn["kind"] == "curves"
    assert drawn["epochs"] == 4
    # Training by its loss, then every metric of the validation slice.
    assert drawn["series"][0] == "train loss" and {"valid rmse", "valid mae"} <= set(drawn["series"])
    assert all(not s.startswith("train ") or s == "train loss" for s in drawn["series"])
    assert sum(map(len, drawn["panels"])) == len(drawn["series"])
    assert_png(out, 800, int(100 * (3.2 + 2.2 * len(drawn["panels"]))))


def test_curves_without_validation_show_every_training_metric(home, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = invoke("plot", "curves", "--model", "als-tiny")
    assert result.stdout.strip() == "Wrote als-tiny-curves.png."  # in the current folder by default
    from movierec import checkpoint

    drawn = plot.plot_history(checkpoint.read_meta(checkpoint.resolve("als-tiny")), tmp_path / "again.png")
    assert drawn.details["series"] == ["train loss", "train rmse"] and drawn.details["epochs"] == 3
    assert (tmp_path / "als-tiny-curves.png").read_bytes() == (tmp_path / "again.png").read_bytes()


def test_a_model_without_history_is_one_sentence(home, tmp_path):
    from movierec import checkpoint

    meta = dataclasses.replace(checkpoint.read_meta(checkpoint.resolve("als-tiny")), history=[])
    with pytest.raises(MovierecError, match="^als-tiny has no saved training history to plot"):
        plot.plot_history(meta, tmp_path / "none.png")
    assert not list(tmp_path.iterdir())


# -- map --------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("model", ["als-tiny", "rbm-tiny"])
def test_map_draws_one_point_per_movie_with_enough_ratings(home, tmp_path, monkeypatch, model):
    from movierec.loading import open_model

    figures = captured(monkeypatch)
    with contextlib.closing(open_model(model)) as served:
        counts = served.counts.copy()
        out = plot.plot_movie_map(served, tmp_path / "map.png", color_by="genre", labels=5, min_ratings=8)
    plotted = int((counts >= 8).sum())
    assert out.details["movies"] == plotted and sum(out.details["groups"].values()) == plotted
    ax = figures[0].axes[0]
    scattered = sum(len(c.get_offsets()) for c in ax.collections)
    assert scattered == plotted
    # The five most-rated movies are labelled, with their titles.
    assert len(out.details["labelled"]) == 5 and [t.get_text() for t in ax.texts] == out.details["labelled"]
    assert_png(out.path, 900, 750)


def test_map_clusters_are_those_of_movierec_clusters(home, tmp_path):
    clusters = json.loads(invoke("clusters", "--clusters", "4", "--model", "als-tiny", "--json").stdout)
    drawn = json.loads(invoke("plot", "map", "--model", "als-tiny", "--clusters", "4", "--min-ratings", "0",
                              "--output", str(tmp_path / "m.png"), "--json").stdout)
    assert drawn["groups"] == {f"cluster {c['cluster']}": c["size"] for c in clusters}
    assert drawn["color_by"] == "cluster" and drawn["movies"] == sum(c["size"] for c in clusters)


def test_map_default_name_and_bad_outputs(home, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = invoke("plot", "map", "--model", "als-tiny", "--color-by", "genre")
    assert result.stdout.strip() == "Wrote als-tiny-map.png."
    assert (tmp_path / "als-tiny-map.png").read_bytes().startswith(PNG_SIGNATURE)
    runner = CliRunner()
    assert_one_line_error(runner.invoke(app, ["plot", "map", "--model", "als-tiny", "-o", "map.jpg"]), "end in .png")
    assert_one_line_error(runner.invoke(app, ["plot", "curves", "--model", "als-tiny", "-o", "no/such/c.png"]),
                          "does not exist")
    assert_one_line_error(runner.invoke(app, ["plot", "map", "--model", "nosuch"]), "nosuch")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["als-tiny-map.png"]  # nothing half-written


def test_the_projection_is_deterministic_and_keeps_its_signs():
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(50, 6)).astype(np.float32)
    xy, explained = plot.project_2d(vectors)
    assert xy.shape == (50, 2) and 0 < explained[1] <= explained[0] < 1
    flipped, _ = plot.project_2d(-vectors)  # the same geometry, mirrored: the same picture
    np.testing.assert_allclose(flipped, xy, atol=1e-6)
    # The axes are the principal components: uncorrelated, the first with the larger spread.
    assert abs(np.corrcoef(xy.T)[0, 1]) < 1e-6 and xy[:, 0].var() >= xy[:, 1].var()


class _Catalogue:
    def __init__(self, titles: list[str], genres: list[list[str]]):
        self._titles, self._genres = titles, genres

    def title(self, item: int) -> str:
        return self._titles[item]

    def genres(self, item: int) -> list[str]:
        return self._genres[item]


def test_dollar_signs_in_titles_are_drawn_as_text(home, tmp_path, monkeypatch):
    from movierec import checkpoint

    titles = ["Price $\\undefined$ (2001)", "Cash $$ (1999)", "A $x^2$ Story (2005)", "$9.99 (2008)"]
    n = 40
    rng = np.random.default_rng(1)
    vectors = rng.normal(size=(n, 3)).astype(np.float32)
    catalogue = _Catalogue(titles + [f"Movie {i} (2000)" for i in range(len(titles), n)],
                           [["$ales"] if i % 2 else ["Drama", "Comedy"] for i in range(n)])
    served = SimpleNamespace(meta=checkpoint.read_meta(checkpoint.resolve("als-tiny")), catalogue=catalogue,
                             counts=np.arange(n, 0, -1), scorer=SimpleNamespace(item_vectors=lambda: vectors))
    figures = captured(monkeypatch)
    drawn = plot.plot_movie_map(served, tmp_path / "dollars.png", color_by="genre", labels=4, min_ratings=0)
    assert drawn.details["labelled"] == titles  # the four most-rated
    assert [t.get_text() for t in figures[0].axes[0].texts] == titles  # shown as written, not as formulas
    assert "$ales (20)" in [t.get_text().replace("\\$", "$") for t in figures[0].axes[0].get_legend().get_texts()]
    assert drawn.path.read_bytes().startswith(PNG_SIGNATURE)


# -- without matplotlib, and without torch ---------------------------------------------------------------------
def _python(code: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO), "COLUMNS": "200"}
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, env=env,
                          cwd=REPO, timeout=300)


def test_without_matplotlib_one_line_says_how_to_install_it(home, tmp_path):
    out = tmp_path / "curves.png"
    proc = _python(f"""
        import sys
        sys.modules["matplotlib"] = None  # as if the plot extra were not installed: importing it fails
        from movierec.cli import main
        sys.argv = ["movierec", "plot", "curves", "--model", "als-tiny", "--output", {str(out)!r}]
        main()
    """)
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr == 'Error: movierec plot needs matplotlib; install it with pip install "movierec[plot]".\n'
    assert proc.stdout == "" and not out.exists()


def test_factor_models_are_drawn_without_torch(home, tmp_path):
    proc = _python(f"""
        import sys
        from movierec.cli import app
        for what, extra in (("curves", []), ("map", ["--color-by", "genre"])):
            out = {str(tmp_path)!r} + f"/{{what}}.png"
            code = app(["plot", what, "--model", "als-tiny", "--output", out, *extra], standalone_mode=False,
                       prog_name="movierec")
            assert code in (None, 0), code
        print("torch" in sys.modules, "pandas" in sys.modules)
    """)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[-1] == "False False"
    assert {p.name for p in tmp_path.iterdir()} == {"curves.png", "map.png"}
