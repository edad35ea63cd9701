"""Restricted Boltzmann Machine for collaborative filtering, trained by contrastive divergence (CD-k).

One RBM, one user at a time: the visible units are the movies, the hidden units learn taste. A user's
unrated movies are simply absent (Salakhutdinov, Mnih & Hinton 2007, "Restricted Boltzmann Machines
for Collaborative Filtering"): they add nothing to the hidden pre-activation, are never resampled in
the Gibbs chain and take no part in any gradient statistic. So a batch works on its rated
(user, movie) entries only, as sparse matrices, never on a dense users x movies block: an epoch costs
O(ratings x hidden x K x k), whatever the number of movies.

Two modes (``mode``):

- ``like`` (the default, as the seed project): one Bernoulli visible unit per movie, 1 = liked
  (rating >= ``like_threshold``), 0 = not liked. Weights ``W`` (hidden, movies), hidden bias ``a``
  (1, hidden), visible bias ``b`` (1, movies); p(h|v) = sigmoid(v W^T + r D^T + a),
  p(v|h) = sigmoid(h W + b). ``r`` marks the rated movies and ``D`` (hidden, movies) is the
  "conditional RBM" term of Salakhutdinov et al. section 4 (``conditional``, on by default): without it
  a dislike (v = 0) reaches the hidden units exactly like an unrated movie, and the model cannot tell
  a picky user from a quiet one. :meth:`RBM.score` returns P(liked).
- ``rating``: one softmax (multinomial) visible unit per movie over the K star values
  (K = len(rating_values), 10 on half-star data). ``W`` (hidden, movies, K), ``a`` (1, hidden),
  ``b`` (movies, K); p(h_j|V) = sigmoid(a_j + sum_{i,k} V_ik W_jik), p(V_i = k|h) =
  softmax_k(b_ik + sum_j h_j W_jik). :meth:`RBM.score` returns the expected stars sum_k p_k value_k,
  clipped. (A one-hot V already says which movies are rated, so ``D`` would add nothing here.)

Both modes share one code path: movie i's K visible states sit in columns i*K .. i*K+K-1 (K = 1 in
like mode) of a sparse (users, movies*K) batch matrix, and ``W`` is used as a (movies*K, hidden) matrix.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch

from movierec.data.ratings import RatingMatrix
from movierec.errors import MovierecError
from movierec.models.base import ModelConfig, Recommender, option

MODES = ("like", "rating")

# What 0 means for these fields, per mode (tuned on MovieLens-100K u1). Like mode keeps the seed's 10
# epochs; rating mode's softmax units learn best slower and longer.
MODE_DEFAULTS: dict[str, dict[str, float]] = {
    "like": {"epochs": 10, "lr": 0.2},
    "rating": {"epochs": 25, "lr": 0.05},
}


@dataclass(frozen=True)
class RBMConfig(ModelConfig):
    """Hyperparameters of :class:`RBM`. Structure follows the seed project (100 hidden units, CD-10,
    batches of 100 users, 10 epochs); what it leaves implicit follows Hinton's "A Practical Guide to
    Training RBMs" (2010): small random weights, visible biases from the data, momentum (0.5 in the
    first epoch), L2 weight decay on the weights, probabilities for the visible reconstructions.

    ``epochs`` and ``lr`` left at 0 take their mode's default (:data:`MODE_DEFAULTS`) when the config
    is built, so a config always holds the numbers actually used."""

    epochs: int = option(0, "Passes over the training users (0: the mode's default, 10 like / 25 rating).")
    mode: str = option(
        "like", "like: P(liked) per movie (Bernoulli units); rating: stars (softmax units over the star values).",
        choices=MODES,
    )
    hidden: int = option(100, "Hidden units.")
    gibbs_steps: int = option(10, "Gibbs steps per update: the k of CD-k.", "--k")
    batch_size: int = option(100, "Users per mini-batch (one weight update each).")
    lr: float = option(
        0.0, "Learning rate, updates averaged over a batch's users (0: the mode's default, 0.2 like / 0.05 rating)."
    )
    momentum: float = option(0.9, "Momentum of the updates after the first epoch (which uses 0.5).")
    weight_decay: float = option(0.01, "L2 penalty on the weights (not the biases).")
    init_std: float = option(0.01, "Standard deviation of the initial random weights.")
    sample_visible: bool = option(
        False, "Sample the visible units in the Gibbs chain (default: use their probabilities, less noise)."
    )
    conditional: bool = option(
        True, "Like mode: let the hidden units see which movies were rated, so dislikes count (Salakhutdinov 2007)."
    )
    like_threshold: float = option(3.0, "Like mode: a rating of at least this many stars counts as liked.")

    def __post_init__(self) -> None:
        for name, value in MODE_DEFAULTS.get(self.mode, {}).items():
            if getattr(self, name) == 0:
                object.__setattr__(self, name, type(getattr(self, name))(value))


class RBM(Recommender):
    """Restricted Boltzmann Machine over movies; see the module docstring for the two modes."""

    name = "rbm"
    config_class = RBMConfig

    def __init__(self, config: RBMConfig, n_users: int, n_items: int, rating_values: tuple[float, ...]):
        super().__init__(config, n_users, n_items, rating_values)
        if config.mode not in MODES:
            raise MovierecError(f"Unknown RBM mode {config.mode!r}; choose one of: {', '.join(MODES)}.")
        for field in ("hidden", "gibbs_steps", "batch_size", "epochs"):
            if getattr(config, field) < 1:
                raise MovierecError(f"RBM {field} must be at least 1, not {getattr(config, field)}.")
        if config.mode == "like" and not self.rating_min < config.like_threshold <= self.rating_max:
            raise MovierecError(
                f"like_threshold {config.like_threshold:g} must be above the lowest rating "
                f"({self.rating_min:g}) and at most the highest ({self.rating_max:g})."
            )
        self.like_mode = config.mode == "like"
        self.n_states = 1 if self.like_mode else len(self.rating_values)  # K
        hidden = config.hidden
        w_shape = (hidden, n_items) if self.like_mode else (hidden, n_items, self.n_states)
        # Parameters without autograd: CD updates are not the gradient of anything autograd could see.
        self.W = torch.nn.Parameter(torch.randn(w_shape) * config.init_std, requires_grad=False)
        self.a = torch.nn.Parameter(torch.zeros(1, hidden), requires_grad=False)  # hidden bias
        b_shape = (1, n_items) if self.like_mode else (n_items, self.n_states)
        self.b = torch.nn.Parameter(torch.zeros(b_shape), requires_grad=False)  # visible bias
        self.register_parameter("D", None)  # the conditional term, like mode only
        if self.like_mode and config.conditional:
            self.D = torch.nn.Parameter(torch.randn(hidden, n_items) * config.init_std, requires_grad=False)
        # Derived from rating_values (a constructor argument), so not part of the checkpoint.
        self.register_buffer("values", torch.tensor(self.rating_values, dtype=torch.float32), persistent=False)
        self._velocity: dict[str, torch.Tensor] = {}  # momentum per parameter: training state only
        self._epochs_done = 0

    # -- what the model predicts ---------------------------------------------------------------
    @property
    def kind(self) -> str:
        return "like" if self.like_mode else "rating"

    @property
    def like_threshold(self) -> float | None:
        return float(self.config.like_threshold) if self.like_mode else None

    # -- the network, on rated entries only ------------------------------------------------------
    def visible_states(self, ratings: torch.Tensor) -> torch.Tensor:
        """Stars -> visible states, (n,) -> (n, K): liked 1/0 in like mode, one-hot of the star value
        in rating mode (the nearest value, so float noise in the stars does not matter)."""
        if self.like_mode:
            return (ratings >= self.config.like_threshold).to(torch.float32).unsqueeze(1)  # (n, 1)
        midpoints = (self.values[1:] + self.values[:-1]) / 2  # (K-1,)
        index = torch.bucketize(ratings.to(torch.float32), midpoints)  # (n,)
        return torch.nn.functional.one_hot(index, self.n_states).to(torch.float32)  # (n, K)

    def _batch(self, pos: torch.Tensor, items: torch.Tensor, n_rows: int) -> _Batch:
        return _Batch(pos, items, n_rows, self.n_items, self.n_states)

    def _weights(self) -> tuple[torch.Tensor, torch.Tensor]:
        """W as a contiguous (movies*K, hidden) matrix and b as (movies*K,), the layout the sparse
        products want. A copy, taken once per batch (W only changes between batches)."""
        return self.W.reshape(self.config.hidden, -1).t().contiguous(), self.b.reshape(-1)

    def _hidden_base(self, batch: _Batch) -> torch.Tensor:
        """The part of the hidden input that stays fixed during a Gibbs chain: a (+ r D^T), (B, H)."""
        if self.D is None:
            return self.a
        return batch.matrix(batch.ones()) @ self.D.t().contiguous() + self.a  # (B, H)

    def _hidden_probs(self, batch: _Batch, v: torch.Tensor, wt: torch.Tensor, base: torch.Tensor) -> torch.Tensor:
        """p(h=1|v) from the rated entries' visible states ``v`` (n, K); unrated movies add nothing."""
        return torch.sigmoid(batch.matrix(v) @ wt + base)  # (B, H)

    def _visible_probs(self, batch: _Batch, h: torch.Tensor, wt: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        """p(v|h) at the rated entries only: (n, 1) P(liked), or (n, K) softmax over the star values.
        ``bias`` is ``batch.matrix`` of the visible biases at the entries."""
        # h W + b evaluated only where the batch has ratings (a sampled dense-dense product).
        logits = torch.sparse.sampled_addmm(bias, h, wt.t()).values().view(-1, self.n_states)  # (n, K)
        return torch.sigmoid(logits) if self.like_mode else torch.softmax(logits, dim=1)

    def _sample_visible(self, p: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        if generator is None or not self.config.sample_visible:
            return p  # the probabilities stand in for the states (Hinton's guide, section 3.2)
        if self.like_mode:
            return torch.bernoulli(p, generator=generator)  # (n, 1)
        # One categorical draw per entry by inverting the cumulative distribution.
        u = torch.rand((p.shape[0], 1), generator=generator, device=p.device)  # (n, 1)
        index = (p.cumsum(1) < u).sum(1).clamp_(max=self.n_states - 1)  # (n,)
        return torch.nn.functional.one_hot(index, self.n_states).to(p.dtype)  # (n, K)

    @staticmethod
    def _sample_hidden(p: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        return p if generator is None else torch.bernoulli(p, generator=generator)

    def _mean_field(self, batch: _Batch, v: torch.Tensor) -> torch.Tensor:
        """One deterministic up-down pass (v -> p(h|v) -> p(v|h)) for every movie: (B, n_items)
        P(liked), or expected stars (clipped)."""
        wt, _ = self._weights()
        h = self._hidden_probs(batch, v, wt, self._hidden_base(batch))  # (B, H)
        w_flat = self.W.reshape(self.config.hidden, -1)  # (H, I*K), a view
        b_flat = self.b.reshape(1, -1)  # (1, I*K)
        out = torch.empty((batch.n_rows, self.n_items), dtype=torch.float32, device=h.device)
        # Chunk the users so the (b, I, K) intermediate stays ~128 MB even on ML-25M's 59k x 10 stars.
        chunk = max(1, (1 << 25) // (self.n_items * self.n_states))
        for start in range(0, batch.n_rows, chunk):
            logits = torch.addmm(b_flat, h[start:start + chunk], w_flat)  # (b, I*K)
            if self.like_mode:
                out[start:start + chunk] = torch.sigmoid(logits)
            else:
                p = torch.softmax(logits.view(-1, self.n_items, self.n_states), dim=2)  # (b, I, K)
                out[start:start + chunk] = self.clip(p @ self.values)  # (b, I)
        return out

    # -- training --------------------------------------------------------------------------------
    def fit_start(self, train: RatingMatrix, generator: torch.Generator) -> None:
        """Visible biases from the data (Hinton's guide: log p/(1-p) of each movie's like rate; for
        softmax units the log of each star's frequency), so the untrained model already predicts each
        movie's average; movies nobody rated get the global distribution. Hidden biases start at 0."""
        items = train.indices
        v = self.visible_states(train.values)  # (nnz, K)
        counts = torch.zeros((self.n_items, self.n_states), device=items.device).index_add_(0, items, v)
        n_rated = torch.bincount(items, minlength=self.n_items).to(torch.float32).unsqueeze(1)  # (I, 1)
        prior = (v.sum(0) + 1) / (v.shape[0] + 2)  # (K,) global rate, smoothed so no log(0)
        # Two pseudo-ratings at the global rate keep rarely rated movies away from 0 and 1.
        p = (counts + 2 * prior) / (n_rated + 2)  # (I, K)
        bias = torch.log(p) - torch.log1p(-p) if self.like_mode else torch.log(p)
        self.b.copy_(bias.reshape(self.b.shape))
        self.a.zero_()
        self._velocity = {}
        self._epochs_done = 0

    def cd_update(
        self, train: RatingMatrix, rows: torch.Tensor, generator: torch.Generator | None, momentum: float = 0.0
    ) -> dict[str, torch.Tensor]:
        """One CD-k update of every parameter from the training ratings of users ``rows`` (B,).

        ``generator=None`` runs the chain on probabilities instead of samples (deterministic: tests).
        Returns, over the batch's n rated entries: ``ratings`` (n,), their visible states ``v0`` (n, K),
        the chain's end ``vk`` (n, K) and the mean-field reconstruction ``pv`` (n, K), the last two
        from the weights before the update."""
        cfg = self.config
        pos, items, ratings = train.entries(rows)  # (n,) each, grouped by user
        batch = self._batch(pos, items, rows.shape[0])
        v0 = self.visible_states(ratings)  # (n, K)
        wt, bt = self._weights()  # (I*K, H), (I*K,)
        bias = batch.matrix(bt[batch.cols])  # visible biases at the entries, fixed during the chain
        base = self._hidden_base(batch)  # (B, H)
        ph0 = self._hidden_probs(batch, v0, wt, base)  # (B, H)
        pv = self._visible_probs(batch, ph0, wt, bias)  # (n, K)
        h = self._sample_hidden(ph0, generator)  # (B, H)
        for step in range(cfg.gibbs_steps):
            # Only rated movies are reconstructed; unrated ones stay absent for the whole chain.
            vk = self._sample_visible(self._visible_probs(batch, h, wt, bias), generator)  # (n, K)
            phk = self._hidden_probs(batch, vk, wt, base)  # (B, H); probabilities at the end (less noise)
            if step + 1 < cfg.gibbs_steps:
                h = self._sample_hidden(phk, generator)
        # <v h>_data - <v h>_model summed over the rated entries only, each in the layout of the
        # (movies*K, hidden) copies above: (statistic, view of the parameter, its copy for weight decay).
        hidden = self.config.hidden
        updates = {
            "W": (batch.matrix(v0).t() @ ph0 - batch.matrix(vk).t() @ phk, self.W.view(hidden, -1).t(), wt),
            "a": ((ph0 - phk).sum(0, keepdim=True), self.a, None),
            "b": (torch.zeros_like(bt).index_add_(0, batch.cols, (v0 - vk).reshape(-1)), self.b.view(-1), None),
        }
        if self.D is not None:
            rated = batch.matrix(batch.ones())
            updates["D"] = (rated.t() @ (ph0 - phk), self.D.t(), self.D.t().contiguous())  # (I, H)
        scale = cfg.lr / rows.shape[0]  # averaged over the batch's users
        for name, (stat, param, decayed) in updates.items():
            velocity = self._velocity.get(name)
            if velocity is None:
                velocity = self._velocity[name] = torch.zeros_like(stat)
            velocity.mul_(momentum).add_(stat, alpha=scale)
            if decayed is not None:
                velocity.add_(decayed, alpha=-cfg.lr * cfg.weight_decay)
            param.add_(velocity)  # in place through the view: updates the parameter itself
        return {"ratings": ratings, "v0": v0, "vk": vk, "pv": pv}

    def train_epoch(self, train: RatingMatrix, generator: torch.Generator) -> dict[str, float]:
        """One pass over the users with training ratings, in random mini-batches of users."""
        device = train.device
        users = torch.nonzero(train.row_counts() > 0).squeeze(1)  # users with nothing to learn from skipped
        order = users[torch.randperm(users.shape[0], generator=generator, device=generator.device).to(device)]
        momentum = 0.5 if self._epochs_done == 0 else self.config.momentum  # Hinton's guide, section 9
        # Sums stay on the device (no sync per batch) and are read once at the end.
        abs_err = torch.zeros((), device=device)
        correct = torch.zeros((), device=device)
        sq_err = torch.zeros((), device=device)
        for start in range(0, order.shape[0], self.config.batch_size):
            out = self.cd_update(train, order[start:start + self.config.batch_size], generator, momentum)
            v0, vk, pv = out["v0"], out["vk"], out["pv"]
            self.advance(min(self.config.batch_size, order.shape[0] - start), order.shape[0])
            if self.like_mode:
                abs_err += (vk - v0).abs().sum()
                correct += ((pv >= 0.5).to(torch.float32) == v0).sum()
            else:
                abs_err += ((vk - v0) @ self.values).abs().sum()
                correct += (pv.argmax(1) == v0.argmax(1)).sum()
                sq_err += ((self.clip(pv @ self.values) - out["ratings"]) ** 2).sum()
        self._epochs_done += 1
        n = max(train.nnz, 1)  # every rating was in exactly one batch
        # loss: the seed's |reconstruction after the k Gibbs steps - truth| on the rated entries (in
        # stars in rating mode); accuracy: how often the mean-field reconstruction's likeliest value is
        # the truth; rmse: of the mean-field expected stars.
        stats = {"loss": abs_err.item() / n, "accuracy": correct.item() / n}
        if not self.like_mode:
            stats["rmse"] = (sq_err.item() / n) ** 0.5
        return stats

    # -- prediction ------------------------------------------------------------------------------
    @torch.no_grad()
    def score(self, users: torch.Tensor, train: RatingMatrix) -> torch.Tensor:
        users = users.to(train.device, torch.int64)
        pos, items, ratings = train.entries(users)  # the users' training ratings are the network's input
        return self._mean_field(self._batch(pos, items, users.shape[0]), self.visible_states(ratings))  # (B, I)

    @torch.no_grad()
    def fold_in(self, items: torch.Tensor, ratings: torch.Tensor) -> torch.Tensor:
        """A new user is just another visible vector: one mean-field pass, no retraining."""
        items = items.to(self.device, torch.int64)
        order = torch.argsort(items)  # a sparse row wants its columns in order
        items, ratings = items[order], ratings.to(self.device, torch.float32)[order]
        batch = self._batch(torch.zeros_like(items), items, 1)
        return self._mean_field(batch, self.visible_states(ratings))[0]  # (I,)

    @torch.no_grad()
    def item_vectors(self) -> torch.Tensor:
        """Each movie's weights into the hidden units: (movies, hidden) in like mode; in rating mode
        the K per-star weight vectors side by side, (movies, K * hidden)."""
        # Summing rating mode's K vectors would keep mostly "who rated it"; flattened, two movies are
        # close when each star level of one drives the hidden units like the same star level of the
        # other, i.e. when the same people like (and dislike) them. On MovieLens-100K u1 the flattened
        # vectors put The Empire Strikes Back and Return of the Jedi next to Star Wars, the summed
        # ones mix in Amadeus and Apollo 13. Like mode's D ("who rated it") is left out for the same reason.
        return self._weights()[0].reshape(self.n_items, -1)  # (I, K*H)


class _Batch:
    """The rated entries of a batch of users as sparse (users, movies*K) matrices: one row per user,
    movie i's K visible states in columns i*K .. i*K+K-1, nothing stored for unrated movies."""

    def __init__(self, pos: torch.Tensor, items: torch.Tensor, n_rows: int, n_items: int, n_states: int):
        device = items.device
        self.n_rows = int(n_rows)
        self.n_entries = int(items.shape[0])
        counts = torch.bincount(pos, minlength=self.n_rows) * n_states  # (B,) stored values per row
        self.crow = torch.cat([torch.zeros(1, dtype=torch.int64, device=device), torch.cumsum(counts, 0)])
        self.cols = (items.unsqueeze(1) * n_states + torch.arange(n_states, device=device)).reshape(-1)  # (n*K,)
        self.shape = (self.n_rows, n_items * n_states)
        self.n_states = n_states

    def ones(self) -> torch.Tensor:
        return torch.ones((self.n_entries, self.n_states), device=self.cols.device)  # (n, K)

    def matrix(self, values: torch.Tensor) -> torch.Tensor:
        """(n, K) values at the rated entries -> sparse CSR (B, movies*K). Entries must come grouped
        by row, in row order, as :meth:`RatingMatrix.entries` returns them."""
        with warnings.catch_warnings():  # torch's one-time "CSR support is in beta" notice is not for users
            warnings.simplefilter("ignore", UserWarning)
            return torch.sparse_csr_tensor(
                self.crow, self.cols, values.reshape(-1), self.shape, check_invariants=False
            )
