"""Lists from rating models: what a person picks, and how they would like it.

Ratings are missing not at random: people rate what they chose to watch. A model that predicts stars
(``mf``, ``als``, both autoencoders, the item RBM) or P(liked) (the like RBM) learns how someone rates what
they picked, and ranked by that alone its lists fill with films that would be rated well *if* watched —
obscure classics nobody in the data chose — and lose to "most popular". A top-N list asks a different
question: which unseen movie would this person pick **and** like?

    P(picked and liked) = P(picked) x P(liked | picked)

Every rating and like model answers it the same way, one mechanism for all (:func:`pick_and_like`):

- **P(picked)** comes from a *picks model* trained beside the model on the same training ratings: implicit
  ALS (weighted matrix factorisation of who rated what, Hu, Koren & Volinsky 2008) with
  :data:`PICKS_CONFIG`. Its fitted preferences estimate "would rate it" on a 0..1 scale; they are clipped to
  [0, 1]. It is saved with the model (``picks.*`` arrays) and folds new users in by its closed form.
- **P(liked | picked)** is the model's own answer: P(liked) for a like model; for a rating model the
  predicted stars ``r`` read as ``sigmoid((r - t) / s)``, ``t`` halfway between the like threshold (4 stars)
  and the star value below it, ``s`` = :data:`LIKE_SOFTNESS` stars.

Measured on ml-100k u1 (benchmarks/lists.py): the product lifts every model's NDCG@10 above the picks model's
alone (0.462) and far above its own ranking (mf 0.117 -> 0.483, the like RBM 0.046 -> 0.474), while the
stars and like predictions are untouched (the model itself is trained exactly as before).

Models that already rank (``als --mode implicit``, Mult-VAE/DAE) have no picks model: their scores are
their lists. This module imports torch only when a torch model is trained or scored.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np

from movierec.kinds import ScoreKind, score_kind

if TYPE_CHECKING:
    import torch

    from movierec.data.ratings import RatingMatrix
    from movierec.models.base import Recommender

PICKS_MODEL = ("als", "implicit")
"""The registry name and mode of the picks model."""
PICKS_CONFIG: dict[str, Any] = {}
"""Its settings: implicit ALS's own defaults (tuned for lists on ml-100k, see docs/models.md)."""
LIKE_SOFTNESS = 1.0
"""``s`` of ``P(liked | picked) = sigmoid((stars - t) / s)`` for rating models, in stars. 1 ranked best of
0.25, 0.5 and 1 for every rating model on ml-100k u1 (benchmarks/lists.py)."""
LIKED_STARS = 4.0
"""A rating of at least this many stars is liked (the relevance threshold of the ranking metrics)."""


def needs_picks(kind: str) -> bool:
    """Whether a model of ``kind`` ranks through a picks model: rating and like models do."""
    return score_kind(kind).predicts


def like_midpoint(rating_values: tuple[float, ...] | list[float], liked: float = LIKED_STARS) -> float:
    """``t``: halfway between ``liked`` and the highest star value below it (3.5 on a 1-5 scale, 3.75 on a
    half-star one); ``liked`` itself when no value lies below it."""
    below = [float(v) for v in rating_values if float(v) < liked]
    return 0.5 * (liked + max(below)) if below else float(liked)


def pick_and_like(picked: Any, predicted: Any, kind: str, midpoint: float) -> Any:
    """P(picked) x P(liked | picked), elementwise, for numpy arrays or torch tensors alike.

    ``picked``: the picks model's raw scores; ``predicted``: the model's own raw scores (stars, or P(liked)
    for ``kind`` "like"); ``midpoint``: :func:`like_midpoint` of the model's scale (rating models)."""
    if isinstance(picked, np.ndarray):  # in place on the new arrays: an answer's few passes over every movie
        p = np.clip(picked, 0.0, 1.0)
        if kind == ScoreKind.LIKE:
            p *= np.clip(predicted, 0.0, 1.0)
            return p
        z = np.subtract(predicted, np.float32(midpoint), dtype=np.float32)
        z /= np.float32(LIKE_SOFTNESS)
        np.exp(np.negative(z, out=z), out=z)
        z += 1.0
        p /= z  # p / (1 + exp(-z)): P(picked) x P(liked | picked)
        return p
    import torch

    p = picked.clamp(0.0, 1.0)
    if kind == ScoreKind.LIKE:
        return p * predicted.clamp(0.0, 1.0)
    return p * torch.sigmoid((predicted - midpoint) / LIKE_SOFTNESS)


def recipe(model: Recommender) -> dict[str, Any]:
    """How lists of ``model`` combine its scores with its picks model's, as saved in the serving data."""
    return {"method": "pick-and-like", "kind": model.kind, "midpoint": like_midpoint(model.rating_values),
            "softness": LIKE_SOFTNESS}


def check_recipe(value: Any) -> bool:
    """Whether ``value`` is a recipe this version can follow."""
    return (isinstance(value, dict) and value.get("method") == "pick-and-like"
            and value.get("kind") in (ScoreKind.RATING, ScoreKind.LIKE)
            and isinstance(value.get("midpoint"), (int, float))
            and not isinstance(value.get("midpoint"), bool) and math.isfinite(value["midpoint"])
            and value.get("softness") == LIKE_SOFTNESS)


def build_picks(model: Recommender) -> Recommender:
    """A fresh, untrained picks model for ``model``'s users and movies, on its device."""
    from movierec.models import build_model

    name, mode = PICKS_MODEL
    picks = build_model(name, mode, PICKS_CONFIG, model.n_users, model.n_items, model.rating_values)
    return picks.to(model.device)


class Ranked:
    """A model and its picks model, as evaluation sees them: the model's own predictions (``score``,
    ``predict``: stars or P(liked), pointwise metrics) and its lists (``rank_score``: ranking metrics)."""

    def __init__(self, model: Recommender, picks: Recommender | None):
        self.model, self.picks = model, picks
        self._midpoint = like_midpoint(model.rating_values)

    def __getattr__(self, name: str) -> Any:  # kind, like_threshold, device, n_items, rating_values, ...
        return getattr(self.model, name)

    def score(self, users: torch.Tensor, train: RatingMatrix) -> torch.Tensor:
        return self.model.score(users, train)

    def predict(self, users: torch.Tensor, items: torch.Tensor, train: RatingMatrix, **kw: Any) -> torch.Tensor:
        return self.model.predict(users, items, train, **kw)

    def rank_score(self, users: torch.Tensor, train: RatingMatrix) -> torch.Tensor:
        """What the model's lists are ordered by, (B,) -> (B, I)."""
        own = self.model.score(users, train)
        if self.picks is None:
            return own
        return pick_and_like(self.picks.score(users, train), own, self.model.kind, self._midpoint)
