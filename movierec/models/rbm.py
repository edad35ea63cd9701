"""Restricted Boltzmann Machines for collaborative filtering, trained by contrastive divergence (CD-k): what both
algorithms share. Each algorithm is its own class in its own module, on the base here (:class:`RBM`, trained by
:class:`RBMTrainer`):

- :class:`~movierec.models.rbm_like.LikeRBM` (``--mode like``, the seed project's model): one Bernoulli visible
  unit per movie, 1 = liked;
- :class:`~movierec.models.rbm_rating.RatingRBM` (``--mode rating``): one softmax visible unit per column over
  the K star values, one training case per movie (I-RBM, the default) or per user.

Each training case's unrated columns are simply absent: they add nothing to the hidden pre-activation,
are never resampled in the Gibbs chain and take no part in any gradient statistic. So a batch works on
its rated entries only, as sparse matrices, never on a dense cases x columns block: an epoch costs
O(ratings x hidden x K x k) whatever the number of columns. Column i's K visible states sit in columns
i*K .. i*K+K-1 (K = 1 for LikeRBM) of a sparse (cases, columns*K) batch matrix, and ``W`` is used as a
(columns*K, hidden) matrix.
"""


from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import ClassVar

import torch

from movierec.data.ratings import RatingMatrix
from movierec.errors import MovierecError
from movierec.kinds import score_kind
from movierec.models.base import ModelConfig, Recommender, Trainer, between, flag_name, option

# Ratings per slice when every rating's visible states are counted (before the first epoch).
_COUNT_CHUNK = 1 << 20


@dataclass(frozen=True)
class RBMConfig(ModelConfig):
    """What both RBMs share. Structure follows the seed project (100 hidden units, CD-10, batches of 100
    users, 10 epochs, lr 0.2); what it leaves implicit follows Hinton's "A Practical Guide to Training
    RBMs" (2010): small random weights, visible biases from the data, momentum (0.5 in the first epoch),
    L2 weight decay on the weights, probabilities for the visible reconstructions."""

    epochs: int = option(10, "Passes over the training cases.")
    hidden: int = option(100, "Hidden units.", search=between(20, 400, log=True))
    gibbs_steps: int = option(10, "Gibbs steps per update: the k of CD-k.", "--k")
    batch_size: int = option(100, "Training cases per mini-batch (one weight update each).")
    lr: float = option(0.2, "Learning rate, updates averaged over a batch's training cases.",
                       search=between(0.01, 0.5, log=True))
    momentum: float = option(0.9, "Momentum of the updates after the first epoch (which uses 0.5).",
                             search=between(0.5, 0.95))
    weight_decay: float = option(0.01, "L2 penalty on the weights (not the biases).",
                                 search=between(1e-4, 0.1, log=True))
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


class RBM(Recommender):
    """What both RBMs share: parameters, sparse batches of rated entries, the mean-field pass. Subclasses say
    what a visible unit is (:meth:`visible_states`, :meth:`_activate`); their trainers (on :class:`RBMTrainer`)
    what an epoch reports."""

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

    @property
    def values(self) -> torch.Tensor:
        """The star values (K,) float32 on the model's device: derived from ``rating_values`` (a constructor
        argument), so neither saved nor held (a model built on the meta device and given its saved weights has
        no placeholder left); a few numbers, made where they are asked for."""
        return torch.tensor(self.rating_values, dtype=torch.float32, device=self.W.device)

    # -- what a subclass provides --------------------------------------------------------------
    def visible_states(self, ratings: torch.Tensor) -> torch.Tensor:
        """Stars -> visible states, (n,) -> (n, K)."""
        raise NotImplementedError

    def _activate(self, logits: torch.Tensor) -> torch.Tensor:
        """Visible logits (n, K) -> probabilities (n, K)."""
        raise NotImplementedError

    def _row_matrix(self, train: RatingMatrix) -> RatingMatrix:
        """The matrix whose rows are the training cases: ``train`` (users x movies) by default."""
        return train

    def _case_offset(self, pos: torch.Tensor, v0: torch.Tensor, n_rows: int) -> torch.Tensor | None:
        """A logit added to every visible unit of each training case, (B, 1), from the case's own visible
        states ``v0`` (n, K) at its entries ``pos`` (n,); None (the default): no offset."""
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
        return score_kind(self.kind).on_scale(out, self.rating_min, self.rating_max)

    def _state_values(self) -> torch.Tensor:
        """What each visible state is worth in a prediction, (K,): 1 (liked), or the star values."""
        return self.values if self.n_states > 1 else self.values.new_ones(1)


