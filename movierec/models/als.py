"""Latent factors trained by alternating least squares: on the stars (:class:`ExplicitALS`, mode ``explicit``,
the default) or on who rated what (:class:`ImplicitALS`, mode ``implicit``). Two algorithms, two classes
on one base (:class:`ALSBase`), each with its own config and fixed defaults.

**Explicit**. Predicted stars for user ``m`` and movie ``n``: ``mean + u_m . v_n + b_m + b_n``,
where ``mean`` is the training mean, fixed before the first iteration (a constant offset: the objective below is then
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

    lam/2 * sum_(all m,n) c_mn (p_mn - u_m . v_n)^2 + sum_m tau_m/2 |u_m|^2 + sum_n tau_n/2 |v_n|^2

where each row's penalty is ``tau_r = tau * (1 + n_r)^reg_exponent`` for its ``n_r`` ratings (frequency-scaled
L2 as in Rendle, Krichene, Zhang & Koren 2022; exponent 0, the default, is one ``tau`` for all).

There is no mean and no bias (both stay 0, so the shared prediction formula is exactly ``u_m . v_n``), the
scores only order movies (kind ``"rank"``). A user's exact minimiser is
``(lam V^T C_m V + tau_m I)^-1 lam V^T C_m p_m``, and ``V^T C_m V = V^T V + V^T (C_m - I) V``: the first term
is one (d, d) product shared by everyone, the second only involves the movies the user rated, so a
half-step never touches the dense users x movies matrix. ``solver="cholesky"`` solves each row exactly in
the padded batches of the explicit half-step (``d^2`` work per rating); ``solver="cg"``, the default, takes
``cg_steps`` conjugate-gradient steps per row from its current vector (Takacs, Pilaszy & Tikk 2011; as
implicit does), whose products with ``V^T C_m V`` read each rating's vector twice (``d`` work per rating),
over contiguous blocks of at most ``chunk_size`` ratings (fewer on the CPU, :data:`CG_CPU_BLOCK_BYTES`, so that
a block's vectors, gathered once, are read from the cache by all its products). Warm-started and never raising a row's
quadratic, it reaches the exact solver's rankings within a few iterations at a fraction of the cost.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from types import ModuleType

import numpy as np
import torch

from movierec.data.ratings import RatingMatrix
from movierec.errors import MovierecError
from movierec.kinds import ScoreKind
from movierec.models import kernels
from movierec.models.base import ModelConfig, among, between, option
from movierec.models.factors import FactorModel, FactorTrainer, ridge_solve

# Rows in one solve group differ in length by at most this factor, so padding wastes < 25 %.
GROWTH = 1.25
# Bytes of gathered vectors per conjugate-gradient block on the CPU for each thread torch uses (16,384 ratings at
# 64 factors on one thread, at most chunk_size): read 2 x (cg_steps + 1) times per half-step, fast from the cache.
# At ML-10M's size on one thread 4x larger or smaller blocks were slower (the cache misses, or torch's per-call
# overhead), at 16 and 64 factors alike; on two threads 8 MiB blocks took 1.38-1.43 s an iteration, 4 MiB 1.58-1.68 s
# and 16 MiB 1.46-1.80 s (each parallel product also pays for starting its threads).
CG_CPU_BLOCK_BYTES = 4 << 20
CONFIDENCES = ("stars", "binary")
SOLVERS = ("cg", "cholesky")


@dataclass(frozen=True)
class ALSConfig(ModelConfig):
    """What both ALS algorithms are configured by; each subclass fixes its own defaults (tuned on ml-100k's
    u1, confirmed on u1..u5: explicit for RMSE, implicit for NDCG@10)."""

    factors: int = option(16, "Latent factors per user and movie.", search=between(4, 128, log=True))
    # Not tuned: a solve depends on the penalties only through tau / lambda (and gamma / lambda).
    lam: float = option(1.0, "Weight of the squared errors (lambda).", "--lambda")
    tau: float = option(12.0, "L2 penalty on the user and movie vectors.", search=between(0.5, 100.0, log=True))
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
    gamma: float = option(2.0, "L2 penalty on the user and movie biases.", search=between(0.1, 50.0, log=True))

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.gamma <= 0:
            raise MovierecError("als needs --gamma above 0, or a solve can be singular.")


@dataclass(frozen=True)
class ImplicitALSConfig(ALSConfig):
    # More factors and ~3x the penalty rank best: on u1 NDCG@10 is 0.464 at tau 35 against 0.387 at the
    # explicit 12 (64 factors; 0.449 with 16). One penalty for every row stays the default: on validation
    # slices of ml-100k and four differently shaped subsets of it (benchmarks/implicit_als.py select) it was
    # the most even choice (worst set 0.96 of its best), ahead of penalties growing with the row's ratings,
    # tau (1 + n)^nu (best 0.92 at nu 0.25), or with its weight in the loss, tau (n + n_other)^nu (0.95).
    factors: int = option(64, "Latent factors per user and movie.", search=between(16, 256, log=True))
    tau: float = option(35.0, "L2 penalty on the user and movie vectors (x (1 + ratings)^--reg-exponent).",
                        search=between(1.0, 300.0, log=True))
    alpha: float = option(1.0, "A rated movie's confidence is 1 + alpha x f(stars).",
                          search=between(0.05, 20.0, log=True))
    confidence: str = option(
        "stars", "f(stars) in the confidence: the stars (ranks best), or binary (1 for any rating).",
        choices=CONFIDENCES, search=among(*CONFIDENCES),
    )
    reg_exponent: float = option(
        0.0, "Each user's and movie's penalty is tau x (1 + its number of ratings)^this (0: tau for all).",
        search=between(0.0, 1.0),
    )
    solver: str = option(
        "cg", "How each half-step solves the rows: cg (a few conjugate-gradient steps, fast) or cholesky (exact).",
        choices=SOLVERS,
    )
    cg_steps: int = option(3, "Conjugate-gradient steps per row and half-step (--solver cg).")

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.alpha < 0:
            raise MovierecError("als needs --alpha of at least 0.")
        if self.reg_exponent < 0:
            raise MovierecError("als needs --reg-exponent of at least 0.")
        if self.cg_steps < 1:
            raise MovierecError("als needs --cg-steps of at least 1.")

    def row_penalties(self, counts: torch.Tensor) -> torch.Tensor:
        """Each row's L2 penalty from its number of ratings: ``tau x (1 + count)^reg_exponent``, (R,) -> (R,)."""
        return counts.to(torch.float32).add(1.0).pow_(self.reg_exponent).mul_(self.tau)


