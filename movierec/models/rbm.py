"""Restricted Boltzmann Machines for collaborative filtering, trained by contrastive divergence (CD-k).

Two algorithms, two classes on one base (:class:`RBM`):

- :class:`LikeRBM` (``--mode like``, the seed project's model): one RBM per user, one Bernoulli visible
  unit per movie, 1 = liked (rating >= ``like_threshold``), 0 = not liked. p(h|v) = sigmoid(v W^T +
  r D^T + a), p(v|h) = sigmoid(h W + b). ``r`` marks the rated movies and ``D`` (hidden, movies) is the
  "conditional RBM" term of Salakhutdinov, Mnih & Hinton 2007, section 4 (``conditional``, on by
  default): without it a dislike (v = 0) reaches the hidden units exactly like an unrated movie, and the
  model cannot tell a picky user from a quiet one. With ``user_bias`` (on by default) every visible
  unit of a user also gets that user's offset o_u, the log-odds of their own like rate (shrunk towards
  everyone's) less everyone's: p(v|h) = sigmoid(h W + b + o_u), in the Gibbs chain and in predictions.
  o_u is computed from the user's ratings, not learned, so a new user gets theirs from the ratings they
  give. :meth:`LikeRBM.score` returns P(liked).
- :class:`RatingRBM` (``--mode rating``): one softmax (multinomial) visible unit per column over the K
  star values (K = 10 on half-star data); p(h_j|V) = sigmoid(a_j + sum_{i,k} V_ik W_jik),
  p(V_i = k|h) = softmax_k(b_ik + sum_j h_j W_jik). :meth:`RatingRBM.score` returns the expected stars
  sum_k p_k value_k. ``orientation`` says what a training case is: ``user`` (Salakhutdinov et al.: one
  case per user, a visible unit per movie) or ``item`` (I-RBM, as reported by Sedhain et al. 2015
  beside I-AutoRec: one case per movie, a visible unit per user), the more accurate one.

Each training case's unrated columns are simply absent: they add nothing to the hidden pre-activation,
are never resampled in the Gibbs chain and take no part in any gradient statistic. So a batch works on
its rated entries only, as sparse matrices, never on a dense cases x columns block: an epoch costs
O(ratings x hidden x K x k) whatever the number of columns. Column i's K visible states sit in columns
i*K .. i*K+K-1 (K = 1 for LikeRBM) of a sparse (cases, columns*K) batch matrix, and ``W`` is used as a
(columns*K, hidden) matrix.
"""

from __future__ import annotations

import math
import warnings
import weakref
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from movierec.data.ratings import RatingMatrix
from movierec.errors import MovierecError
from movierec.models.base import ModelConfig, Recommender, affordable_epochs, flag_name, option

ORIENTATIONS = ("user", "item")

# Rows per chunk when the hidden units of every movie are computed at once (item orientation).
_HIDDEN_CHUNK = 4096
# Ratings per slice when every rating's visible states are counted (fit_start).
_COUNT_CHUNK = 1 << 20


