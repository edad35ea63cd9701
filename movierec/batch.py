"""Answers for many users at once: their top-N lists and the model's predictions for (user, movie) pairs.

Users are scored a batch at a time, as many as fit :data:`SCORE_BLOCK` scores, so memory stays one batch x movies
block whatever the number of users; each batch's lists follow the rules every list follows
(:func:`movierec.recommend.rank_rows`), so a user's list here is the one `movierec recommend --user` shows. The one
implementation behind ``Model.recommend(users)``, ``Model.predict(users, movies)``, ``Model.predict_frame`` and
`movierec export`.

Ids are checked all at once: a wrong type or an unknown id is one sentence naming the first such id, never a raw
numpy or pandas error.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from movierec.data.ids import indices_of
from movierec.errors import MovierecError

SCORE_BLOCK = 1 << 22
"""Scores per batch when the batch size is not given: a (batch x movies) float32 block of 16 MB, which ranking
copies a few times (the masked scores, the partition), so a batch holds well under 100 MB at any scale. Small
enough that torch reuses every per-batch tensor from its allocator's free lists instead of fresh pages from the
system (which cost more than the ranking itself on a CPU), and that a batch takes a fraction of a second, so
Ctrl-C is never kept waiting; large enough that the per-batch overhead does not show."""


def batch_size_for(n_items: int, batch_users: int | None = None) -> int:
    """Users per batch: ``batch_users``, or as many as fit :data:`SCORE_BLOCK` scores (1 at least)."""
    batch = batch_users if batch_users is not None else max(1, min(4096, SCORE_BLOCK // max(1, n_items)))
    if batch < 1:
        raise MovierecError(f"The user batch size must be at least 1 (got {batch}).")
    return batch


# -- ids --------------------------------------------------------------------------------------------------------
def as_id_array(values: Any, what: str) -> np.ndarray:
    """``values`` (one id, a list, a numpy array or a pandas Series/Index) as a 1-D array of whole numbers (int64)
    or of strings (object); anything else is one sentence."""
    if isinstance(values, (str, bytes)) or np.ndim(values) == 0:
        values = [values]
    try:
        array = np.asarray(list(values) if not hasattr(values, "__array__") else values)
    except (TypeError, ValueError):
        raise MovierecError(f"{what} ids are given as one id or a list of them, not {type(values).__name__}.") from None
    if array.ndim != 1:
        raise MovierecError(f"{what} ids are a flat list; got an array of shape {array.shape}.")
    if array.dtype.kind in "iu":
        return array.astype(np.int64)
    if array.dtype.kind == "f":
        whole = np.isfinite(array) & (array == np.round(array))
        if not bool(whole.all()):
            raise MovierecError(f"{what} ids are whole numbers or names; {array[~whole][0].item()!r} is neither.")
        return array.astype(np.int64)
    if array.dtype.kind in "UO":
        bad = [v for v in array.tolist() if isinstance(v, bool) or not isinstance(v, (str, int, np.integer))]
        if bad:
            raise MovierecError(f"{what} ids are whole numbers or names; {bad[0]!r} is neither.")
        return array.astype(object)
    raise MovierecError(f"{what} ids are whole numbers or names, not {array.dtype} values.")


def user_indices(served: Any, users: Any) -> np.ndarray:
    """The indices of ``users`` (MovieLens ids, or the names an imported dataset gives them) in ``served``."""
    wanted = as_id_array(users, "User")
    if wanted.dtype == object:
        return np.array([served.user_index(u) for u in wanted.tolist()], dtype=np.int64)
    return indices_of(np.asarray(served.user_ids), wanted, "User", served.meta.dataset)


def movie_indices(served: Any, movies: Any) -> np.ndarray:
    """The indices of ``movies`` (MovieLens ids or titles) in ``served``."""
    wanted = as_id_array(movies, "Movie")
    if wanted.dtype == object:
        return np.array([served.find(m) for m in wanted.tolist()], dtype=np.int64)
    return indices_of(np.asarray(served.catalogue.item_ids), wanted, "Movie", served.meta.dataset)


# -- lists ------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ListBatch:
    """The lists of one batch of users: row ``b`` is user index ``users[b]``'s list, best first, padded with -1
    (``items``) and NaN (``scores``, ``predicted``) where fewer than ``n`` movies may be listed."""

    users: np.ndarray
    """(B,) user indices."""
    items: np.ndarray
    """(B, n) movie indices."""
    scores: np.ndarray
    """(B, n) float32: what the lists are ordered by (the score `recommend` shows)."""
    predicted: np.ndarray | None
    """(B, n) float32: the model's own stars or P(liked) beside them; None for top-N models."""


