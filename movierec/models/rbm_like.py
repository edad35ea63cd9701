"""The like/dislike RBM (``--mode like``, the seed project's model), on the shared base of
:mod:`movierec.models.rbm`.

One RBM per user, one Bernoulli visible unit per movie, 1 = liked (rating >= ``like_threshold``), 0 = not liked.
p(h|v) = sigmoid(v W^T + r D^T + a), p(v|h) = sigmoid(h W + b). ``r`` marks the rated movies and ``D`` (hidden,
movies) is the "conditional RBM" term of Salakhutdinov, Mnih & Hinton 2007, section 4 (``conditional``, on by
default): without it a dislike (v = 0) reaches the hidden units exactly like an unrated movie, and the model
cannot tell a picky user from a quiet one. With ``user_bias`` (on by default) every visible unit of a user also
gets that user's offset o_u, the log-odds of their own like rate (shrunk towards everyone's) less everyone's:
p(v|h) = sigmoid(h W + b + o_u), in the Gibbs chain and in predictions. o_u is computed from the user's ratings,
not learned, so a new user gets theirs from the ratings they give. :meth:`LikeRBM.score` returns P(liked).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from movierec.data.ratings import RatingMatrix
from movierec.errors import MovierecError
from movierec.kinds import ScoreKind
from movierec.models.base import affordable_epochs, between, option
from movierec.models.rbm import RBM, RBMConfig, RBMTrainer, _add, _fold_in_case


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
        "rarely rated movies stay near what their few ratings say (0: every movie at the full rate).",
        search=between(1.0, 1000.0, log=True),
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

    def trainer(self, train: RatingMatrix, generator: torch.Generator) -> LikeRBMTrainer:
        return LikeRBMTrainer(self, train, generator)

    kind = ScoreKind.LIKE

    @property
    def like_threshold(self) -> float | None:
        return float(self.config.like_threshold)

    def visible_states(self, ratings: torch.Tensor) -> torch.Tensor:
        """Liked 1 / not liked 0, (n,) -> (n, 1)."""
        return (ratings >= self.config.like_threshold).to(torch.float32).unsqueeze(1)

    def _activate(self, logits: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(logits)

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


class LikeRBMTrainer(RBMTrainer):
    """CD-k for :class:`LikeRBM`. Before the first epoch: everyone's like rate and the movie biases given the
    user offsets (``user_bias``), and each movie's share of the learning rate, ``n / (n + movie_confidence)``
    for its ``n`` ratings (training state only)."""

    model: LikeRBM

    def __init__(self, model: LikeRBM, train: RatingMatrix, generator: torch.Generator):
        super().__init__(model, train, generator)
        config = model.config
        if config.user_bias:
            liked = model.visible_states(train.values)  # (nnz, 1)
            model.like_rate.fill_(float((liked.sum() + 1) / (liked.shape[0] + 2)))
            self._fit_biases(train, liked[:, 0])
        if config.movie_confidence > 0:
            n = torch.bincount(train.indices, minlength=model.n_items).to(torch.float32)  # (I,)
            self.column_rate = n / (n + config.movie_confidence)

    @torch.no_grad()
    def _fit_biases(self, train: RatingMatrix, liked: torch.Tensor, prior: float = 2.0, steps: int = 10) -> None:
        """Visible biases given the user offsets: each movie's b maximises the likelihood of its ratings,
        liked (nnz,), at P = sigmoid(b + the rater's offset), plus ``prior`` pseudo-ratings at everyone's
        like rate (a movie no one rated gets its logit). From the like rates alone, a movie rated mostly
        by picky users would count their pickiness twice: in their offsets and in its bias. Newton steps
        from the start :class:`~movierec.models.rbm.RBMTrainer` gives them; each movie's problem is
        one-dimensional and concave."""
        model = self.model
        rows, cols = train.row_ids(), train.indices
        offset = model._case_offset(rows, liked.unsqueeze(1), train.n_rows)[rows, 0]  # (nnz,)
        rate, b = model.like_rate, model.b.view(-1).clone()  # (I,)
        for _ in range(steps):
            p, q = torch.sigmoid(b[cols] + offset), torch.sigmoid(b)  # (nnz,), (I,)
            grad = torch.zeros_like(b).index_add_(0, cols, liked - p) + prior * (rate - q)
            curvature = torch.zeros_like(b).index_add_(0, cols, p * (1 - p)) + prior * q * (1 - q)
            b += grad / curvature
        model.b.view(-1).copy_(b)

    def _epoch_stats(self, out: dict[str, torch.Tensor], sums: dict[str, torch.Tensor]) -> None:
        # loss: the seed's |reconstruction after the k Gibbs steps - truth| on the rated entries;
        # accuracy: how often the mean-field reconstruction's call (P >= 0.5) is the truth.
        v0, vk, pv = out["v0"], out["vk"], out["pv"]
        _add(sums, "loss", (vk - v0).abs().sum())
        _add(sums, "accuracy", ((pv >= 0.5).to(torch.float32) == v0).sum())