def cd_update(
    model: RBM, matrix: RatingMatrix, rows: torch.Tensor, generator: torch.Generator | None, momentum: float = 0.0,
    *, velocity: dict[str, torch.Tensor] | None = None, column_rate: torch.Tensor | None = None,
    working: _Working | None = None,
) -> dict[str, torch.Tensor]:
    """One CD-k update of every parameter of ``model`` from the training cases ``rows`` (B,) of ``matrix`` (cases x
    columns: users x movies, or movies x users in item orientation). With ``working`` (an epoch's copies of
    W and D) the update goes to the copies, else to the parameters themselves. The training state is the
    caller's (:class:`RBMTrainer`'s): ``velocity``, each parameter's momentum buffer by name (updated in place;
    None: none yet), and ``column_rate`` (C,), each column's share of the learning rate for its own parameters
    (W, D, b; None: all 1).

    ``generator=None`` runs the chain on probabilities instead of samples (deterministic: tests).
    Returns, over the batch's n rated entries: ``ratings`` (n,), their visible states ``v0`` (n, K),
    the chain's end ``vk`` (n, K) and the mean-field reconstruction ``pv`` (n, K), the last two
    from the weights before the update."""
    cfg = model.config
    pos, cols, ratings = matrix.entries(rows)  # (n,) each, grouped by case
    batch = model._batch(pos, cols, rows.shape[0])
    v0 = model.visible_states(ratings)  # (n, K)
    own_copies = working is None
    working = _Working(model) if own_copies else working
    wt, dt, bt = working.wt, working.dt, model.b.reshape(-1)  # (C*K, H), (C, H) or None, (C*K,)
    offset = model._case_offset(pos, v0, rows.shape[0])  # (B, 1) or None
    entry_bias = bt[batch.cols] if offset is None else bt[batch.cols] + offset[pos].repeat_interleave(model.n_states)
    bias = batch.matrix(entry_bias)  # visible biases (+ offsets) at the entries, fixed during the chain
    base = model._hidden_base(batch, dt)  # (B, H)
    data = model._data_states(batch, ratings)  # (B, C*K) sparse
    ph0 = model._hidden_probs(data, wt, base)  # (B, H)
    pv = model._visible_probs(batch, ph0, wt, bias)  # (n, K)
    h = model._sample_hidden(ph0, generator)  # (B, H)
    for step in range(cfg.gibbs_steps):
        # Only rated columns are reconstructed; unrated ones stay absent for the whole chain.
        vk = model._sample_visible(model._visible_probs(batch, h, wt, bias), generator)  # (n, K)
        phk = model._hidden_probs(batch.matrix(vk), wt, base)  # (B, H); probabilities at the end (less noise)
        if step + 1 < cfg.gibbs_steps:
            h = model._sample_hidden(phk, generator)
    # <v h>_data - <v h>_model summed over the rated entries only, added straight into each parameter's
    # momentum buffer (in the layout of the working copies): the dense statistic of the
    # sparse products is never formed (~325 MB each at ML-25M in item orientation). A column's share of
    # the learning rate scales its entries' values.
    scale = cfg.lr / rows.shape[0]  # averaged over the batch's cases
    decay = cfg.lr * cfg.weight_decay
    rate = None if column_rate is None else column_rate.repeat_interleave(model.n_states)[batch.cols]  # (n*K,)

    def rated(values: torch.Tensor) -> torch.Tensor:  # (n, K) -> (n*K,) in batch.cols order, times the rates
        return values.reshape(-1) if rate is None else values.reshape(-1) * rate

    buffers = {} if velocity is None else velocity

    def momentum_of(name: str, param: torch.Tensor) -> torch.Tensor:  # the momentum buffer, decayed once
        buf = buffers.get(name)
        if buf is None:
            buf = buffers[name] = param.new_zeros(param.shape)
        return buf.mul_(momentum)

    step = momentum_of("W", wt).addmm_((data if rate is None else batch.matrix(rated(v0))).t(), ph0, alpha=scale)
    wt.add_(step.addmm_(batch.matrix(rated(vk)).t(), phk, alpha=-scale).add_(wt, alpha=-decay))
    model.a.add_(momentum_of("a", model.a).add_((ph0 - phk).sum(0, keepdim=True), alpha=scale))
    b = model.b.view(-1)  # (C*K,)
    b.add_(momentum_of("b", b).index_add_(0, batch.cols, rated(v0 - vk), alpha=scale))
    if dt is not None:
        rated_once = batch.matrix(rated(batch.ones())).t()  # (C*K, B) with K = 1: who rated what
        dt.add_(momentum_of("D", dt).addmm_(rated_once, ph0 - phk, alpha=scale).add_(dt, alpha=-decay))
    if own_copies:
        working.write_back(model)
    return {"ratings": ratings, "v0": v0, "vk": vk, "pv": pv}


