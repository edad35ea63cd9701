"""Stacked autoencoder for rating prediction, user-based or item-based (I-AutoRec): two classes on one base.

:class:`UserAutoEncoder` (mode ``user``, the default) reads one user's ratings over all movies
(0 = unrated) and reconstructs them: ``Linear(movies, 20) -> sigmoid -> Linear(20, 10) -> sigmoid ->
Linear(10, 20) -> sigmoid -> Linear(20, movies)`` by default. :class:`ItemAutoEncoder` (mode ``item``;
Sedhain et al. 2015, "AutoRec: Autoencoders Meet Collaborative Filtering") reads one movie's ratings over
all users instead and has one output unit per user; with one wide hidden layer it is much stronger (see
:class:`ItemAutoEncoderConfig`).

The loss is the mean squared error over rated entries only: unrated entries are inputs of 0 but never
targets. Because of that, the first layer is evaluated sparsely, as an ``embedding_bag`` over the rated
entries of a row (exactly ``x @ W`` for a sparse ``x``), and during training the last layer is read only
at the rated (row, column) pairs (see :data:`DENSE_DECODE_MIN_DENSITY`). No dense users x movies
matrix is ever built.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F

from movierec.data.ratings import RatingMatrix
from movierec.errors import MovierecError
from movierec.models.base import (
    ModelConfig,
    RatingsMemo,
    Recommender,
    Trainer,
    affordable_epochs,
    among,
    between,
    option,
)

ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "sigmoid": torch.sigmoid,
    "relu": torch.relu,
    "tanh": torch.tanh,
    "selu": F.selu,
    "identity": lambda x: x,
}
OUTPUT_ACTIVATIONS = ("identity", "sigmoid")
OPTIMIZERS = ("adam", "adamw", "rmsprop", "sgd")

# Training decodes a batch densely, (B, columns), and reads the rated entries from that when the data is
# at least this dense: a matmul beats gathering one weight row per rating there (2x on ML-100K with one
# thread, 10x with two busy ones). Sparser data (ML-10M, ML-25M) decodes at the rated entries only,
# so the cost stays O(ratings x width). Both give the same numbers.
DENSE_DECODE_MIN_DENSITY = 1 / 64

# Rows per chunk when every movie is encoded at once (scoring the item autoencoder): bounds the peak memory
# of the (chunk, width) activations, not of the input, which stays sparse.
_ENCODE_CHUNK = 4096


@dataclass(frozen=True)
class AutoEncoderConfig(ModelConfig):
    """What both autoencoders are configured by. Each subclass fixes its own tuned defaults: the user
    autoencoder is the seed's 20-10-20 network (validation RMSE ~0.929 on ML-100K u1 in ~7 s of one CPU
    core), the item one is I-AutoRec (~0.892 in ~25 s)."""

    epochs: int = option(100, "Passes over the training ratings.")
    layers: str = option("20,10,20", "Hidden layer sizes, comma-separated, input side first.",
                         search=among("20,10,20", "50,20,50", "100,50,100", "100", "300"))
    activation: str = option("sigmoid", "Activation of the hidden layers.", choices=tuple(ACTIVATIONS))
    output_activation: str = option("identity", "Output layer: identity (plain stars) or sigmoid "
                                    "(squashed into the rating scale).", choices=OUTPUT_ACTIVATIONS)
    dropout: float = option(0.2, "Fraction of a row's known ratings hidden from the input per batch "
                            "(denoising); they stay targets.", search=between(0.0, 0.6))
    hidden_dropout: float = option(0.0, "Dropout on the hidden layers' outputs.", search=between(0.0, 0.8))
    optimizer: str = option("adam", "Optimizer.", choices=OPTIMIZERS)
    lr: float = option(0.01, "Learning rate.", search=between(1e-4, 0.03, log=True))
    lr_decay: float = option(0.97, "Learning rate multiplier applied after every epoch, 1 = constant.",
                             search=between(0.9, 1.0))
    weight_decay: float = option(1e-4, "L2 penalty on the weights (not the biases), as the optimizer's weight decay.",
                                 search=between(1e-6, 1e-2, log=True))
    batch_size: int = option(32, "Rows (users, or movies for the item autoencoder) per mini-batch.")
    row_bias: bool = option(True, "Learn a bias per row (per user, or per movie for the item autoencoder) added "
                            "to all of its outputs.")
    fold_in_l2: float = option(1.0, "Weight of the prior learned from the trained users when a new user "
                               "is folded in (1 = empirical Bayes; more = closer to the average user).")

    def __post_init__(self) -> None:
        super().__post_init__()
        self.hidden_sizes()  # validates the string now rather than at model build time
        for name in ("dropout", "hidden_dropout"):
            if not 0.0 <= getattr(self, name) < 1.0:
                flag = "--" + name.replace("_", "-")
                raise MovierecError(f"{flag} must be in [0, 1), not {getattr(self, name)}.")
        if self.lr <= 0 or not 0.0 < self.lr_decay <= 1.0:
            raise MovierecError(
                f"--lr must be positive and --lr-decay in (0, 1]; got {self.lr} and {self.lr_decay}."
            )
        if self.weight_decay < 0 or self.fold_in_l2 < 0:
            raise MovierecError("--weight-decay and --fold-in-l2 must not be negative.")
        if self.batch_size < 1 or self.epochs < 0:
            raise MovierecError("--batch-size must be at least 1 and --epochs must not be negative.")

    def hidden_sizes(self) -> tuple[int, ...]:
        """``layers`` as integers, e.g. ``"20,10,20"`` -> ``(20, 10, 20)``."""
        try:
            sizes = tuple(int(s) for s in self.layers.split(",") if s.strip())
        except ValueError:
            sizes = ()
        if not sizes or min(sizes) < 1:
            raise MovierecError(
                f"--layers must be positive integers separated by commas, like 20,10,20; got {self.layers!r}."
            )
        return sizes


@dataclass(frozen=True)
class UserAutoEncoderConfig(AutoEncoderConfig):
    """The seed's user autoencoder: :class:`AutoEncoderConfig`'s defaults as they stand."""

    @classmethod
    def for_data(cls, n_users: int, n_items: int, n_ratings: int) -> dict[str, Any]:
        """Fewer epochs on the largest releases: an epoch costs ~6 us a rating on one busy CPU core (127 s
        on ML-25M's 22.5M training ratings), so at most 230M ratings are read in all (10 epochs on ML-25M,
        25 on ML-10M; ML-1M and smaller keep 100)."""
        return affordable_epochs(cls, n_ratings, 230e6)


@dataclass(frozen=True)
class ItemAutoEncoderConfig(AutoEncoderConfig):
    """I-AutoRec (Sedhain et al. 2015) as tuned on ML-100K u1: one hidden layer of 500 sigmoid units,
    identity output, denoising input dropout, heavy hidden dropout, per-movie biases and a decaying learning
    rate. Validation RMSE 0.891-0.893 over 4 seeds in 60 epochs, 15-25 s of one CPU core."""

    epochs: int = option(60, "Passes over the training ratings.")
    layers: str = option("500", "Hidden layer sizes, comma-separated, input side first.",
                         search=among("100", "200", "500", "1000"))
    dropout: float = option(0.3, "Fraction of a movie's known ratings hidden from the input per batch "
                            "(denoising); they stay targets.", search=between(0.0, 0.6))
    hidden_dropout: float = option(0.7, "Dropout on the hidden layers' outputs.", search=between(0.0, 0.9))
    lr: float = option(0.003, "Learning rate.", search=between(1e-4, 0.03, log=True))
    lr_decay: float = option(0.95, "Learning rate multiplier applied after every epoch, 1 = constant.",
                             search=between(0.9, 1.0))
    weight_decay: float = option(1e-3, "L2 penalty on the weights (not the biases), as the optimizer's weight decay.",
                                 search=between(1e-6, 1e-2, log=True))
    batch_size: int = option(64, "Rows (users, or movies for the item autoencoder) per mini-batch.")

    @classmethod
    def for_data(cls, n_users: int, n_items: int, n_ratings: int) -> dict[str, Any]:
        """A smaller network on releases with many users (ML-10M, ML-25M): the input and output layers hold
        a weight per user and hidden unit, and every Adam step rewrites them whole with their gradients and
        two moments. Past 2^24 (16.7M) such weights a layer, i.e. more than 33,554 users at 500 units:

        - 100 hidden units (the output weights of ML-25M's 162,541 users: 65 MB instead of 325 MB);
        - batches of a 64th of the movies (at most ~64 steps an epoch, as on small data; 922 on ML-25M);
        - at most 184M ratings read in all: 8 epochs on ML-25M (~160 s each on one busy core; 500 units and
          batches of 64 would take over 40 minutes an epoch), 20 on ML-10M.

        ML-1M and smaller keep the tuned defaults."""
        if n_users * 500 <= 1 << 24:
            return {}
        return {"layers": "100", "batch_size": max(64, n_items // 64), **affordable_epochs(cls, n_ratings, 184e6)}


class AutoEncoder(Recommender):
    """The network both autoencoders share: it reconstructs a row of a rating matrix from itself, and the
    reconstruction at unrated entries is the prediction. Each subclass says which matrix its rows come from
    (:meth:`_row_matrix`) and how its rows' reconstructions become predictions (:meth:`score`, :meth:`predict`,
    :meth:`fold_in`, :meth:`item_vectors`): :class:`UserAutoEncoder` reads users' rows, :class:`ItemAutoEncoder`
    movies' rows."""

    name = "autoencoder"
    config_class: ClassVar[type[AutoEncoderConfig]]
    config: AutoEncoderConfig

    def __init__(
        self, config: AutoEncoderConfig, n_users: int, n_items: int, rating_values: tuple[float, ...],
        n_rows: int, n_cols: int,
    ):
        super().__init__(config, n_users, n_items, rating_values)
        sizes = config.hidden_sizes()
        # A row has one input and one output per column.
        self.n_rows = int(n_rows)
        self.n_cols = int(n_cols)
        # The first and last layers are tables indexed by column so that sparse rows read only the
        # rated columns' entries (embedding_bag on the way in, gathers on the way out). Init as nn.Linear.
        bound_in = 1.0 / math.sqrt(self.n_cols)
        self.input_weight = torch.nn.Parameter(
            torch.empty(self.n_cols, sizes[0]).uniform_(-bound_in, bound_in)
        )
        self.input_bias = torch.nn.Parameter(torch.empty(sizes[0]).uniform_(-bound_in, bound_in))
        self.hidden = torch.nn.ModuleList(
            torch.nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:], strict=True)
        )
        bound_out = 1.0 / math.sqrt(sizes[-1])
        self.output_weight = torch.nn.Parameter(
            torch.empty(self.n_cols, sizes[-1]).uniform_(-bound_out, bound_out)
        )
        # The trainer sets these to the training mean, so a column with no ratings predicts the mean.
        self.output_bias = torch.nn.Parameter(torch.zeros(self.n_cols))
        if config.row_bias:
            self.row_bias = torch.nn.Parameter(torch.zeros(self.n_rows))
        # Read by fold_in: the training loss of the last epoch, the noise variance of a new user's ratings. Written
        # every epoch with the weights, so the kept epoch's weights come back with their own.
        self.register_buffer("noise_var", torch.ones(()))
        self._act = ACTIVATIONS[config.activation]

    def trainer(self, train: RatingMatrix, generator: torch.Generator) -> AutoEncoderTrainer:
        return AutoEncoderTrainer(self, train, generator)

    # -- what a subclass provides ------------------------------------------------------------------
    def _row_matrix(self, train: RatingMatrix) -> RatingMatrix:
        """The matrix whose rows the network reads, from ``train`` (users x movies)."""
        raise NotImplementedError

    # -- the network -------------------------------------------------------------------------------
    def layer_shapes(self) -> list[tuple[int, int]]:
        """(inputs, outputs) of every linear layer, input side first."""
        shapes = [(self.n_cols, self.input_weight.shape[1])]
        shapes += [(layer.in_features, layer.out_features) for layer in self.hidden]
        shapes.append((self.output_weight.shape[1], self.n_cols))
        return shapes

    def _output(self, z: torch.Tensor) -> torch.Tensor:
        if self.config.output_activation == "sigmoid":
            return self.rating_min + (self.rating_max - self.rating_min) * torch.sigmoid(z)
        return z

    def _row_bias(self, rows: torch.Tensor) -> torch.Tensor | float:
        return self.row_bias[rows] if self.config.row_bias else 0.0

    def _dropout(self, x: torch.Tensor, p: float, generator: torch.Generator | None) -> torch.Tensor:
        # Drawn from the training generator, never torch's global RNG, so same seed gives same numbers.
        if generator is None or p == 0.0:
            return x
        keep = torch.bernoulli(torch.full_like(x, 1.0 - p), generator=generator)
        return x * keep / (1.0 - p)

    def _encode_sparse(
        self, offsets: torch.Tensor, cols: torch.Tensor, vals: torch.Tensor,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Codes of rows given as bags of (column, value): (nnz,) entries, (B,) bag offsets -> (B, H).

        With a ``generator`` the hidden dropout is applied (training); without, the network is exact.
        """
        # Exactly x @ input_weight for the dense rows x, reading only their nonzero entries.
        h = F.embedding_bag(cols, self.input_weight, offsets, mode="sum", per_sample_weights=vals)  # (B, H1)
        h = self._dropout(self._act(h + self.input_bias), self.config.hidden_dropout, generator)
        for layer in self.hidden:
            h = self._dropout(self._act(layer(h)), self.config.hidden_dropout, generator)  # (B, H_next)
        return h

    def forward(self, x: torch.Tensor, rows: torch.Tensor | None = None) -> torch.Tensor:
        """The dense network: rows ``x`` (B, n_cols) with 0 for unrated -> (B, n_cols) reconstruction
        (not clipped). ``rows`` (B,) are their indices, for the row biases; None for rows not in training.

        Training and scoring use the equivalent sparse path; this is the reference it must agree with.
        """
        h = self._act(x @ self.input_weight + self.input_bias)  # (B, H1)
        for layer in self.hidden:
            h = self._act(layer(h))  # (B, H_next)
        z = h @ self.output_weight.T + self.output_bias  # (B, n_cols)
        if rows is not None:
            z = z + torch.as_tensor(self._row_bias(rows), device=z.device).reshape(-1, 1)
        return self._output(z)

    @staticmethod
    def _bags(
        matrix: RatingMatrix, rows: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Rows ``rows`` of ``matrix`` as embedding_bag input: offsets (B,), and pos, cols, vals (nnz,)."""
        rows = rows.to(matrix.device, torch.int64)
        lengths = matrix.indptr[rows + 1] - matrix.indptr[rows]  # (B,)
        # entries() lists the rows in order, so each row's entries form one contiguous bag.
        offsets = torch.cumsum(lengths, 0) - lengths  # (B,)
        pos, cols, vals = matrix.entries(rows)
        return offsets, pos, cols, vals

    def batch_loss(
        self, matrix: RatingMatrix, rows: torch.Tensor, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """Mean squared error of the reconstruction over the rated entries of ``rows`` only.

        ``matrix`` holds the rows the network reads (:meth:`_row_matrix`: users x movies, or movies x users).
        With a ``generator`` the dropouts are drawn from it (training); without, the network is exact.
        """
        rows = rows.to(matrix.device, torch.int64)
        offsets, pos, cols, vals = self._bags(matrix, rows)
        # Dropping a rated entry equals zeroing it in the dense row (unrated entries are 0 already); the
        # dropped ratings stay targets, so the network learns to predict ratings it cannot see.
        inputs = self._dropout(vals, self.config.dropout, generator)  # (nnz,)
        h = self._encode_sparse(offsets, cols, inputs, generator)  # (B, H)
        # The masked loss reads the outputs at the rated entries only.
        if matrix.nnz >= DENSE_DECODE_MIN_DENSITY * matrix.n_rows * matrix.n_cols:
            z = torch.addmm(self.output_bias, h, self.output_weight.T)[pos, cols]  # (B, C) -> (nnz,)
        else:
            z = (h[pos] * self.output_weight[cols]).sum(-1) + self.output_bias[cols]  # (nnz,)
        z = z + self._row_bias(rows[pos])
        return ((self._output(z) - vals) ** 2).mean()

    @torch.no_grad()
    def _encode_all(self, matrix: RatingMatrix) -> torch.Tensor:
        """Codes of every row of ``matrix``, in chunks, without dropout: (R, H)."""
        codes = [self.output_weight.new_zeros(0, self.output_weight.shape[1])]
        for start in range(0, matrix.n_rows, _ENCODE_CHUNK):
            rows = torch.arange(start, min(start + _ENCODE_CHUNK, matrix.n_rows), device=matrix.device)
            offsets, _, cols, vals = self._bags(matrix, rows)
            codes.append(self._encode_sparse(offsets, cols, vals))  # (chunk, H)
        return torch.cat(codes)

    def _pairs(
        self, users: torch.Tensor, items: torch.Tensor, read: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    ) -> torch.Tensor:
        """:meth:`predict`'s loop: ``read(u, i)`` gives the output pre-activations (n,) of a chunk of pairs;
        the pairs go in chunks that bound the (n, H) gathers, and come out clipped."""
        users = users.to(self.device, torch.int64)
        items = items.to(self.device, torch.int64)
        out = torch.empty(users.shape[0], dtype=torch.float32, device=self.device)
        step = 1 << 18  # pairs per chunk
        for start in range(0, users.shape[0], step):
            out[start:start + step] = self._output(read(users[start:start + step], items[start:start + step]))
        return self.clip(out)


class AutoEncoderTrainer(Trainer):
    """Mini-batches of the network's rows in a new random order every epoch, through ``torch.optim`` (Adam by
    default; biases not decayed) at a learning rate that decays after every epoch. Made, it starts every output at
    the training mean; every epoch writes the training loss into the model's ``noise_var``."""

    model: AutoEncoder

    @torch.no_grad()
    def __init__(self, model: AutoEncoder, train: RatingMatrix, generator: torch.Generator):
        super().__init__(model, train, generator)
        self.rows = model._row_matrix(train)
        """The matrix whose rows the network reads."""
        # Every output starts at the global mean, so the network only learns deviations and a column
        # never rated in training predicts the mean rather than an arbitrary initial value.
        if train.nnz:
            mean = float(train.values.mean())
        else:
            mean = 0.5 * (model.rating_min + model.rating_max)
        if model.config.output_activation == "sigmoid":
            frac = min(max((mean - model.rating_min) / (model.rating_max - model.rating_min), 0.01), 0.99)
            mean = math.log(frac / (1.0 - frac))
        model.output_bias.fill_(mean)
        model.noise_var.fill_(float(train.values.var()) if train.nnz > 1 else 1.0)
        self.optimizer: torch.optim.Optimizer | None = self._make_optimizer()  # Adam's moments: twice the weights
        self.epochs_done = 0  # drives lr_decay

    def _make_optimizer(self) -> torch.optim.Optimizer:
        cfg, model = self.model.config, self.model
        # Biases are not decayed: they carry the rating means, which should not shrink towards 0 stars.
        decay = [p for n, p in model.named_parameters() if "weight" in n]
        no_decay = [p for n, p in model.named_parameters() if "weight" not in n]
        groups = [
            {"params": decay, "weight_decay": cfg.weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ]
        if cfg.optimizer == "adam":
            return torch.optim.Adam(groups, lr=cfg.lr)
        if cfg.optimizer == "adamw":
            return torch.optim.AdamW(groups, lr=cfg.lr)
        if cfg.optimizer == "rmsprop":
            return torch.optim.RMSprop(groups, lr=cfg.lr)
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=0.9)

    def train_epoch(self) -> dict[str, float]:
        model, config, generator, optimizer = self.model, self.model.config, self.generator, self.optimizer
        lr = config.lr * config.lr_decay ** self.epochs_done
        for group in optimizer.param_groups:
            group["lr"] = lr
        matrix = self.rows
        counts = matrix.row_counts()  # (R,)
        order = torch.randperm(matrix.n_rows, generator=generator, device=generator.device).to(matrix.device)
        order = order[counts[order] > 0]  # rows without ratings have no targets (their mean would be NaN)
        total = torch.zeros((), device=matrix.device)
        for start in range(0, order.shape[0], config.batch_size):
            rows = order[start:start + config.batch_size]  # (B,)
            loss = model.batch_loss(matrix, rows, generator)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += loss.detach() * counts[rows].sum()
            self.advance(rows.shape[0], order.shape[0])
        self.epochs_done += 1
        mse = float(total) / max(matrix.nnz, 1)  # the one host sync of the epoch
        # With dropout this overestimates the noise a little, which errs towards the prior in fold_in.
        model.noise_var.fill_(mse)
        return {"loss": mse, "rmse": math.sqrt(mse), "lr": lr}

    def finalize(self) -> None:
        self.optimizer = None


class UserAutoEncoder(AutoEncoder):
    """The seed's autoencoder: a user's ratings of every movie in, the same row reconstructed out."""

    mode = "user"
    config_class = UserAutoEncoderConfig

    def __init__(self, config: AutoEncoderConfig, n_users: int, n_items: int, rating_values: tuple[float, ...]):
        super().__init__(config, n_users, n_items, rating_values, n_rows=n_users, n_cols=n_items)

    def _row_matrix(self, train: RatingMatrix) -> RatingMatrix:
        return train

    @torch.no_grad()
    def score(self, users: torch.Tensor, train: RatingMatrix) -> torch.Tensor:
        users = users.to(self.device, torch.int64)
        offsets, _, cols, vals = self._bags(train, users)
        h = self._encode_sparse(offsets, cols, vals)  # (B, H)
        z = h @ self.output_weight.T + self.output_bias  # (B, I)
        if self.config.row_bias:
            z = z + self.row_bias[users].unsqueeze(1)  # (B, I): the users' biases
        return self._output(z)

    @torch.no_grad()
    def predict(
        self, users: torch.Tensor, items: torch.Tensor, train: RatingMatrix, batch_users: int = 1024
    ) -> torch.Tensor:
        """The same numbers as :meth:`score` read at each (user, movie) pair, clipped: one code per distinct
        user and one dot product per pair, O(pairs x width), instead of every movie for every user asked about
        (on ML-25M that made validating the user autoencoder cost a third of an epoch)."""

        def read(u: torch.Tensor, i: torch.Tensor) -> torch.Tensor:
            z = (self._user_codes(train, u) * self.output_weight[i]).sum(-1) + self.output_bias[i]
            return z + self._row_bias(u)  # (n,)

        return self._pairs(users, items, read)

    def _user_codes(self, train: RatingMatrix, rows: torch.Tensor) -> torch.Tensor:
        """The codes of users ``rows`` (n,), each distinct user encoded once from their training ratings: (n, H)."""
        needed, back = torch.unique(rows, return_inverse=True)  # (m,), (n,)
        offsets, _, cols, vals = self._bags(train, needed)
        return self._encode_sparse(offsets, cols, vals)[back]  # (n, H)

    @torch.no_grad()
    def item_vectors(self) -> torch.Tensor:
        """Each movie's output weights, (I, H)."""
        return self.output_weight.detach().clone()  # (I, H)

    @torch.no_grad()
    def fold_in(self, items: torch.Tensor, ratings: torch.Tensor) -> torch.Tensor:
        """Predictions for a new user from their ratings alone, (n,), (n,) -> (n_items,): the user's rating
        vector goes through the network. With ``row_bias`` their bias is the mean residual at their ratings,
        shrunk towards 0 with the pseudo-count ``fold_in_l2 * noise_var / var(trained users' biases)``."""
        items = items.to(self.device, torch.int64)
        ratings = ratings.to(self.device, torch.float32)
        strength = self.config.fold_in_l2 * self.noise_var  # () prior weight relative to one rating
        offsets = torch.zeros(1, dtype=torch.int64, device=self.device)
        h = self._encode_sparse(offsets, items, ratings)  # (1, H)
        z = (h @ self.output_weight.T + self.output_bias)[0]  # (I,)
        if self.config.row_bias and items.numel():
            spread = self.row_bias.var().clamp_min(1e-6) if self.n_users > 1 else 1.0
            pseudo_count = strength / spread
            z = z + (ratings - self._output(z[items])).sum() / (items.numel() + pseudo_count)
        return self._output(z)


class ItemAutoEncoder(AutoEncoder):
    """I-AutoRec (Sedhain et al. 2015): a movie's ratings by every user in, the same row reconstructed out;
    more accurate than the user autoencoder. A user's predictions are their output unit read off every movie's
    code, so scoring needs every movie's code from the training ratings (:meth:`_movie_codes`)."""

    mode = "item"
    config_class = ItemAutoEncoderConfig

    def __init__(self, config: AutoEncoderConfig, n_users: int, n_items: int, rating_values: tuple[float, ...]):
        super().__init__(config, n_users, n_items, rating_values, n_rows=n_items, n_cols=n_users)
        sizes = config.hidden_sizes()
        # Each movie's code from the fitted ratings and the kept weights, written at the end of training
        # (ItemAutoEncoderTrainer.finalize): item_vectors and fold_in are called without the training matrix.
        self.register_buffer("item_codes", torch.zeros(n_items, sizes[-1]))
        # The trained users' output units (weights and bias) as a Gaussian: fold_in's prior.
        self.register_buffer("prior_mean", torch.zeros(sizes[-1] + 1))
        self.register_buffer("prior_precision", torch.eye(sizes[-1] + 1))
        self.movie_codes_memo = RatingsMemo().attach(self)  # every movie's code for one rating matrix

    def trainer(self, train: RatingMatrix, generator: torch.Generator) -> ItemAutoEncoderTrainer:
        return ItemAutoEncoderTrainer(self, train, generator)

    def _row_matrix(self, train: RatingMatrix) -> RatingMatrix:
        return train.transposed()

    def _movie_codes(self, train: RatingMatrix) -> torch.Tensor:
        """Every movie's code from ``train`` (users x movies), (n_items, H).

        Kept for the last ``train`` asked about (:class:`~movierec.models.base.RatingsMemo`): evaluation calls
        :meth:`score` once per batch of users, and re-encoding every movie each time would dominate its cost on
        large data sets."""
        return self.movie_codes_memo.get(train, lambda ratings: self._encode_all(self._row_matrix(ratings)))

    def reuse_fit_state(self, train: RatingMatrix) -> None:
        # item_codes is every movie's code from the fitted ratings with the saved weights.
        self.movie_codes_memo.keep(train, self.item_codes)

    @torch.no_grad()
    def score(self, users: torch.Tensor, train: RatingMatrix) -> torch.Tensor:
        users = users.to(self.device, torch.int64)
        # Every movie through the network, keeping only the output units of the requested users.
        codes = self._movie_codes(train)  # (I, H)
        z = codes @ self.output_weight[users].T + self.output_bias[users]  # (I, B)
        if self.config.row_bias:
            z = z + self.row_bias.unsqueeze(1)  # (I, B): the movies' biases
        return self._output(z.T)  # (B, I)

    @torch.no_grad()
    def predict(
        self, users: torch.Tensor, items: torch.Tensor, train: RatingMatrix, batch_users: int = 1024
    ) -> torch.Tensor:
        """The same numbers as :meth:`score` read at each (user, movie) pair, clipped: one dot product per pair
        between the movie's code and the user's output unit, O(pairs x width)."""
        codes = self._movie_codes(train)  # (I, H)

        def read(u: torch.Tensor, i: torch.Tensor) -> torch.Tensor:
            # A movie's code through a user's output unit; the row bias is the movie's.
            return (codes[i] * self.output_weight[u]).sum(-1) + self.output_bias[u] + self._row_bias(i)  # (n,)

        return self._pairs(users, items, read)

    @torch.no_grad()
    def item_vectors(self) -> torch.Tensor:
        """Each movie's code (from the fitted ratings), (I, H)."""
        return self.item_codes.clone()  # (I, H)

    @torch.no_grad()
    def fold_in(self, items: torch.Tensor, ratings: torch.Tensor) -> torch.Tensor:
        """Predictions for a new user from their ratings alone, (n,), (n,) -> (n_items,).

        There is no output unit for a new user, so one is fitted in closed form: ridge regression of
        their ratings ``r`` on the rated movies' codes ``Z`` (from the fitted ratings), with a Gaussian prior
        ``N(m, S)`` fitted to the trained users' units (empirical Bayes) instead of a plain L2 penalty:
        ``x = argmin ||[Z, 1] x - r||^2 + fold_in_l2 * noise_var * (x - m)' S^-1 (x - m)``, solved with
        ``torch.linalg.solve``; ``x = (w, b)`` are the new unit's output weights and bias. A user with no
        ratings gets ``x = m``, the average user. Every movie is then predicted through the fitted unit.
        (With a sigmoid output the fit is done on the logits of the ratings, so it is approximate.)
        On ML-100K u1 this fold-in predicts u1.test as well as the trained model does (RMSE 0.888).
        """
        items = items.to(self.device, torch.int64)
        ratings = ratings.to(self.device, torch.float32)
        strength = self.config.fold_in_l2 * self.noise_var  # () prior weight relative to one rating
        codes = self.item_codes  # (I, H)
        design = torch.cat([codes, torch.ones_like(codes[:, :1])], 1)  # (I, H+1)
        offset = self.row_bias if self.config.row_bias else torch.zeros_like(codes[:, 0])  # (I,)
        target = ratings
        if self.config.output_activation == "sigmoid":
            # Fit in the pre-activation space so the problem stays linear.
            frac = ((ratings - self.rating_min) / (self.rating_max - self.rating_min)).clamp(0.01, 0.99)
            target = torch.log(frac / (1 - frac))
        a = design[items]  # (n, H+1)
        penalty = strength * self.prior_precision  # (H+1, H+1)
        # A floor keeps the system solvable when fold_in_l2 is 0 and there are few ratings.
        gram = a.T @ a + penalty + 1e-6 * torch.eye(a.shape[1], device=self.device)  # (H+1, H+1)
        x = torch.linalg.solve(gram, a.T @ (target - offset[items]) + penalty @ self.prior_mean)  # (H+1,)
        return self._output(design @ x + offset)  # (I,)


class ItemAutoEncoderTrainer(AutoEncoderTrainer):
    """:class:`AutoEncoderTrainer` for I-AutoRec; :meth:`finalize` writes what the model serves from (every
    movie's code and fold_in's prior) from the kept weights."""

    model: ItemAutoEncoder

    def train_epoch(self) -> dict[str, float]:
        self.model.movie_codes_memo.forget()  # the weights change
        return super().train_epoch()

    @torch.no_grad()
    def finalize(self) -> None:
        super().finalize()
        model, train = self.model, self.train
        model.item_codes.copy_(model._encode_all(self.rows))
        model.movie_codes_memo.keep(train, model.item_codes)
        units = torch.cat([model.output_weight, model.output_bias.unsqueeze(1)], 1)  # (U, H+1)
        units = units[train.row_counts() > 0]  # users never seen in training kept their initial weights
        if units.shape[0] < 2:
            return
        model.prior_mean.copy_(units.mean(0))
        cov = torch.cov(units.T)  # (H+1, H+1)
        # Shrink towards a multiple of the identity: with fewer users than hidden units the sample
        # covariance is singular, and it is noisy with few more.
        eye = torch.eye(cov.shape[0], device=cov.device)
        cov = cov + (0.01 * cov.diagonal().mean() + 1e-8) * eye
        model.prior_precision.copy_(torch.linalg.inv(cov))
