"""What each model's defaults reach on real MovieLens-100K, split u1, trained and tested the way `movierec train`
does: the accuracy bands, as data.

Each band is the bound a user can rely on, set from a peer's or the trivial answer's figure on the same split
(``why``); the measured value is in ``measured``, so a band that has become loose is visible. A rating model is
held to its RMSE, a like model to its like error against always answering "liked", a top-N model to NDCG@10.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest
from conftest import isolated_home

from movierec.metrics import higher_is_better
from movierec.options import TrainOptions
from movierec.training import train_and_save


@dataclass(frozen=True)
class Band:
    model: str
    mode: str | None
    metric: str
    bound: float
    """The test metric must be better than this (below for RMSE and the like error, above for NDCG)."""
    why: str
    measured: float
    config: dict[str, Any] = field(default_factory=dict)
    below_baseline_by: float | None = None
    """Instead of ``bound``: the metric must beat the trivial answer's by this much."""


BANDS = {
    "mf": Band("mf", None, "rmse", 0.936, "Surprise KNNBaseline 0.936, SVD 0.951", 0.918),
    "als": Band("als", "explicit", "rmse", 0.936, "Surprise KNNBaseline 0.936", 0.925),
    "als-32": Band("als", "explicit", "rmse", 0.936, "Surprise KNNBaseline 0.936", 0.923,
                   config={"factors": 32, "epochs": 15}),
    "als-implicit": Band("als", "implicit", "ndcg@10", 0.42, "implicit's ALS 0.351, popularity 0.245", 0.464),
    "autoencoder": Band("autoencoder", "user", "rmse", 0.95, "Surprise SVD 0.951", 0.929),
    "autoencoder-item": Band("autoencoder", "item", "rmse", 0.90, "I-AutoRec; Surprise SVD 0.951", 0.892),
    "rbm": Band("rbm", "like", "like_error", 0.0, "always 'liked' 0.179", 0.155, below_baseline_by=0.005),
    "rbm-rating": Band("rbm", "rating", "rmse", 0.951, "Surprise SVD 0.951", 0.925),
    "vae": Band("autoencoder", "vae", "ndcg@10", 0.42, "implicit's ALS 0.351, popularity 0.245", 0.450),
    "dae": Band("autoencoder", "dae", "ndcg@10", 0.42, "implicit's ALS 0.351, popularity 0.245", 0.460),
}


@pytest.fixture(scope="module")
def home(trained_home):
    with isolated_home(trained_home()) as h:
        yield h


@pytest.mark.slow
@pytest.mark.parametrize("case", list(BANDS))
def test_defaults_reach_their_band_on_ml100k_u1(home, case):
    band = BANDS[case]
    out = train_and_save(TrainOptions(band.model, mode=band.mode, config=band.config, dataset="ml-100k", split="u1",
                                      name=case))
    value, baseline = out.meta.metrics[band.metric], out.meta.baseline[band.metric]
    bound = band.bound if band.below_baseline_by is None else baseline - band.below_baseline_by
    higher = higher_is_better(band.metric)
    assert (value > bound) if higher else (value < bound), (
        f"{case}: test {band.metric} {value:.4f}, band {bound:.4f} ({band.why}; measured {band.measured})")