class _Plan:
    """How one side's rows are grouped for batched solves; depends only on the matrix's shape."""

    def __init__(self, matrix: RatingMatrix, chunk_size: int, width: int, block_size: int | None = None):
        counts = matrix.row_counts()  # (R,)
        order = torch.argsort(counts, stable=True)  # (R,) shortest rows first
        sorted_counts = counts[order]
        self.empty = order[sorted_counts == 0]  # rows with no ratings: their minimiser is exactly 0
        # Contiguous row ranges of at most block_size (<= chunk_size) ratings each (a longer row is alone in its
        # block): the conjugate-gradient solver's unit of work.
        block_size = min(block_size or chunk_size, chunk_size)
        bounds: list[tuple[int, int]] = []
        ends = matrix.indptr[1:].cpu()  # (R,)
        first = 0
        while first < ends.shape[0]:
            limit = (int(matrix.indptr[first]) if first else 0) + block_size
            last = max(first + 1, int(torch.searchsorted(ends, limit, right=True)))
            bounds.append((first, last))
            first = last
        # Every block's ratings are numbered from 0 in the products: one shared range serves them all.
        widest = max((int(matrix.indptr[last] - matrix.indptr[first]) for first, last in bounds), default=0)
        local = torch.arange(widest, device=matrix.device)  # (nnz of the largest block,)
        local32 = local.int() if widest < 2**31 else local
        self.blocks = [_Block(matrix, first, last, local, local32) for first, last in bounds]
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


