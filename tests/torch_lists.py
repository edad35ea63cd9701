"""A torch model's lists straight from the model and its training matrix, through the library's one list code
(:mod:`movierec.recommend`): the reference the tests hold the saved, numpy-answering models to."""

from __future__ import annotations

from typing import Any

import torch

from movierec import recommend as rec
from movierec.data.ratings import RatingMatrix
from movierec.models.base import Recommender


def _np(x: Any) -> Any:
    return None if x is None else x.detach().cpu().numpy() if hasattr(x, "detach") else x


def user_list(model: Recommender, train: RatingMatrix, user: int, n: int = 10, *, picks: Recommender | None = None,
              **options: Any) -> list[rec.Recommendation]:
    """``user``'s list, their training ratings and each movie's count taken from ``train``."""
    _, items, ratings = train.entries(torch.tensor([user], device=train.device))
    options["allowed"] = _np(options.get("allowed"))
    return rec.for_user(rec.torch_scorer(model, train, picks), user, _np(items), _np(ratings), n,
                        counts=_np(rec.item_counts(train)), **options)


def new_user_list(model: Recommender, train: RatingMatrix, items: Any, ratings: Any, n: int = 10, *,
                  picks: Recommender | None = None, **options: Any) -> list[rec.Recommendation]:
    """The list of someone who rated only ``items`` with ``ratings``."""
    options["allowed"] = _np(options.get("allowed"))
    return rec.for_new_user(rec.torch_scorer(model, train, picks), _np(items), _np(ratings), n,
                            counts=_np(rec.item_counts(train)), neutral=rec.neutral_score(model, train), **options)


def similar_list(model: Recommender, item: int, n: int = 10, *, counts: Any, allowed: Any = None
                 ) -> tuple[list[int], list[float]]:
    """The movies most like ``item`` by the model's movie vectors."""
    return rec.similar_to(rec.TorchScorer(model, None), item, n, counts=_np(counts),  # type: ignore[arg-type]
                          allowed=_np(allowed))
