"""Matrix factorization with biases, trained by mini-batch gradient descent.

Predicted stars for user ``u`` and movie ``i``: ``mean + p_u . q_i + b_u + b_i``. The objective is the
Funk / Surprise SVD one, summed over the training ratings::

    sum_(u,i) (r_ui - pred_ui)^2 + reg * (|p_u|^2 + |q_i|^2 + b_u^2 + b_i^2)

so a user or movie is penalised once per rating it has (frequency-weighted L2). A mini-batch step
follows the sum of its ratings' gradients, so ``lr`` means the same thing at every batch size.

A user or movie with ``k`` ratings in one batch would then take a step of ``2 lr k (1 + reg)`` times
its bias error: past 1 it overshoots, past 2 it diverges. With ``lr = 0.01`` that is ~95 ratings in
a batch, which one very active user reaches (one with 2,600 of a release's 100,000 ratings has ~100 in
every batch of 4,096), whatever the rest of the data. So with SGD each row's summed gradient is divided
by ``max(1, 2 lr k (1 + reg))``: nothing changes for a row with few ratings in the batch, and a heavy
row takes the largest step that does not overshoot (Adam normalises its steps by itself).

:class:`~movierec.models.factors.FactorModel` holds what this model shares with ALS (same parameters,
same predictions, the closed-form fold-in); only training differs.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from movierec.data.ratings import RatingMatrix
from movierec.errors import MovierecError
from movierec.models.base import ModelConfig, option
from movierec.models.factors import FactorModel

OPTIMIZERS = ("adam", "sgd")


@dataclass(frozen=True)
class MFConfig(ModelConfig):
    factors: int = option(32, "Latent factors per user and movie.")
    epochs: int = option(20, "Passes over the training ratings.")
    lr: float = option(0.01, "Step size (SGD: per rating's gradient; Adam: per step).")
    reg: float = option(0.065, "L2 penalty per rating on the factors and biases it touches.")
    batch_size: int = option(4096, "Ratings per step; each step follows the sum of their gradients.")
    optimizer: str = option("sgd", "Gradient method.", choices=OPTIMIZERS)
    init_range: float = option(0.05, "Factors start uniform in [0, init_range).")

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.factors < 1 or self.batch_size < 1:
            raise MovierecError("mf needs --factors and --batch-size of at least 1.")
        if self.lr <= 0 or self.reg < 0 or self.init_range < 0:
            raise MovierecError("mf needs --lr above 0 and --reg and --init-range of at least 0.")


class MatrixFactorization(FactorModel):
    """Biased matrix factorization fitted by SGD or Adam on shuffled mini-batches of ratings."""

    name = "mf"
    mode = "explicit"
    config_class = MFConfig
    config: MFConfig

    def __init__(self, config: MFConfig, n_users: int, n_items: int, rating_values: tuple[float, ...]):
        super().__init__(config, n_users, n_items, rating_values)
        # Gradients are written out in train_epoch (autograd's graph costs ~3x the step itself here).
        self.requires_grad_(False)
        # Small positive factors: every dot product starts near zero, so the first predictions are
        # the mean and the biases, and no two users start identical.
        self.user_factors.uniform_(0.0, config.init_range)
        self.item_factors.uniform_(0.0, config.init_range)
        self._adam: _Adam | None = None  # Adam's moments: training state only (SGD has none)

    def fit_start(self, train: RatingMatrix, generator: torch.Generator) -> None:
        super().fit_start(train, generator)
        self._adam = _Adam(list(self.parameters()), self.config.lr) if self.config.optimizer == "adam" else None

    def fold_in_penalties(self, n_ratings: int) -> tuple[float, float, float]:
        # The objective penalises the user once per rating (reg * n on vector and bias) and has no 1/2
        # factors, so lam = 1 against ridge_solve's halves.
        return 1.0, self.config.reg * n_ratings, self.config.reg * n_ratings

    @torch.no_grad()
    def train_epoch(self, train: RatingMatrix, generator: torch.Generator) -> dict[str, float]:
        sgd = self.config.optimizer == "sgd"
        if not sgd and self._adam is None:  # training resumed on a model that did not go through fit_start
            self._adam = _Adam(list(self.parameters()), self.config.lr)
        order = torch.randperm(train.nnz, generator=generator, device=generator.device).to(train.device)
        # Shuffle once per epoch so each batch is a contiguous slice, not three gathers (index_select is
        # ~3x faster than x[order] on CPU).
        rows, cols, vals = (t.index_select(0, order) for t in (train.row_ids(), train.indices, train.values))
        reg, lr = self.config.reg, self.config.lr
        # Running sums stay on the device: one synchronisation per epoch, not per step.
        total_penalty = torch.zeros((), dtype=torch.float64, device=train.device)
        total_squared = torch.zeros((), dtype=torch.float64, device=train.device)
        d = self.user_factors.shape[1]
        # Per-batch rating counts of each user and movie; zeroed again after every batch, so O(batch).
        user_counts = torch.zeros(self.n_users, device=train.device)
        item_counts = torch.zeros(self.n_items, device=train.device)
        stable = 2 * lr * (1 + reg)  # a row's overshoot factor per rating in the batch
        for start in range(0, train.nnz, self.config.batch_size):
            stop = start + self.config.batch_size
            u, i, r = rows[start:stop], cols[start:stop], vals[start:stop]  # (b,)
            # index_select reads whole rows (~5x faster on CPU than x[u]); scatter_add_ with a broadcast
            # index writes them back faster than index_add_.
            u_rows, i_rows = u.unsqueeze(1).expand(-1, d), i.unsqueeze(1).expand(-1, d)  # (b, d) views
            p, q = self.user_factors.index_select(0, u), self.item_factors.index_select(0, i)  # (b, d)
            bu, bi = self.user_bias.index_select(0, u), self.item_bias.index_select(0, i)  # (b,)
            err = r - (self.mean + (p * q).sum(-1) + bu + bi)  # (b,)
            total_squared += err.square().sum()
            # Each dot product is one pass over the rows, without a (b, d) temporary.
            flat_p, flat_q = p.view(-1), q.view(-1)
            total_penalty += flat_p.dot(flat_p) + flat_q.dot(flat_q) + bu.dot(bu) + bi.dot(bi)
            self.advance(u.shape[0], train.nnz)
            # d/dparam of sum(err^2) + reg * (|p|^2 + |q|^2 + bu^2 + bi^2), one row per rating; a user
            # or movie rated twice in the batch gets the sum.
            if sgd:
                # The step -lr * scale * grad, written as a * own + c * other with per-rating (b,) factors:
                # two passes over each (b, d) block instead of six.
                su, si = _row_scale(user_counts, u, stable), _row_scale(item_counts, i, stable)  # (b,)
                own_u, own_i = su * (-2 * lr * reg), si * (-2 * lr * reg)  # (b,)
                cross_u, cross_i = su * err * (2 * lr), si * err * (2 * lr)  # (b,)
                step_p = torch.addcmul(p * own_u.unsqueeze(1), q, cross_u.unsqueeze(1))  # (b, d)
                step_q = torch.addcmul(q * own_i.unsqueeze(1), p, cross_i.unsqueeze(1))  # (b, d)
                # Only the touched rows move: the cost of a step is the batch's, not the tables'.
                self.user_factors.scatter_add_(0, u_rows, step_p)
                self.item_factors.scatter_add_(0, i_rows, step_q)
                self.user_bias.scatter_add_(0, u, own_u * bu + cross_u)
                self.item_bias.scatter_add_(0, i, own_i * bi + cross_i)
                continue
            e = err.unsqueeze(1)  # (b, 1)
            grads = [2 * (reg * p - e * q), 2 * (reg * q - e * p), 2 * (reg * bu - err), 2 * (reg * bi - err)]
            self._adam.step([(u_rows, grads[0]), (i_rows, grads[1]), (u, grads[2]), (i, grads[3])])
        squared = float(total_squared)
        objective = squared + reg * float(total_penalty)
        return {"loss": objective / train.nnz, "rmse": (squared / train.nnz) ** 0.5}


def _row_scale(counts: torch.Tensor, rows: torch.Tensor, stable: float) -> torch.Tensor:
    """``1 / max(1, stable * k)`` for each entry of ``rows`` (b,), where ``k`` is how often its row occurs in
    ``rows``. ``counts`` is an all-zero table of the rows and is left all-zero."""
    counts.index_add_(0, rows, torch.ones_like(rows, dtype=counts.dtype))
    scale = (counts[rows] * stable).clamp_(min=1.0).reciprocal_()  # (b,)
    counts[rows] = 0.0
    return scale


class _Adam:
    """Adam (Kingma & Ba, default betas and epsilon) over a few dense parameters (SGD's step is written out in
    :meth:`MatrixFactorization.train_epoch`, fused with the gradient).

    Written out instead of using ``torch.optim`` because constructing any ``torch.optim`` optimizer
    imports ``torch._dynamo``, about 1.3 s on a 2-core CPU: longer than a whole MovieLens-100K fit.
    """

    def __init__(self, params: list[torch.Tensor], lr: float,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8):
        self.params = params
        self.lr = lr
        self.betas = betas
        self.eps = eps
        self.steps = 0
        self.first = [torch.zeros_like(p) for p in params]
        self.second = [torch.zeros_like(p) for p in params]

    @torch.no_grad()
    def step(self, row_grads: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
        """One step; ``row_grads[k]`` = (index, gradients) of parameter k for ``scatter_add_``: the
        index has the gradients' shape and rows may repeat (their gradients add up)."""
        self.steps += 1
        b1, b2 = self.betas
        step_size = self.lr / (1 - b1**self.steps)
        root_correction = (1 - b2**self.steps) ** 0.5
        for p, m, v, (rows, grad) in zip(self.params, self.first, self.second, row_grads):
            # Adam's moments decay for every row at every step, so the gradient must be dense.
            full = torch.zeros_like(p).scatter_add_(0, rows, grad)
            m.lerp_(full, 1 - b1)
            v.mul_(b2).addcmul_(full, full, value=1 - b2)
            p.addcdiv_(m, v.sqrt().div_(root_correction).add_(self.eps), value=-step_size)
