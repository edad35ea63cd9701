"""What the factor models (``mf``, ``als``) share: users and movies as vectors plus biases around the
global mean, the same predictions, and the closed-form ridge solve behind ALS and every new user's fold-in.

Only training differs between them; each training algorithm is its own subclass, trained by its own
:class:`FactorTrainer`.
"""

from __future__ import annotations

import torch

from movierec.data.ratings import RatingMatrix
from movierec.errors import MovierecError
from movierec.kinds import score_kind
from movierec.models.base import ModelConfig, Recommender, Trainer


def ridge_solve(gram: torch.Tensor, rhs: torch.Tensor, lam: float, tau: float, gamma: float) -> torch.Tensor:
    """Solve ``(lam * gram + diag(tau, .., tau, gamma)) x = lam * rhs`` for a batch of systems.

    ``gram`` (B, k, k) is ``F^T F`` and ``rhs`` (B, k) is ``F^T t`` for features ``F = [v, 1]``: the
    minimiser of ``lam/2 |t - F x|^2 + tau/2 |x[:-1]|^2 + gamma/2 x[-1]^2``, i.e. a vector and a bias.
    """
    k = gram.shape[-1]
    penalty = torch.full((k,), float(tau), dtype=gram.dtype, device=gram.device)
    penalty[-1] = float(gamma)
    system = lam * gram + torch.diag_embed(penalty).expand_as(gram)  # (B, k, k)
    if tau > 0 and gamma > 0:
        # Symmetric positive definite by construction: Cholesky is the cheapest exact solver and
        # cholesky_ex does not synchronise with the device to check for failure.
        chol, _ = torch.linalg.cholesky_ex(system)
        return torch.cholesky_solve((lam * rhs).unsqueeze(-1), chol).squeeze(-1)  # (B, k)
    # Without a penalty a user with fewer ratings than unknowns has no unique answer: take the
    # smallest one.
    return (torch.linalg.pinv(system) @ (lam * rhs).unsqueeze(-1)).squeeze(-1)  # (B, k)


class FactorModel(Recommender):
    """Users and movies as vectors plus biases around the global mean (shared by ``mf`` and ``als``)."""

    mean: torch.Tensor  # a buffer (registered in __init__)

    def __init__(self, config: ModelConfig, n_users: int, n_items: int, rating_values: tuple[float, ...]):
        super().__init__(config, n_users, n_items, rating_values)
        d = int(config.factors)
        self.user_factors = torch.nn.Parameter(torch.zeros(self.n_users, d))  # (U, d)
        self.item_factors = torch.nn.Parameter(torch.zeros(self.n_items, d))  # (I, d)
        self.user_bias = torch.nn.Parameter(torch.zeros(self.n_users))  # (U,)
        self.item_bias = torch.nn.Parameter(torch.zeros(self.n_items))  # (I,)
        # Learned from the data before the first epoch (FactorTrainer), so a checkpoint must carry it: a buffer.
        self.register_buffer("mean", torch.tensor(sum(self.rating_values) / len(self.rating_values)))

    # -- prediction ------------------------------------------------------------------------------
    @torch.no_grad()
    def score(self, users: torch.Tensor, train: RatingMatrix) -> torch.Tensor:
        users = users.to(self.device, torch.int64)
        raw = self.user_factors[users] @ self.item_factors.T  # (B, I)
        raw += self.user_bias[users].unsqueeze(1) + self.item_bias.unsqueeze(0) + self.mean
        return raw

    @torch.no_grad()
    def predict(
        self, users: torch.Tensor, items: torch.Tensor, train: RatingMatrix, batch_users: int = 1024
    ) -> torch.Tensor:
        """One dot product per pair instead of whole score rows; pairs go in chunks to bound memory.
        Clipped to the rating scale for a ``"rating"`` model, as every model's :meth:`predict`."""
        users = users.to(self.device, torch.int64)
        items = items.to(self.device, torch.int64)
        out = torch.empty(users.shape[0], dtype=torch.float32, device=self.device)
        step = 1 << 20
        for start in range(0, users.shape[0], step):
            u, i = users[start:start + step], items[start:start + step]
            out[start:start + step] = self._raw(u, i)
        return score_kind(self.kind).on_scale(out, self.rating_min, self.rating_max)

    def _raw(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """Unclipped predictions for (user, movie) pairs, (N,), (N,) -> (N,)."""
        dots = (self.user_factors[users] * self.item_factors[items]).sum(-1)  # (N,)
        return self.mean + dots + self.user_bias[users] + self.item_bias[items]

    def item_vectors(self) -> torch.Tensor:
        return self.item_factors.detach()

    def fold_in_penalties(self, n_ratings: int) -> tuple[float, float, float]:
        """``(lam, tau, gamma)`` of the new user's ridge problem, as the training objective weighs it.
        Every subclass that keeps this class's :meth:`fold_in_factors` defines it."""
        raise NotImplementedError

    @torch.no_grad()
    def fold_in_factors(
        self, items: torch.Tensor, ratings: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """A new user's vector (d,) and bias () that minimise the training objective with every movie's
        vector and bias held fixed: a ridge regression on features ``[q_i, 1]``."""
        items = items.to(self.device, torch.int64)
        ratings = ratings.to(self.device, torch.float32)
        feats = torch.cat([self.item_factors[items], torch.ones_like(ratings).unsqueeze(1)], 1)  # (n, d+1)
        target = ratings - self.mean - self.item_bias[items]  # (n,)
        lam, tau, gamma = self.fold_in_penalties(int(items.shape[0]))
        x = ridge_solve((feats.T @ feats).unsqueeze(0), (feats.T @ target).unsqueeze(0), lam, tau, gamma)[0]
        return x[:-1], x[-1]

    @torch.no_grad()
    def fold_in(self, items: torch.Tensor, ratings: torch.Tensor) -> torch.Tensor:
        vector, bias = self.fold_in_factors(items, ratings)
        return self.item_factors @ vector + bias + self.item_bias + self.mean  # (I,)


class FactorTrainer(Trainer):
    """What every factor model's training starts with: the training mean, which every prediction is centred on."""

    model: FactorModel

    def __init__(self, model: FactorModel, train: RatingMatrix, generator: torch.Generator):
        super().__init__(model, train, generator)
        if train.nnz == 0:
            raise MovierecError("The training split has no ratings to learn from.")
        model.mean.fill_(train.values.mean())
