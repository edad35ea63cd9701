"""The star-rating RBM (``--mode rating``), on the shared base of :mod:`movierec.models.rbm`.

One softmax (multinomial) visible unit per column over the K star values (K = 10 on half-star data);
p(h_j|V) = sigmoid(a_j + sum_{i,k} V_ik W_jik), p(V_i = k|h) = softmax_k(b_ik + sum_j h_j W_jik).
:meth:`RatingRBM.score` returns the expected stars sum_k p_k value_k. ``orientation`` says what a training case
is: ``user`` (Salakhutdinov et al. 2007: one case per user, a visible unit per movie) or ``item`` (I-RBM, as
reported by Sedhain et al. 2015 beside I-AutoRec: one case per movie, a visible unit per user), the more
accurate one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from movierec.data.ratings import RatingMatrix
from movierec.errors import MovierecError
from movierec.models.base import RatingsMemo, affordable_epochs, between, option
from movierec.models.rbm import RBM, RBMConfig, RBMTrainer, _add, _Batch, _fold_in_case

ORIENTATIONS = ("user", "item")

# Rows per chunk when the hidden units of every movie are computed at once (item orientation).
_HIDDEN_CHUNK = 4096


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
    hidden: int = option(200, "Hidden units.", search=between(50, 500, log=True))
    gibbs_steps: int = option(3, "Gibbs steps per update: the k of CD-k.", "--k")
    lr: float = option(0.05, "Learning rate, updates averaged over a batch's training cases.",
                       search=between(0.005, 0.2, log=True))
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
            # What fold_in and item_vectors need but cannot compute without the training matrix, written at
            # the end of training (RatingRBMTrainer.finalize): every movie's hidden probabilities, and the
            # trained users' visible units (weights into the K states, then the K biases) as independent
            # Gaussians, fold_in's prior.
            hidden, k = config.hidden, self.n_states
            self.register_buffer("item_hidden", torch.zeros(n_items, hidden))
            self.register_buffer("prior_mean", torch.zeros(hidden + 1, k))
            self.register_buffer("prior_std", torch.ones(hidden + 1, k))
        self.movie_hidden_memo = RatingsMemo().attach(self)  # every movie's hidden units for one rating matrix

    def trainer(self, train: RatingMatrix, generator: torch.Generator) -> RatingRBMTrainer:
        return RatingRBMTrainer(self, train, generator)

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

    # -- item orientation: every movie's hidden units -------------------------------------------
    def _movie_hidden(self, train: RatingMatrix) -> torch.Tensor:
        """Item orientation: p(h|v) of every movie from its ratings in ``train``, (n_items, H).

        Kept for the last ``train`` asked about (:class:`~movierec.models.base.RatingsMemo`): evaluation calls
        :meth:`score` once per batch of users, and recomputing every movie each time would dominate its cost on
        large data sets."""
        return self.movie_hidden_memo.get(train, self._compute_movie_hidden)

    def _compute_movie_hidden(self, train: RatingMatrix) -> torch.Tensor:
        rows = self._row_matrix(train)
        parts = [self.a.new_zeros(0, self.config.hidden)]
        wt = self._weights()[0]  # one copy for every chunk
        for start in range(0, rows.n_rows, _HIDDEN_CHUNK):
            movies = torch.arange(start, min(start + _HIDDEN_CHUNK, rows.n_rows), device=rows.device)
            parts.append(self._case_hidden(rows, movies, wt))  # (chunk, H)
        return torch.cat(parts)  # (I, H)

    def reuse_fit_state(self, train: RatingMatrix) -> None:
        # item_hidden is every movie's hidden units from the fitted ratings with the saved weights (the last
        # epoch's, or the kept one's): recomputing them took ~2 s at ML-10M, most of a `recommend`.
        if self.item_based:
            self.movie_hidden_memo.keep(train, self.item_hidden)

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
        problem solved by L-BFGS in float64 (in numpy when answering: :mod:`movierec.models.lbfgs`). A user
        with no ratings gets ``x = m``, the average user. On MovieLens-100K u1, every test user folded in from
        their u1.base ratings predicts u1.test with RMSE 0.931 (their trained units: 0.925); ``fold_in_l2`` was
        chosen on the validation slice."""
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
            unit = mean + std * _fit_softmax_unit(design, target, mean, std, self.config.fold_in_l2).float()
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


class RatingRBMTrainer(RBMTrainer):
    """CD-k for :class:`RatingRBM`; in item orientation :meth:`finalize` writes what the model serves from (every
    movie's hidden units and fold_in's prior) from the kept weights."""

    model: RatingRBM

    def _epoch_stats(self, out: dict[str, torch.Tensor], sums: dict[str, torch.Tensor]) -> None:
        # loss: |expected stars after the k Gibbs steps - truth|; accuracy: how often the mean-field
        # reconstruction's likeliest value is the truth; rmse: of the mean-field expected stars.
        v0, vk, pv = out["v0"], out["vk"], out["pv"]
        _add(sums, "loss", ((vk - v0) @ self.model.values).abs().sum())
        _add(sums, "accuracy", (pv.argmax(1) == v0.argmax(1)).sum())
        _add(sums, "rmse", ((pv @ self.model.values - out["ratings"]) ** 2).sum())

    def train_epoch(self) -> dict[str, float]:
        self.model.movie_hidden_memo.forget()  # the weights change
        stats = super().train_epoch()
        stats["rmse"] = math.sqrt(stats["rmse"])
        return stats

    @torch.no_grad()
    def finalize(self) -> None:
        super().finalize()
        model, train = self.model, self.train
        if not model.item_based:
            return
        hidden = model._compute_movie_hidden(train)  # (I, H)
        model.item_hidden.copy_(hidden)
        model.movie_hidden_memo.keep(train, model.item_hidden)
        trained = train.row_counts() > 0  # users never seen in training kept their initial weights
        if int(trained.sum()) < 2:
            return
        units = model._user_units()[trained]  # (U', H+1, K)
        model.prior_mean.copy_(units.mean(0))
        model.prior_std.copy_(units.std(0).clamp_min(1e-4))


def _fit_softmax_unit(
    design: torch.Tensor, target: torch.Tensor, mean: torch.Tensor, std: torch.Tensor, l2: float
) -> torch.Tensor:
    """Whitened deviation ``z`` (H+1, K) of a softmax unit ``mean + std * z`` fitted to ``target`` (n,)
    state indices from ``design`` (n, H+1), with the penalty ``l2 / 2 * ||z||^2``; in float64 (returned so): a
    float32 loss stops changing, and so stops L-BFGS, long before a flat problem's minimiser, where rounding
    decides. :func:`movierec.models.lbfgs.minimize` solves the same problem in numpy."""
    design, mean, std = design.double(), mean.double(), std.double()
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