def lists(
    served: Any, index: np.ndarray, n: int, *, include_seen: bool = False, allowed: np.ndarray | None = None,
    batch_users: int | None = None, progress: Callable[[int, int], None] | None = None,
) -> Iterator[ListBatch]:
    """Top-``n`` lists of user indices ``index`` (N,), a batch at a time. ``allowed`` (I,) bool: the movies that
    may be listed (None: all); movies a user rated in training are left out unless ``include_seen``.
    ``progress(done, total)`` hears of the users done after every batch."""
    from movierec.kinds import score_kind
    from movierec.recommend import rank_rows, shown_scores

    if n < 1:
        raise MovierecError(f"The number of movies per user must be at least 1, not {n}.")
    scorer, counts = served.scorer, served.counts
    n_items = int(served.catalogue.n_items)
    width = min(n, n_items)
    batch = batch_size_for(n_items, batch_users)
    predicts = score_kind(scorer.kind).predicts
    total = int(index.shape[0])
    for start in range(0, total, batch):
        chunk = index[start:start + batch]  # (B,)
        ranked_by, own_scores = scorer.listed_and_own(chunk)
        order_by = np.asarray(ranked_by, dtype=np.float32)  # (B, I): what lists rank by
        exclude = np.zeros(order_by.shape, dtype=bool)
        if not include_seen:
            exclude[served.seen_many(chunk)] = True
        if allowed is not None:
            exclude |= ~allowed[None, :]
        ranked = rank_rows(order_by, width, exclude, counts)
        items = np.full((len(chunk), width), -1, dtype=np.int64)
        for row, picked in enumerate(ranked):
            items[row, :len(picked)] = picked
        listed = items >= 0
        rows = np.nonzero(listed)[0]
        scores = np.full(items.shape, np.nan, dtype=np.float32)
        scores[listed] = order_by[rows, items[listed]]
        predicted = None
        if predicts:
            own = np.asarray(own_scores, dtype=np.float32)  # (B, I): the model's own scores
            predicted = np.full(items.shape, np.nan, dtype=np.float32)
            predicted[listed] = shown_scores(scorer, own[rows, items[listed]])
        yield ListBatch(chunk, items, scores, predicted)
        if progress is not None:
            progress(min(start + batch, total), total)


# -- predictions ------------------------------------------------------------------------------------------------
def predict(served: Any, users: np.ndarray, items: np.ndarray, *, batch_users: int | None = None) -> np.ndarray:
    """What the model says of each (user index, movie index) pair, (N,) float64: stars clipped to the scale for
    rating models, P(liked) for like models, a score that only orders movies for top-N models; the numbers
    ``Model.predict`` gives one pair at a time. Each distinct user is scored once, a batch of users at a time."""
    from movierec.kinds import score_kind

    users, items = np.asarray(users, dtype=np.int64), np.asarray(items, dtype=np.int64)
    if users.shape != items.shape:
        raise MovierecError(f"Give as many movies as users ({users.size:,} users, {items.size:,} movies).")
    scorer = served.scorer
    out = np.empty(users.shape[0], dtype=np.float64)
    distinct, where = np.unique(users, return_inverse=True)  # (D,), (N,)
    order = np.argsort(where, kind="stable")  # the pairs grouped by user
    bounds = np.searchsorted(where[order], np.arange(distinct.size + 1))  # (D+1,)
    batch = batch_size_for(int(served.catalogue.n_items), batch_users)
    kind = score_kind(scorer.kind)
    for start in range(0, distinct.size, batch):
        stop = min(start + batch, distinct.size)
        scores = np.asarray(scorer.scores_many(distinct[start:stop]), dtype=np.float64)  # (B, I)
        pairs = order[bounds[start]:bounds[stop]]
        out[pairs] = scores[where[pairs] - start, items[pairs]]
    return np.asarray(kind.on_scale(out, *scorer.rating_range), dtype=np.float64)

