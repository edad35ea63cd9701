"""Mult-VAE and Mult-DAE (Liang, Krishnan, Hoffman & Jebara 2018, "Variational Autoencoders for Collaborative
Filtering"): top-N models of which movies a person picks. Two algorithms, two classes on one base.

A user is the set of movies they picked (rated at least ``min_stars``), a 0/1 row ``x`` over every movie. The
network reads ``x / |x|`` (L2-normalised, with input dropout while training) and outputs one logit per movie;
the softmax of the logits ``pi`` is a distribution over the catalogue, and the loss is the multinomial
log-likelihood of the row, ``-sum_i x_i log pi_i``, averaged over the batch's users. With ``layers`` ``a,d,b``
the network is ``I -> a -> d -> b -> I``, tanh on every hidden layer:

- :class:`MultVAE` (mode ``vae``): the encoder ``I -> a`` ends in a Gaussian over the ``d``-dimensional code,
  ``mu`` and ``log sigma^2`` (no activation), and the decoder ``d -> b -> I`` reads a sample
  ``z = mu + sigma * eps`` while training. The loss adds ``beta * KL(N(mu, sigma^2) || N(0, I))``, with
  ``beta`` rising linearly from 0 to ``--beta`` per update (``--anneal-epochs``). Scoring reads ``mu``.
- :class:`MultDAE` (mode ``dae``): the same network without the variational layer (the code is ``tanh`` of the
  encoder's output), trained on the log-likelihood alone, with weight decay; the reference code's default is
  ``I -> 200 -> I``.

The first layer reads only a row's picked movies (``embedding_bag``: exactly ``x @ W`` for the sparse ``x``);
the last is a dense (B, I) product, as the softmax needs every movie. :meth:`MultAutoEncoder.score` is
``pi``, the chance that the user's next pick is each movie: it ranks as the logits do, and 0 says nothing
(new users' scores are shrunk towards it). Movie vectors (similar movies, explanations) are the rows of the
decoder's output weights.

Training state (Adam's moments, the update count the anneal follows) lives in :class:`MultTrainer`; the
module is exactly what is saved and served.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F

from movierec.data.ratings import RatingMatrix
from movierec.errors import MovierecError
from movierec.kinds import ScoreKind
from movierec.models.base import ModelConfig, Recommender, Trainer, between, option

# Default training reads at most this many (user, movie) cells of the dense output in all (see MultConfig.for_data):
# the (B, I) logits, their softmax and their gradients are nearly the whole cost of an epoch.
CELL_BUDGET = 6e9


@dataclass(frozen=True)
class MultConfig(ModelConfig):
    """What both multinomial autoencoders are configured by; each subclass fixes its own tuned defaults."""

    epochs: int = option(100, "Passes over the training users.")
    layers: str = option("600,200,600", "Hidden layer sizes, comma-separated, input side first; the middle "
                         "one is the code.")
    dropout: float = option(0.5, "Fraction of a user's picked movies hidden from the input per batch "
                            "(denoising); they stay targets.", search=between(0.1, 0.8))
    lr: float = option(1e-3, "Learning rate (Adam).", search=between(1e-4, 1e-2, log=True))
    weight_decay: float = option(0.0, "L2 penalty on the weights (not the biases), as the optimizer's weight decay.")
    batch_size: int = option(500, "Users per mini-batch.")
    min_stars: float = option(3.5, "A rating of at least this many stars counts as picked; the rest are left out "
                              "(0: every rating counts).")

    def __post_init__(self) -> None:
        super().__post_init__()
        self.hidden_sizes()  # checked now, not when the model is built
        if not 0.0 <= self.dropout < 1.0:
            raise MovierecError(f"--dropout must be at least 0 and below 1, not {self.dropout:g}.")
        if self.lr <= 0:
            raise MovierecError(f"--lr must be positive, not {self.lr:g}.")
        if self.weight_decay < 0:
            raise MovierecError(f"--weight-decay must not be negative, not {self.weight_decay:g}.")
        if self.batch_size < 1 or self.epochs < 0:
            raise MovierecError("--batch-size must be at least 1 and --epochs must not be negative.")
        if self.min_stars < 0:
            raise MovierecError(f"--min-stars must not be negative, not {self.min_stars:g}.")

    def hidden_sizes(self) -> tuple[int, ...]:
        """``layers`` as integers: an odd number of them, the middle one the code, e.g. ``(600, 200, 600)``."""
        try:
            sizes = tuple(int(s) for s in self.layers.split(",") if s.strip())
        except ValueError:
            sizes = ()
        if not sizes or min(sizes) < 1 or len(sizes) % 2 == 0:
            raise MovierecError(
                "--layers must be an odd number of positive integers separated by commas, the middle one the "
                f"code, like 600,200,600; got {self.layers!r}."
            )
        return sizes

    @classmethod
    def for_data(cls, n_users: int, n_items: int, n_ratings: int) -> dict[str, Any]:
        """Fewer epochs where the defaults would read more than :data:`CELL_BUDGET` (user, movie) cells of the
        dense output in all: an epoch costs ~0.15-0.5 us a cell on one busy CPU core (ML-1M's 6,040 x 3,706: 3 s
        for the DAE, 11 s for the VAE's wider decoder), so ML-10M's 69,878 x 10,677 gets 8 epochs and ML-25M's
        162,541 x 59,047 one (still ~20-80 minutes on a CPU; seconds on a GPU, where ``--epochs`` can stay high);
        ML-1M and smaller keep the tuned defaults. What the networks need is updates rather than epochs: one epoch
        of ML-25M is 325 updates of 500 users, as many as 160 epochs of ml-100k. The VAE's anneal is shortened
        in the same proportion as the epochs, so it ends by the last one."""
        default = cls.__dataclass_fields__["epochs"].default
        epochs = max(1, int(CELL_BUDGET // max(n_users * n_items, 1)))
        if epochs >= default:
            return {}
        changes: dict[str, Any] = {"epochs": epochs}
        anneal = cls.__dataclass_fields__.get("anneal_epochs")
        if anneal is not None:
            changes["anneal_epochs"] = max(1, round(anneal.default * epochs / default))
        return changes


@dataclass(frozen=True)
class MultVAEConfig(MultConfig):
    """Mult-VAE as in the paper (600-200-600, tanh, dropout 0.5, Adam 1e-3, batches of 500, no weight decay,
    KL weight capped at 0.2), with the epochs and the anneal tuned on ml-100k (u1's training ratings less a
    validation slice)."""

    epochs: int = option(120, "Passes over the training users.")
    beta: float = option(0.2, "Largest weight of the KL term (the paper's anneal cap); 0 trains a plain "
                         "denoising network with a noisy code.", search=between(0.0, 1.0))
    anneal_epochs: int = option(
        100, "The KL weight rises linearly from 0 to --beta over this many epochs' updates (one step per "
        "update, as the paper's total_anneal_steps), then stays; 0: --beta from the first update.")

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.beta < 0 or self.anneal_epochs < 0:
            raise MovierecError("--beta and --anneal-epochs must not be negative.")


@dataclass(frozen=True)
class MultDAEConfig(MultConfig):
    """Mult-DAE as in the reference code (one hidden layer of 200 tanh units, dropout 0.5, Adam 1e-3, batches
    of 500, weight decay 2 x 0.01 / 500), with the epochs tuned on ml-100k."""

    epochs: int = option(200, "Passes over the training users.")
    layers: str = option("200", "Hidden layer sizes, comma-separated, input side first; the middle one is the code.")
    weight_decay: float = option(4e-5, "L2 penalty on the weights (not the biases), as the optimizer's weight decay.",
                                 search=between(1e-7, 1e-3, log=True))


class MultAutoEncoder(Recommender):
    """An autoencoder of who picked what, trained on the multinomial log-likelihood of each user's row."""

    name = "autoencoder"
    config_class: ClassVar[type[MultConfig]]
    config: MultConfig
    variational: ClassVar[bool]
    """Whether the code is a Gaussian (VAE) rather than a point (DAE)."""
    # Its scores are already the chance of each movie being the next pick, popularity included: shrinking them
    # as well drifts new users' lists to the chart (ml-100k, from 3 ratings: 6.4-6.6 of the popularity top 10
    # at 8x against 4.9-5.6 unshrunk, NDCG@10 within 0.01; benchmarks/new_users.py).
    new_user_shrink = 0.0

    def __init__(self, config: MultConfig, n_users: int, n_items: int, rating_values: tuple[float, ...]):
        super().__init__(config, n_users, n_items, rating_values)
        sizes = config.hidden_sizes()
        middle = len(sizes) // 2
        encoder, decoder = sizes[:middle + 1], sizes[middle:]  # both hold the code's size
        self.code_size = sizes[middle]
        # The encoder's last layer gives mean and log-variance side by side in the VAE.
        outs = list(encoder)
        if self.variational:
            outs[-1] *= 2
        # The first and last layers are tables indexed by movie: the input reads only the picked movies' rows.
        self.input_weight = torch.nn.Parameter(torch.empty(n_items, outs[0]))
        self.input_bias = torch.nn.Parameter(torch.empty(outs[0]))
        Linear = torch.nn.Linear
        self.encoder = torch.nn.ModuleList(Linear(a, b) for a, b in zip(encoder[:-1], outs[1:], strict=True))
        self.decoder = torch.nn.ModuleList(Linear(a, b) for a, b in zip(decoder[:-1], decoder[1:], strict=True))
        self.output_weight = torch.nn.Parameter(torch.empty(n_items, decoder[-1]))
        self.output_bias = torch.nn.Parameter(torch.empty(n_items))
        # As the reference code: Glorot-uniform weights, biases normal with sd 0.001 (truncated at 2 sd).
        with torch.no_grad():
            for name, p in self.named_parameters():
                if name.endswith("weight"):
                    torch.nn.init.xavier_uniform_(p)
                else:
                    torch.nn.init.trunc_normal_(p, std=1e-3, a=-2e-3, b=2e-3)

    kind = ScoreKind.RANK

    # -- the network -------------------------------------------------------------------------------
    def picked(self, matrix: RatingMatrix, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The picked movies of users ``rows`` (B,) of ``matrix``: (position in ``rows``, movie), each (n,),
        in row order."""
        pos, cols, stars = matrix.entries(rows)
        keep = stars >= self.config.min_stars
        return pos[keep], cols[keep]

    def _encode(
        self, pos: torch.Tensor, cols: torch.Tensor, n_rows: int, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The code of ``n_rows`` users given by their picked movies (pos, cols as :meth:`picked`): mean (B, d)
        and, in the VAE, log-variance (B, d). With a ``generator`` the input dropout is drawn from it."""
        counts = torch.bincount(pos, minlength=n_rows)  # (B,)
        offsets = torch.cumsum(counts, 0) - counts  # (B,) each row's picks are one contiguous bag
        weights = counts.clamp_min(1).float().rsqrt()[pos]  # (n,) the 0/1 row divided by its L2 norm
        p = self.config.dropout
        if generator is not None and p > 0:
            # Drawn from the training generator, never torch's global RNG: same seed, same numbers.
            keep = torch.bernoulli(torch.full_like(weights, 1.0 - p), generator=generator)
            weights = weights * keep / (1.0 - p)
        h = F.embedding_bag(cols, self.input_weight, offsets, mode="sum", per_sample_weights=weights)  # (B, H1)
        h = h + self.input_bias
        for layer in self.encoder:
            h = layer(torch.tanh(h))  # (B, H_next)
        if self.variational:
            return h[:, :self.code_size], h[:, self.code_size:]  # (B, d), (B, d)
        return torch.tanh(h), None

    def _decode(self, z: torch.Tensor) -> torch.Tensor:
        """Codes (B, d) -> logits over every movie (B, I)."""
        h = z
        for layer in self.decoder:
            h = torch.tanh(layer(h))  # (B, H_next)
        return torch.addmm(self.output_bias, h, self.output_weight.T)  # (B, I)

    def logits(self, pos: torch.Tensor, cols: torch.Tensor, n_rows: int) -> torch.Tensor:
        """The scoring network (no dropout, the VAE's mean code): picked movies of ``n_rows`` users -> (B, I)."""
        mu, _ = self._encode(pos, cols, n_rows)
        return self._decode(mu)

    def batch_loss(
        self, matrix: RatingMatrix, rows: torch.Tensor, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Training losses of users ``rows`` (B,), each averaged over them: the multinomial negative
        log-likelihood of their picked movies, and (VAE; 0 for the DAE) the KL divergence of their code's
        Gaussian from the standard normal. Dropout and the code's noise are drawn from ``generator``."""
        pos, cols = self.picked(matrix, rows)
        n = rows.shape[0]
        mu, logvar = self._encode(pos, cols, n, generator)  # (B, d), (B, d) | None
        kl = torch.zeros((), device=mu.device)
        z = mu
        if logvar is not None:
            eps = torch.randn(mu.shape, generator=generator, device=mu.device, dtype=mu.dtype)  # (B, d)
            z = mu + eps * torch.exp(0.5 * logvar)
            kl = 0.5 * (torch.exp(logvar) + mu.square() - 1.0 - logvar).sum() / n
        log_pi = torch.log_softmax(self._decode(z), dim=1)  # (B, I)
        # x is 0/1, so sum_i x_i log pi_i reads the log-probabilities at the picked movies only.
        nll = -log_pi[pos, cols].sum() / n
        return nll, kl

    # -- training ---------------------------------------------------------------------------------
    def trainer(self, train: RatingMatrix, generator: torch.Generator) -> MultTrainer:
        return MultTrainer(self, train, generator)

    def score(self, users: torch.Tensor, train: RatingMatrix) -> torch.Tensor:
        """``pi``: the chance that each user's next pick is each movie, from their training ratings, (B,) ->
        (B, I)."""
        users = users.to(train.device, torch.int64)
        pos, cols = self.picked(train, users)
        return torch.softmax(self.logits(pos, cols, users.shape[0]), dim=1)

    @torch.no_grad()
    def fold_in(self, items: torch.Tensor, ratings: torch.Tensor) -> torch.Tensor:
        """:meth:`score` of a user who is not in training, from their ratings alone: (n,), (n,) -> (I,). The
        network reads any user's row, so this is the same forward pass; nothing is fitted."""
        items = items.to(self.device, torch.int64)
        keep = ratings.to(self.device, torch.float32) >= self.config.min_stars
        cols = items[keep]
        pos = torch.zeros_like(cols)
        return torch.softmax(self.logits(pos, cols, 1), dim=1)[0]

    @torch.no_grad()
    def item_vectors(self) -> torch.Tensor:
        """The decoder's output weights: movies with similar rows gain probability from the same codes."""
        return self.output_weight.detach().clone()  # (I, H_last)


class MultTrainer(Trainer):
    """One training run of a :class:`MultAutoEncoder`: Adam over shuffled batches of the users who picked
    anything, and for the VAE the number of updates so far, which sets the KL weight."""

    model: MultAutoEncoder

    def __init__(self, model: MultAutoEncoder, train: RatingMatrix, generator: torch.Generator):
        super().__init__(model, train, generator)
        cfg = model.config
        picked = torch.zeros(train.n_rows, dtype=torch.int64, device=train.device)
        picked.index_add_(0, train.row_ids(), (train.values >= cfg.min_stars).long())
        # A user with nothing picked has no likelihood to learn from.
        self.users = torch.nonzero(picked > 0).flatten()  # (U,)
        self.batches_per_epoch = max(1, math.ceil(self.users.shape[0] / cfg.batch_size))
        # Biases are not decayed, as in the reference code.
        decay = [p for n, p in model.named_parameters() if n.endswith("weight")]
        rest = [p for n, p in model.named_parameters() if not n.endswith("weight")]
        self.optimizer = torch.optim.Adam(
            [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": rest, "weight_decay": 0.0}], lr=cfg.lr
        )
        self.updates = 0

    def beta(self) -> float:
        """The KL weight of the next update: 0 for the DAE; for the VAE rising linearly from 0 by one step per
        update to ``beta`` after ``anneal_epochs`` epochs."""
        cfg = self.model.config
        if not self.model.variational:
            return 0.0
        steps = cfg.anneal_epochs * self.batches_per_epoch
        return cfg.beta if steps == 0 else cfg.beta * min(1.0, self.updates / steps)

    def train_epoch(self) -> dict[str, float]:
        model, users, size = self.model, self.users, self.model.config.batch_size
        order = torch.randperm(users.shape[0], generator=self.generator, device=self.generator.device)
        order = users[order.to(users.device)]  # (U,)
        nll_sum = torch.zeros((), device=users.device)
        kl_sum = torch.zeros((), device=users.device)
        loss_sum = torch.zeros((), device=users.device)
        beta = 0.0
        for start in range(0, order.shape[0], size):
            rows = order[start:start + size]  # (B,)
            beta = self.beta()
            nll, kl = model.batch_loss(self.train, rows, self.generator)
            loss = nll + beta * kl
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            self.updates += 1
            n = rows.shape[0]
            nll_sum += nll.detach() * n
            kl_sum += kl.detach() * n
            loss_sum += loss.detach() * n
            self.advance(n, order.shape[0])
        count = max(int(order.shape[0]), 1)
        stats = {"loss": float(loss_sum) / count, "nll": float(nll_sum) / count}  # per user
        if model.variational:
            stats.update(kl=float(kl_sum) / count, beta=beta)
        return stats

    def finalize(self) -> None:
        self.optimizer = None  # Adam's moments: twice the weights


class MultVAE(MultAutoEncoder):
    """Mult-VAE (Liang et al. 2018): a variational autoencoder of each user's picked movies, trained on the
    multinomial likelihood; top-N lists."""

    mode = "vae"
    config_class = MultVAEConfig
    config: MultVAEConfig
    variational = True


class MultDAE(MultAutoEncoder):
    """Mult-DAE (Liang et al. 2018): a denoising autoencoder of each user's picked movies, trained on the
    multinomial likelihood; top-N lists."""

    mode = "dae"
    config_class = MultDAEConfig
    config: MultDAEConfig
    variational = False
