"""Matrix factorization that also knows movies and people by their features (LightFM's idea, Kula 2015).

A movie's vector is its own (id) vector plus the weighted sum of its features' vectors (genres, decade), and
its bias likewise; a person's is theirs plus their age band's, gender's and occupation's, where the release
has them (:mod:`movierec.data.features`). Predicted stars are ``mean + p_u . q_i + b_u + b_i`` as in ``mf``,
with ``p_u = e_u + sum_f w_uf g_f`` and so on. Trained by the same mini-batch SGD on the same objective, in which
a feature is penalised once per rating it takes part in, by its weight there::

    sum_(u,i) (r_ui - pred_ui)^2 + reg * (|e_u|^2 + |e_i|^2 + b_u^2 + b_i^2 + sum_f w_f (|g_f|^2 + c_f^2))

A movie nobody rated in training keeps an id vector of zero, so its vector is its features' alone: it can be
recommended to the people its genres suit and has neighbours in ``similar``. A person who rated nothing is their
features' vector; a new one is folded in with the features as the starting point (:mod:`movierec.cold`).
Without features (``--features none``, or a release without them) this is ``mf``'s model and objective; only
the SGD step of a row whose step is capped differs (on ml-100k u1 test RMSE 0.9182 against ``mf``'s 0.9181).

What is saved and served is the composed vector of every user and movie (``user_factors``, ``item_factors``
and the biases, so every answer about known users and movies is ``mf``'s, in numpy), the features' vectors and
each row's features. The id vectors live in the trainer only: they are the composed ones less the features'.

Lists rank through the picks model as every rating model's do (:mod:`movierec.models.picks`). Implicit ALS
learns nothing of movies and people without training ratings, so after it is trained
:meth:`HybridMF.complete_picks` places them from their features: a ridge regression from features to the picks
model's vectors, fitted on everyone it does know.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from movierec.data.ratings import RatingMatrix
from movierec.models.base import among, option
from movierec.models.factors import FactorModel, FactorTrainer
from movierec.models.mf import MFConfig, _Adam, _Batches

if TYPE_CHECKING:
    from movierec.data.features import SideFeatures
    from movierec.models.base import Recommender

GROUPS = ("movies", "people", "tags")
"""The groups of features: movies' genres and decade, people's age band, gender and occupation, movies' tags."""
FEATURES = ("all", "movies", "people", "tags", "movies,people", "movies,tags", "people,tags", "movies,people,tags",
            "none")
"""``--features``: ``all`` (every group the release has), one group, two or three in :data:`GROUPS`' order, or
none."""
ALL_HAS_TAGS = True
"""Whether ``all`` includes the movies' tags where the release has them (benchmarks/cold_start.py)."""
PICKS_RIDGE = 1.0
"""The penalty of the regression from features to the picks model's vectors, in rows' worth: enough to keep a
feature few rows share near the average, too little to matter for the common ones."""
_SHAPED = ("user_feature_index", "user_feature_weight", "item_feature_index", "item_feature_weight",
           "user_feature_factors", "user_feature_bias", "item_feature_factors", "item_feature_bias",
           "picks_user_feature_factors", "picks_user_intercept")


@dataclass(frozen=True)
class HybridConfig(MFConfig):
    features: str = option("all", "What it learns besides the ratings, where the release has them: movies' "
                                  "genres and decade, people's age, gender and occupation, movies' tags, some of "
                                  "them (comma-separated), all, or none.",
                           choices=FEATURES, search=among("all", "movies", "people", "movies,people", "none"))

    @property
    def groups(self) -> tuple[str, ...]:
        """The groups of :data:`GROUPS` that ``features`` names."""
        if self.features == "all":
            return GROUPS if ALL_HAS_TAGS else GROUPS[:2]
        return tuple(g for g in GROUPS if g in self.features.split(","))


