"""Peer recommenders (Surprise, implicit) behind movierec's evaluation duck type.

:func:`movierec.evaluate.evaluate` reads a model only through ``kind``, ``like_threshold``, ``device``,
``score(users, train) -> (B, n_items)`` and ``predict`` (see :class:`movierec.evaluate.Scorer`), so each
peer's fitted model is wrapped in a small adapter that computes those scores from the peer's *learned
parameters*, vectorised in numpy, for every movie. That keeps one protocol for every row of the
comparison: the same test pairs, the same candidate movies, the same tie-breaking.

Surprise works on its own "inner" ids; the adapters translate movierec's contiguous indices to them and
apply Surprise's rules for what it has not seen (an unknown user or movie contributes no bias and no
factors) and ``predict``'s clipping to the rating scale. Because the scores are reimplementations,
:func:`check_against_surprise` compares them with Surprise's own ``algo.predict`` on every test pair;
``compare.py`` reports that difference and refuses a peer's numbers when it is not negligible.

Surprise and implicit are imported only inside the functions that need them, so importing this module
needs neither.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from movierec.data.ratings import RatingMatrix, Ratings

SURPRISE_MODELS: dict[str, str] = {
    # name in compare.py: what is fitted (the peers' own defaults apart from seeds and silence)
    "svd": "Surprise SVD (defaults: 100 factors, 20 epochs, lr 0.005, reg 0.02)",
    "svdpp": "Surprise SVD++ (defaults: 20 factors, 20 epochs, lr 0.007, reg 0.02; cache_ratings=True)",
    "knnbaseline": "Surprise KNNBaseline, item-based pearson_baseline (defaults: k=40, min_k=1, ALS baselines)",
    "baselineonly": "Surprise BaselineOnly (defaults: ALS baselines, 10 epochs)",
}
IMPLICIT_FACTORS = 64


# -- the evaluation duck type --------------------------------------------------------------------
class PeerScorer:
    """The :class:`movierec.evaluate.Scorer` duck type over scores computed in numpy, on the CPU.

    Subclasses implement :meth:`score_rows`: every movie's score for a batch of movierec user indices.
    """

    kind: str = "rating"
    like_threshold: float | None = None
    discriminates: bool = True

    def __init__(self, n_users: int, n_items: int):
        self.n_users = int(n_users)
        self.n_items = int(n_items)

    @property
    def device(self) -> torch.device:
        return torch.device("cpu")

    def score_rows(self, users: np.ndarray) -> np.ndarray:
        """(B,) movierec user indices -> (B, n_items) float64 scores."""
        raise NotImplementedError

    def score(self, users: torch.Tensor, train: RatingMatrix) -> torch.Tensor:
        """(B,) -> (B, n_items) float32; ``train`` is unused: the peer learned everything it reads."""
        rows = self.score_rows(users.detach().cpu().numpy().astype(np.int64))
        return torch.from_numpy(np.ascontiguousarray(rows, dtype=np.float32))

    def predict(
        self, users: torch.Tensor, items: torch.Tensor, train: RatingMatrix, batch_users: int = 512
    ) -> torch.Tensor:
        """Scores of (user, movie) pairs, (N,), (N,) -> (N,): each distinct user's row scored once."""
        u = users.detach().cpu().numpy().astype(np.int64)
        i = items.detach().cpu().numpy().astype(np.int64)
        out = np.empty(u.shape[0], dtype=np.float64)
        uniq, inverse = np.unique(u, return_inverse=True)
        for start in range(0, uniq.shape[0], batch_users):
            stop = min(start + batch_users, uniq.shape[0])
            rows = self.score_rows(uniq[start:stop])  # (b, I)
            sel = (inverse >= start) & (inverse < stop)
            out[sel] = rows[inverse[sel] - start, i[sel]]
        return torch.from_numpy(out.astype(np.float32))


# -- Surprise ----------------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class SurpriseData:
    """A Surprise trainset of movierec training ratings, and the maps between the two id spaces.

    Raw Surprise ids are the movierec indices themselves (as Python ints).
    """

    trainset: Any  # surprise.Trainset
    inner_user: np.ndarray  # (n_users,) int64: Surprise inner id of each movierec user, -1 when unseen
    inner_item: np.ndarray  # (n_items,) int64: Surprise inner id of each movierec movie, -1 when unseen
    n_users: int
    n_items: int


