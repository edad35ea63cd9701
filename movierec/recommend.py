"""Top-N lists, similar movies, new users without retraining, explanations and movie clusters.

Everything here works on movie indices and tensors; titles are attached by the CLI.

How a list is ordered (every user-facing list here: recommendations, new users, similar movies):

1. by the model's raw score (``score`` / ``fold_in`` are unclipped by contract), so two movies a rating
   model predicts above the top of the scale are still ordered by how much it likes them;
2. equal scores: the movie with more training ratings first (the better-known movie);
3. still equal: the lower movie index first (deterministic).

The number shown beside a movie is what the model means by it: for rating models the predicted stars
clipped to the rating scale (so a list can show two 5.0s in a definite order), for like models P(liked),
for top-N models the raw score. Movies a user already rated are left out unless asked for.

New users (:func:`recommend_new_user`): step 1 uses the scores shrunk towards a neutral value by how few
training ratings each movie has (:func:`shrink_rare`), because from a handful of ratings every model
otherwise fills the top 10 with movies almost nobody rated; the numbers shown are still the model's own.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from movierec.data.ratings import RatingMatrix
from movierec.errors import MovierecError
from movierec.models.base import Recommender


@dataclass(frozen=True)
class Recommendation:
    item: int
    score: float
    """What the model predicts, as shown: stars clipped to the scale, P(liked), or a top-N score."""
    because: int | None
    """The movie the user rated highly that is most similar to this one (None if no such movie)."""


def item_counts(train: RatingMatrix) -> torch.Tensor:
    """How many training ratings each movie has: (n_items,) int64."""
    return torch.bincount(train.indices.to(torch.int64), minlength=train.n_cols)


def rank_items(scores: torch.Tensor, n: int, exclude: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
    """The ``n`` best movies by the rule in the module docstring: (I,) scores -> (<= n,) indices.

    ``exclude`` (I,) bool marks movies that may not be listed; ``counts`` (I,) are training ratings per movie.
    """
    if bool(torch.isnan(scores).any()):
        raise MovierecError("The model predicts NaN scores, so it cannot rank movies; it probably diverged.")
    idx = torch.nonzero(~exclude).flatten()  # (E,) ascending: rule 3
    idx = idx[torch.sort(counts[idx].to(scores.device), descending=True, stable=True).indices]  # rule 2
    idx = idx[torch.sort(scores[idx], descending=True, stable=True).indices]  # rule 1
    return idx[:n]


@torch.no_grad()
def recommend(
    model: Recommender,
    train: RatingMatrix,
    user: int,
    n: int = 10,
    *,
    include_seen: bool = False,
    allowed: torch.Tensor | None = None,
    liked_threshold: float = 4.0,
    counts: torch.Tensor | None = None,
) -> list[Recommendation]:
    """Top-``n`` movies for a known user (index); the user's rated movies are excluded unless asked.

    ``counts`` are the training ratings per movie (:func:`item_counts` of ``train`` when not given).
    """
    users = torch.tensor([user], device=train.device)
    scores = model.score(users, train)[0]  # (I,) raw
    _, items, ratings = train.entries(users)
    counts = item_counts(train) if counts is None else counts
    return _rank(model, scores, items, ratings, n, include_seen, allowed, liked_threshold, counts)


DEFAULT_SHRINK = 8.0
"""New users' lists: the shrinkage strength K is this many times the mean number of training ratings per
movie. Measured by benchmarks/new_users.py (ml-100k, users folded in from 5 ratings): shrinking beat every
minimum-ratings filter for every model, improving with K up to 8x (e.g. mf NDCG@10 0.229 -> 0.363,
autoencoder 0.001 -> 0.327); 16x added at most 0.02 while the lists drift towards the most popular movies."""


def shrink_rare(scores: torch.Tensor, counts: torch.Tensor, strength: float, prior: float) -> torch.Tensor:
    """Pull each movie's score towards ``prior`` by how little it is known: ``prior + (s - prior) * n / (n + K)``.

    ``n`` = ``counts`` (I,) training ratings of the movie, ``K`` = ``strength``. A movie almost nobody rated
    keeps almost nothing of what a model guessed for it from a handful of ratings; a well-known one keeps
    nearly all. ``strength`` 0 changes nothing.
    """
    if strength <= 0:
        return scores
    n = counts.to(scores.device, scores.dtype)
    return prior + (scores - prior) * n / (n + strength)


def neutral_score(model: Recommender, train: RatingMatrix) -> float:
    """The score that says nothing: the mean training rating (stars), the liked share (P(liked)), else 0."""
    if train.nnz == 0:
        return 0.0
    if model.kind == "rating":
        return float(train.values.double().mean())
    if model.kind == "like" and model.like_threshold is not None:
        return float((train.values >= model.like_threshold).double().mean())
    return 0.0


@torch.no_grad()
def recommend_new_user(
    model: Recommender,
    train: RatingMatrix,
    items: torch.Tensor,
    ratings: torch.Tensor,
    n: int = 10,
    *,
    allowed: torch.Tensor | None = None,
    liked_threshold: float = 4.0,
    shrink: float | None = None,
) -> list[Recommendation]:
    """Top-``n`` movies for someone who was not in the training data, from their ratings alone.

    A handful of ratings says little, and models then rate obscure movies as high as anything: the scores
    are shrunk towards a neutral value by each movie's number of ``train`` ratings (:func:`shrink_rare`)
    with strength ``shrink`` (None: :data:`DEFAULT_SHRINK` x the mean ratings per movie; 0: off) before
    ranking. The numbers shown stay the model's own predictions (clipped for rating models), so a
    well-known 4.6 can come before an obscure 4.9.
    """
    device = model.device
    items = items.to(device, torch.int64)
    ratings = ratings.to(device, torch.float32)
    counts = item_counts(train)
    if shrink is None:
        shrink = DEFAULT_SHRINK * float(counts.double().mean())
    if shrink < 0:
        raise MovierecError(f"--shrink must be 0 or more, not {shrink:g}.")
    raw = model.fold_in(items, ratings)  # (I,)
    order_by = shrink_rare(raw, counts, shrink, neutral_score(model, train))  # (I,)
    return _rank(model, raw, items, ratings, n, False, allowed, liked_threshold, counts, order_by)


def _rank(
    model: Recommender, scores: torch.Tensor, rated: torch.Tensor, ratings: torch.Tensor, n: int,
    include_seen: bool, allowed: torch.Tensor | None, liked_threshold: float, counts: torch.Tensor,
    order_by: torch.Tensor | None = None,
) -> list[Recommendation]:
    """The list ordered by ``order_by`` (default: ``scores``), showing ``scores``."""
    n = min(n, scores.shape[0])  # a list longer than the catalogue holds nothing more, only padding
    exclude = torch.zeros(scores.shape[0], dtype=torch.bool, device=scores.device)
    if not include_seen:
        exclude[rated] = True
    if allowed is not None:
        exclude |= ~allowed.to(scores.device)
    picked = rank_items(scores if order_by is None else order_by, n, exclude, counts)  # (<= n,)
    shown = model.clip(scores[picked]) if model.kind == "rating" else scores[picked]
    because = explain(model, picked, rated, ratings, liked_threshold)
    return [Recommendation(int(i), float(s), b) for i, s, b in zip(picked.tolist(), shown.tolist(), because)]


def cosine_matrix(vectors: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Cosine similarity of movies ``a`` (n,) against movies ``b`` (m,) -> (n, m)."""
    unit = torch.nn.functional.normalize(vectors.float(), dim=1)  # (I, d)
    return unit[a] @ unit[b].T