class _Block:
    """Rows ``[first, last)`` of a matrix, built once per fit. The conjugate-gradient products gather the
    block's rated vectors once into a dense (nnz_b, d) array and then read it in order: as sparse CSR
    tensors whose row ``r`` holds positions ``crow[r]..crow[r+1]`` of that array (``(n, nnz_b)``)."""

    def __init__(self, matrix: RatingMatrix, first: int, last: int, local: torch.Tensor, local32: torch.Tensor):
        self.first, self.last = first, last
        self.start, self.stop = int(matrix.indptr[first]), int(matrix.indptr[last])
        self.columns = matrix.indices[self.start:self.stop]  # (nnz_b,) the rated columns, in entry order
        n_b = self.stop - self.start
        self.crow = matrix.indptr[first:last + 1] - self.start  # (n+1,)
        self.local = local[:n_b]  # (nnz_b,) 0, 1, ..., nnz_b - 1
        self.shape = (last - first, n_b)
        # The CPU's products read 64-bit indices (faster for the sampled one); on the GPU the sparse x dense
        # product reads 32-bit ones.
        self.crow32 = self.crow.to(local32.dtype)
        self.local32 = local32[:n_b]

    def slice(self, values: torch.Tensor) -> torch.Tensor:
        """The block's share of a whole matrix's per-rating values: (nnz,) -> (nnz_b,)."""
        return values[self.start:self.stop]

    def sparse(self, values: torch.Tensor, wide: bool = False) -> torch.Tensor:
        """(nnz_b,) values -> (n, nnz_b) sparse CSR over the gathered vectors (64-bit indices if ``wide``)."""
        crow, col = (self.crow, self.local) if wide else (self.crow32, self.local32)
        with warnings.catch_warnings():  # torch's one-time "CSR support is in beta" notice is not for users
            warnings.simplefilter("ignore", UserWarning)
            return torch.sparse_csr_tensor(crow, col, values, self.shape, check_invariants=False)


class ALSBase(FactorModel):
    """Latent factor model fitted by alternating least squares, batched on the device. Each subclass's trainer
    (on :class:`ALSTrainer`) supplies its half-step (every user, or every movie, solved with the other side
    fixed)."""

    name = "als"
    config_class = ALSConfig
    config: ALSConfig

    def __init__(self, config: ALSConfig, n_users: int, n_items: int, rating_values: tuple[float, ...]):
        super().__init__(config, n_users, n_items, rating_values)
        # Closed-form updates, no gradients: frozen parameters still save and load with the state_dict.
        self.requires_grad_(False)
        # Only the movies' starting point matters: the first half-step solves the users from it.
        self.item_factors.normal_(0.0, config.init_std)


