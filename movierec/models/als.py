"""Latent factors trained by alternating least squares: on the stars (:class:`ExplicitALS`, mode ``explicit``,
the default) or on who rated what (:class:`ImplicitALS`, mode ``implicit``). Two algorithms, two classes
on one base (:class:`ALSBase`), each with its own config and fixed defaults.

**Explicit**. Predicted stars for user ``m`` and movie ``n``: ``mean + u_m . v_n + b_m + b_n``,
where ``mean`` is the training mean, fixed in ``fit_start`` (a constant offset: the objective below is then
exactly the seed's objective on ``r - mean``, and the biases need not carry ~3.5 stars against their
penalty)::

    lam/2 * sum_(m,n) (r_mn - pred_mn)^2 + tau/2 * (|U|^2 + |V|^2) + gamma/2 * (|b_user|^2 + |b_item|^2)

With the movies fixed, each user's ``[u_m, b_m]`` is a ridge regression on features ``[v_n, 1]`` and
targets ``r_mn - mean - b_n``, solved exactly; then the same for every movie with the users fixed.
Each half-step is an exact minimiser, so the objective never goes up.

The users of one half-step are solved in batches: sorted by how many ratings they have and grouped so
that a group's longest row is at most :data:`GROWTH` times its shortest, each group's ratings become
one padded (B, L, d+2) tensor whose Gram matrix (one ``bmm``) holds every user's normal equations;
``chunk_size`` bounds B x L and so the memory, whatever the data set's size.

**Implicit** is weighted matrix factorisation for implicit feedback (Hu, Koren &
Volinsky 2008). Every (user, movie) pair counts: the preference ``p_mn`` is 1 when the user rated the movie
and 0 otherwise, weighted by the confidence ``c_mn = 1 + alpha * f(r_mn)`` (1 for unrated pairs), where
``f`` is the stars or 1 (``confidence``)::

    lam/2 * sum_(all m,n) c_mn (p_mn - u_m . v_n)^2 + tau/2 * (|U|^2 + |V|^2)

There is no mean and no bias (both stay 0, so the shared prediction formula is exactly ``u_m . v_n``), the
scores only order movies (kind ``"rank"``). A user's exact minimiser is
``(lam V^T C_m V + tau I)^-1 lam V^T C_m p_m``, and ``V^T C_m V = V^T V + V^T (C_m - I) V``: the first term
is one (d, d) product shared by everyone, the second only involves the movies the user rated, so each
half-step costs the same padded batches as the explicit one, never the dense users x movies matrix.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from movierec.data.ratings import RatingMatrix
from movierec.errors import MovierecError
from movierec.models.base import ModelConfig, option
from movierec.models.factors import FactorModel, ridge_solve

# Rows in one solve group differ in length by at most this factor, so padding wastes < 25 %.
GROWTH = 1.25
CONFIDENCES = ("stars", "binary")


@dataclass(frozen=True)
class ALSConfig(ModelConfig):
    """What both ALS algorithms are configured by; each subclass fixes its own defaults (tuned on ml-100k's
    u1, confirmed on u1..u5: explicit for RMSE, implicit for NDCG@10)."""

    factors: int = option(16, "Latent factors per user and movie.")
    lam: float = option(1.0, "Weight of the squared errors (lambda).", "--lambda")
    tau: float = option(12.0, "L2 penalty on the user and movie vectors.")
    epochs: int = option(8, "ALS iterations: all users, then all movies.", "--iters")
    init_std: float = option(0.1, "Movie vectors start normal with this standard deviation.")
    chunk_size: int = option(
        1 << 20, "Most (padded) ratings per batched solve; memory ~ chunk_size x (factors + 2) floats."
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.factors < 1 or self.chunk_size < 1:
            raise MovierecError("als needs --factors and --chunk-size of at least 1.")
        if self.lam <= 0 or self.tau <= 0:
            raise MovierecError("als needs --lambda and --tau above 0, or a solve can be singular.")
        if self.init_std < 0:
            raise MovierecError("als needs --init-std of at least 0.")


@dataclass(frozen=True)
class ExplicitALSConfig(ALSConfig):
    gamma: float = option(2.0, "L2 penalty on the user and movie biases.")

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.gamma <= 0:
            raise MovierecError("als needs --gamma above 0, or a solve can be singular.")


@dataclass(frozen=True)
class ImplicitALSConfig(ALSConfig):
    # More factors and ~3x the penalty rank best: on u1 NDCG@10 is 0.464 at tau 35 against 0.387 at the
    # explicit 12 (64 factors; 0.449 with 16).
    factors: int = option(64, "Latent factors per user and movie.")
    tau: float = option(35.0, "L2 penalty on the user and movie vectors.")
    # A padded rating costs a (d, d) product here, not d + 2 floats: at ML-25M scale smaller batches keep each
    # solve (the wait for Ctrl-C) near 0.4 s instead of 1.3-1.9 s, and the epoch is faster (34 s against 45 s).
    chunk_size: int = option(
        1 << 18, "Most (padded) ratings per batched solve; memory ~ chunk_size x (factors + 2) floats."
    )
    alpha: float = option(1.0, "A rated movie's confidence is 1 + alpha x f(stars).")
    confidence: str = option(
        "stars", "f(stars) in the confidence: the stars (ranks best), or binary (1 for any rating).",
        choices=CONFIDENCES,
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.alpha < 0:
            raise MovierecError("als needs --alpha of at least 0.")


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


class ALSBase(FactorModel):
    """Latent factor model fitted by exact alternating least squares, batched on the device. Subclasses
    supply one half-step (every user, or every movie, solved with the other side fixed)."""

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

    def _penalty(self) -> torch.Tensor:
        """``tau/2 (|U|^2 + |V|^2)``, in float64."""
        U, V = self.user_factors, self.item_factors
        return self.config.tau / 2 * (U.double().square().sum() + V.double().square().sum())

    @staticmethod
    def _gather(matrix: RatingMatrix, rows: torch.Tensor, longest: int) -> tuple[torch.Tensor, ...]:
        """The ratings of ``rows`` padded to ``longest``: mask (B, L) of real entries, columns and values
        (B*L,) each; padding points at entry 0 and must be masked out."""
        starts = matrix.indptr.index_select(0, rows)  # (B,)
        lengths = matrix.indptr.index_select(0, rows + 1) - starts  # (B,)
        offsets = torch.arange(longest, device=matrix.device)  # (L,)
        mask = offsets < lengths.unsqueeze(1)  # (B, L) real ratings, not padding
        flat = torch.where(mask, starts.unsqueeze(1) + offsets, 0).view(-1)  # (B*L,) entry positions
        return mask, matrix.indices.index_select(0, flat), matrix.values.index_select(0, flat)



class ExplicitALS(ALSBase):
    """Biased ridge regressions on the stars, alternating between users and movies: star predictions."""

    mode = "explicit"
    config_class = ExplicitALSConfig
    config: ExplicitALSConfig

    def fold_in_penalties(self, n_ratings: int) -> tuple[float, float, float]:
        return self.config.lam, self.config.tau, self.config.gamma

    def train_epoch(self, train: RatingMatrix, generator: torch.Generator) -> dict[str, float]:
        transposed, user_plan, item_plan = self._prepare(train)
        U, V, b_user, b_item = self.user_factors, self.item_factors, self.user_bias, self.item_bias
        cfg = self.config
        self._half_step(train, user_plan, V, b_item, U, b_user, with_error=False)
        sse = self._half_step(transposed, item_plan, U, b_user, V, b_item)
        objective = (
            cfg.lam / 2 * sse
            + self._penalty()
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
            mask, cols, values = self._gather(matrix, rows, longest)
            target = values - self.mean - other_bias.index_select(0, cols)  # (B*L,)
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
            self.advance(n_rows, self.n_users + self.n_items)
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



class ImplicitALS(ALSBase):
    """Weighted matrix factorisation of who rated what (Hu, Koren & Volinsky 2008): scores that rank movies."""

    mode = "implicit"
    config_class = ImplicitALSConfig
    config: ImplicitALSConfig

    def __init__(self, config: ImplicitALSConfig, n_users: int, n_items: int, rating_values: tuple[float, ...]):
        super().__init__(config, n_users, n_items, rating_values)
        # No offset in the implicit model: with mean and biases at 0 the shared formula is u . v.
        self.mean.zero_()

    @property
    def kind(self) -> str:
        # Fitted preferences (~0..1 for who would rate a movie), not stars.
        return "rank"

    def fit_start(self, train: RatingMatrix, generator: torch.Generator) -> None:
        super().fit_start(train, generator)
        self.mean.zero_()

    @torch.no_grad()
    def fold_in_factors(self, items: torch.Tensor, ratings: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """A new user's vector (d,) and bias (): the user half-step's closed form with the movies held fixed,
        and bias 0 (so :meth:`fold_in` scores ``V x``)."""
        items = items.to(self.device, torch.int64)
        conf = self._confidence(ratings.to(self.device, torch.float32)).unsqueeze(0)  # (1, n)
        V = self.item_factors
        x, _, _ = self._implicit_system(self._implicit_shared(V), V[items].unsqueeze(0), conf, conf - 1.0)
        return x[0], torch.zeros((), device=self.device)  # (d,), ()

    def train_epoch(self, train: RatingMatrix, generator: torch.Generator) -> dict[str, float]:
        transposed, user_plan, item_plan = self._prepare(train)
        U, V = self.user_factors, self.item_factors
        self._implicit_half_step(train, user_plan, V, U, with_error=False)
        weighted = self._implicit_half_step(transposed, item_plan, U, V)
        objective = self.config.lam / 2 * weighted + self._penalty()
        # Per training rating, as the explicit loss, although every pair of the matrix is in the sum.
        return {"loss": float(objective) / train.nnz}

    def _confidence(self, stars: torch.Tensor) -> torch.Tensor:
        """``c = 1 + alpha * f(stars)`` of rated pairs, (n,) -> (n,), a new tensor."""
        f = stars if self.config.confidence == "stars" else torch.ones_like(stars)
        return f.mul(self.config.alpha).add_(1.0)

    def _implicit_system(
        self, shared: torch.Tensor, feats: torch.Tensor, conf: torch.Tensor, weight: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Each row's ``x = (lam Y^T C_r Y + tau I)^-1 lam Y^T C_r p_r``, where
        ``Y^T C_r Y = Y^T Y + Y_r^T (C_r - I) Y_r``.

        ``shared`` (d, d) is ``lam Y^T Y + tau I`` over every column; ``feats`` (B, L, d) the vectors
        ``Y_r`` of the columns each row rated, ``conf`` (B, L) their confidences ``c`` and ``weight`` (B, L)
        their ``c - 1``, both 0 on padding. Returns ``x`` (B, d), the system matrix (B, d, d) and
        ``lam Y^T C_r p_r`` (B, d).
        """
        lam = self.config.lam
        # C - I is zero on unrated columns, so only the rated ones add to Y^T (C - I) Y; the preference is
        # 1 exactly there, so Y^T C p = Y_r^T c_r. Padding has c - 1 = 0 and c = 0: it adds nothing.
        system = torch.baddbmm(shared, feats.transpose(1, 2), feats * weight.unsqueeze(-1), alpha=lam)  # (B, d, d)
        rhs = (feats.transpose(1, 2) @ conf.unsqueeze(-1)).squeeze(-1).mul_(lam)  # (B, d)
        # Symmetric positive definite (tau > 0): Cholesky; cholesky_ex does not synchronise with the device.
        chol, _ = torch.linalg.cholesky_ex(system)
        x = torch.cholesky_solve(rhs.unsqueeze(-1), chol).squeeze(-1)  # (B, d)
        return x, system, rhs

    def _implicit_shared(self, other_factors: torch.Tensor) -> torch.Tensor:
        """``lam Y^T Y + tau I`` (d, d): every row's share of the normal equations from all columns."""
        d = other_factors.shape[1]
        eye = torch.eye(d, dtype=other_factors.dtype, device=other_factors.device)
        return torch.addmm(eye, other_factors.T, other_factors, beta=self.config.tau, alpha=self.config.lam)

    @torch.no_grad()
    def _implicit_half_step(
        self, matrix: RatingMatrix, plan: _Plan, other_factors: torch.Tensor, factors: torch.Tensor,
        with_error: bool = True,
    ) -> torch.Tensor:
        """Solve every row's vector with the other side fixed; returns the new weighted
        squared error over every pair of the matrix, rated or not (0 unless ``with_error``)."""
        d = factors.shape[1]
        device = matrix.device
        lam, tau = self.config.lam, self.config.tau
        # Rows with no ratings have p = 0 everywhere: their minimiser is exactly 0.
        factors[plan.empty] = 0.0
        # The unrated pairs' share of every row's normal equations: one (d, d) product per half-step.
        shared = self._implicit_shared(other_factors)  # (d, d)
        # sum_cols c (p - x.y)^2 = sum_r c - 2 x.Y^T C p + x^T Y^T C Y x per row: the first term is the same
        # every half-step, the rest is read off the normal equations, no pass over the unrated pairs.
        total = self._confidence(matrix.values).sum(dtype=torch.float64) if with_error else None
        for rows, longest in plan.groups:
            n_rows = rows.shape[0]
            mask, cols, values = self._gather(matrix, rows, longest)
            real = mask.to(values.dtype).view(n_rows, longest)  # (B, L) 1 for a rating, 0 for padding
            f = values.view(n_rows, longest) * real if self.config.confidence == "stars" else real  # (B, L)
            weight = f * self.config.alpha  # (B, L) c - 1, 0 on padding
            feats = other_factors.index_select(0, cols).view(n_rows, longest, d)  # (B, L, d)
            x, system, rhs = self._implicit_system(shared, feats, weight + real, weight)
            factors[rows] = x
            self.advance(n_rows, self.n_users + self.n_items)
            if total is None:
                continue
            # With Y^T C Y = (system - tau I) / lam and Y^T C p = rhs / lam; summed in float64 because the
            # terms nearly cancel.
            t = torch.bmm(system, x.unsqueeze(-1)).squeeze(-1).sub_(rhs, alpha=2.0).sub_(x, alpha=tau)  # (B, d)
            total += (x.double() * t.double()).sum() / lam
        return total if total is not None else torch.zeros((), dtype=torch.float64, device=device)