class HybridMF(FactorModel):
    """Biased matrix factorization whose movies and people are also the sum of their features (see the module)."""

    name = "hybrid"
    mode = "explicit"
    config_class = HybridConfig
    config: HybridConfig
    uses_side_information = True
    # Registered by name in __init__ (buffers and parameters per side), declared here for the type checker.
    user_feature_index: torch.Tensor
    item_feature_index: torch.Tensor
    user_feature_weight: torch.Tensor
    item_feature_weight: torch.Tensor
    user_feature_factors: torch.nn.Parameter
    item_feature_factors: torch.nn.Parameter
    user_feature_bias: torch.nn.Parameter
    item_feature_bias: torch.nn.Parameter
    picks_user_feature_factors: torch.Tensor
    picks_user_intercept: torch.Tensor

    def __init__(self, config: HybridConfig, n_users: int, n_items: int, rating_values: tuple[float, ...]):
        super().__init__(config, n_users, n_items, rating_values)
        d = int(config.factors)
        # Each row's features (padded with the index one past the last feature, weight 0) and the features'
        # vectors and biases, with one padding row that stays zero. Sized by use_side_information, or by the
        # state a checkpoint loads (_resize_to).
        for side, rows in (("user", self.n_users), ("item", self.n_items)):
            self.register_buffer(f"{side}_feature_index", torch.zeros(rows, 0, dtype=torch.int64))  # (rows, K)
            self.register_buffer(f"{side}_feature_weight", torch.zeros(rows, 0))  # (rows, K)
            setattr(self, f"{side}_feature_factors", torch.nn.Parameter(torch.zeros(1, d)))  # (F + 1, d)
            setattr(self, f"{side}_feature_bias", torch.nn.Parameter(torch.zeros(1)))  # (F + 1,)
        # Where a person's features place them in the picks model's space (complete_picks): (F_user + 1, d_picks)
        # per feature (padding row zero) and the intercept (d_picks,).
        self.register_buffer("picks_user_feature_factors", torch.zeros(1, 0))
        self.register_buffer("picks_user_intercept", torch.zeros(0))
        self.register_load_state_dict_pre_hook(self._resize_to)
        self.feature_names: dict[str, list[str]] = {"movies": [], "people": []}
        self.requires_grad_(False)  # gradients are written out in HybridTrainer.train_epoch, as in mf
        # Small positive id vectors as mf's; the features' vectors start at zero, so training starts as mf does.
        self.user_factors.uniform_(0.0, config.init_range)
        self.item_factors.uniform_(0.0, config.init_range)

    # -- features ---------------------------------------------------------------------------------------------
    @property
    def movie_groups(self) -> tuple[bool, bool | None]:
        """Which of the movies' features to learn from: genres and decade, and tags (True: asked for by name, a note
        where the release has none; None: where the release has them; False: not)."""
        groups = self.config.groups
        return "movies" in groups, ("tags" in groups and (None if self.config.features == "all" else True))

    def use_side_information(self, movies: SideFeatures, people: SideFeatures) -> None:
        """Learn from these features of every movie and person (by index), as the config's ``features`` says."""
        groups = self.config.groups
        on = {"movies": "movies" in groups or "tags" in groups, "people": "people" in groups}
        # The features' names (``field:value``) by side: saved with the serving data, to read a person's description.
        self.feature_names = {"movies": list(movies.names) if on["movies"] else [],
                              "people": list(people.names) if on["people"] else []}
        for side, features, wanted in (("item", movies, on["movies"]), ("user", people, on["people"])):
            n_features = len(features.names) if wanted else 0
            index = torch.from_numpy(features.index) if wanted else torch.zeros(0, 0, dtype=torch.int64)
            weight = torch.from_numpy(features.weight) if wanted else torch.zeros(0, 0)
            rows = getattr(self, f"{side}_factors").shape[0]
            if wanted and index.shape[0] != rows:
                raise ValueError(f"{index.shape[0]} rows of {side} features for {rows} {side}s")
            device = self.device
            setattr(self, f"{side}_feature_index", index.reshape(rows, -1).to(device, torch.int64))
            setattr(self, f"{side}_feature_weight", weight.reshape(rows, -1).to(device, torch.float32))
            d = self.user_factors.shape[1]
            getattr(self, f"{side}_feature_factors").data = torch.zeros(n_features + 1, d, device=device)
            getattr(self, f"{side}_feature_bias").data = torch.zeros(n_features + 1, device=device)

    def _resize_to(self, module: torch.nn.Module, state: dict, prefix: str, *args: object) -> None:
        """Before a state dict loads: take the sizes of its data-shaped tensors (how many features, and how many
        per row, the checkpoint's release had)."""
        for key in _SHAPED:
            incoming = state.get(prefix + key)
            own = getattr(self, key)
            if isinstance(incoming, torch.Tensor) and incoming.dim() == own.dim():
                fresh = torch.zeros(incoming.shape, dtype=own.dtype, device=own.device)
                if isinstance(own, torch.nn.Parameter):
                    own.data = fresh
                else:
                    setattr(self, key, fresh)

    def feature_vectors(self, side: str, index: torch.Tensor, weight: torch.Tensor
                        ) -> tuple[torch.Tensor, torch.Tensor]:
        """The features' part of rows' vectors and biases: ``index``, ``weight`` (B, K) -> (B, d), (B,)."""
        factors = getattr(self, f"{side}_feature_factors")
        bias = getattr(self, f"{side}_feature_bias")
        vectors = torch.einsum("bk,bkd->bd", weight, factors[index])  # (B, d)
        return vectors, (weight * bias[index]).sum(1)

    # -- training ---------------------------------------------------------------------------------------------
    def trainer(self, train: RatingMatrix, generator: torch.Generator) -> HybridTrainer:
        return HybridTrainer(self, train, generator)

    def fold_in_penalties(self, n_ratings: int) -> tuple[float, float, float]:
        # As mf's: the objective penalises the user's own vector and bias once per rating.
        return 1.0, self.config.reg * n_ratings, self.config.reg * n_ratings

    @torch.no_grad()
    def complete_picks(self, picks: Recommender, train: RatingMatrix) -> None:
        """Give the picks model's movies and people without training ratings the vectors their features predict
        (a ridge regression from features to the picks model's vectors of those with ratings), and keep the
        regression's user half for new people (``picks_user_feature_factors``, ``picks_user_intercept``)."""
        counts = {"item": torch.bincount(train.indices.to(torch.int64), minlength=self.n_items),
                  "user": torch.diff(train.indptr)}
        for side in ("item", "user"):
            target = getattr(picks, f"{side}_factors")  # (rows, d_picks)
            index, weight = getattr(self, f"{side}_feature_index"), getattr(self, f"{side}_feature_weight")
            n_features = getattr(self, f"{side}_feature_factors").shape[0] - 1
            design = torch.zeros(target.shape[0], n_features + 1, dtype=torch.float64, device=target.device)
            design.scatter_add_(1, index, weight.double())  # (rows, F + 1): the padding column takes weight 0
            design[:, n_features] = 1.0  # the padding column becomes the intercept
            known = counts[side].to(target.device) > 0
            x, y = design[known], target[known].double()
            system = x.T @ x + PICKS_RIDGE * torch.eye(n_features + 1, dtype=torch.float64, device=x.device)
            coef = torch.linalg.solve(system, x.T @ y).float()  # (F + 1, d_picks)
            cold = ~known
            if bool(cold.any()):
                target[cold] = design[cold].float() @ coef
            if side == "user":
                self.picks_user_feature_factors = torch.cat([coef[:-1], torch.zeros_like(coef[-1:])])
                self.picks_user_intercept = coef[-1].clone()