class ALSTrainer(FactorTrainer):
    """Alternating least squares: each iteration solves every user with the movies fixed, then every movie with
    the users fixed. Made, it lays out both sides' solves once (:class:`_Plan`: the movies x users matrix and
    the rows' groups and blocks); subclasses supply the iteration."""

    model: ALSBase

    def __init__(self, model: ALSBase, train: RatingMatrix, generator: torch.Generator):
        super().__init__(model, train, generator)
        self.config = config = model.config
        width, chunk = config.factors + 2, config.chunk_size
        self.transposed = train.transposed()
        """The training ratings movies x users: the rows of the movies' half-step."""
        # On the CPU a conjugate-gradient block's gathered vectors should stay in the cache for all its
        # products; a GPU wants few, large products.
        per_block = CG_CPU_BLOCK_BYTES * torch.get_num_threads()
        block = max(1, per_block // (4 * config.factors)) if train.device.type == "cpu" else chunk
        self.user_plan = _Plan(train, chunk, width, block)
        self.item_plan = _Plan(self.transposed, chunk, width, block)

    def _penalty(self) -> torch.Tensor:
        """``tau/2 (|U|^2 + |V|^2)``, in float64."""
        U, V = self.model.user_factors, self.model.item_factors
        return self.model.config.tau / 2 * (U.double().square().sum() + V.double().square().sum())

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

    def trainer(self, train: RatingMatrix, generator: torch.Generator) -> ExplicitALSTrainer:
        return ExplicitALSTrainer(self, train, generator)


class ExplicitALSTrainer(ALSTrainer):
    """Explicit ALS: each half-step solves every row's biased ridge regression exactly, in padded batches."""

    model: ExplicitALS

    def train_epoch(self) -> dict[str, float]:
        train, transposed, user_plan, item_plan = self.train, self.transposed, self.user_plan, self.item_plan
        model = self.model
        U, V, b_user, b_item = model.user_factors, model.item_factors, model.user_bias, model.item_bias
        cfg = self.config
        self.half_step(train, user_plan, V, b_item, U, b_user, with_error=False)
        sse = self.half_step(transposed, item_plan, U, b_user, V, b_item)
        objective = (
            cfg.lam / 2 * sse
            + self._penalty()
            + cfg.gamma / 2 * (b_user.double().square().sum() + b_item.double().square().sum())
        )
        return {"loss": float(objective) / train.nnz, "rmse": float(sse / train.nnz) ** 0.5}

    @torch.no_grad()
    def half_step(
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
            target = values - self.model.mean - other_bias.index_select(0, cols)  # (B*L,)
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
            self.advance(n_rows, self.model.n_users + self.model.n_items)
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

    kind = ScoreKind.RANK  # fitted preferences (~0..1 for who would rate a movie), not stars

    def trainer(self, train: RatingMatrix, generator: torch.Generator) -> ImplicitALSTrainer:
        return ImplicitALSTrainer(self, train, generator)

    @torch.no_grad()
    def fold_in_factors(self, items: torch.Tensor, ratings: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """A new user's vector (d,) and bias (): the user half-step's exact closed form with the movies held
        fixed, and the penalty the rule gives a user with this many ratings; bias 0 (so :meth:`fold_in`
        scores ``V x``)."""
        items = items.to(self.device, torch.int64)
        conf = self._confidence(ratings.to(self.device, torch.float32)).unsqueeze(0)  # (1, n)
        penalty = self.config.row_penalties(torch.tensor([items.shape[0]], device=self.device))  # (1,)
        V = self.item_factors
        x, _, _ = self._cholesky_rows(self._implicit_shared(V), V[items].unsqueeze(0), conf, conf - 1.0, penalty)
        return x[0], torch.zeros((), device=self.device)  # (d,), ()

    def _confidence(self, stars: torch.Tensor) -> torch.Tensor:
        """``c = 1 + alpha * f(stars)`` of rated pairs, (n,) -> (n,), a new tensor."""
        f = stars if self.config.confidence == "stars" else torch.ones_like(stars)
        return f.mul(self.config.alpha).add_(1.0)

    def _cholesky_rows(
        self, shared: torch.Tensor, feats: torch.Tensor, conf: torch.Tensor, weight: torch.Tensor,
        penalty: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Each row's exact ``x = (lam Y^T C_r Y + tau_r I)^-1 lam Y^T C_r p_r``, where
        ``Y^T C_r Y = Y^T Y + Y_r^T (C_r - I) Y_r``.

        ``shared`` (d, d) is ``lam Y^T Y`` over every column; ``feats`` (B, L, d) the vectors ``Y_r`` of the
        columns each row rated, ``conf`` (B, L) their confidences ``c`` and ``weight`` (B, L) their ``c - 1``,
        both 0 on padding; ``penalty`` (B,) each row's ``tau_r``. Returns ``x`` (B, d), the system matrix
        (B, d, d) and ``lam Y^T C_r p_r`` (B, d).
        """
        lam = self.config.lam
        # C - I is zero on unrated columns, so only the rated ones add to Y^T (C - I) Y; the preference is
        # 1 exactly there, so Y^T C p = Y_r^T c_r. Padding has c - 1 = 0 and c = 0: it adds nothing.
        system = torch.baddbmm(shared, feats.transpose(1, 2), feats * weight.unsqueeze(-1), alpha=lam)  # (B, d, d)
        system.diagonal(dim1=1, dim2=2).add_(penalty.unsqueeze(1))
        rhs = (feats.transpose(1, 2) @ conf.unsqueeze(-1)).squeeze(-1).mul_(lam)  # (B, d)
        # Symmetric positive definite (tau > 0): Cholesky; cholesky_ex does not synchronise with the device.
        chol, _ = torch.linalg.cholesky_ex(system)
        x = torch.cholesky_solve(rhs.unsqueeze(-1), chol).squeeze(-1)  # (B, d)
        return x, system, rhs

    def _implicit_shared(self, other_factors: torch.Tensor) -> torch.Tensor:
        """``lam Y^T Y`` (d, d): every row's share of the normal equations from all columns."""
        return (other_factors.T @ other_factors).mul_(self.config.lam)


class ImplicitALSTrainer(ALSTrainer):
    """Implicit ALS (weighted matrix factorisation): each half-step solves every row's system exactly
    (``solver="cholesky"``) or takes a few conjugate-gradient steps from where the row is (``"cg"``)."""

    model: ImplicitALS

    def __init__(self, model: ImplicitALS, train: RatingMatrix, generator: torch.Generator):
        super().__init__(model, train, generator)
        model.mean.zero_()  # no offset in the implicit model

    def train_epoch(self) -> dict[str, float]:
        train, transposed, user_plan, item_plan = self.train, self.transposed, self.user_plan, self.item_plan
        U, V = self.model.user_factors, self.model.item_factors
        self.half_step(train, user_plan, V, U, with_error=False)
        weighted = self.half_step(transposed, item_plan, U, V)
        objective = self.config.lam / 2 * weighted + self._penalty_of(train, transposed)
        # Per training rating, as the explicit loss, although every pair of the matrix is in the sum.
        return {"loss": float(objective) / train.nnz}

    def _penalty_of(self, train: RatingMatrix, transposed: RatingMatrix) -> torch.Tensor:
        """``sum_r tau_r/2 |x_r|^2`` over users and movies, each with its own penalty, in float64."""
        total = torch.zeros((), dtype=torch.float64, device=train.device)
        for matrix, factors in ((train, self.model.user_factors), (transposed, self.model.item_factors)):
            penalty = self.config.row_penalties(matrix.row_counts()).double()  # (R,)
            total += (penalty * factors.double().square().sum(1)).sum() / 2
        return total

    def _cg_half_step(
        self, matrix: RatingMatrix, plan: _Plan, other_factors: torch.Tensor, factors: torch.Tensor,
        with_error: bool,
    ) -> torch.Tensor | None:
        """Every row's system of :meth:`_cholesky_rows`, approximately: ``cg_steps`` conjugate-gradient steps
        from the row's current vector (as Takacs, Pilaszy & Tikk 2011 and implicit do), over contiguous
        blocks of rows (:class:`_Plan`). Returns the new weighted squared error (None unless ``with_error``)."""
        lam = self.config.lam
        shared = self.model._implicit_shared(other_factors)  # (d, d)
        penalties = self.config.row_penalties(matrix.row_counts())  # (R,)
        confidence = self.model._confidence(matrix.values)  # (nnz,) c
        weight = (confidence - 1.0).mul_(lam)  # (nnz,) lam (c - 1)
        total = confidence.sum(dtype=torch.float64) if with_error else None
        confidence.mul_(lam)  # (nnz,) lam c
        compiled = kernels.load(matrix.device)
        if compiled is not None:
            return self._cg_compiled(compiled, matrix, other_factors, shared, weight, confidence, penalties,
                                     factors, total)
        for block in plan.blocks:
            rows = slice(block.first, block.last)
            x, residual, x_rhs = self._cg_block(block, other_factors, shared, weight, confidence,
                                                penalties[rows].unsqueeze(1), factors[rows], with_error)
            factors[rows] = x
            self.advance(block.last - block.first, self.model.n_users + self.model.n_items)
            if total is not None:
                # x.(lam Y^T C Y x) - 2 x.rhs = x.(A x - tau_r x) - 2 x.rhs with A x = rhs - residual (CG keeps
                # the residual up to date): -x.rhs - x.residual - tau_r |x|^2.
                rest = (x.double() * residual.double()).sum() + (
                    penalties[rows].double() * x.double().square().sum(1)).sum()
                total -= (x_rhs + rest) / lam
        return total

    def _cg_compiled(
        self, compiled: ModuleType, matrix: RatingMatrix, other_factors: torch.Tensor, shared: torch.Tensor,
        weight: torch.Tensor, confidence: torch.Tensor, penalties: torch.Tensor, factors: torch.Tensor,
        total: torch.Tensor | None,
    ) -> torch.Tensor | None:
        """:meth:`_cg_half_step`'s steps in one compiled loop per row (the ``fast`` extra), each row's vector
        read from the other side's table as it goes (as implicit does), over slices of rows of at most
        ``chunk_size`` ratings, each through :func:`kernels.run`, so Ctrl-C stops it at once. Same steps from
        the same start as :meth:`_cg_block`; ``factors`` are updated in place."""
        indptr = matrix.indptr.numpy()
        arrays = (indptr, matrix.indices.numpy(), weight.numpy(), confidence.numpy(),
                  other_factors.contiguous().numpy(), shared.contiguous().numpy(), penalties.numpy())
        rows = factors.numpy()  # shares factors' memory: the loop writes the new vectors there
        with_error = total is not None
        errors = 0.0
        n_rows, first = rows.shape[0], 0
        while first < n_rows:
            last = max(first + 1, int(np.searchsorted(indptr, indptr[first] + self.config.chunk_size, "right")) - 1)
            last = min(last, n_rows)
            errors += float(kernels.run(compiled.cg_rows, *arrays, rows, first, last, self.config.cg_steps,
                                        with_error).sum())
            self.advance(last - first, self.model.n_users + self.model.n_items)
            first = last
        return None if total is None else total - errors / self.config.lam

    def _cg_block(
        self, block: _Block, other_factors: torch.Tensor, shared: torch.Tensor, weight: torch.Tensor,
        confidence: torch.Tensor, penalty: torch.Tensor, start: torch.Tensor, with_error: bool,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """``cg_steps`` CG steps on one block's rows from ``start`` (n, d). No (d, d) matrix per row is
        formed: ``A p = lam Y^T Y p + lam Y_r^T ((c - 1) * Y_r p) + tau_r p`` is one sampled product (the
        dots ``y . p`` at the rated pairs only) and one sparse x dense product, both over the block's rated
        vectors ``Y_r``, gathered once. ``weight`` and ``confidence`` (nnz,) are ``lam (c - 1)`` and ``lam c``
        of the whole matrix, ``penalty`` (n, 1). Returns ``x``, the residual ``rhs - A x`` (right-hand side
        ``rhs = lam Y^T C p``), each (n, d), and (``with_error``) ``x . rhs`` in float64."""
        # Read in order, 2 x (cg_steps + 1) times, from the cache: the other side's vectors are scattered
        # over a table that, for the movies' half-step at ML-10M's size, is larger than the cache.
        feats = other_factors.index_select(0, block.columns)  # (nnz_b, d)
        w = block.slice(weight)  # (nnz_b,)
        pattern = block.sparse(w, wide=True)
        # On the CPU torch's own sparse x dense kernel (the one behind reduce="sum") reads the gathered vectors
        # ~1.5x faster than MKL's; it exists only there.
        on_cpu = feats.device.type == "cpu"

        def dots_with(p: torch.Tensor) -> torch.Tensor:  # (n, d) -> (nnz_b,) y . p at each rated pair
            return torch.sparse.sampled_addmm(pattern, p, feats.T, beta=0.0).values()

        def times_system(p: torch.Tensor, minus: torch.Tensor | None = None) -> torch.Tensor:  # (n, d) -> (n, d)
            dots = dots_with(p).mul_(w)  # (nnz_b,) w y.p
            if minus is not None:  # Y_r^T (minus - w y.p): the right-hand side in the same product
                dots = minus - dots
            out = (torch.sparse.mm(block.sparse(dots, wide=True), feats, "sum") if on_cpu
                   else torch.sparse.mm(block.sparse(dots), feats))  # (n, d)
            sign = -1.0 if minus is not None else 1.0
            return out.addmm_(p, shared, alpha=sign).addcmul_(penalty, p, value=sign)

        x = start.clone()  # (n, d)
        # rhs - A x in one pass over the block: Y_r^T (lam c - lam (c - 1) y.x) - lam Y^T Y x - tau_r x.
        residual = times_system(x, minus=block.slice(confidence))  # (n, d)
        direction = residual.clone()
        rs = residual.square().sum(1, keepdim=True)  # (n, 1)
        for _ in range(self.config.cg_steps):
            a_dir = times_system(direction)  # (n, d)
            # The system is positive definite with every eigenvalue >= tau_r and |direction| >= |residual|,
            # so curvature >= tau_r * rs: a converged row (rs = 0) divides 0 by the floor and stays put.
            curvature = (direction * a_dir).sum(1, keepdim=True)  # (n, 1)
            step = rs / curvature.clamp_min(1e-30)  # (n, 1)
            x.addcmul_(step, direction)
            residual.addcmul_(step, a_dir, value=-1.0)
            rs_new = residual.square().sum(1, keepdim=True)
            direction.mul_(rs_new / rs.clamp_min(1e-30)).add_(residual)
            rs = rs_new
        if not with_error:
            return x, residual, None
        # x.rhs = sum lam c y.x only needs the dots at the rated pairs.
        x_rhs = (dots_with(x).double() * block.slice(confidence).double()).sum()
        return x, residual, x_rhs

    @torch.no_grad()
    def half_step(
        self, matrix: RatingMatrix, plan: _Plan, other_factors: torch.Tensor, factors: torch.Tensor,
        with_error: bool = True,
    ) -> torch.Tensor:
        """Solve every row's vector with the other side fixed (exactly, or a few CG steps from where it
        is); returns the new weighted squared error over every pair of the matrix, rated or not (0 unless
        ``with_error``)."""
        d = factors.shape[1]
        device = matrix.device
        cfg = self.config
        # Rows with no ratings have p = 0 everywhere: their minimiser is exactly 0 (and CG keeps it there).
        factors[plan.empty] = 0.0
        if cfg.solver == "cg":
            total = self._cg_half_step(matrix, plan, other_factors, factors, with_error)
            return total if total is not None else torch.zeros((), dtype=torch.float64, device=device)
        # The unrated pairs' share of every row's normal equations: one (d, d) product per half-step.
        shared = self.model._implicit_shared(other_factors)  # (d, d)
        # sum_cols c (p - x.y)^2 = sum_r c - 2 x.Y^T C p + x^T Y^T C Y x per row: the first term is the same
        # every half-step, the rest is read off the normal equations, no pass over the unrated pairs.
        total = self.model._confidence(matrix.values).sum(dtype=torch.float64) if with_error else None
        for rows, longest in plan.groups:
            n_rows = rows.shape[0]
            mask, cols, values = self._gather(matrix, rows, longest)
            real = mask.to(values.dtype).view(n_rows, longest)  # (B, L) 1 for a rating, 0 for padding
            f = values.view(n_rows, longest) * real if cfg.confidence == "stars" else real  # (B, L)
            weight = f * cfg.alpha  # (B, L) c - 1, 0 on padding
            feats = other_factors.index_select(0, cols).view(n_rows, longest, d)  # (B, L, d)
            penalty = cfg.row_penalties(mask.sum(1))  # (B,)
            x, system, rhs = self.model._cholesky_rows(shared, feats, weight + real, weight, penalty)
            factors[rows] = x
            self.advance(n_rows, self.model.n_users + self.model.n_items)
            if total is None:
                continue
            # With lam Y^T C Y x = A x - tau_r x and lam Y^T C p = rhs; summed in float64 because the terms
            # nearly cancel.
            t = torch.bmm(system, x.unsqueeze(-1)).squeeze(-1).sub_(rhs, alpha=2.0)  # (B, d)
            t.addcmul_(penalty.unsqueeze(1), x, value=-1.0)
            total += (x.double() * t.double()).sum() / cfg.lam
        return total if total is not None else torch.zeros((), dtype=torch.float64, device=device)