@dataclass(frozen=True)
class RBMConfig(ModelConfig):
    """What both RBMs share. Structure follows the seed project (100 hidden units, CD-10, batches of 100
    users, 10 epochs, lr 0.2); what it leaves implicit follows Hinton's "A Practical Guide to Training
    RBMs" (2010): small random weights, visible biases from the data, momentum (0.5 in the first epoch),
    L2 weight decay on the weights, probabilities for the visible reconstructions."""

    epochs: int = option(10, "Passes over the training cases.")
    hidden: int = option(100, "Hidden units.")
    gibbs_steps: int = option(10, "Gibbs steps per update: the k of CD-k.", "--k")
    batch_size: int = option(100, "Training cases per mini-batch (one weight update each).")
    lr: float = option(0.2, "Learning rate, updates averaged over a batch's training cases.")
    momentum: float = option(0.9, "Momentum of the updates after the first epoch (which uses 0.5).")
    weight_decay: float = option(0.01, "L2 penalty on the weights (not the biases).")
    init_std: float = option(0.01, "Standard deviation of the initial random weights.")
    sample_visible: bool = option(
        False, "Sample the visible units in the Gibbs chain (default: use their probabilities, less noise)."
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("hidden", "gibbs_steps", "batch_size", "epochs"):
            if getattr(self, name) < 1:
                raise MovierecError(f"{flag_name(name)} must be at least 1, not {getattr(self, name)}.")
        if not self.lr > 0 or self.weight_decay < 0 or not 0 <= self.momentum < 1:
            raise MovierecError(
                f"--lr must be positive, --weight-decay not negative and --momentum in [0, 1); got "
                f"{self.lr:g}, {self.weight_decay:g} and {self.momentum:g}."
            )


@dataclass(frozen=True)
class LikeRBMConfig(RBMConfig):
    """Hyperparameters of :class:`LikeRBM`: the seed project's settings, plus the user offset and the
    per-movie learning rates. Without those two, on small releases (150 users, most movies rated 1-4
    times, 2 updates an epoch) the calls at P(liked) >= 0.5 were worse than always answering "liked":
    the hidden units never learned who is picky, and movies with a rating or two swung on it. With them,
    test like-loss vs always "liked": MovieLens-100K u1 0.1545 (before: 0.1648) vs 0.1792, and 0.170 /
    0.257 / 0.237 / 0.227 vs 0.177 / 0.312 / 0.298 / 0.252 on the small-ml-1m / 10m / 25m / latest-small
    synthetic releases (before: 0.193 / 0.292 / 0.300 / 0.282). ``user_bias_prior`` and
    ``movie_confidence`` were chosen by comparing a few values on ml-100k and the small releases."""

    conditional: bool = option(
        True, "Let the hidden units see which movies were rated, so dislikes count (Salakhutdinov 2007)."
    )
    like_threshold: float = option(3.0, "A rating of at least this many stars counts as liked.")
    user_bias: bool = option(
        True, "Shift each user's P(liked) by how much more or less than most people they like (their like "
        "rate, shrunk towards everyone's), so picky users get fewer \"liked\" calls."
    )
    user_bias_prior: float = option(
        5.0, "Ratings at everyone's like rate added to a user's own when their like rate is estimated."
    )
    movie_confidence: float = option(
        100.0, "A movie's weights and bias learn at n / (n + this) of the learning rate, n its ratings, so "
        "rarely rated movies stay near what their few ratings say (0: every movie at the full rate)."
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.user_bias_prior > 0:
            raise MovierecError(f"--user-bias-prior must be positive, not {self.user_bias_prior:g}.")
        if not self.movie_confidence >= 0:
            raise MovierecError(f"--movie-confidence must not be negative, not {self.movie_confidence:g}.")

    @classmethod
    def for_data(cls, n_users: int, n_items: int, n_ratings: int) -> dict[str, Any]:
        """Fewer epochs on the largest release: at most 120M ratings are read in all, 5 epochs on ML-25M's 22.5M
        training ratings (~130 s each on one busy CPU core, 1,625 updates of 100 users); ML-10M and smaller
        keep 10. On the ML-1M shape, 2 epochs instead of 10 gave the same test like-loss (0.1477) and AUC 0.752
        instead of 0.753."""
        return affordable_epochs(cls, n_ratings, 120e6)

    @classmethod
    def migrate(cls, values: dict[str, Any]) -> dict[str, Any]:
        """Like RBMs saved before the user offset and the per-movie learning rates existed had neither."""
        return {"user_bias": False, "movie_confidence": 0.0, **values}


@dataclass(frozen=True)
class RatingRBMConfig(RBMConfig):
    """Hyperparameters of :class:`RatingRBM`, chosen on a validation slice (a seeded random 10%) of
    MovieLens-100K u1.base (``benchmarks/tune_rbm.py``): item-based, 200 hidden units, CD-3, 35 epochs
    reach a validation RMSE of 0.915 (the former user-based default: 0.959). On the official
    test sets: 0.925 on u1, 0.918 over u1..u5 (Surprise's SVD: 0.951 and 0.938), ~15 s per fit on one CPU
    core; ML-1M-sized data takes ~6 s an epoch on two."""

    orientation: str = option(
        "item", "item: one training case per movie, a visible unit per user (I-RBM, more accurate); "
        "user: one case per user, a visible unit per movie (Salakhutdinov 2007).", choices=ORIENTATIONS,
    )
    epochs: int = option(35, "Passes over the training cases.")
    hidden: int = option(200, "Hidden units.")
    gibbs_steps: int = option(3, "Gibbs steps per update: the k of CD-k.", "--k")
    lr: float = option(0.05, "Learning rate, updates averaged over a batch's training cases.")
    fold_in_l2: float = option(
        0.01, "Item orientation: weight of the prior fitted to the trained users' units when a new user "
        "is folded in (more = closer to the average user; 1 = plain empirical Bayes)."
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.fold_in_l2 < 0:
            raise MovierecError(f"--fold-in-l2 must not be negative, not {self.fold_in_l2:g}.")

    @classmethod
    def for_data(cls, n_users: int, n_items: int, n_ratings: int) -> dict[str, Any]:
        """A smaller network on releases with many users (ML-10M, ML-25M): item-based, W holds a weight per
        user, hidden unit and star value, and every update rewrites it whole (with its momentum and a fresh
        copy). Past 2^23 (8.4M) weights per star value, i.e. more than 41,943 users at 200 units (ML-25M at
        200 units: 325M weights, 1.3 GB, ~7 GB in training and hours an epoch):

        - 50 hidden units;
        - batches of a 64th of the movies (at most ~64 updates an epoch, as on small data; 922 on ML-25M);
        - at most 100M ratings read in all: 4 epochs on ML-25M (~262 s each on one CPU core), 11 on ML-10M
          (~99 s each). On the ML-1M shape 2 epochs gave test RMSE 0.980, 4 gave 0.963 (tuned defaults 0.944).

        ML-1M and smaller keep the tuned defaults."""
        if n_users * 200 <= 1 << 23:
            return {}
        return {"hidden": 50, "batch_size": max(100, n_items // 64), **affordable_epochs(cls, n_ratings, 100e6)}

    @classmethod
    def migrate(cls, values: dict[str, Any]) -> dict[str, Any]:
        """Rating RBMs saved before the item orientation existed were user-based."""
        return {"orientation": "user", **values}


class RBM(Recommender):
    """What both RBMs share: parameters, the CD-k update on sparse batches, the epoch, the mean-field
    pass. Subclasses say what a visible unit is (:meth:`visible_states`, :meth:`_activate`) and what an
    epoch reports (:meth:`_epoch_stats`)."""

    name: ClassVar[str] = "rbm"
    mode: ClassVar[str]
    config: RBMConfig

    def __init__(
        self, config: RBMConfig, n_users: int, n_items: int, rating_values: tuple[float, ...],
        n_states: int, n_visible: int,
    ):
        super().__init__(config, n_users, n_items, rating_values)
        self.n_states = int(n_states)  # K
        self.n_visible = int(n_visible)  # visible units (columns of a training case)
        hidden = config.hidden
        w_shape = (hidden, n_visible) if n_states == 1 else (hidden, n_visible, n_states)
        # Parameters without autograd: CD updates are not the gradient of anything autograd could see.
        self.W = torch.nn.Parameter(torch.randn(w_shape) * config.init_std, requires_grad=False)
        self.a = torch.nn.Parameter(torch.zeros(1, hidden), requires_grad=False)  # hidden bias
        b_shape = (1, n_visible) if n_states == 1 else (n_visible, n_states)
        self.b = torch.nn.Parameter(torch.zeros(b_shape), requires_grad=False)  # visible bias
        self.register_parameter("D", None)  # the conditional term (LikeRBM only)
        # Derived from rating_values (a constructor argument), so not part of the checkpoint.
        self.register_buffer("values", torch.tensor(self.rating_values, dtype=torch.float32), persistent=False)
        self._velocity: dict[str, torch.Tensor] = {}  # momentum per parameter: training state only
        self._epochs_done = 0

    # -- what a subclass provides --------------------------------------------------------------
    def visible_states(self, ratings: torch.Tensor) -> torch.Tensor:
        """Stars -> visible states, (n,) -> (n, K)."""
        raise NotImplementedError

    def _activate(self, logits: torch.Tensor) -> torch.Tensor:
        """Visible logits (n, K) -> probabilities (n, K)."""
        raise NotImplementedError

    def _epoch_stats(self, out: dict[str, torch.Tensor], sums: dict[str, torch.Tensor]) -> None:
        """Add one batch's contribution to the epoch's statistics (sums of per-entry numbers)."""
        raise NotImplementedError

    def _row_matrix(self, train: RatingMatrix) -> RatingMatrix:
        """The matrix whose rows are the training cases: ``train`` (users x movies) by default."""
        return train

    def _case_offset(self, pos: torch.Tensor, v0: torch.Tensor, n_rows: int) -> torch.Tensor | None:
        """A logit added to every visible unit of each training case, (B, 1), from the case's own visible
        states ``v0`` (n, K) at its entries ``pos`` (n,); None (the default): no offset."""
        return None

    def _column_rate(self) -> torch.Tensor | None:
        """Each column's share of the learning rate for its own parameters (W, D, b), (C,); None: all 1."""
        return None

    # -- the network, on rated entries only ------------------------------------------------------
    def _batch(self, pos: torch.Tensor, cols: torch.Tensor, n_rows: int) -> _Batch:
        return _Batch(pos, cols, n_rows, self.n_visible, self.n_states)

    def _weights(self) -> tuple[torch.Tensor, torch.Tensor]:
        """W as a contiguous (columns*K, hidden) matrix (a copy) and b as (columns*K,), the layout the sparse
        products want. Training works on such copies for a whole epoch (:class:`_Working`)."""
        return self.W.reshape(self.config.hidden, -1).t().contiguous(), self.b.reshape(-1)

    def _hidden_base(self, batch: _Batch, dt: torch.Tensor | None = None) -> torch.Tensor:
        """The part of the hidden input that stays fixed during a Gibbs chain: a (+ r D^T), (B, H). ``dt``:
        D^T (columns, hidden) contiguous, if already at hand."""
        if self.D is None:
            return self.a
        dt = self.D.t().contiguous() if dt is None else dt
        return batch.matrix(batch.ones()) @ dt + self.a  # (B, H)

    def _data_states(self, batch: _Batch, ratings: torch.Tensor) -> torch.Tensor:
        """The visible states of the batch's ratings (n,) as a sparse (B, columns*K) matrix; the default is
        ``batch.matrix`` of :meth:`visible_states`."""
        return batch.matrix(self.visible_states(ratings))

    @staticmethod
    def _hidden_probs(states: torch.Tensor, wt: torch.Tensor, base: torch.Tensor) -> torch.Tensor:
        """p(h=1|v) from the batch's visible states as a sparse (B, columns*K) matrix; unrated columns add
        nothing."""
        return torch.sigmoid(states @ wt + base)  # (B, H)

    def _visible_probs(self, batch: _Batch, h: torch.Tensor, wt: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        """p(v|h) at the rated entries only, (n, K). ``bias`` is ``batch.matrix`` of the visible biases
        at the entries."""
        # h W + b evaluated only where the batch has ratings (a sampled dense-dense product).
        logits = torch.sparse.sampled_addmm(bias, h, wt.t()).values().view(-1, self.n_states)  # (n, K)
        return self._activate(logits)

    def _sample_visible(self, p: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        if generator is None or not self.config.sample_visible:
            return p  # the probabilities stand in for the states (Hinton's guide, section 3.2)
        if self.n_states == 1:
            return torch.bernoulli(p, generator=generator)  # (n, 1)
        # One categorical draw per entry by inverting the cumulative distribution.
        u = torch.rand((p.shape[0], 1), generator=generator, device=p.device)  # (n, 1)
        index = (p.cumsum(1) < u).sum(1).clamp_(max=self.n_states - 1)  # (n,)
        return torch.nn.functional.one_hot(index, self.n_states).to(p.dtype)  # (n, K)

    @staticmethod
    def _sample_hidden(p: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        return p if generator is None else torch.bernoulli(p, generator=generator)

    def _case_hidden(self, matrix: RatingMatrix, rows: torch.Tensor, wt: torch.Tensor | None = None) -> torch.Tensor:
        """p(h|v) of training cases ``rows`` from their entries in ``matrix``: (B, H)."""
        pos, cols, ratings = matrix.entries(rows)
        return self._entries_hidden(self._batch(pos, cols, rows.shape[0]), ratings, wt)

    def _entries_hidden(self, batch: _Batch, ratings: torch.Tensor, wt: torch.Tensor | None = None) -> torch.Tensor:
        """p(h|v) of the batch's cases from their ratings (n,); ``wt``: :meth:`_weights`' copy, if already taken."""
        wt = self._weights()[0] if wt is None else wt
        return self._hidden_probs(self._data_states(batch, ratings), wt, self._hidden_base(batch))  # (B, H)

    def _mean_field(self, h: torch.Tensor, offset: torch.Tensor | None = None) -> torch.Tensor:
        """Hidden probabilities (B, H) -> p(v|h) summarised per visible unit, (B, columns): P(liked), or
        expected stars. ``offset`` (B, 1): :meth:`_case_offset`."""
        w_flat = self.W.reshape(self.config.hidden, -1)  # (H, C*K), a view
        b_flat = self.b.reshape(1, -1)  # (1, C*K)
        out = torch.empty((h.shape[0], self.n_visible), dtype=torch.float32, device=h.device)
        # Chunk the rows so the (b, C, K) intermediate stays ~128 MB even on ML-25M's 59k x 10 stars.
        chunk = max(1, (1 << 25) // (self.n_visible * self.n_states))
        for start in range(0, h.shape[0], chunk):
            logits = torch.addmm(b_flat, h[start:start + chunk], w_flat)  # (b, C*K)
            if offset is not None:
                logits += offset[start:start + chunk]
            p = self._activate(logits.view(-1, self.n_states)).view(-1, self.n_visible, self.n_states)
            out[start:start + chunk] = p @ self._state_values()  # (b, C)
        return out

    @torch.no_grad()
    def predict(
        self, users: torch.Tensor, items: torch.Tensor, train: RatingMatrix, batch_users: int = 1024
    ) -> torch.Tensor:
        """One case per user: each distinct user's hidden units once, from their training ratings, then one
        visible unit per (user, movie) pair, O(pairs x hidden x K): the numbers :meth:`score` gives at those
        pairs, without every movie's reconstruction for every user asked about (on ML-25M that made
        validating the like RBM cost 40% of an epoch). Clipped like every model's."""
        users = users.to(self.device, torch.int64)
        items = items.to(self.device, torch.int64)
        out = torch.empty(users.shape[0], dtype=torch.float32, device=self.device)
        uniq, inverse = torch.unique(users, return_inverse=True)
        weights = self.W if self.n_states > 1 else self.W.unsqueeze(-1)  # (H, C, K)
        biases = self.b.reshape(self.n_visible, self.n_states)  # (C, K)
        for start in range(0, uniq.shape[0], batch_users):
            chunk = uniq[start:start + batch_users]  # (b,)
            pos, cols, ratings = train.entries(chunk)
            hidden = self._entries_hidden(self._batch(pos, cols, chunk.shape[0]), ratings)  # (b, H)
            offset = self._case_offset(pos, self.visible_states(ratings), chunk.shape[0])  # (b, 1) or None
            pairs = torch.nonzero((inverse >= start) & (inverse < start + chunk.shape[0])).squeeze(1)  # (n,)
            for lo in range(0, pairs.shape[0], 1 << 16):  # bounds the (H, n, K) gather of weights
                sel = pairs[lo:lo + (1 << 16)]
                row, col = inverse[sel] - start, items[sel]
                logits = torch.einsum("nh,hnk->nk", hidden[row], weights[:, col]) + biases[col]  # (n, K)
                if offset is not None:
                    logits += offset[row]
                out[sel] = self._activate(logits) @ self._state_values()
        return self.clip(out) if self.kind == "rating" else out

    def _state_values(self) -> torch.Tensor:
        """What each visible state is worth in a prediction, (K,): 1 (liked), or the star values."""
        return self.values if self.n_states > 1 else self.values.new_ones(1)

    # -- training --------------------------------------------------------------------------------
    def fit_start(self, train: RatingMatrix, generator: torch.Generator) -> None:
        """Visible biases from the data (Hinton's guide: log p/(1-p) of each column's like rate; for
        softmax units the log of each star's frequency), so the untrained model already predicts each
        column's average; columns without ratings get the global distribution. Hidden biases start at 0."""
        matrix = self._row_matrix(train)
        counts = self._state_counts(matrix)  # (C, K)
        n_rated = torch.bincount(matrix.indices, minlength=self.n_visible).to(torch.float32).unsqueeze(1)  # (C, 1)
        prior = (counts.sum(0) + 1) / (matrix.nnz + 2)  # (K,) global rate, smoothed so no log(0)
        # Two pseudo-ratings at the global rate keep rarely rated columns away from 0 and 1.
        p = (counts + 2 * prior) / (n_rated + 2)  # (C, K)
        bias = torch.log(p) - torch.log1p(-p) if self.n_states == 1 else torch.log(p)
        self.b.copy_(bias.reshape(self.b.shape))
        self.a.zero_()
        self._velocity = {}
        self._epochs_done = 0

    def _state_counts(self, matrix: RatingMatrix) -> torch.Tensor:
        """How many of each column's ratings are in each visible state, (C, K), counted in slices of the
        ratings: the (nnz, K) states of a whole 25M-rating matrix would take ~1 GB at once."""
        counts = torch.zeros((self.n_visible, self.n_states), device=matrix.device)
        for start in range(0, matrix.nnz, _COUNT_CHUNK):
            stop = start + _COUNT_CHUNK
            counts.index_add_(0, matrix.indices[start:stop], self.visible_states(matrix.values[start:stop]))
        return counts

    def fit_end(self) -> None:
        self._velocity = {}  # as large as the weights

    def cd_update(
        self, matrix: RatingMatrix, rows: torch.Tensor, generator: torch.Generator | None, momentum: float = 0.0,
        working: _Working | None = None,
    ) -> dict[str, torch.Tensor]:
        """One CD-k update of every parameter from the training cases ``rows`` (B,) of ``matrix`` (cases x
        columns: users x movies, or movies x users in item orientation). With ``working`` (an epoch's copies of
        W and D) the update goes to the copies, else to the parameters themselves.

        ``generator=None`` runs the chain on probabilities instead of samples (deterministic: tests).
        Returns, over the batch's n rated entries: ``ratings`` (n,), their visible states ``v0`` (n, K),
        the chain's end ``vk`` (n, K) and the mean-field reconstruction ``pv`` (n, K), the last two
        from the weights before the update."""
        cfg = self.config
        pos, cols, ratings = matrix.entries(rows)  # (n,) each, grouped by case
        batch = self._batch(pos, cols, rows.shape[0])
        v0 = self.visible_states(ratings)  # (n, K)
        own_copies = working is None
        working = _Working(self) if own_copies else working
        wt, dt, bt = working.wt, working.dt, self.b.reshape(-1)  # (C*K, H), (C, H) or None, (C*K,)
        offset = self._case_offset(pos, v0, rows.shape[0])  # (B, 1) or None
        entry_bias = bt[batch.cols] if offset is None else bt[batch.cols] + offset[pos].repeat_interleave(self.n_states)
        bias = batch.matrix(entry_bias)  # visible biases (+ offsets) at the entries, fixed during the chain
        base = self._hidden_base(batch, dt)  # (B, H)
        data = self._data_states(batch, ratings)  # (B, C*K) sparse
        ph0 = self._hidden_probs(data, wt, base)  # (B, H)
        pv = self._visible_probs(batch, ph0, wt, bias)  # (n, K)
        h = self._sample_hidden(ph0, generator)  # (B, H)
        for step in range(cfg.gibbs_steps):
            # Only rated columns are reconstructed; unrated ones stay absent for the whole chain.
            vk = self._sample_visible(self._visible_probs(batch, h, wt, bias), generator)  # (n, K)
            phk = self._hidden_probs(batch.matrix(vk), wt, base)  # (B, H); probabilities at the end (less noise)
            if step + 1 < cfg.gibbs_steps:
                h = self._sample_hidden(phk, generator)
        # <v h>_data - <v h>_model summed over the rated entries only, added straight into each parameter's
        # momentum buffer (in the layout of the working copies): the dense statistic of the
        # sparse products is never formed (~325 MB each at ML-25M in item orientation). A column's share of
        # the learning rate scales its entries' values.
        scale = cfg.lr / rows.shape[0]  # averaged over the batch's cases
        decay = cfg.lr * cfg.weight_decay
        column_rate = self._column_rate()  # (C,) or None
        rate = None if column_rate is None else column_rate.repeat_interleave(self.n_states)[batch.cols]  # (n*K,)

        def rated(values: torch.Tensor) -> torch.Tensor:  # (n, K) -> (n*K,) in batch.cols order, times the rates
            return values.reshape(-1) if rate is None else values.reshape(-1) * rate

        def velocity(name: str, param: torch.Tensor) -> torch.Tensor:  # the momentum buffer, decayed once
            buf = self._velocity.get(name)
            if buf is None:
                buf = self._velocity[name] = param.new_zeros(param.shape)
            return buf.mul_(momentum)

        step = velocity("W", wt).addmm_((data if rate is None else batch.matrix(rated(v0))).t(), ph0, alpha=scale)
        wt.add_(step.addmm_(batch.matrix(rated(vk)).t(), phk, alpha=-scale).add_(wt, alpha=-decay))
        self.a.add_(velocity("a", self.a).add_((ph0 - phk).sum(0, keepdim=True), alpha=scale))
        b = self.b.view(-1)  # (C*K,)
        b.add_(velocity("b", b).index_add_(0, batch.cols, rated(v0 - vk), alpha=scale))
        if dt is not None:
            rated_once = batch.matrix(rated(batch.ones())).t()  # (C*K, B) with K = 1: who rated what
            dt.add_(velocity("D", dt).addmm_(rated_once, ph0 - phk, alpha=scale).add_(dt, alpha=-decay))
        if own_copies:
            working.write_back(self)
        return {"ratings": ratings, "v0": v0, "vk": vk, "pv": pv}

    def train_epoch(self, train: RatingMatrix, generator: torch.Generator) -> dict[str, float]:
        """One pass over the training cases that have ratings, in random mini-batches."""
        matrix = self._row_matrix(train)
        device = matrix.device
        cases = torch.nonzero(matrix.row_counts() > 0).squeeze(1)  # cases with nothing to learn from skipped
        order = cases[torch.randperm(cases.shape[0], generator=generator, device=generator.device).to(device)]
        momentum = 0.5 if self._epochs_done == 0 else self.config.momentum  # Hinton's guide, section 9
        # Sums stay on the device (no sync per batch) and are read once at the end.
        sums: dict[str, torch.Tensor] = {}
        working = _Working(self)
        try:
            for start in range(0, order.shape[0], self.config.batch_size):
                out = self.cd_update(matrix, order[start:start + self.config.batch_size], generator, momentum,
                                     working)
                self.advance(min(self.config.batch_size, order.shape[0] - start), order.shape[0])
                self._epoch_stats(out, sums)
        finally:
            working.write_back(self)
        self._epochs_done += 1
        n = max(matrix.nnz, 1)  # every rating was in exactly one batch
        return {name: total.item() / n for name, total in sums.items()}


def _add(sums: dict[str, torch.Tensor], name: str, value: torch.Tensor) -> None:
    sums[name] = sums[name] + value if name in sums else value


class LikeRBM(RBM):
    """Like/dislike, the seed project's RBM: one case per user, a Bernoulli visible unit per movie."""

    mode: ClassVar[str] = "like"
    config_class = LikeRBMConfig
    config: LikeRBMConfig

    def __init__(self, config: LikeRBMConfig, n_users: int, n_items: int, rating_values: tuple[float, ...]):
        super().__init__(config, n_users, n_items, rating_values, n_states=1, n_visible=n_items)
        if not self.rating_min < config.like_threshold <= self.rating_max:
            raise MovierecError(
                f"like_threshold {config.like_threshold:g} must be above the lowest rating "
                f"({self.rating_min:g}) and at most the highest ({self.rating_max:g})."
            )
        if config.conditional:
            self.D = torch.nn.Parameter(torch.randn(config.hidden, n_items) * config.init_std, requires_grad=False)
        if config.user_bias:
            self.register_buffer("like_rate", torch.tensor(0.5))  # everyone's, from the training ratings
        self._movie_rate: torch.Tensor | None = None  # n / (n + movie_confidence): training state only

    @property
    def kind(self) -> str:
        return "like"

    @property
    def like_threshold(self) -> float | None:
        return float(self.config.like_threshold)

    def visible_states(self, ratings: torch.Tensor) -> torch.Tensor:
        """Liked 1 / not liked 0, (n,) -> (n, 1)."""
        return (ratings >= self.config.like_threshold).to(torch.float32).unsqueeze(1)

    def _activate(self, logits: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(logits)

    def fit_start(self, train: RatingMatrix, generator: torch.Generator) -> None:
        super().fit_start(train, generator)
        if self.config.user_bias:
            liked = self.visible_states(train.values)  # (nnz, 1)
            self.like_rate.fill_(float((liked.sum() + 1) / (liked.shape[0] + 2)))
            self._fit_biases(train, liked[:, 0])
        self._movie_rate = None
        if self.config.movie_confidence > 0:
            n = torch.bincount(train.indices, minlength=self.n_items).to(torch.float32)  # (I,)
            self._movie_rate = n / (n + self.config.movie_confidence)

    def _column_rate(self) -> torch.Tensor | None:
        return self._movie_rate

    @torch.no_grad()
    def _fit_biases(self, train: RatingMatrix, liked: torch.Tensor, prior: float = 2.0, steps: int = 10) -> None:
        """Visible biases given the user offsets: each movie's b maximises the likelihood of its ratings,
        liked (nnz,), at P = sigmoid(b + the rater's offset), plus ``prior`` pseudo-ratings at everyone's
        like rate (a movie no one rated gets its logit). From the like rates alone, a movie rated mostly
        by picky users would count their pickiness twice: in their offsets and in its bias. Newton steps
        from the base class's start; each movie's problem is one-dimensional and concave."""
        rows, cols = train.row_ids(), train.indices
        offset = self._case_offset(rows, liked.unsqueeze(1), train.n_rows)[rows, 0]  # (nnz,)
        rate, b = self.like_rate, self.b.view(-1).clone()  # (I,)
        for _ in range(steps):
            p, q = torch.sigmoid(b[cols] + offset), torch.sigmoid(b)  # (nnz,), (I,)
            grad = torch.zeros_like(b).index_add_(0, cols, liked - p) + prior * (rate - q)
            curvature = torch.zeros_like(b).index_add_(0, cols, p * (1 - p)) + prior * q * (1 - q)
            b += grad / curvature
        self.b.view(-1).copy_(b)

    def _case_offset(self, pos: torch.Tensor, v0: torch.Tensor, n_rows: int) -> torch.Tensor | None:
        """The user offset: logit of the user's like rate, with ``user_bias_prior`` pseudo-ratings at
        everyone's, less the logit of everyone's. Without it the hidden units would have to learn each
        user's pickiness from scratch, and on small data they do not: users who like less than most then
        get as many "liked" calls as anyone, and the few "disliked" calls land on rarely rated movies."""
        if not self.config.user_bias:
            return None
        prior, rate = self.config.user_bias_prior, self.like_rate
        likes = v0.new_zeros(n_rows).index_add_(0, pos, v0[:, 0])  # (B,)
        rated = torch.bincount(pos, minlength=n_rows).to(v0.dtype)  # (B,)
        own = (likes + prior * rate) / (rated + prior)  # (B,)
        return (torch.logit(own) - torch.logit(rate)).unsqueeze(1)  # (B, 1)

    def _epoch_stats(self, out: dict[str, torch.Tensor], sums: dict[str, torch.Tensor]) -> None:
        # loss: the seed's |reconstruction after the k Gibbs steps - truth| on the rated entries;
        # accuracy: how often the mean-field reconstruction's call (P >= 0.5) is the truth.
        v0, vk, pv = out["v0"], out["vk"], out["pv"]
        _add(sums, "loss", (vk - v0).abs().sum())
        _add(sums, "accuracy", ((pv >= 0.5).to(torch.float32) == v0).sum())

    @torch.no_grad()
    def score(self, users: torch.Tensor, train: RatingMatrix) -> torch.Tensor:
        """P(liked) of every movie, (B,) -> (B, I): one mean-field pass from each user's training ratings."""
        users = users.to(train.device, torch.int64)
        pos, cols, ratings = train.entries(users)
        batch = self._batch(pos, cols, users.shape[0])
        offset = self._case_offset(pos, self.visible_states(ratings), users.shape[0])  # (B, 1) or None
        return self._mean_field(self._entries_hidden(batch, ratings), offset)

    @torch.no_grad()
    def fold_in(self, items: torch.Tensor, ratings: torch.Tensor) -> torch.Tensor:
        """A new user is just another visible vector: one mean-field pass, no retraining."""
        return _fold_in_case(self, items, ratings)

    @torch.no_grad()
    def item_vectors(self) -> torch.Tensor:
        """Each movie's weights into the hidden units, (movies, hidden). D ("who rated it") is left out:
        it would make movies with the same audience close, whatever that audience thought of them."""
        return self._weights()[0]  # (I, H)


class RatingRBM(RBM):
    """Star ratings through softmax visible units: item-based (one case per movie) by default, or
    user-based. See the module docstring."""

    mode: ClassVar[str] = "rating"
    config_class = RatingRBMConfig
    config: RatingRBMConfig

    def __init__(self, config: RatingRBMConfig, n_users: int, n_items: int, rating_values: tuple[float, ...]):
        self.item_based = config.orientation == "item"
        n_visible = n_users if self.item_based else n_items
        super().__init__(config, n_users, n_items, rating_values, n_states=len(rating_values), n_visible=n_visible)
        if self.item_based:
            # What fold_in and item_vectors need but cannot compute without the training matrix, as of the
            # last epoch: every movie's hidden probabilities, and the trained users' visible units (weights
            # into the K states, then the K biases) as independent Gaussians, fold_in's prior.
            hidden, k = config.hidden, self.n_states
            self.register_buffer("item_hidden", torch.zeros(n_items, hidden))
            self.register_buffer("prior_mean", torch.zeros(hidden + 1, k))
            self.register_buffer("prior_std", torch.ones(hidden + 1, k))
        self._hidden_cache: tuple[weakref.ref[RatingMatrix], tuple, torch.Tensor] | None = None

    def state_index(self, ratings: torch.Tensor) -> torch.Tensor:
        """Which of the K star values each rating is, (n,) -> (n,) (the nearest, so float noise does not matter)."""
        midpoints = (self.values[1:] + self.values[:-1]) / 2  # (K-1,)
        return torch.bucketize(ratings.to(torch.float32), midpoints)  # (n,)

    def visible_states(self, ratings: torch.Tensor) -> torch.Tensor:
        """One-hot of the star value, (n,) -> (n, K)."""
        return torch.nn.functional.one_hot(self.state_index(ratings), self.n_states).to(torch.float32)  # (n, K)

    def _data_states(self, batch: _Batch, ratings: torch.Tensor) -> torch.Tensor:
        # One-hot states: only the 1s are stored, so every product with them costs K times less.
        return batch.one_hot(self.state_index(ratings))

    def _activate(self, logits: torch.Tensor) -> torch.Tensor:
        return torch.softmax(logits, dim=1)

    def _row_matrix(self, train: RatingMatrix) -> RatingMatrix:
        return train.transposed() if self.item_based else train

    def _epoch_stats(self, out: dict[str, torch.Tensor], sums: dict[str, torch.Tensor]) -> None:
        # loss: |expected stars after the k Gibbs steps - truth|; accuracy: how often the mean-field
        # reconstruction's likeliest value is the truth; rmse: of the mean-field expected stars.
        v0, vk, pv = out["v0"], out["vk"], out["pv"]
        _add(sums, "loss", ((vk - v0) @ self.values).abs().sum())
        _add(sums, "accuracy", (pv.argmax(1) == v0.argmax(1)).sum())
        _add(sums, "rmse", ((pv @ self.values - out["ratings"]) ** 2).sum())

    def train_epoch(self, train: RatingMatrix, generator: torch.Generator) -> dict[str, float]:
        stats = super().train_epoch(train, generator)
        stats["rmse"] = math.sqrt(stats["rmse"])
        if self.item_based:
            self._refresh_fold_in_state(train)
        return stats

    def fit_start(self, train: RatingMatrix, generator: torch.Generator) -> None:
        super().fit_start(train, generator)
        if self.item_based:
            self._refresh_fold_in_state(train)

    # -- item orientation: every movie's hidden units -------------------------------------------
    def _movie_hidden(self, train: RatingMatrix) -> torch.Tensor:
        """Item orientation: p(h|v) of every movie from its ratings in ``train``, (n_items, H).

        Cached while neither ``train`` nor any parameter changes: evaluation calls :meth:`score` once per
        batch of users, and recomputing every movie each time would dominate its cost on large data sets."""
        key = self.weights_key()
        cache = self._hidden_cache
        if cache is not None and cache[0]() is train and cache[1] == key:
            return cache[2]
        rows = self._row_matrix(train)
        parts = [self.a.new_zeros(0, self.config.hidden)]
        wt = self._weights()[0]  # one copy for every chunk
        for start in range(0, rows.n_rows, _HIDDEN_CHUNK):
            movies = torch.arange(start, min(start + _HIDDEN_CHUNK, rows.n_rows), device=rows.device)
            parts.append(self._case_hidden(rows, movies, wt))  # (chunk, H)
        hidden = torch.cat(parts)  # (I, H)
        self._hidden_cache = (weakref.ref(train), key, hidden)
        return hidden

    def reuse_fit_state(self, train: RatingMatrix) -> None:
        # item_hidden is every movie's hidden units from the fitted ratings with the saved weights (the last
        # epoch's, or the kept one's): recomputing them took ~2 s at ML-10M, most of a `recommend`.
        if self.item_based:
            self._hidden_cache = (weakref.ref(train), self.weights_key(), self.item_hidden)

    @torch.no_grad()
    def _refresh_fold_in_state(self, train: RatingMatrix) -> None:
        self.item_hidden.copy_(self._movie_hidden(train))
        trained = train.row_counts() > 0  # users never seen in training kept their initial weights
        if int(trained.sum()) < 2:
            return
        units = self._user_units()[trained]  # (U', H+1, K)
        self.prior_mean.copy_(units.mean(0))
        self.prior_std.copy_(units.std(0).clamp_min(1e-4))

    def _user_units(self, users: torch.Tensor | None = None) -> torch.Tensor:
        """Item orientation: the visible units of ``users`` (B,) (default: every user), weights then bias:
        (B, H+1, K)."""
        w, b = (self.W, self.b) if users is None else (self.W[:, users], self.b[users])
        return torch.cat([w.permute(1, 0, 2), b.unsqueeze(1)], 1)

    def _expected_stars(self, hidden: torch.Tensor, units: torch.Tensor) -> torch.Tensor:
        """Item orientation: movies' hidden probabilities (I, H) through users' units (B, H+1, K) ->
        expected stars (B, I)."""
        out = torch.empty((units.shape[0], hidden.shape[0]), dtype=torch.float32, device=hidden.device)
        chunk = max(1, (1 << 25) // (hidden.shape[0] * self.n_states))  # bounds the (b, I, K) logits
        for start in range(0, units.shape[0], chunk):
            u = units[start:start + chunk]  # (b, H+1, K)
            logits = torch.einsum("ih,bhk->bik", hidden, u[:, :-1]) + u[:, -1:]  # (b, I, K)
            out[start:start + chunk] = torch.softmax(logits, dim=2) @ self.values  # (b, I)
        return out

    # -- prediction ------------------------------------------------------------------------------
    @torch.no_grad()
    def score(self, users: torch.Tensor, train: RatingMatrix) -> torch.Tensor:
        """Expected stars of every movie, (B,) -> (B, I), unclipped (always within the rating scale).

        User orientation: one mean-field pass from each user's training ratings. Item orientation: every
        movie's hidden units from its training ratings, read out through each user's visible unit."""
        users = users.to(train.device, torch.int64)
        if self.item_based:
            return self._expected_stars(self._movie_hidden(train), self._user_units(users))
        return self._mean_field(self._case_hidden(train, users))

    @torch.no_grad()
    def predict(
        self, users: torch.Tensor, items: torch.Tensor, train: RatingMatrix, batch_users: int = 1024
    ) -> torch.Tensor:
        """Item orientation reads each (user, movie) pair out directly, O(pairs x hidden x K), instead of
        scoring every movie for every user asked about (validation after each epoch would cost more than
        the epoch on large data sets). The same numbers as :meth:`score`, clipped like every model's."""
        if not self.item_based:
            return super().predict(users, items, train, batch_users)
        users = users.to(self.device, torch.int64)
        items = items.to(self.device, torch.int64)
        hidden = self._movie_hidden(train)  # (I, H)
        out = torch.empty(users.shape[0], dtype=torch.float32, device=self.device)
        chunk = max(1, (1 << 24) // (self.config.hidden * self.n_states))  # bounds the (n, H, K) gather
        for start in range(0, users.shape[0], chunk):
            u, i = users[start:start + chunk], items[start:start + chunk]
            logits = torch.einsum("nh,hnk->nk", hidden[i], self.W[:, u]) + self.b[u]  # (n, K)
            out[start:start + chunk] = torch.softmax(logits, dim=1) @ self.values
        return self.clip(out)

    @torch.no_grad()
    def fold_in(self, items: torch.Tensor, ratings: torch.Tensor) -> torch.Tensor:
        """Expected stars of every movie for a user not seen in training, from their ratings alone.

        User orientation: the new user is just another visible vector, one mean-field pass. Item
        orientation: the new user is a new visible unit, fitted with the movies' hidden units fixed (as of
        the last epoch): weights and biases ``x`` (H+1, K) maximising the softmax likelihood of their
        ratings, with a Gaussian prior fitted to the trained users' units (empirical Bayes):
        ``min_x -sum_n log softmax(x' [h_n, 1])[k_n] + fold_in_l2 / 2 * ||(x - m) / s||^2``, a convex
        problem solved by L-BFGS. A user with no ratings gets ``x = m``, the average user. On MovieLens-100K
        u1, every test user folded in from their u1.base ratings predicts u1.test with RMSE 0.931 (their
        trained units: 0.925), in ~0.1 s a user; ``fold_in_l2`` was chosen on the validation slice."""
        if not self.item_based:
            return _fold_in_case(self, items, ratings)
        items = items.to(self.device, torch.int64)
        order = torch.argsort(items)  # the same ratings in any order give the same numbers
        items, ratings = items[order], ratings.to(self.device, torch.float32)[order]
        mean, std = self.prior_mean, self.prior_std  # (H+1, K)
        unit = mean
        if items.numel():
            design = torch.cat([self.item_hidden[items], self.item_hidden.new_ones(items.numel(), 1)], 1)  # (n, H+1)
            target = self.visible_states(ratings).argmax(1)  # (n,)
            unit = mean + std * _fit_softmax_unit(design, target, mean, std, self.config.fold_in_l2)
        return self._expected_stars(self.item_hidden, unit.unsqueeze(0))[0]  # (I,)

    @torch.no_grad()
    def item_vectors(self) -> torch.Tensor:
        """User orientation: each movie's K per-star weight vectors side by side, (movies, K * hidden).
        Item orientation: each movie's hidden probabilities (as of the last epoch), (movies, hidden)."""
        if self.item_based:
            return self.item_hidden.clone()  # (I, H)
        # Summing the K vectors would keep mostly "who rated it"; flattened, two movies are close when
        # each star level of one drives the hidden units like the same star level of the other, i.e. when
        # the same people like (and dislike) them. On MovieLens-100K u1 the flattened vectors put The
        # Empire Strikes Back and Return of the Jedi next to Star Wars, the summed ones mix in Amadeus.
        return self._weights()[0].reshape(self.n_items, -1)  # (I, K*H)


def _fold_in_case(model: RBM, items: torch.Tensor, ratings: torch.Tensor) -> torch.Tensor:
    """User orientation: a new user's ratings as one more training case, one mean-field pass: (I,)."""
    items = items.to(model.device, torch.int64)
    order = torch.argsort(items)  # a sparse row wants its columns in order
    items, ratings = items[order], ratings.to(model.device, torch.float32)[order]
    pos = torch.zeros_like(items)
    batch = model._batch(pos, items, 1)
    offset = model._case_offset(pos, model.visible_states(ratings), 1)
    return model._mean_field(model._entries_hidden(batch, ratings), offset)[0]  # (I,)


def _fit_softmax_unit(
    design: torch.Tensor, target: torch.Tensor, mean: torch.Tensor, std: torch.Tensor, l2: float
) -> torch.Tensor:
    """Whitened deviation ``z`` (H+1, K) of a softmax unit ``mean + std * z`` fitted to ``target`` (n,)
    state indices from ``design`` (n, H+1), with the penalty ``l2 / 2 * ||z||^2``."""
    z = torch.zeros_like(mean, requires_grad=True)
    optimizer = torch.optim.LBFGS([z], lr=1.0, max_iter=200, tolerance_grad=1e-6, line_search_fn="strong_wolfe")

    def objective() -> torch.Tensor:
        optimizer.zero_grad()
        logits = design @ (mean + std * z)  # (n, K)
        loss = torch.nn.functional.cross_entropy(logits, target, reduction="sum") + 0.5 * l2 * (z**2).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        optimizer.step(objective)
    return z.detach()


class _Working:
    """W and D as contiguous (columns*K, hidden) and (columns, hidden) copies: the layout the sparse products
    read and the updates write. An epoch trains on them and writes them back to the parameters once at its end:
    a fresh transposed copy per batch and updates through transposed views took ~60 % of a like-RBM batch at
    ML-25M, where W and D are 24 MB each and an epoch has 1,625 batches."""

    def __init__(self, model: RBM):
        self.wt = model._weights()[0]  # (C*K, H)
        self.dt = None if model.D is None else model.D.t().contiguous()  # (C, H)

    @torch.no_grad()
    def write_back(self, model: RBM) -> None:
        model.W.view(model.config.hidden, -1).copy_(self.wt.t())
        if self.dt is not None:
            model.D.copy_(self.dt.t())


class _Batch:
    """The rated entries of a batch of training cases as sparse (cases, columns*K) matrices: one row per
    case, column i's K visible states in columns i*K .. i*K+K-1, nothing stored for unrated columns."""

    def __init__(self, pos: torch.Tensor, cols: torch.Tensor, n_rows: int, n_cols: int, n_states: int):
        device = cols.device
        self.n_rows = int(n_rows)
        self.n_entries = int(cols.shape[0])
        counts = torch.bincount(pos, minlength=self.n_rows)  # (B,) entries per row
        self.entry_crow = torch.cat([torch.zeros(1, dtype=torch.int64, device=device), torch.cumsum(counts, 0)])
        self.entry_cols = cols  # (n,)
        self.crow = self.entry_crow * n_states  # (B+1,) n_states values stored per entry
        self.cols = (cols.unsqueeze(1) * n_states + torch.arange(n_states, device=device)).reshape(-1)  # (n*K,)
        self.shape = (self.n_rows, n_cols * n_states)
        self.n_states = n_states

    def one_hot(self, index: torch.Tensor) -> torch.Tensor:
        """One-hot states given as each entry's state index (n,) -> sparse CSR (B, columns*K) that stores only
        the n ones (:meth:`matrix` of the (n, K) one-hot states stores n*K values, mostly zeros)."""
        ones = torch.ones(index.shape[0], device=index.device)
        return self._csr(self.entry_crow, self.entry_cols * self.n_states + index, ones)

    def ones(self) -> torch.Tensor:
        return torch.ones((self.n_entries, self.n_states), device=self.cols.device)  # (n, K)

    def matrix(self, values: torch.Tensor) -> torch.Tensor:
        """(n, K) values at the rated entries -> sparse CSR (B, columns*K). Entries must come grouped
        by row, in row order, as :meth:`RatingMatrix.entries` returns them."""
        return self._csr(self.crow, self.cols, values.reshape(-1))

    def _csr(self, crow: torch.Tensor, cols: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
        with warnings.catch_warnings():  # torch's one-time "CSR support is in beta" notice is not for users
            warnings.simplefilter("ignore", UserWarning)
            return torch.sparse_csr_tensor(crow, cols, values, self.shape, check_invariants=False)
