"""The numpy scorers: a saved model answered from its arrays alone, without torch or pandas.

:class:`FactorScorer` answers the factor models (``mf``, ``als`` explicit and implicit, ``hybrid``: score = mean +
p_u . q_i + b_u + b_i), reading one user's row, never the whole file; its new-user fold-in solves the same ridge
problem as ``FactorModel.fold_in_factors`` with the penalties the model reported when it was saved.
:class:`NumpyScorer` answers the RBMs, autoencoders and Mult-VAE/DAE by their passes in
:mod:`movierec.models.forward`. :mod:`movierec.serving` chooses between them and the torch model; both are
:class:`~movierec.recommend.Scorer` s whose lists come from :mod:`movierec.recommend`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from movierec import checkpoint
from movierec.errors import MovierecError
from movierec.recommend import OwnLists
from movierec.serving_info import NEW_USER_SHRINK, ServingInfo


def ridge_penalties(recipe: dict[str, Any], n: int) -> tuple[float, float, float]:
    (t0, t1), (g0, g1) = recipe["tau"], recipe["gamma"]
    return recipe["lam"], t0 + t1 * n, g0 + g1 * n


class FactorScorer(OwnLists):
    """A factor model answered from its saved arrays in numpy (a :class:`~movierec.recommend.Scorer`; lists by
    its own scores).

    Reads the movies' vectors and biases, and for a known user that user's row only."""

    def __init__(
        self, saved: Any, meta: checkpoint.CheckpointMeta, fold_in: dict[str, Any], kind: str, prefix: str = "state.",
        new_user_shrink: float = NEW_USER_SHRINK,
    ):
        self._saved, self._path, self._prefix = saved, saved.path, prefix
        self.kind = kind
        self.new_user_shrink = float(new_user_shrink)
        self.rating_range = (meta.rating_values[0], meta.rating_values[-1])
        self._recipe = fold_in
        self._gram_cache: np.ndarray | None = None
        p = prefix
        if not all(f"{p}{k}" in saved for k in ("user_factors", "item_factors", "user_bias", "item_bias", "mean")):
            raise MovierecError(f"{self._path} is damaged: its tensors do not match its model description.")
        self.item_factors = self._finite(f"{p}item_factors", saved.get(f"{p}item_factors"))  # (I, d)
        self.item_bias = self._finite(f"{p}item_bias", saved.get(f"{p}item_bias"))  # (I,)
        self.mean = self._finite(f"{p}mean", saved.get(f"{p}mean")).astype(np.float32).reshape(())
        n_items, d = meta.n_items, self.item_factors.shape[1] if self.item_factors.ndim == 2 else -1
        if (self.item_factors.shape != (n_items, d) or self.item_bias.shape != (n_items,)
                or saved.shape(f"{p}user_factors") != (meta.n_users, d)
                or saved.shape(f"{p}user_bias") != (meta.n_users,)):
            raise MovierecError(f"{self._path} is damaged: its tensors do not match its model description.")

    def _finite(self, name: str, array: np.ndarray) -> np.ndarray:
        if array.dtype.kind != "f":
            raise MovierecError(f"{self._path} is damaged: its tensors do not match its model description.")
        if not bool(np.isfinite(array).all()):
            where = name.removeprefix("state.")
            raise MovierecError(f"{self._path} holds non-finite weights (in {where}); retrain it.")
        return array.astype(np.float32, copy=False)

    def scores(self, user: int) -> np.ndarray:
        return self.scores_many(np.array([user]))[0]

    def scores_many(self, users: np.ndarray) -> np.ndarray:
        """(B,) user indices -> (B, I) scores, reading those users' rows only (a run of users in one read)."""
        users = np.asarray(users, dtype=np.int64)
        uf, ub = f"{self._prefix}user_factors", f"{self._prefix}user_bias"
        if users.size > 1 and bool((np.diff(users) == 1).all()):
            start, stop = int(users[0]), int(users[-1]) + 1
            p = self._saved.rows(uf, start, stop)  # (B, d)
            b = self._saved.rows(ub, start, stop)  # (B,)
        else:
            p = np.stack([self._saved.rows(uf, u, u + 1)[0] for u in users.tolist()])
            b = np.array([self._saved.rows(ub, u, u + 1)[0] for u in users.tolist()])
        p, b = self._finite(uf, p), self._finite(ub, b)
        return self._plus_biases(p @ self.item_factors.T, b[:, None])  # (B, I)

    def fold_in(self, items: np.ndarray, ratings: np.ndarray,
                prior: tuple[np.ndarray, np.float32] | None = None) -> np.ndarray:
        vector, bias = self.fold_in_factors(items, ratings, prior)
        scores = self.item_factors @ vector  # (I,); then ((. + bias) + item_bias) + mean, in place
        scores += bias
        scores += self.item_bias
        scores += self.mean
        return scores

    def _plus_biases(self, products: np.ndarray, user_bias: np.ndarray) -> np.ndarray:
        """``products + ((user_bias + item_bias) + mean)`` on ``products``' own memory: the same numbers with one
        pass over every movie fewer."""
        biases = user_bias + self.item_bias
        biases += self.mean
        products += biases
        return products

    def fold_in_factors(self, items: np.ndarray, ratings: np.ndarray,
                        prior: tuple[np.ndarray, np.float32] | None = None) -> tuple[np.ndarray, np.float32]:
        """A new user's vector (d,) and bias (): the minimiser of the model's training objective with every
        movie held fixed, as ``fold_in_factors`` of the torch model. ``prior``: the vector and bias the user
        starts from (their features', :mod:`movierec.cold`); what is solved for is then their own part on top."""
        r = self._recipe
        V = self.item_factors
        q = V[items]  # (n, d)
        ratings = ratings.astype(np.float32)
        if r["method"] == "implicit":
            f = ratings if r["confidence"] == "stars" else np.ones_like(ratings)
            conf = (1.0 + r["alpha"] * f).astype(np.float32)  # (n,)
            shared = r["lam"] * self._gram() + r["tau"] * np.eye(V.shape[1])  # (d, d)
            system = shared + r["lam"] * (q.T @ (q * (conf - 1.0)[:, None])).astype(np.float64)
            rhs = r["lam"] * (q.T @ conf).astype(np.float64)
            if prior is not None:  # the unrated movies read as picked as the prior predicts, not as "not picked"
                rhs += shared @ prior[0].astype(np.float64)
            return np.linalg.solve(system, rhs).astype(np.float32), np.float32(0.0)
        if prior is not None:
            own, own_bias = self.fold_in_factors(items, ratings - q @ prior[0] - prior[1])
            return (own + prior[0]).astype(np.float32), np.float32(own_bias + prior[1])
        feats = np.concatenate([q, np.ones((len(items), 1), np.float32)], axis=1)  # (n, d+1)
        target = ratings - self.mean - self.item_bias[items]  # (n,)
        lam, tau, gamma = ridge_penalties(r, len(items))
        penalty = np.full(feats.shape[1], float(tau))
        penalty[-1] = float(gamma)
        system = lam * (feats.T @ feats).astype(np.float64) + np.diag(penalty)  # (d+1, d+1)
        rhs = lam * (feats.T @ target).astype(np.float64)  # (d+1,)
        if tau > 0 and gamma > 0:
            x = np.linalg.solve(system, rhs)
        else:  # without a penalty a user with fewer ratings than unknowns has no unique answer: the smallest
            x = np.linalg.pinv(system) @ rhs
        x = x.astype(np.float32)
        return x[:-1], x[-1]

    def _gram(self) -> np.ndarray:
        """``V^T V`` (d, d) in float64 over every movie's vector: the same for every new user, so worked out
        once (at ML-25M's 59,047 movies it is most of an implicit fold-in's time)."""
        if self._gram_cache is None:
            self._gram_cache = (self.item_factors.T @ self.item_factors).astype(np.float64)
        return self._gram_cache

    def item_vectors(self) -> np.ndarray:
        return self.item_factors

    def factors(self) -> dict[str, np.ndarray]:
        """What every score is made of: ``user_factors`` (U, d), ``item_factors`` (I, d), ``user_bias`` (U,),
        ``item_bias`` (I,) and ``mean`` (); a score is ``user_factors[u] @ item_factors[i] + user_bias[u] +
        item_bias[i] + mean``."""
        uf, ub = f"{self._prefix}user_factors", f"{self._prefix}user_bias"
        return {"user_factors": self._finite(uf, self._saved.get(uf)), "item_factors": self.item_factors,
                "user_bias": self._finite(ub, self._saved.get(ub)), "item_bias": self.item_bias, "mean": self.mean}