def surprise_data(train: Ratings, rating_scale: tuple[float, float]) -> SurpriseData:
    """Build the Surprise trainset of ``train`` (ratings in file order, as Surprise reads a file)."""
    import pandas as pd
    import surprise

    frame = pd.DataFrame({
        "user": train.users.astype(np.int64), "item": train.items.astype(np.int64),
        "rating": train.ratings.astype(np.float64),
    })
    reader = surprise.Reader(rating_scale=(float(rating_scale[0]), float(rating_scale[1])))
    trainset = surprise.Dataset.load_from_df(frame, reader).build_full_trainset()
    inner_user = np.full(train.n_users, -1, dtype=np.int64)
    inner_item = np.full(train.n_items, -1, dtype=np.int64)
    for inner in trainset.all_users():
        inner_user[int(trainset.to_raw_uid(inner))] = inner
    for inner in trainset.all_items():
        inner_item[int(trainset.to_raw_iid(inner))] = inner
    return SurpriseData(trainset, inner_user, inner_item, train.n_users, train.n_items)


def make_surprise_algo(name: str, seed: int, **params: Any) -> Any:
    """A fresh Surprise algorithm with its default hyperparameters (seeded where it draws numbers, silent);
    ``params`` override them for SVD (e.g. ``n_factors``, ``n_epochs`` to match another model's size)."""
    import surprise

    if name == "svd":
        return surprise.SVD(random_state=seed, **params)
    if name == "svdpp":
        # cache_ratings only keeps each user's item list in a C array during fit (same arithmetic, faster).
        return surprise.SVDpp(random_state=seed, cache_ratings=True)
    if name == "knnbaseline":
        return surprise.KNNBaseline(sim_options={"name": "pearson_baseline", "user_based": False}, verbose=False)
    if name == "baselineonly":
        return surprise.BaselineOnly(verbose=False)
    raise ValueError(f"unknown Surprise model {name!r}; choose one of {', '.join(SURPRISE_MODELS)}")


def _spread(values: np.ndarray, inner: np.ndarray) -> np.ndarray:
    """Per-inner-id values (n_inner, ...) -> per-movierec-index values, zeros where the id is unseen."""
    out = np.zeros((inner.shape[0],) + values.shape[1:], dtype=np.float64)
    known = inner >= 0
    out[known] = values[inner[known]]
    return out


class BiasedFactorScorer(PeerScorer):
    """``clip(mu + b_u + b_i + p_u . q_i)`` for every movie: Surprise's SVD, SVD++ (with ``p_u`` holding the
    implicit-feedback sum) and BaselineOnly (no factors). Unseen users/movies get zero bias and factors,
    which is exactly Surprise's "add only what is known" rule."""

    def __init__(
        self, data: SurpriseData, user_bias: np.ndarray, item_bias: np.ndarray,
        user_vec: np.ndarray | None = None, item_vec: np.ndarray | None = None,
    ):
        super().__init__(data.n_users, data.n_items)
        self.mu = float(data.trainset.global_mean)
        self.low, self.high = (float(x) for x in data.trainset.rating_scale)
        self.bu = _spread(np.asarray(user_bias, dtype=np.float64), data.inner_user)  # (U,)
        self.bi = _spread(np.asarray(item_bias, dtype=np.float64), data.inner_item)  # (I,)
        self.pu = None if user_vec is None else _spread(np.asarray(user_vec, np.float64), data.inner_user)  # (U, F)
        self.qi = None if item_vec is None else _spread(np.asarray(item_vec, np.float64), data.inner_item)  # (I, F)

    def score_rows(self, users: np.ndarray) -> np.ndarray:
        est = self.mu + self.bu[users][:, None] + self.bi[None, :]  # (B, I)
        if self.pu is not None and self.qi is not None:
            est = est + self.pu[users] @ self.qi.T  # (B, F) @ (F, I)
        return np.clip(est, self.low, self.high)


def svdpp_user_vectors(algo: Any, data: SurpriseData) -> np.ndarray:
    """SVD++'s effective user vectors ``p_u + |I_u|^-1/2 sum_{j in I_u} y_j``, (n_inner_users, F)."""
    import scipy.sparse as sp

    ts = data.trainset
    rows, cols = [], []
    for u in ts.all_users():
        items = [j for j, _ in ts.ur[u]]
        rows.extend([u] * len(items))
        cols.extend(items)
    counts = np.bincount(np.asarray(rows, dtype=np.int64), minlength=ts.n_users).astype(np.float64)
    weights = 1.0 / np.sqrt(counts[np.asarray(rows, dtype=np.int64)])
    implicit = sp.csr_matrix((weights, (rows, cols)), shape=(ts.n_users, ts.n_items))  # (U, I) |I_u|^-1/2
    return np.asarray(algo.pu, dtype=np.float64) + implicit @ np.asarray(algo.yj, dtype=np.float64)


