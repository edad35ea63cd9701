"""What a saved model's own test numbers say about its lists, for the CLI to tell the people who use them.

At train time every model's lists are ranked once on its test split, and so are the "most popular" lists
(:func:`movierec.training.score_test_split`: ``metrics["ndcg@10"]`` and ``popularity["ndcg@10"]`` in the
checkpoint). A model whose lists rank below the most popular movies' is better replaced, for lists, by
recommending what is popular, or by the saved model whose lists rank best. Only checkpoint headers are read:
no torch, no pandas. Checkpoints from before, and models trained on every rating, have no such numbers and
are never judged here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

LIST_METRIC = "ndcg@10"
"""How good a model's lists are: measured at train time for every model and for the most popular movies'
lists (:func:`movierec.training.score_test_split`), and compared here."""


@dataclass(frozen=True)
class WeakLists:
    """A model whose lists ranked below the most popular movies' on its test split."""

    name: str
    ndcg: float
    """The model's test NDCG@10."""
    popularity: float
    """The most popular movies' NDCG@10 on the same test split."""
    best: str | None
    """The saved model of the same dataset with the best test NDCG@10 among those that beat popularity on
    their own test split; None when none does."""
    best_ndcg: float | None


def _saved(metrics: dict[str, Any]) -> float | None:
    value = metrics.get(LIST_METRIC)
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else None


def weak_lists(meta: Any) -> WeakLists | None:
    """:class:`WeakLists` for the checkpoint ``meta`` (a :class:`~movierec.checkpoint.CheckpointMeta`) when its
    saved test NDCG@10 is below popularity's on the same split; None when it is not, or either is unknown."""
    own, popular = _saved(meta.metrics), _saved(meta.popularity)
    if own is None or popular is None or own >= popular:
        return None
    from movierec import checkpoint

    best: tuple[str, float] | None = None
    for _, other in checkpoint.list_checkpoints():  # oldest first: of equals, the newest wins
        value = _saved(other.metrics)
        if other.dataset != meta.dataset or other.name == meta.name or value is None:
            continue
        bar = _saved(other.popularity)  # popularity on that model's own test split, when it was measured
        if value > (popular if bar is None else bar) and (best is None or value >= best[1]):
            best = (other.name, value)
    return WeakLists(meta.name, own, popular, *(best or (None, None)))
