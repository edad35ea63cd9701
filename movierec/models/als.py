"""Latent factors with biases, trained by alternating least squares.

Predicted stars for user ``m`` and movie ``n``: ``mean + u_m . v_n + b_m + b_n``, where ``mean`` is the
training mean, fixed in ``fit_start`` (a constant offset: the objective below is then exactly the
seed's objective on ``r - mean``, and the biases need not carry ~3.5 stars against their penalty)::

    lam/2 * sum_(m,n) (r_mn - pred_mn)^2 + tau/2 * (|U|^2 + |V|^2) + gamma/2 * (|b_user|^2 + |b_item|^2)

With the movies fixed, each user's ``[u_m, b_m]`` is a ridge regression on features ``[v_n, 1]`` and
targets ``r_mn - mean - b_n``, solved exactly; then the same for every movie with the users fixed.
Each half-step is an exact minimiser, so the objective never goes up.

The users of one half-step are solved in batches: sorted by how many ratings they have and grouped so
that a group's longest row is at most :data:`GROWTH` times its shortest, each group's ratings become
one padded (B, L, d+2) tensor whose Gram matrix (one ``bmm``) holds every user's normal equations;
``chunk_size`` bounds B x L and so the memory, whatever the data set's size.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from movierec.data.ratings import RatingMatrix
from movierec.errors import MovierecError
from movierec.models.base import ModelConfig, option
from movierec.models.mf import FactorModel, ridge_solve

# Rows in one solve group differ in length by at most this factor, so padding wastes < 25 %.
GROWTH = 1.25


@dataclass(frozen=True)
class ALSConfig(ModelConfig):
    factors: int = option(16, "Latent factors per user and movie.")
    lam: float = option(1.0, "Weight of the squared errors (lambda).", "--lambda")
    tau: float = option(12.0, "L2 penalty on the user and movie vectors.")
    gamma: float = option(2.0, "L2 penalty on the user and movie biases.")
    epochs: int = option(8, "ALS iterations: all users, then all movies.", "--iters")
    init_std: float = option(0.1, "Movie vectors start normal with this standard deviation.")
    chunk_size: int = option(
        1 << 20, "Most (padded) ratings per batched solve; memory ~ chunk_size x (factors + 2) floats."
    )

    def __post_init__(self) -> None:
        if self.factors < 1 or self.chunk_size < 1:
            raise MovierecError("als needs --factors and --chunk-size of at least 1.")
        if self.lam <= 0 or self.tau <= 0 or self.gamma <= 0:
            raise MovierecError("als needs --lambda, --tau and --gamma above 0, or a solve can be singular.")
        if self.init_std < 0:
            raise MovierecError("als needs --init-std of at least 0.")


class _Plan:
    """How one side's rows are grouped for batched solves; depends only on the matrix's shape."""

    def __init__(self, matrix: RatingMatrix, chunk_size: int, width: int):
        counts = matrix.row_counts()  # (R,)
        order = torch.argsort(counts, stable=True)  # (R,) shortest rows first
        sorted_counts = counts[order]
        self.empty = order[sorted_counts == 0]  # rows with no ratings: their minimiser is exactly 0
        order, sorted_counts = order[sorted_counts > 0], sorted_counts[sorted_counts > 0]
        self.groups: list[tuple[torch.Tensor, int]] = []  # (rows, longest row length)
        if order.shape[0] == 0:
            return
        # Groups are read once per fit, so one host round-trip here is fine.
        bucket = torch.floor(torch.log(sorted_counts.double()) / math.log(GROWTH)).long()
        _, sizes = torch.unique_consecutive(bucket, return_counts=True)
        start = 0
        for size in sizes.tolist():
            longest = int(sorted_counts[start + size - 1])
            # Bound both the padded ratings (B x L) and the (B, d+2, d+2) systems.
            per_chunk = max(1, min(chunk_size // longest, chunk_size // width))
            for first in range(start, start + size, per_chunk):
                last = min(first + per_chunk, start + size)
                self.groups.append((order[first:last], int(sorted_counts[last - 1])))
            start += size


class ALS(FactorModel):
    """Biased latent factor model fitted by exact alternating ridge regressions, batched on the device."""

    name = "als"
    config_class = ALSConfig
    config: ALSConfig

    def __init__(self, config: ALSConfig, n_users: int, n_items: int, rating_values: tuple[float, ...]):
        super().__init__(config, n_users, n_items, rating_values)
        # Closed-form updates, no gradients: frozen parameters still save and load with the state_dict.
        self.requires_grad_(False)
        # Only the movies' starting point matters: the first half-step solves the users from it.
        self.item_factors.normal_(0.0, config.init_std)
        self._cache: tuple[RatingMatrix, RatingMatrix, _Plan, _Plan] | None = None

    def fold_in_penalties(self, n_ratings: int) -> tuple[float, float, float]:
        return self.config.lam, self.config.tau, self.config.gamma

    def _prepare(self, train: RatingMatrix) -> tuple[RatingMatrix, _Plan, _Plan]:
        """The movies x users matrix and both sides' solve groups, built once per training matrix."""
        if self._cache is None or self._cache[0] is not train:
            width, chunk = self.config.factors + 2, self.config.chunk_size
            items_by_user = train.transpose()
            plans = _Plan(train, chunk, width), _Plan(items_by_user, chunk, width)
            self._cache = (train, items_by_user, *plans)
        return self._cache[1], self._cache[2], self._cache[3]

    def fit_start(self, train: RatingMatrix, generator: torch.Generator) -> None:
        super().fit_start(train, generator)
        self._prepare(train)

    def train_epoch(self, train: RatingMatrix, generator: torch.Generator) -> dict[str, float]:
        transposed, user_plan, item_plan = self._prepare(train)
        U, V, b_user, b_item = self.user_factors, self.item_factors, self.user_bias, self.item_bias
        self._half_step(train, user_plan, V, b_item, U, b_user, with_error=False)
        sse = self._half_step(transposed, item_plan, U, b_user, V, b_item)
        cfg = self.config
        objective = (
            cfg.lam / 2 * sse
            + cfg.tau / 2 * (U.double().square().sum() + V.double().square().sum())
            + cfg.gamma / 2 * (b_user.double().square().sum() + b_item.double().square().sum())
        )
        return {"loss": float(objective) / train.nnz, "rmse": float(sse / train.nnz) ** 0.5}

    @torch.no_grad()
    def _half_step(
        self, matrix: RatingMatrix, plan: _Plan,
        other_factors: torch.Tensor, other_bias: torch.Tensor, factors: torch.Tensor, bias: torch.Tensor,
        with_error: bool = True,
    ) -> torch.Tensor:
        """Solve every row's ``[vector, bias]`` with the other side fixed; returns the new squared error
        (0 unless ``with_error``)."""
        d = factors.shape[1]
        device = matrix.device
        factors[plan.empty] = 0.0
        bias[plan.empty] = 0.0
        sse = torch.zeros((), dtype=torch.float64, device=device)
        for rows, longest in plan.groups:
            n_rows = rows.shape[0]
            starts = matrix.indptr.index_select(0, rows)  # (B,)
            lengths = matrix.indptr.index_select(0, rows + 1) - starts  # (B,)
            offsets = torch.arange(longest, device=device)  # (L,)
            mask = offsets < lengths.unsqueeze(1)  # (B, L) real ratings, not padding
            flat = torch.where(mask, starts.unsqueeze(1) + offsets, 0).view(-1)  # (B*L,) entry positions
            cols = matrix.indices.index_select(0, flat)  # (B*L,)
            target = matrix.values.index_select(0, flat) - self.mean - other_bias.index_select(0, cols)
            # [features | 1 | target] per rating, zero on padding so padding adds nothing to any sum.
            stacked = torch.cat([
                other_factors.index_select(0, cols),  # (B*L, d)
                torch.ones_like(target).unsqueeze(1),  # (B*L, 1)
                target.unsqueeze(1),  # (B*L, 1)
            ], 1).view(n_rows, longest, d + 2).mul_(mask.unsqueeze(-1))  # (B, L, d+2)
            gram = stacked.transpose(1, 2) @ stacked  # (B, d+2, d+2): F^T F, F^T t and t^T t at once
            x = ridge_solve(gram[:, :-1, :-1], gram[:, :-1, -1], self.config.lam, self.config.tau,
                            self.config.gamma)  # (B, d+1)
            factors[rows] = x[:, :d]
            bias[rows] = x[:, d]
            if not with_error:
                continue
            # |t - F x|^2 = t.t - 2 x.F^T t + x^T F^T F x: from the Gram matrix, no second pass over
            # the ratings; in float64 because the terms nearly cancel.
            g64, x64 = gram.double(), x.double()
            sse += (
                g64[:, -1, -1]
                - 2 * (x64 * g64[:, :-1, -1]).sum(-1)
                + ((g64[:, :-1, :-1] * x64.unsqueeze(1)).sum(-1) * x64).sum(-1)
            ).sum()
        return sse
