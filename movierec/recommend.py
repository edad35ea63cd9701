"""Top-N lists, similar movies, new users without retraining, explanations and movie clusters.

Everything here works on movie indices; titles are attached by the CLI. The lists are computed once, in
numpy, from a :class:`Scorer`: :class:`movierec.scorers.FactorScorer` answers for the factor models and
:class:`movierec.scorers.NumpyScorer` for the others from their saved arrays without torch, :class:`TorchScorer`
for any torch model (:func:`torch_scorer`).

How a list is ordered (every user-facing list here: recommendations, new users, similar movies):

1. by the model's raw score (``score`` / ``fold_in`` are unclipped by contract), so two movies a rating
   model predicts above the top of the scale are still ordered by how much it likes them;
2. equal scores: the movie with more training ratings first (the better-known movie);
3. still equal: the lower movie index first (deterministic).

The number shown beside a movie is what the model means by it: for rating models the predicted stars
clipped to the rating scale (so a list can show two 5.0s in a definite order), for like models P(liked),
for top-N models the raw score. Movies a user already rated are left out unless asked for.

New users (:func:`for_new_user`): step 1 uses the scores shrunk towards a neutral value by how few
training ratings each movie has (:func:`shrink_rare`), because from a handful of ratings every model
otherwise fills the top 10 with movies almost nobody rated; the numbers shown are still the model's own.

Importing this module does not import torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from movierec.errors import MovierecError
from movierec.kinds import ScoreKind, score_kind

if TYPE_CHECKING:
    import torch

    from movierec.data.ratings import RatingMatrix
    from movierec.models.base import Recommender


@dataclass(frozen=True)
class Recommendation:
    item: int
    score: float
    """What the list is ordered by (see the module docstring): P(picked and liked), or a top-N score."""
    because: int | None
    """The movie the user rated at least 4 stars that is most similar to this one, never this one itself (None if
    the user rated no other movie that high)."""
    predicted: float | None = None
    """The model's own prediction for it: stars clipped to the scale, or P(liked); None for top-N models."""