class RBMTrainer(Trainer):
    """CD-k over random mini-batches of the training cases, with momentum (0.5 in the first epoch, Hinton's guide,
    section 9). Made, it sets the visible biases from the data; subclasses add what their RBM learns from the
    data before the first epoch and say what an epoch reports (:meth:`_epoch_stats`)."""

    model: RBM

    def __init__(self, model: RBM, train: RatingMatrix, generator: torch.Generator):
        super().__init__(model, train, generator)
        self.cases = model._row_matrix(train)
        """The matrix whose rows are the training cases: users x movies, or movies x users."""
        self.velocity: dict[str, torch.Tensor] = {}  # momentum per parameter, as large as the weights
        self.column_rate: torch.Tensor | None = None  # each column's share of the learning rate; None: all 1
        self.epochs_done = 0
        self._start_biases()

    @torch.no_grad()
    def _start_biases(self) -> None:
        """Visible biases from the data (Hinton's guide: log p/(1-p) of each column's like rate; for
        softmax units the log of each star's frequency), so the untrained model already predicts each
        column's average; columns without ratings get the global distribution. Hidden biases start at 0."""
        model, matrix = self.model, self.cases
        counts = self._state_counts(matrix)  # (C, K)
        n_rated = torch.bincount(matrix.indices, minlength=model.n_visible).to(torch.float32).unsqueeze(1)  # (C, 1)
        prior = (counts.sum(0) + 1) / (matrix.nnz + 2)  # (K,) global rate, smoothed so no log(0)
        # Two pseudo-ratings at the global rate keep rarely rated columns away from 0 and 1.
        p = (counts + 2 * prior) / (n_rated + 2)  # (C, K)
        bias = torch.log(p) - torch.log1p(-p) if model.n_states == 1 else torch.log(p)
        model.b.copy_(bias.reshape(model.b.shape))
        model.a.zero_()

    def _state_counts(self, matrix: RatingMatrix) -> torch.Tensor:
        """How many of each column's ratings are in each visible state, (C, K), counted in slices of the
        ratings: the (nnz, K) states of a whole 25M-rating matrix would take ~1 GB at once."""
        model = self.model
        counts = torch.zeros((model.n_visible, model.n_states), device=matrix.device)
        for start in range(0, matrix.nnz, _COUNT_CHUNK):
            stop = start + _COUNT_CHUNK
            counts.index_add_(0, matrix.indices[start:stop], model.visible_states(matrix.values[start:stop]))
        return counts

    def _epoch_stats(self, out: dict[str, torch.Tensor], sums: dict[str, torch.Tensor]) -> None:
        """Add one batch's contribution (:func:`cd_update`'s answer) to the epoch's statistics (sums of
        per-entry numbers)."""
        raise NotImplementedError

    def cd_update(
        self, rows: torch.Tensor, generator: torch.Generator | None, momentum: float = 0.0,
        working: _Working | None = None,
    ) -> dict[str, torch.Tensor]:
        """:func:`cd_update` of the training cases ``rows`` with this run's momentum buffers and learning rates."""
        return cd_update(self.model, self.cases, rows, generator, momentum, velocity=self.velocity,
                         column_rate=self.column_rate, working=working)

    def train_epoch(self) -> dict[str, float]:
        """One pass over the training cases that have ratings, in random mini-batches."""
        model, matrix, generator = self.model, self.cases, self.generator
        device = matrix.device
        size = model.config.batch_size
        cases = torch.nonzero(matrix.row_counts() > 0).squeeze(1)  # cases with nothing to learn from skipped
        order = cases[torch.randperm(cases.shape[0], generator=generator, device=generator.device).to(device)]
        momentum = 0.5 if self.epochs_done == 0 else model.config.momentum  # Hinton's guide, section 9
        # Sums stay on the device (no sync per batch) and are read once at the end.
        sums: dict[str, torch.Tensor] = {}
        working = _Working(model)
        try:
            for start in range(0, order.shape[0], size):
                out = self.cd_update(order[start:start + size], generator, momentum, working)
                self.advance(min(size, order.shape[0] - start), order.shape[0])
                self._epoch_stats(out, sums)
        finally:
            working.write_back(model)
        self.epochs_done += 1
        n = max(matrix.nnz, 1)  # every rating was in exactly one batch
        return {name: total.item() / n for name, total in sums.items()}

    def finalize(self) -> None:
        self.velocity = {}


def _add(sums: dict[str, torch.Tensor], name: str, value: torch.Tensor) -> None:
    sums[name] = sums[name] + value if name in sums else value


def _fold_in_case(model: RBM, items: torch.Tensor, ratings: torch.Tensor) -> torch.Tensor:
    """User orientation: a new user's ratings as one more training case, one mean-field pass: (I,)."""
    items = items.to(model.device, torch.int64)
    order = torch.argsort(items)  # a sparse row wants its columns in order
    items, ratings = items[order], ratings.to(model.device, torch.float32)[order]
    pos = torch.zeros_like(items)
    batch = model._batch(pos, items, 1)
    offset = model._case_offset(pos, model.visible_states(ratings), 1)
    return model._mean_field(model._entries_hidden(batch, ratings), offset)[0]  # (I,)


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
