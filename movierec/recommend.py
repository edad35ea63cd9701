"""Top-N lists, similar movies, new users without retraining, explanations and movie clusters.

Everything here works on movie indices and tensors; titles are attached by the CLI.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from movierec.data.ratings import RatingMatrix
from movierec.errors import MovierecError
from movierec.metrics import top_k
from movierec.models.base import Recommender


@dataclass(frozen=True)
class Recommendation:
    item: int
    score: float
    because: int | None
    """The movie the user rated highly that is most similar to this one (None if no such movie)."""


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
) -> list[Recommendation]:
    """Top-``n`` movies for a known user (index); the user's rated movies are excluded unless asked."""
    users = torch.tensor([user], device=train.device)
    scores = model.score(users, train)[0]  # (I,)
    _, items, ratings = train.entries(users)
    return _rank(model, scores, items, ratings, n, include_seen, allowed, liked_threshold)


@torch.no_grad()
def recommend_new_user(
    model: Recommender,
    items: torch.Tensor,
    ratings: torch.Tensor,
    n: int = 10,
    *,
    allowed: torch.Tensor | None = None,
    liked_threshold: float = 4.0,
) -> list[Recommendation]:
    """Top-``n`` movies for someone who was not in the training data, from their ratings alone."""
    device = model.device
    items = items.to(device, torch.int64)
    ratings = ratings.to(device, torch.float32)
    scores = model.fold_in(items, ratings)  # (I,)
    return _rank(model, scores, items, ratings, n, False, allowed, liked_threshold)


def _rank(
    model: Recommender, scores: torch.Tensor, rated: torch.Tensor, ratings: torch.Tensor, n: int,
    include_seen: bool, allowed: torch.Tensor | None, liked_threshold: float,
) -> list[Recommendation]:
    n = min(n, scores.shape[0])  # a list longer than the catalogue holds nothing more, only padding
    exclude = torch.zeros(scores.shape[0], dtype=torch.bool, device=scores.device)
    if not include_seen:
        exclude[rated] = True
    if allowed is not None:
        exclude |= ~allowed.to(scores.device)
    idx = top_k(scores[None, :], n, exclude[None, :])[0]  # (n,), -1 where fewer than n are allowed
    picked = idx[idx >= 0]
    picked_scores = scores[picked]
    because = explain(model, picked, rated, ratings, liked_threshold)
    return [Recommendation(int(i), float(s), b) for i, s, b in zip(picked.tolist(), picked_scores.tolist(), because)]


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
    model: Recommender, item: int, n: int = 10, *, allowed: torch.Tensor | None = None
) -> tuple[list[int], list[float]]:
    """The ``n`` movies whose item vectors are closest (cosine) to movie ``item``, among ``allowed`` (I,) bool."""
    vectors = model.item_vectors()
    n = min(n, vectors.shape[0])  # a list longer than the catalogue holds nothing more, only padding
    all_items = torch.arange(vectors.shape[0], device=vectors.device)
    sims = cosine_matrix(vectors, torch.tensor([item], device=vectors.device), all_items)  # (1, I)
    exclude = torch.zeros_like(sims, dtype=torch.bool)
    if allowed is not None:
        exclude[0] = ~allowed.to(exclude.device)
    exclude[0, item] = True
    idx = top_k(sims, n, exclude)[0]
    idx = idx[idx >= 0]
    return idx.tolist(), sims[0, idx].tolist()


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