class HybridTrainer(FactorTrainer):
    """mf's mini-batch SGD (or Adam) over the id vectors and the features' vectors together. Owns the id vectors
    (the composed ones less the features'), the batches, and Adam's moments; writes the composed vectors into the
    model after every epoch.

    SGD's step per row is ``2 lr / max(1, 2 lr (1 + reg) k)`` times the row's summed gradient, as mf's, but ``k``
    sums ``1 + |other|^2`` (the curvature of its bias and its vector) over the row's ratings in the batch, by its
    weight there, and for a feature times the number of fields a rating's features span: a genre in a third of
    the ratings and every other feature of them together correct their error at most once. (mf's ``k`` counts the
    ratings alone, which holds while vectors are short; a movie's features make its vector long.)"""

    model: HybridMF

    def __init__(self, model: HybridMF, train: RatingMatrix, generator: torch.Generator):
        super().__init__(model, train, generator)
        config = model.config
        self.batches = _Batches(train, model.n_users, model.mean, config, generator)
        n_users = model.n_users
        # Users then movies, as the batches' rows; the features' tables likewise (movies' offset past users').
        features_u, bias_u = model.feature_vectors("user", model.user_feature_index, model.user_feature_weight)
        features_i, bias_i = model.feature_vectors("item", model.item_feature_index, model.item_feature_weight)
        self.ids = torch.cat([model.user_factors - features_u, model.item_factors - features_i])  # (U + I, d)
        self.id_bias = torch.cat([model.user_bias - bias_u, model.item_bias - bias_i])  # (U + I,)
        rated = torch.cat([torch.diff(train.indptr) > 0,
                           torch.bincount(train.indices.to(torch.int64), minlength=model.n_items) > 0])
        self.ids[~rated] = 0.0  # nothing to learn of them: their vector is their features'
        self.id_bias[~rated] = 0.0
        n_user_features = model.user_feature_factors.shape[0]
        self.features = torch.cat([model.user_feature_factors, model.item_feature_factors])  # (Fu + 1 + Fi + 1, d)
        self.feature_bias = torch.cat([model.user_feature_bias, model.item_feature_bias])
        width = max(model.user_feature_index.shape[1], model.item_feature_index.shape[1])
        pad = n_user_features - 1  # the users' padding row: weight 0 everywhere it is used
        self.feature_index = torch.full((n_users + model.n_items, width), pad, dtype=torch.int64,
                                        device=self.ids.device)  # (U + I, K)
        self.feature_weight = torch.zeros(n_users + model.n_items, width, device=self.ids.device)  # (U + I, K)
        ku, ki = model.user_feature_index.shape[1], model.item_feature_index.shape[1]
        self.feature_index[:n_users, :ku] = model.user_feature_index
        self.feature_index[n_users:, :ki] = model.item_feature_index + n_user_features
        self.feature_index[n_users:, ki:] = n_user_features + model.item_feature_factors.shape[0] - 1
        self.feature_weight[:n_users, :ku] = model.user_feature_weight
        self.feature_weight[n_users:, :ki] = model.item_feature_weight
        # How many fields a rating's features span at most (a movie's genres, decade; a person's age...): each
        # feature's SGD step is capped to correct that share of its ratings' error, so all of them together
        # correct it at most once.
        spans = [w.sum(1).max() if w.numel() else torch.zeros(()) for w in (self.feature_weight[:n_users],
                                                                           self.feature_weight[n_users:])]
        self.fields = max(1.0, float(sum(spans)))
        adam = config.optimizer == "adam"
        self.adam = (_Adam(config.lr), _Adam(config.lr)) if adam else None

    @torch.no_grad()
    def train_epoch(self) -> dict[str, float]:
        config = self.model.config
        lr, reg = config.lr, config.reg
        batches, ids, id_bias, feats, feat_bias = self.batches, self.ids, self.id_bias, self.features, self.feature_bias
        counts = torch.zeros(feats.shape[0], device=ids.device)
        id_counts = torch.zeros(ids.shape[0], device=ids.device)
        squared = torch.zeros(len(batches), device=ids.device)
        penalty = torch.zeros(len(batches), device=ids.device)
        order = torch.randperm(len(batches), generator=self.generator, device=self.generator.device).tolist()
        for k in order:
            rows, centered, _ = batches[k]  # (2b,) users then U + movies; (b,) stars - mean
            b = centered.shape[0]
            f_index, f_weight = self.feature_index[rows], self.feature_weight[rows]  # (2b, K)
            x = ids.index_select(0, rows)  # (2b, d)
            xb = id_bias.index_select(0, rows)  # (2b,)
            g = feats[f_index]  # (2b, K, d)
            gb = feat_bias[f_index]  # (2b, K)
            composed = x + torch.einsum("rk,rkd->rd", f_weight, g)  # (2b, d)
            composed_bias = xb + (f_weight * gb).sum(1)  # (2b,)
            p, q = composed[:b], composed[b:]
            err = centered - (p * q).sum(1) - composed_bias[:b] - composed_bias[b:]  # (b,)
            squared[k] = err @ err
            penalty[k] = (x * x).sum() + xb @ xb + (f_weight.unsqueeze(2) * g * g).sum() + (f_weight * gb * gb).sum()
            self.advance(b, batches.nnz)
            other = torch.cat([q, p])  # (2b, d): the vector each row's error is against
            e = err.repeat(2)  # (2b,)
            flat_index = f_index.reshape(-1)
            if self.adam is None:
                # A row's curvature: 1 (its bias) plus |other|^2 (its vector) per rating, by its weight there.
                curvature = 1.0 + (other * other).sum(1)  # (2b,)
                id_counts.zero_().index_add_(0, rows, curvature)
                scale = id_counts.mul_(2 * lr * (1 + reg)).clamp_(min=1.0).reciprocal_().mul_(2 * lr)[rows]  # (2b,)
                counts.zero_().index_add_(0, flat_index, (f_weight * curvature.unsqueeze(1)).reshape(-1))
                f_scale = counts.mul_(2 * lr * (1 + reg) * self.fields).clamp_(min=1.0).reciprocal_().mul_(2 * lr)
                step = (f_scale[f_index] * f_weight).unsqueeze(2)  # (2b, K, 1)
                ids.index_add_(0, rows, scale.unsqueeze(1) * (e.unsqueeze(1) * other - reg * x))
                id_bias.index_add_(0, rows, scale * (e - reg * xb))
                feats.index_add_(0, flat_index, (step * (e.view(-1, 1, 1) * other.unsqueeze(1) - reg * g))
                                 .reshape(-1, g.shape[2]))
                feat_bias.index_add_(0, flat_index, (step.squeeze(2) * (e.unsqueeze(1) - reg * gb)).reshape(-1))
            else:
                id_grads = (2 * (reg * x - e.unsqueeze(1) * other), 2 * (reg * xb - e))
                w = f_weight.unsqueeze(2)
                feat_grads = ((2 * w * (reg * g - e.view(-1, 1, 1) * other.unsqueeze(1))).reshape(-1, g.shape[2]),
                              (2 * f_weight * (reg * gb - e.unsqueeze(1))).reshape(-1))
                self.adam[0].step((ids, id_bias), rows, id_grads)
                self.adam[1].step((feats, feat_bias), flat_index, feat_grads)
        self._write_composed()
        total = float(squared.double().sum())
        objective = total + reg * float(penalty.double().sum())
        return {"loss": objective / batches.nnz, "rmse": (total / batches.nnz) ** 0.5}

    def _write_composed(self) -> None:
        model, n_users = self.model, self.model.n_users
        n_user_features = model.user_feature_factors.shape[0]
        self.features[n_user_features - 1] = 0.0
        self.features[-1] = 0.0
        self.feature_bias[n_user_features - 1] = 0.0
        self.feature_bias[-1] = 0.0
        model.user_feature_factors.copy_(self.features[:n_user_features])
        model.item_feature_factors.copy_(self.features[n_user_features:])
        model.user_feature_bias.copy_(self.feature_bias[:n_user_features])
        model.item_feature_bias.copy_(self.feature_bias[n_user_features:])
        features_u, bias_u = model.feature_vectors("user", model.user_feature_index, model.user_feature_weight)
        features_i, bias_i = model.feature_vectors("item", model.item_feature_index, model.item_feature_weight)
        model.user_factors.copy_(self.ids[:n_users] + features_u)
        model.item_factors.copy_(self.ids[n_users:] + features_i)
        model.user_bias.copy_(self.id_bias[:n_users] + bias_u)
        model.item_bias.copy_(self.id_bias[n_users:] + bias_i)

    def finalize(self) -> None:
        # The model already holds the composed vectors of the epoch it keeps (restored, under early stopping).
        del self.batches, self.adam, self.ids, self.id_bias, self.features, self.feature_bias
        del self.feature_index, self.feature_weight