class Scorer(Protocol):
    """What the lists need from a model, in numpy."""

    kind: str
    """``"rating"`` (stars), ``"like"`` (P(liked)) or ``"rank"`` (scores that only order movies)."""
    rating_range: tuple[float, float]
    """The lowest and highest stars: a rating model's predictions are shown clipped to them."""

    def scores(self, user: int) -> np.ndarray:
        """Raw scores of every movie for known user ``user``: (I,) float32."""

    def scores_many(self, users: np.ndarray) -> np.ndarray:
        """Raw scores of every movie for known users ``users`` (B,): (B, I) float32, row b as ``scores(users[b])``."""

    def fold_in(self, items: np.ndarray, ratings: np.ndarray) -> np.ndarray:
        """Raw scores of every movie for a new user from their ratings (n,), (n,): (I,) float32."""

    def item_vectors(self) -> np.ndarray:
        """One vector per movie for cosine similarity: (I, d)."""

    ranks_by_picks: bool
    """Whether lists rank by P(picked and liked) through a picks model (:mod:`movierec.models.picks`)."""
    new_user_shrink: float
    """The model's default shrinkage of new users' lists, in multiples of the mean ratings per movie."""

    def listed_and_own(self, users: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """What the lists of known users ``users`` (B,) are ordered by (and show), and the model's own scores
        (:meth:`scores_many`): (B, I) float32 each, the same array where lists rank by the model's own scores."""

    def folded_and_own(self, items: np.ndarray, ratings: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """What a new user's list is ordered by (and shows), from their ratings (n,), (n,), and the model's own
        :meth:`fold_in`: (I,) float32 each, the same array where lists rank by the model's own scores."""


class OwnLists:
    """For a :class:`Scorer` whose lists rank by its own scores (top-N models, and rating models saved without
    a picks model)."""

    ranks_by_picks = False

    def listed_and_own(self, users: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        own = self.scores_many(users)
        return own, own

    def folded_and_own(self, items: np.ndarray, ratings: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        own = self.fold_in(items, ratings)
        return own, own


class ListScorer:
    """A rating or like model's :class:`Scorer` with its picks model's: lists rank by P(picked and liked)
    (:func:`movierec.models.picks.pick_and_like`); everything else is the model's own."""

    ranks_by_picks = True

    def __init__(self, own: Scorer, picks: Scorer, midpoint: float):
        self.own, self.picks, self.midpoint = own, picks, float(midpoint)
        self.kind = own.kind
        self.new_user_shrink = own.new_user_shrink
        self.rating_range = own.rating_range

    def scores(self, user: int) -> np.ndarray:
        return self.own.scores(user)

    def scores_many(self, users: np.ndarray) -> np.ndarray:
        return self.own.scores_many(users)

    def fold_in(self, items: np.ndarray, ratings: np.ndarray) -> np.ndarray:
        return self.own.fold_in(items, ratings)

    def item_vectors(self) -> np.ndarray:
        return self.own.item_vectors()

    def listed_and_own(self, users: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """P(picked and liked) and the model's own scores, (B, I) each; the own scores computed once."""
        from movierec.models.picks import pick_and_like

        own = self.own.scores_many(users)
        return pick_and_like(self.picks.scores_many(users), own, self.kind, self.midpoint), own

    def folded_and_own(self, items: np.ndarray, ratings: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """P(picked and liked) and the model's own fold-in, (I,) each; the own fold-in computed once."""
        from movierec.models.picks import pick_and_like

        own = self.own.fold_in(items, ratings)
        return pick_and_like(self.picks.fold_in(items, ratings), own, self.kind, self.midpoint), own


# -- the rules, in numpy ---------------------------------------------------------------------------------
def rank_items(scores: Any, n: int, exclude: Any, counts: Any) -> np.ndarray:
    """The ``n`` best movies by the rule in the module docstring: (I,) scores -> (<= n,) indices.

    ``exclude`` (I,) bool marks movies that may not be listed; ``counts`` (I,) are training ratings per movie.
    """
    return rank_rows(_np(scores)[None, :], n, _np(exclude)[None, :], counts)[0]


def rank_rows(scores: np.ndarray, n: int, exclude: np.ndarray, counts: Any) -> list[np.ndarray]:
    """:func:`rank_items` of every row of ``scores`` (B, I) with its row of ``exclude`` (B, I) bool: B arrays of
    at most ``n`` indices. Each row's sort is limited to the movies scoring at least its ``n``-th best allowed
    score (a partition, linear in I), which holds its whole list, ties included: at 59,000 movies a list takes
    about a millisecond instead of the ten that sorting every movie would."""
    scores, exclude, counts = np.asarray(scores), np.asarray(exclude, dtype=bool), _np(counts).astype(np.int64)
    if bool(np.isnan(scores).any()):
        raise MovierecError("The model predicts NaN scores, so it cannot rank movies; it probably diverged.")
    n_items = scores.shape[1]
    if 0 < n < n_items:
        masked = np.where(exclude, -np.inf, scores)  # (B, I)
        nth = np.partition(masked, n_items - n, axis=1)[:, n_items - n:n_items - n + 1]  # (B, 1) n-th best allowed
        exclude = exclude | (masked < nth)
    lists = []
    for row, out in zip(scores, exclude):
        idx = np.flatnonzero(~out)  # (E,) ascending: rule 3
        idx = idx[np.argsort(-counts[idx], kind="stable")]  # rule 2
        idx = idx[np.argsort(-row[idx], kind="stable")]  # rule 1
        lists.append(idx[:n])
    return lists


def shown_scores(scorer: Scorer, scores: np.ndarray) -> np.ndarray:
    """The numbers shown beside listed movies: a rating model's stars clipped to its scale, else as they are."""
    return score_kind(scorer.kind).on_scale(scores, *scorer.rating_range)


def shrink_rare(scores: Any, counts: Any, strength: float, prior: float) -> np.ndarray:
    """Pull each movie's score towards ``prior`` by how little it is known: ``prior + (s - prior) * n / (n + K)``.

    ``n`` = ``counts`` (I,) training ratings of the movie, ``K`` = ``strength``. A movie almost nobody rated
    keeps almost nothing of what a model guessed for it from a handful of ratings; a well-known one keeps
    nearly all. ``strength`` 0 changes nothing.
    """
    scores = _np(scores)
    if strength <= 0:
        return scores
    n = _np(counts).astype(scores.dtype)
    return prior + (scores - prior) * n / (n + scores.dtype.type(strength))


def neutral_value(kind: str, like_threshold: float | None, stars: np.ndarray) -> float:
    """The score that says nothing, from the training ``stars``: their mean (stars), the liked share
    (P(liked)), else 0."""
    if stars.size == 0:
        return 0.0
    if kind == ScoreKind.RATING:
        return float(stars.astype(np.float64).mean())
    if kind == ScoreKind.LIKE and like_threshold is not None:
        return float((stars >= like_threshold).astype(np.float64).mean())
    return 0.0


UNIT_BLOCK = 2048
"""Rows per block of :func:`unit_rows`."""


def unit_rows(vectors: np.ndarray) -> np.ndarray:
    """Each row scaled to length 1 (rows of zeros stay zero), as ``torch.nn.functional.normalize``."""
    vectors = np.asarray(vectors, dtype=np.float32)
    unit = np.empty_like(vectors)
    # A block of rows at a time: the same numbers as the whole at once, without its temporaries as large as
    # ``vectors`` (at ML-25M a model's movie vectors can be 150 MB).
    for start in range(0, vectors.shape[0], UNIT_BLOCK):
        block = vectors[start:start + UNIT_BLOCK]
        norms = np.linalg.norm(block, axis=1, keepdims=True)
        np.divide(block, np.maximum(norms, np.float32(1e-12)), out=unit[start:start + UNIT_BLOCK])
    return unit


def explain(
    vectors: np.ndarray, recommended: np.ndarray, rated: np.ndarray, ratings: np.ndarray,
    liked_threshold: float = 4.0,
) -> list[int | None]:
    """For each recommended movie, the movie the user rated at least ``liked_threshold`` stars that is most similar
    to it (cosine of ``vectors``), never the recommended movie itself; None where there is no such movie (a user
    who rated nothing that high is told no reason rather than a false one)."""
    recommended = np.asarray(recommended, dtype=np.int64)
    liked = np.asarray(rated, dtype=np.int64)[np.asarray(ratings) >= liked_threshold]  # (L,)
    if liked.size == 0 or recommended.size == 0:
        return [None] * int(recommended.size)
    sims = unit_rows(vectors[recommended]) @ unit_rows(vectors[liked]).T  # (n, L)
    sims[recommended[:, None] == liked[None, :]] = -np.inf  # a movie does not explain itself (--include-seen)
    best = sims.argmax(axis=1)  # (n,)
    found = np.isfinite(sims[np.arange(recommended.size), best])
    return [int(liked[b]) if ok else None for b, ok in zip(best.tolist(), found.tolist())]


def top_n(  # noqa: PLR0913 -- the one list builder: what is ranked, for whom, and the four list options
    scorer: Scorer, order_by: np.ndarray, predicted: np.ndarray | None, rated: np.ndarray, ratings: np.ndarray,
    n: int, *, include_seen: bool, allowed: np.ndarray | None, liked_threshold: float, counts: np.ndarray,
) -> list[Recommendation]:
    """The list ordered by, and showing, ``order_by`` (I,), with the model's own ``predicted`` (I,) raw scores
    beside it (None: none to show), explained by ``rated``."""
    rated = np.asarray(rated, dtype=np.int64)
    ratings = np.asarray(ratings, dtype=np.float32)
    n = min(n, order_by.shape[0])  # a list longer than the catalogue holds nothing more, only padding
    exclude = np.zeros(order_by.shape[0], dtype=bool)
    if not include_seen:
        exclude[rated] = True
    if allowed is not None:
        exclude |= ~np.asarray(allowed, dtype=bool)
    picked = rank_items(order_by, n, exclude, counts)  # (<= n,)
    own = [None] * len(picked) if predicted is None else shown_scores(scorer, predicted[picked]).tolist()
    because = explain(scorer.item_vectors(), picked, rated, ratings, liked_threshold)
    return [Recommendation(int(i), float(order_by[i]), b, None if p is None else float(p))
            for i, b, p in zip(picked.tolist(), because, own)]


def _predictions(scorer: Scorer, own: np.ndarray) -> np.ndarray | None:
    """The model's own predictions to show beside a list: stars or P(liked); none for top-N models."""
    return own if score_kind(scorer.kind).predicts else None


def for_user(
    scorer: Scorer, user: int, rated: np.ndarray, ratings: np.ndarray, n: int = 10, *, counts: np.ndarray,
    include_seen: bool = False, allowed: np.ndarray | None = None, liked_threshold: float = 4.0,
) -> list[Recommendation]:
    """Top-``n`` movies for known user ``user``, who rated ``rated`` with ``ratings`` in training."""
    users = np.array([user])
    listed, own_many = scorer.listed_and_own(users)
    order_by, own = listed[0], own_many[0]
    return top_n(scorer, order_by, _predictions(scorer, own), rated, ratings, n, include_seen=include_seen,
                 allowed=allowed, liked_threshold=liked_threshold, counts=counts)


def for_new_user(
    scorer: Scorer, items: np.ndarray, ratings: np.ndarray, n: int = 10, *, counts: np.ndarray, neutral: float,
    shrink: float | None = None, allowed: np.ndarray | None = None, liked_threshold: float = 4.0,
) -> list[Recommendation]:
    """Top-``n`` movies for someone who was not in the training data, from their ratings alone.

    A handful of ratings says little, and models then rate obscure movies as high as anything: the scores
    are shrunk towards ``neutral`` (0 for P(picked and liked)) by each movie's number of training ratings
    ``counts`` (:func:`shrink_rare`) with strength ``shrink`` (None: the model's ``new_user_shrink`` x the mean
    of ``counts``; 0: off) before ranking. The number shown is the one ranked by; the model's own prediction
    is beside it.
    """
    if shrink is None:
        shrink = scorer.new_user_shrink * float(np.asarray(counts, dtype=np.float64).mean())
    if shrink < 0:
        raise MovierecError(f"--shrink must be 0 or more, not {shrink:g}.")
    items = np.asarray(items, dtype=np.int64)
    ratings = np.asarray(ratings, dtype=np.float32)
    listed, own = scorer.folded_and_own(items, ratings)  # (I,) each
    # P(picked and liked) says "nothing" at 0; a model's own scores at the neutral value.
    order_by = shrink_rare(listed, counts, shrink, 0.0 if scorer.ranks_by_picks else neutral)  # (I,)
    return top_n(scorer, order_by, _predictions(scorer, own), items, ratings, n, include_seen=False,
                 allowed=allowed, liked_threshold=liked_threshold, counts=counts)


def similar_to(
    scorer: Scorer, item: int, n: int = 10, *, counts: np.ndarray, allowed: np.ndarray | None = None,
    unit: np.ndarray | None = None,
) -> tuple[list[int], list[float]]:
    """The ``n`` movies whose item vectors are closest (cosine) to movie ``item``, among ``allowed`` (I,) bool.

    Equal similarities: more training ratings (``counts`` (I,)) first, then the lower index. ``unit``: the
    scorer's :func:`unit_rows` of its item vectors, when the caller keeps them between calls.
    """
    unit = unit_rows(scorer.item_vectors()) if unit is None else unit  # (I, d)
    n = min(n, unit.shape[0])  # a list longer than the catalogue holds nothing more, only padding
    sims = unit @ unit[item]  # (I,)
    exclude = np.zeros(sims.shape[0], dtype=bool) if allowed is None else ~np.asarray(allowed, dtype=bool)
    exclude[item] = True
    idx = rank_items(sims, n, exclude, counts)
    return idx.tolist(), sims[idx].tolist()


def _np(x: Any) -> np.ndarray:
    """A numpy view of an array or a (CPU or device) tensor."""
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x)


# -- torch models ------------------------------------------------------------------------------------------
class TorchScorer(OwnLists):
    """A torch model and its training matrix, as a :class:`Scorer` (lists by its own scores)."""

    def __init__(self, model: Recommender, train: RatingMatrix):
        self.model, self.train = model, train
        self.kind = model.kind
        self.new_user_shrink = model.new_user_shrink
        self.rating_range = (model.rating_min, model.rating_max)
        self._vectors: np.ndarray | None = None

    def scores(self, user: int) -> np.ndarray:
        return self.scores_many(np.array([user]))[0]

    def scores_many(self, users: np.ndarray) -> np.ndarray:
        import torch

        with torch.no_grad():
            users = torch.as_tensor(np.asarray(users, dtype=np.int64), device=self.train.device)
            return _np(self.model.score(users, self.train).float())

    def fold_in(self, items: np.ndarray, ratings: np.ndarray) -> np.ndarray:
        import torch

        with torch.no_grad():
            device = self.model.device
            return _np(self.model.fold_in(torch.as_tensor(items, dtype=torch.int64, device=device),
                                          torch.as_tensor(ratings, dtype=torch.float32, device=device)).float())

    def item_vectors(self) -> np.ndarray:
        if self._vectors is None:
            import torch

            with torch.no_grad():
                self._vectors = _np(self.model.item_vectors().float())
        return self._vectors


def item_counts(train: RatingMatrix) -> torch.Tensor:
    """How many training ratings each movie has: (n_items,) int64."""
    import torch

    return torch.bincount(train.indices.to(torch.int64), minlength=train.n_cols)


def neutral_score(model: Recommender, train: RatingMatrix) -> float:
    """:func:`neutral_value` of a model and its training matrix."""
    return neutral_value(model.kind, model.like_threshold, _np(train.values))


def torch_scorer(model: Recommender, train: RatingMatrix, picks: Recommender | None = None) -> Scorer:
    """A torch model (with the picks model its lists rank through, if any) as a :class:`Scorer`."""
    own = TorchScorer(model, train)
    if picks is None:
        return own
    from movierec.models.picks import like_midpoint

    return ListScorer(own, TorchScorer(picks, train), like_midpoint(model.rating_values))


# -- clusters (torch) ----------------------------------------------------------------------------------------
def kmeans(
    x: torch.Tensor, k: int, *, seed: int = 0, iters: int = 100, tol: float = 1e-6
) -> tuple[torch.Tensor, torch.Tensor]:
    """k-means (Lloyd's, k-means++ start) on the rows of ``x`` (N, d) -> labels (N,), centroids (k, d)."""
    import torch

    n = x.shape[0]
    if not 1 <= k <= n:
        raise MovierecError(f"The number of clusters must be between 1 and the number of movies ({n}).")
    gen = torch.Generator(device="cpu").manual_seed(seed)
    x = x.float()
    centroids = x[torch.randint(n, (1,), generator=gen).to(x.device)]  # (1, d)
    for _ in range(1, k):  # k-means++: spread the starting centres out
        d2 = torch.cdist(x, centroids).min(dim=1).values.pow(2)  # (N,)
        probs = (d2 / d2.sum()).cpu() if d2.sum() > 0 else torch.full((n,), 1.0 / n)
        nxt = torch.multinomial(probs, 1, generator=gen).to(x.device)
        centroids = torch.cat([centroids, x[nxt]])
    labels = torch.zeros(n, dtype=torch.int64, device=x.device)
    for _ in range(iters):
        labels = torch.cdist(x, centroids).argmin(dim=1)  # (N,)
        sums = torch.zeros_like(centroids).index_add_(0, labels, x)
        counts = torch.bincount(labels, minlength=k).clamp(min=1).unsqueeze(1).to(x.dtype)
        new = torch.where(counts > 0, sums / counts, centroids)
        empty = torch.bincount(labels, minlength=k) == 0
        new[empty] = centroids[empty]  # an empty cluster keeps its centre
        shift = (new - centroids).pow(2).sum()
        centroids = new
        if shift <= tol:
            break
    return labels, centroids