class NumpyScorer(OwnLists):
    """An RBM, autoencoder or Mult-VAE/DAE answered from its saved arrays in numpy by its pass in
    :mod:`movierec.models.forward` (a :class:`~movierec.recommend.Scorer`; lists by its own scores). The item-based
    rating RBM's new users, where saved without their fit's prior, are folded in by the torch model (``torch_model``,
    built on first need)."""

    def __init__(self, forward: Any, info: ServingInfo, meta: checkpoint.CheckpointMeta,
                 seen: Any, torch_model: Any):
        self.forward = forward
        self.kind = info.kind
        self.new_user_shrink = float(info.new_user_shrink)
        self.rating_range = (meta.rating_values[0], meta.rating_values[-1])
        self._seen, self._torch_model = seen, torch_model

    def scores(self, user: int) -> np.ndarray:
        return self.scores_many(np.array([user]))[0]

    def scores_many(self, users: np.ndarray) -> np.ndarray:
        return self.forward.scores(np.asarray(users, dtype=np.int64), self._seen).astype(np.float32, copy=False)

    def fold_in(self, items: np.ndarray, ratings: np.ndarray) -> np.ndarray:
        items, ratings = np.asarray(items, dtype=np.int64), np.asarray(ratings, dtype=np.float32)
        scores = self.forward.fold_in(items, ratings)
        if scores is None:
            return self._torch_model().fold_in(items, ratings)
        return scores.astype(np.float32, copy=False)

    def item_vectors(self) -> np.ndarray:
        return self.forward.item_vectors()


