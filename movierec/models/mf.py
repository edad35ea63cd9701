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

import numpy as np
import torch

from movierec.data.ratings import RatingMatrix
from movierec.errors import MovierecError
from movierec.models import kernels
from movierec.models.base import ModelConfig, between, option
from movierec.models.factors import FactorModel, FactorTrainer

OPTIMIZERS = ("adam", "sgd")
# Ratings per call of the compiled SGD loop: ~0.1 s of work, so Ctrl-C waits no longer than that.
COMPILED_RATINGS = 1 << 20
# Calls of the compiled SGD loop per epoch, at least (fewer only with fewer batches).
PROGRESS_STEPS = 16


@dataclass(frozen=True)
class MFConfig(ModelConfig):
    factors: int = option(32, "Latent factors per user and movie.", search=between(8, 256, log=True))
    epochs: int = option(20, "Passes over the training ratings.")
    lr: float = option(0.01, "Step size (SGD: per rating's gradient; Adam: per step).",
                       search=between(1e-3, 0.1, log=True))
    reg: float = option(0.065, "L2 penalty per rating on the factors and biases it touches.",
                        search=between(1e-3, 0.3, log=True))
    batch_size: int = option(4096, "Ratings per step; each step follows the sum of their gradients.")
    optimizer: str = option("sgd", "Gradient method.", choices=OPTIMIZERS)
    init_range: float = option(0.05, "Factors start uniform in [0, init_range).")

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.factors < 1 or self.batch_size < 1:
            raise MovierecError("--factors and --batch-size must be at least 1.")
        if self.lr <= 0 or self.reg < 0 or self.init_range < 0:
            raise MovierecError("--lr must be above 0, and --reg and --init-range at least 0.")


class MatrixFactorization(FactorModel):
    """Biased matrix factorization fitted by SGD or Adam on shuffled mini-batches of ratings."""

    name = "mf"
    mode = "explicit"
    config_class = MFConfig
    config: MFConfig

    def __init__(self, config: MFConfig, n_users: int, n_items: int, rating_values: tuple[float, ...]):
        super().__init__(config, n_users, n_items, rating_values)
        # Gradients are written out in MFTrainer.train_epoch (autograd's graph costs ~3x the step itself here).
        self.requires_grad_(False)
        # Small positive factors: every dot product starts near zero, so the first predictions are
        # the mean and the biases, and no two users start identical.
        self.user_factors.uniform_(0.0, config.init_range)
        self.item_factors.uniform_(0.0, config.init_range)

    def trainer(self, train: RatingMatrix, generator: torch.Generator) -> MFTrainer:
        return MFTrainer(self, train, generator)

    def fold_in_penalties(self, n_ratings: int) -> tuple[float, float, float]:
        # The objective penalises the user once per rating (reg * n on vector and bias) and has no 1/2
        # factors, so lam = 1 against ridge_solve's halves.
        return 1.0, self.config.reg * n_ratings, self.config.reg * n_ratings