def explain(
    model: Recommender, recommended: torch.Tensor, rated: torch.Tensor, ratings: torch.Tensor,
    liked_threshold: float = 4.0,
) -> list[int | None]:
    """For each recommended movie, the highly rated movie of the user most similar to it."""
    if rated.numel() == 0 or recommended.numel() == 0:
        return [None] * int(recommended.numel())
    liked = rated[ratings >= liked_threshold]
    if liked.numel() == 0:  # nobody-likes-anything users: fall back to their best-rated movies
        liked = rated[ratings >= ratings.max()]
    sims = cosine_matrix(model.item_vectors(), recommended, liked)  # (n, L)
    return liked[sims.argmax(dim=1)].tolist()


@torch.no_grad()
def similar(
    model: Recommender, item: int, n: int = 10, *, counts: torch.Tensor, allowed: torch.Tensor | None = None
) -> tuple[list[int], list[float]]:
    """The ``n`` movies whose item vectors are closest (cosine) to movie ``item``, among ``allowed`` (I,) bool.

    Equal similarities: more training ratings (``counts`` (I,)) first, then the lower index.
    """
    vectors = model.item_vectors()
    n = min(n, vectors.shape[0])  # a list longer than the catalogue holds nothing more, only padding
    all_items = torch.arange(vectors.shape[0], device=vectors.device)
    sims = cosine_matrix(vectors, torch.tensor([item], device=vectors.device), all_items)[0]  # (I,)
    exclude = torch.zeros_like(sims, dtype=torch.bool)
    if allowed is not None:
        exclude = ~allowed.to(exclude.device)
    exclude[item] = True
    idx = rank_items(sims, n, exclude, counts)
    return idx.tolist(), sims[idx].tolist()


@torch.no_grad()
def kmeans(
    x: torch.Tensor, k: int, *, seed: int = 0, iters: int = 100, tol: float = 1e-6
) -> tuple[torch.Tensor, torch.Tensor]:
    """k-means (Lloyd's, k-means++ start) on the rows of ``x`` (N, d) -> labels (N,), centroids (k, d)."""
    n = x.shape[0]
    if not 1 <= k <= n:
        raise MovierecError(f"--k must be between 1 and the number of movies ({n}).")
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


@torch.no_grad()
def cluster_movies(model: Recommender, k: int, *, seed: int = 0) -> torch.Tensor:
    """Group movies by their item vectors: k-means on unit-length vectors (cosine geometry) -> labels (I,)."""
    unit = torch.nn.functional.normalize(model.item_vectors().float(), dim=1)
    labels, _ = kmeans(unit, k, seed=seed)
    return labels