class KNNBaselineItemScorer(PeerScorer):
    """Item-based KNNBaseline for every movie, vectorised per user.

    For user u and movie i: ``b_ui + sum_j s_ij (r_uj - b_uj) / sum_j s_ij`` over the ``k`` movies j rated
    by u most similar to i, counting only ``s_ij > 0`` (nothing when fewer than ``min_k`` count), with
    ``b_ui = mu + b_u + b_i``. The k most similar are chosen by a stable sort over u's ratings in
    Surprise's order, so ties fall as in Surprise's ``heapq.nlargest``.
    """

    def __init__(self, algo: Any, data: SurpriseData):
        super().__init__(data.n_users, data.n_items)
        if algo.sim_options.get("user_based", True):
            raise ValueError("KNNBaselineItemScorer reimplements the item-based KNNBaseline only")
        self.data = data
        ts = data.trainset
        self.mu = float(ts.global_mean)
        self.low, self.high = (float(x) for x in ts.rating_scale)
        self.k, self.min_k = int(algo.k), int(algo.min_k)
        self.bu_inner = np.asarray(algo.bu, dtype=np.float64)  # (U_inner,)
        self.bi_inner = np.asarray(algo.bi, dtype=np.float64)  # (I_inner,)
        self.bi = _spread(self.bi_inner, data.inner_item)  # (I,)
        known = data.inner_item >= 0
        self.known_items = np.flatnonzero(known)  # movierec indices Surprise has seen
        self.sim_rows = np.asarray(algo.sim, dtype=np.float64)[data.inner_item[known]]  # (I_known, I_inner)
        self.user_items = [np.asarray([j for j, _ in ts.ur[u]], dtype=np.int64) for u in ts.all_users()]
        self.user_stars = [np.asarray([r for _, r in ts.ur[u]], dtype=np.float64) for u in ts.all_users()]

    def score_rows(self, users: np.ndarray) -> np.ndarray:
        out = np.empty((users.shape[0], self.n_items), dtype=np.float64)
        for b, user in enumerate(users):
            iu = int(self.data.inner_user[user])
            if iu < 0:  # unseen user: the movie's baseline only
                out[b] = self.mu + self.bi
                continue
            bu = self.bu_inner[iu]
            out[b] = self.mu + bu + self.bi
            items, stars = self.user_items[iu], self.user_stars[iu]
            residual = stars - (self.mu + self.bi_inner[items] + bu)  # (n_u,) r_uj - b_uj
            sims = self.sim_rows[:, items]  # (I_known, n_u)
            if items.shape[0] > self.k:
                top = np.argsort(-sims, axis=1, kind="stable")[:, : self.k]  # (I_known, k)
                sims, residual = np.take_along_axis(sims, top, axis=1), residual[top]
            else:
                residual = np.broadcast_to(residual, sims.shape)
            positive = sims > 0
            weights = np.where(positive, sims, 0.0)
            total = weights.sum(axis=1)  # (I_known,)
            enough = (positive.sum(axis=1) >= self.min_k) & (total > 0)
            adjust = np.divide((weights * residual).sum(axis=1), total, out=np.zeros_like(total), where=enough)
            out[b, self.known_items] += adjust
        return np.clip(out, self.low, self.high)


def surprise_scorer(name: str, algo: Any, data: SurpriseData) -> PeerScorer:
    """The all-movies scorer of a fitted Surprise algorithm ``name``."""
    if name == "svd":
        return BiasedFactorScorer(data, algo.bu, algo.bi, algo.pu, algo.qi)
    if name == "svdpp":
        return BiasedFactorScorer(data, algo.bu, algo.bi, svdpp_user_vectors(algo, data), algo.qi)
    if name == "baselineonly":
        return BiasedFactorScorer(data, algo.bu, algo.bi)
    if name == "knnbaseline":
        return KNNBaselineItemScorer(algo, data)
    raise ValueError(f"unknown Surprise model {name!r}")


@dataclass(frozen=True)
class SurpriseCheck:
    """Surprise's own predictions on the test pairs, and how far the adapter's scores are from them."""

    rmse: float
    mae: float
    max_abs_diff: float
    seconds: float


def check_against_surprise(algo: Any, scorer: PeerScorer, test: Ratings) -> SurpriseCheck:
    """Predict every test pair with Surprise's own ``algo.predict`` (clipped, as Surprise reports it) and
    compare with ``scorer``: the evidence that the vectorised scores are Surprise's."""
    import time

    start = time.perf_counter()
    users = test.users.astype(np.int64)
    items = test.items.astype(np.int64)
    own = np.fromiter(
        (algo.predict(int(u), int(i)).est for u, i in zip(users.tolist(), items.tolist())),
        dtype=np.float64, count=users.shape[0],
    )
    seconds = time.perf_counter() - start
    ours = scorer.predict(torch.from_numpy(users), torch.from_numpy(items), None).numpy().astype(np.float64)
    truth = test.ratings.astype(np.float64)
    return SurpriseCheck(
        rmse=float(np.sqrt(np.mean((own - truth) ** 2))),
        mae=float(np.mean(np.abs(own - truth))),
        max_abs_diff=float(np.max(np.abs(own - ours))) if own.size else 0.0,
        seconds=seconds,
    )