class MFTrainer(FactorTrainer):
    """Mini-batch SGD (or Adam) on the training ratings, shuffled once into batches (:class:`_Batches`) whose
    order changes every epoch. Owns the batches (~20 bytes a training rating) and Adam's moments (SGD has none)."""

    model: MatrixFactorization

    def __init__(self, model: MatrixFactorization, train: RatingMatrix, generator: torch.Generator):
        super().__init__(model, train, generator)
        self.batches = _Batches(train, model.n_users, model.mean, model.config, generator)
        self.adam = _Adam(model.config.lr) if model.config.optimizer == "adam" else None
        # SGD on the CPU with the fast extra: the same steps in one compiled loop (see _compiled_epoch).
        self.compiled = kernels.load(train.device) if self.adam is None else None
        self.flat = self.batches.flatten() if self.compiled is not None else None

    @torch.no_grad()
    def train_epoch(self) -> dict[str, float]:
        model, config, generator = self.model, self.model.config, self.generator
        sgd = config.optimizer == "sgd"
        batches = self.batches
        reg = config.reg
        d = model.user_factors.shape[1]
        # One table of users then movies (and one of their biases): a batch is then one gather and one
        # scatter per table, not two. Copied back at the end of the epoch.
        factors = torch.cat([model.user_factors, model.item_factors])  # (U + I, d)
        biases = torch.cat([model.user_bias, model.item_bias])  # (U + I,)
        # Per-batch sums, added up once at the end: one synchronisation per epoch, not per step.
        squared = torch.zeros(len(batches), device=factors.device)
        penalty = torch.zeros(2, len(batches), device=factors.device)
        step = torch.empty(2 * config.batch_size, d, device=factors.device)
        products = torch.empty(config.batch_size, d, device=factors.device)
        minus_ones = torch.full((max(d, 2),), -1.0, device=factors.device)  # sums the products, then the biases
        order = torch.randperm(len(batches), generator=generator, device=generator.device).tolist()
        if self.compiled is not None:
            return self._compiled_epoch(factors, biases, order)
        for k in order:
            rows, centered, scale = batches[k]  # (2b,) users then U + movies; (b,) stars - mean; (2b,)
            b = centered.shape[0]
            x = factors.index_select(0, rows)  # (2b, d)
            xb = biases.index_select(0, rows)  # (2b,)
            p, q = x[:b], x[b:]  # (b, d) views
            # centered - p.q - bu - bi as matrix-vector products: summing the (b, d) products along d costs
            # twice as much.
            err = torch.addmv(centered, torch.mul(p, q, out=products[:b]), minus_ones[:d])  # (b,)
            err = torch.addmv(err, xb.view(2, b).t(), minus_ones[:2])  # (b,)
            torch.dot(err, err, out=squared[k])
            flat = x.view(-1)
            torch.dot(flat, flat, out=penalty[0, k])
            torch.dot(xb, xb, out=penalty[1, k])
            self.advance(b, batches.nnz)
            # d/dparam of sum(err^2) + reg * (|p|^2 + |q|^2 + bu^2 + bi^2), one row per rating; a user
            # or movie rated twice in the batch gets the sum.
            if sgd:
                # The step -lr / max(1, stable k) * grad is own * row + cross * other row, with per-row
                # factors own = -reg * scale and cross = err * scale: three passes over the (2b, d) block.
                own = scale * -reg  # (2b,)
                cross = torch.mul(scale.view(2, b), err).view(-1)  # (2b,)
                s = torch.mul(x, own.unsqueeze(1), out=step[:2 * b])  # (2b, d)
                s[:b].addcmul_(q, cross[:b].unsqueeze(1))
                s[b:].addcmul_(p, cross[b:].unsqueeze(1))
                # Only the touched rows move: the cost of a step is the batch's, not the tables'.
                factors.index_add_(0, rows, s)
                biases.index_add_(0, rows, cross.addcmul_(own, xb))
                continue
            e = err.repeat(2).unsqueeze(1)  # (2b, 1)
            other = torch.cat([q, p])  # (2b, d)
            grads = (2 * (reg * x - e * other), 2 * (reg * xb - e.squeeze(1)))
            self.adam.step((factors, biases), rows, grads)
        self._write_back(factors, biases)
        total_squared = float(squared.double().sum())
        objective = total_squared + reg * float(penalty.double().sum())
        return {"loss": objective / batches.nnz, "rmse": (total_squared / batches.nnz) ** 0.5}

    def _write_back(self, factors: torch.Tensor, biases: torch.Tensor) -> None:
        model, n_users = self.model, self.model.n_users
        model.user_factors.copy_(factors[:n_users])
        model.item_factors.copy_(factors[n_users:])
        model.user_bias.copy_(biases[:n_users])
        model.item_bias.copy_(biases[n_users:])

    def _compiled_epoch(self, factors: torch.Tensor, biases: torch.Tensor, order: list[int]) -> dict[str, float]:
        """The SGD epoch of :meth:`train_epoch` in a compiled loop (the ``fast`` extra): the same batches in the
        same order, each rating's step from the parameters before its batch, a row's steps summed. The loop is
        called on runs of batches of at most ~``COMPILED_RATINGS`` ratings, through :func:`kernels.run`, so
        Ctrl-C stops it at once."""
        assert self.compiled is not None and self.flat is not None
        rows, centered, scale, bounds = self.flat
        reg, nnz = self.model.config.reg, self.batches.nnz
        sizes = bounds[1:] - bounds[:-1]  # (K,)
        widest = int(sizes.max()) if sizes.shape[0] else 0
        step = np.empty((2 * widest, factors.shape[1] + 1), np.float32)  # each rating's steps, then its biases'
        sums = np.zeros(3, np.float64)  # squared errors, squared factors, squared biases
        table, bias = factors.numpy(), biases.numpy()
        order_array = np.asarray(order, np.int64)
        # Progress moves at least PROGRESS_STEPS times an epoch, as it does per batch on the torch path.
        per_call = max(1, min(COMPILED_RATINGS // max(1, self.model.config.batch_size),
                              -(-order_array.shape[0] // PROGRESS_STEPS)))
        for at in range(0, order_array.shape[0], per_call):
            run = order_array[at:at + per_call]
            kernels.run(self.compiled.sgd_batches, table, bias, rows, centered, scale, bounds, run, np.float32(reg),
                        step, sums)
            self.advance(int(sizes[run].sum()), nnz)
        self._write_back(factors, biases)
        total_squared = float(sums[0])
        objective = total_squared + reg * float(sums[1] + sums[2])
        return {"loss": objective / nnz, "rmse": (total_squared / nnz) ** 0.5}

    def finalize(self) -> None:
        self.batches, self.adam = None, None


class _Batches:
    """The training ratings shuffled once (seeded) and cut into batches: an epoch visits the batches in a
    new random order. Reshuffling every rating every epoch cost ~0.8 s of a ~4 s epoch at ML-10M scale (a
    random permutation and gathers over every rating); keeping the batches costs little accuracy (test RMSE
    on ml-100k's u1 0.918085 instead of 0.918068, on the ML-1M shape ~0.0005 more).

    Batch ``k`` is ``(rows, centered, scale)``: ``rows`` (2b,) its users, then its movies offset by the
    number of users (rows of a users-then-movies table); ``centered`` (b,) its stars minus the training
    mean; ``scale`` (2b,) SGD's ``2 lr / max(1, 2 lr (1 + reg) k)`` for each row, where ``k`` is how often
    the row occurs in the batch (batches with no row past the limit share one tensor of ``2 lr``)."""

    def __init__(self, train: RatingMatrix, n_users: int, mean: torch.Tensor, config: MFConfig,
                 generator: torch.Generator):
        self.nnz = train.nnz
        size, lr, reg = config.batch_size, config.lr, config.reg
        order = torch.randperm(train.nnz, generator=generator, device=generator.device).to(train.device)
        users = train.row_ids().index_select(0, order)
        items = train.indices.index_select(0, order).add_(n_users)
        centered = train.values.index_select(0, order).sub_(mean)
        counts = torch.zeros(n_users + int(train.n_cols), device=train.device)  # zero again after each batch
        plain = torch.full((2 * size,), 2 * lr, device=train.device)
        self.batches = []
        for u, i, r in zip(users.split(size), items.split(size), centered.split(size)):
            rows = torch.cat([u, i])  # (2b,)
            ones = torch.ones_like(rows, dtype=counts.dtype)
            counts.index_add_(0, rows, ones)
            repeats = counts.index_select(0, rows)  # (2b,)
            counts.index_add_(0, rows, ones, alpha=-1.0)
            scale = repeats.mul_(2 * lr * (1 + reg)).clamp_(min=1.0).reciprocal_().mul_(2 * lr)  # (2b,)
            if torch.equal(scale, plain[:rows.shape[0]]):  # the usual case: no memory of its own
                scale = plain[:rows.shape[0]]
            self.batches.append((rows, r, scale))
        self.count = len(self.batches)

    def flatten(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """The batches as four arrays for the compiled loop, sharing no memory with torch's copies (which are
        let go): ``rows`` and ``scale`` (2 nnz,) each batch's (2b,) in turn, ``centered`` (nnz,) and ``bounds``
        (K + 1,), batch ``k`` being ratings ``bounds[k]..bounds[k + 1]`` (rows ``2 bounds[k]..2 bounds[k + 1]``)."""
        rows = torch.cat([b[0] for b in self.batches]).numpy()
        centered = torch.cat([b[1] for b in self.batches]).numpy()
        scale = torch.cat([b[2] for b in self.batches]).numpy()
        bounds = np.zeros(len(self.batches) + 1, np.int64)
        np.cumsum([b[1].shape[0] for b in self.batches], out=bounds[1:])
        self.count, self.batches = len(self.batches), []  # their tensors are the flat arrays now
        return rows, centered, scale, bounds

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, k: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.batches[k]


class _Adam:
    """Adam (Kingma & Ba, default betas and epsilon) over a few dense parameters (SGD's step is written out in
    :meth:`MFTrainer.train_epoch`, fused with the gradient).

    Written out instead of using ``torch.optim`` because constructing any ``torch.optim`` optimizer
    imports ``torch._dynamo``, about 1.3 s on a 2-core CPU: longer than a whole MovieLens-100K fit.
    """

    def __init__(self, lr: float, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8):
        self.lr = lr
        self.betas = betas
        self.eps = eps
        self.steps = 0
        self.first: list[torch.Tensor] = []  # made on the first step, in the parameters' shapes
        self.second: list[torch.Tensor] = []

    @torch.no_grad()
    def step(self, params: tuple[torch.Tensor, ...], rows: torch.Tensor, grads: tuple[torch.Tensor, ...]) -> None:
        """One step; ``grads[k]`` holds the gradients of the rows ``rows`` of ``params[k]`` (rows may repeat:
        their gradients add up)."""
        if not self.first:
            self.first = [torch.zeros_like(p) for p in params]
            self.second = [torch.zeros_like(p) for p in params]
        self.steps += 1
        b1, b2 = self.betas
        step_size = self.lr / (1 - b1**self.steps)
        root_correction = (1 - b2**self.steps) ** 0.5
        for p, m, v, grad in zip(params, self.first, self.second, grads):
            # Adam's moments decay for every row at every step, so the gradient must be dense.
            full = torch.zeros_like(p).index_add_(0, rows, grad)
            m.lerp_(full, 1 - b1)
            v.mul_(b2).addcmul_(full, full, value=1 - b2)
            p.addcdiv_(m, v.sqrt().div_(root_correction).add_(self.eps), value=-step_size)
