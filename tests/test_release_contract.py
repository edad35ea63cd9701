"""Every model, trained with its defaults through `train_and_save`, on a small release of every layout.

The small synthetic releases (benchmarks/synth_release.py: ml-1m's .dat files, ml-10m's, ml-25m's and
ml-latest-small's .csv files, heavy users and a long tail of rarely rated movies) are fetched like real ones.
On each, every model must converge (its training loss ends below where it started) and beat the trivial
answer on the test split: the global mean (rating models), always "liked" (like/dislike), popularity (top-N);
and every model's lists must beat popularity's (these shapes are drawn with taste: people rate what they like).
Nothing here was tuned to the synthetic data; fewer epochs only where a default would take long.
"""

from __future__ import annotations

import math

import pytest
from conftest import isolated_home

from benchmarks.synth_release import SHAPES, SMALL_SHAPES, write_release
from movierec.data import download
from movierec.evaluate import PopularityBaseline, evaluate
from movierec.loading import load_trained, open_model
from movierec.metrics import higher_is_better
from movierec.options import TrainOptions
from movierec.training import train_and_save

CASES = {
    # case: (model, mode, settings beyond the defaults)
    "rbm": ("rbm", "like", {}),
    "rbm-rating": ("rbm", "rating", {}),
    "autoencoder-user": ("autoencoder", "user", {"epochs": 40}),  # default 100: the slowest here
    "autoencoder-item": ("autoencoder", "item", {"epochs": 30}),  # default 60
    "mf": ("mf", None, {}),
    "als-explicit": ("als", "explicit", {}),
    "als-implicit": ("als", "implicit", {}),
}


@pytest.fixture(scope="module")
def releases(tmp_path_factory):
    folder = tmp_path_factory.mktemp("releases")
    with isolated_home(folder / "home"):
        for shape in SMALL_SHAPES:
            archive = write_release(shape, folder / f"{shape}.zip")
            download.fetch(SHAPES[shape].release, from_file=archive, verify=False)
        yield


@pytest.mark.slow
@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("shape", SMALL_SHAPES)
def test_default_training_converges_and_beats_the_trivial_answer(releases, shape, case):
    model_name, mode, config = CASES[case]
    out = train_and_save(TrainOptions(model_name, mode=mode, config=config or {}, dataset=SHAPES[shape].release,
                                      name=f"{case}-{shape}"))
    meta, plan = out.meta, out.plan
    assert len(plan.split.test) > 0 and plan.valid is None  # no validation slice without --patience
    # Rating models converge in their training RMSE; the RBM's "loss" is a count of wrong star calls, which
    # a better fit need not lower.
    key = "rmse" if "rmse" in out.result.history[0].train else "loss"
    losses = [r.train[key] for r in out.result.history]
    assert all(math.isfinite(v) for v in losses)
    assert losses[-1] < losses[0], f"training {key} did not go down: {losses}"

    metric = out.result.monitor  # the model kind's headline metric (rmse, like_error or ndcg@10)
    model, baseline = meta.metrics[metric], meta.baseline[metric]
    beaten = model > baseline if higher_is_better(metric) else model < baseline
    assert beaten, f"{case} on {shape}: test {metric} {model:.4f}, {meta.baseline['name']} {baseline:.4f}"

    # Whatever it predicts, its lists (what `recommend` ranks by) beat "most popular" on the test split, as
    # `evaluate` measures them; and a list shows the number it is ordered by.
    trained = load_trained(meta.name)
    lists = evaluate(trained.ranked, trained.train, trained.split.test)["ndcg@10"]
    popular = evaluate(PopularityBaseline(trained.train), trained.train, trained.split.test)["ndcg@10"]
    assert lists > popular, f"{case} on {shape}: lists NDCG@10 {lists:.4f}, popularity {popular:.4f}"
    served = open_model(meta.name)
    try:
        scores = [r["score"] for r in served.recommend(int(served.user_ids[0]), 10)]
    finally:
        served.close()
    assert scores == sorted(scores, reverse=True)