# -- implicit ------------------------------------------------------------------------------------------
def implicit_interactions(train: Ratings) -> Any:
    """The users x movies CSR matrix implicit fits on: one 1.0 per training rating, whatever its stars."""
    import scipy.sparse as sp

    ones = np.ones(len(train), dtype=np.float32)
    matrix = sp.csr_matrix((ones, (train.users, train.items)), shape=(train.n_users, train.n_items))
    matrix.sum_duplicates()
    return matrix


def fit_implicit_als(interactions: Any, seed: int) -> Any:
    """implicit's AlternatingLeastSquares with 64 factors and its other defaults, fitted on ``interactions``."""
    import threadpoolctl
    from implicit.cpu.als import AlternatingLeastSquares

    model = AlternatingLeastSquares(factors=IMPLICIT_FACTORS, random_state=seed)
    # implicit runs its own threads; a multi-threaded BLAS underneath oversubscribes the cores (it warns).
    with threadpoolctl.threadpool_limits(1, "blas"):
        model.fit(interactions, show_progress=False)
    return model


class FactorRankScorer(PeerScorer):
    """``p_u . q_i`` of implicit's ALS: a ranking score (kind ``"rank"``), not stars."""

    kind = "rank"

    def __init__(self, user_factors: np.ndarray, item_factors: np.ndarray):
        super().__init__(user_factors.shape[0], item_factors.shape[0])
        self.users_f = np.asarray(user_factors, dtype=np.float64)  # (U, F)
        self.items_f = np.asarray(item_factors, dtype=np.float64)  # (I, F)

    def score_rows(self, users: np.ndarray) -> np.ndarray:
        return self.users_f[users] @ self.items_f.T  # (B, I)


def implicit_scorer(model: Any) -> FactorRankScorer:
    """The ranking scorer of a fitted implicit ALS model (CPU factors)."""
    users_f, items_f = model.user_factors, model.item_factors
    if hasattr(users_f, "to_numpy"):  # a GPU model's factors
        users_f, items_f = users_f.to_numpy(), items_f.to_numpy()
    return FactorRankScorer(np.asarray(users_f), np.asarray(items_f))


# -- EASE (Steck 2019), a closed-form reference ------------------------------------------------------
# The penalties tried on a validation slice of the training data; Steck reports the best between ~100 and
# ~1,000 on data of MovieLens' size.
EASE_LAMBDAS = (50.0, 100.0, 200.0, 400.0, 800.0, 1600.0)
EASE_VALIDATION_FRACTION = 0.1


class EaseScorer(PeerScorer):
    """EASE (Steck 2019, "Embarrassingly Shallow Autoencoders for Sparse Data"): ``x_u B`` with the item-item
    weights ``B = I - P diagMat(1 / diag(P))``, ``P = (X^T X + lambda I)^-1``, ``X`` the binary users x movies
    matrix of who rated what. A ranking score (kind ``"rank"``)."""

    kind = "rank"

    def __init__(self, interactions: np.ndarray, weights: np.ndarray):
        super().__init__(*interactions.shape)
        self.X = interactions  # (U, I) 0/1
        self.B = weights  # (I, I), zero diagonal

    def score_rows(self, users: np.ndarray) -> np.ndarray:
        return self.X[users] @ self.B  # (B, I)


def fit_ease(train: Ratings, lam: float) -> EaseScorer:
    X = np.zeros((train.n_users, train.n_items), dtype=np.float64)
    X[train.users, train.items] = 1.0
    gram = X.T @ X
    gram[np.diag_indices_from(gram)] += lam
    P = np.linalg.inv(gram)  # (I, I)
    B = P / -np.diag(P)  # column j divided by -P_jj
    B[np.diag_indices_from(B)] = 0.0
    return EaseScorer(X, B)


def choose_ease_lambda(train: Ratings, seed: int, k: int, relevance: float) -> tuple[float, dict[float, float]]:
    """The penalty of :data:`EASE_LAMBDAS` with the best NDCG@k on a random slice of the *training* ratings,
    fitted on the rest (the test split is never looked at). Returns it and every candidate's NDCG@k."""
    from movierec.evaluate import evaluate

    held = np.random.default_rng(seed).random(len(train)) < EASE_VALIDATION_FRACTION
    fit_part, valid = train.take(~held), train.take(held)
    matrix = fit_part.matrix()
    scores = {lam: float(evaluate(fit_ease(fit_part, lam), matrix, valid, k=k, relevance=relevance)[f"ndcg@{k}"])
              for lam in EASE_LAMBDAS}
    return max(scores, key=lambda lam: scores[lam]), scores


def finite_or_none(x: float | None) -> float | None:
    """JSON-safe number: NaN/inf become None."""
    return None if x is None or not math.isfinite(float(x)) else float(x)
