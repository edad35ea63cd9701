"""Model x split -> metrics: one protocol for every model and for the reference baselines.

:func:`evaluate` reads a model only through a small duck type (:class:`Scorer`): ``kind``,
``like_threshold``, ``device`` and ``score(users, train) -> (B, n_items)``. Every
:class:`~movierec.models.base.Recommender` has those, and so do the two baselines here, so one code path
evaluates everything and a metric that does not apply to a model comes back as ``None``.

The protocol, for a training :class:`RatingMatrix` and the held-out test :class:`Ratings`:

- **Pointwise.** Every test rating is predicted from ``score`` (the user's row, at the movie).
  ``rmse``/``mae`` compare predicted and true stars (models of kind ``"rating"`` only); the predicted
  stars are clamped to the rating scale first (``score`` is raw and unclipped by contract: a prediction of
  5.6 stars is a 5). Like/dislike calls use the clamped stars too; AUC, an ordering, uses the raw scores.
  ``like_error``/``accuracy``/``auc`` judge liked (true stars >= the like threshold) against the prediction:
  ``"like"`` models give P(liked), called liked when >= 0.5; ``"rating"`` models call a movie liked when
  the predicted stars reach the threshold, and their predicted stars are the AUC score. The threshold is
  the model's own ``like_threshold`` when it has one, else the ``like_threshold`` argument.
- **Ranking** (top-K). For each test user, every movie the user did *not* rate in the training split is
  ranked by what the model's lists are ordered by: ``rank_score`` where the model has one (a rating or like
  model with its picks model, :class:`movierec.models.picks.Ranked`), else ``score`` (training movies can
  never be recommended); the relevant movies are the user's test
  ratings of at least ``relevance`` stars (by default :data:`RELEVANCE`, or the highest stars in the data where
  those are fewer: on data without stars, where every rating is 1, every test movie is relevant); users with no
  relevant test movie are skipped. Movies are
  ranked by the raw ``score`` (what the model knows, not the clipped stars, which would tie every movie
  predicted above the top of the scale); equal raw scores are ordered by movie index, lower first, so
  results are deterministic. precision/recall/nDCG/hit/MAP are
  averaged over the ranked users (definitions in :mod:`movierec.metrics`); coverage is the fraction of
  all movies that appear in at least one user's list.

Users are scored ``batch_users`` at a time (by default as many as fit :data:`movierec.batch.SCORE_BLOCK` scores), so
memory is one (batch x movies) score block, never the whole users x movies matrix, and Ctrl-C is answered between
batches. A ``progress(done, total)`` callback hears of the test users done after every batch.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar, Protocol

import torch

from movierec import metrics
from movierec.batch import batch_size_for
from movierec.data.ratings import RatingMatrix, Ratings
from movierec.errors import MovierecError
from movierec.kinds import ScoreKind, score_kind

if TYPE_CHECKING:
    from movierec.checkpoint.meta import CheckpointMeta

__all__ = ["GlobalMeanBaseline", "PopularityBaseline", "Scorer", "clamp_stars", "evaluate", "heldout_metrics"]


class Scorer(Protocol):
    """What :func:`evaluate` needs from a model.

    ``kind`` is ``"rating"`` (scores are stars), ``"like"`` (scores are P(liked)) or ``"rank"`` (scores
    only order movies: no star or like predictions). An optional ``discriminates`` attribute set to False
    says the scores are the same for every (user, movie) pair, so they can neither rank movies nor tell
    liked from disliked; models without the attribute are taken to discriminate.
    """

    @property
    def kind(self) -> str: ...

    @property
    def like_threshold(self) -> float | None: ...

    @property
    def device(self) -> torch.device: ...

    def score(self, users: torch.Tensor, train: RatingMatrix) -> torch.Tensor: ...

    def predict(
        self, users: torch.Tensor, items: torch.Tensor, train: RatingMatrix, *, batch_users: int = 1024
    ) -> torch.Tensor: ...


# -- baselines ---------------------------------------------------------------------------------------
class _Baseline:
    """Shared plumbing of the baselines: built from the training matrix, on its device, nothing to learn."""

    name: ClassVar[str]
    kind: ClassVar[str]
    discriminates: ClassVar[bool] = True
    like_threshold: ClassVar[float | None] = None

    def __init__(self, train: RatingMatrix):
        self.n_users = train.n_rows
        self.n_items = train.n_cols
        self.device = train.device

    def _item_scores(self) -> torch.Tensor:
        raise NotImplementedError

    def score(self, users: torch.Tensor, train: RatingMatrix) -> torch.Tensor:
        """The same row for every user: (B,) -> (B, n_items)."""
        return self._item_scores().unsqueeze(0).expand(users.shape[0], -1)

    def predict(
        self, users: torch.Tensor, items: torch.Tensor, train: RatingMatrix, batch_users: int = 1024
    ) -> torch.Tensor:
        """Scores for (user, movie) pairs: (N,), (N,) -> (N,)."""
        return self._item_scores()[items.to(self.device, torch.int64)]


class PopularityBaseline(_Baseline):
    """Ranks movies by how many training ratings they have; predicts no stars and no likes."""

    name = "popularity"
    kind = "rank"

    def __init__(self, train: RatingMatrix):
        super().__init__(train)
        self.counts = torch.bincount(train.indices, minlength=train.n_cols).float()  # (I,)

    def _item_scores(self) -> torch.Tensor:
        return self.counts


class GlobalMeanBaseline(_Baseline):
    """Predicts the mean training rating for every (user, movie); a constant ranks nothing."""

    name = "global-mean"
    kind = "rating"
    discriminates = False

    def __init__(self, train: RatingMatrix):
        super().__init__(train)
        mean = train.values.double().mean() if train.nnz else torch.tensor(math.nan)
        self.mean = float(mean)
        self._row = torch.full((train.n_cols,), self.mean, dtype=torch.float32, device=self.device)

    def _item_scores(self) -> torch.Tensor:
        return self._row


# -- protocol ------------------------------------------------------------------------------------------
def clamp_stars(model: Scorer, pred: torch.Tensor) -> torch.Tensor:
    """A rating model's predicted stars clamped to its rating scale; other kinds' scores unchanged."""
    values = getattr(model, "rating_values", None)
    if not values:
        return pred
    return score_kind(model.kind).on_scale(pred, min(values), max(values))


def _liked_threshold(model: Scorer, fallback: float) -> float:
    own = model.like_threshold
    return float(own) if own is not None else float(fallback)


def _check_shapes(model: Scorer, train: RatingMatrix, test: Ratings) -> None:
    n_items = getattr(model, "n_items", train.n_cols)
    if not (train.n_cols == test.n_items == n_items) or train.n_rows != test.n_users:
        raise MovierecError(
            f"The test split ({test.n_users} users x {test.n_items} movies) does not match the training "
            f"data ({train.n_rows} x {train.n_cols}) or the model ({n_items} movies); evaluate a model on "
            "the data set it was trained on."
        )


class _EvalMode:
    """Puts an ``nn.Module`` in eval mode (dropout off) for the duration, then restores its mode."""

    def __init__(self, model: object):
        self.module = model if isinstance(model, torch.nn.Module) else None
        self.was_training = False

    def __enter__(self) -> None:
        if self.module is not None:
            self.was_training = self.module.training
            self.module.eval()

    def __exit__(self, *exc: object) -> None:
        if self.module is not None and self.was_training:
            self.module.train()


def heldout_metrics(
    model: Scorer, train: RatingMatrix, test: Ratings, progress: Callable[[int, int], None] | None = None
) -> dict[str, float]:
    """The quick validation the training loop runs after every epoch.

    ``"rating"`` models -> ``{"rmse", "mae"}``; ``"like"`` models -> ``{"like_error", "accuracy", "auc"}``
    with liked = test stars >= ``model.like_threshold`` (``auc`` is NaN when the test ratings are all
    liked or all disliked); ``"rank"`` models -> ``{"ndcg@10", "recall@10"}`` by the ranking protocol of
    :func:`evaluate`. Predictions come from ``model.predict``, batched over users;
    ``progress(done, total)`` is told of the test users done after every batch.
    """
    kind = score_kind(model.kind)
    if kind is ScoreKind.RANK:
        full = evaluate(model, train, test, k=10, progress=progress)
        return {key: math.nan if (value := full[key]) is None else float(value) for key in ("ndcg@10", "recall@10")}
    device = model.device
    train = train.to(device)
    test_matrix = test.matrix(device)  # the ratings grouped by user: a batch of users is a slice
    users = test_matrix.row_ids()
    items, truth = test_matrix.indices, test_matrix.values
    pred = torch.empty_like(truth)
    test_users = torch.nonzero(test_matrix.row_counts() > 0).flatten()  # (U,)
    n_users = int(test_users.shape[0])
    batch = batch_size_for(train.n_cols)
    with torch.no_grad(), _EvalMode(model):
        for start in range(0, n_users, batch):
            last = test_users[min(start + batch, n_users) - 1]
            a, b = int(test_matrix.indptr[test_users[start]]), int(test_matrix.indptr[last + 1])
            pred[a:b] = model.predict(users[a:b], items[a:b], train, batch_users=batch)
            if progress is not None:
                progress(min(start + batch, n_users), n_users)
        pred = clamp_stars(model, pred)
    if kind is ScoreKind.RATING:
        return {"rmse": metrics.rmse(pred, truth), "mae": metrics.mae(pred, truth)}
    if model.like_threshold is None:
        raise ValueError("a like model must define like_threshold")
    liked = truth >= model.like_threshold
    auc = metrics.roc_auc(pred, liked)
    return {
        "like_error": metrics.like_error(pred, liked),
        "accuracy": metrics.accuracy(pred, liked),
        "auc": math.nan if auc is None else auc,
    }


_PER_USER = ("precision", "recall", "ndcg", "hit", "map")  # the keys of metrics.ranking_metrics


def _rows_mask(matrix: RatingMatrix, rows: torch.Tensor, pos: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """(B, n_cols) bool, True at the entries (``pos`` in ``rows``, ``cols``)."""
    mask = torch.zeros((rows.shape[0], matrix.n_cols), dtype=torch.bool, device=matrix.device)
    mask[pos, cols] = True
    return mask


def _rank_batch(
    scores: torch.Tensor, users: torch.Tensor, train: RatingMatrix, test_matrix: RatingMatrix,
    relevant_counts: torch.Tensor, k: int, relevance: float, sums: torch.Tensor, listed: torch.Tensor,
) -> None:
    """Rank one batch's unseen movies and add its users' ranking metrics to ``sums`` (in ``_PER_USER`` order)
    and their lists' movies to ``listed``."""
    ranked = relevant_counts[users] > 0  # (B,)
    if not bool(ranked.any()):
        return
    if not bool(ranked.all()):
        users, scores = users[ranked], scores[ranked]
    pos, cols, _ = train.entries(users)
    seen = _rows_mask(train, users, pos, cols)  # (b, I)
    try:
        topk = metrics.top_k(scores, k, exclude=seen)  # (b, K)
    except ValueError as exc:  # the only ValueError left once k >= 1: NaN scores
        raise MovierecError(
            "The model predicts NaN scores, so it cannot be ranked; it probably diverged in training."
        ) from exc
    pos, cols, vals = test_matrix.entries(users)
    good = vals >= relevance
    relevant = _rows_mask(test_matrix, users, pos[good], cols[good])  # (b, I)
    hits = relevant.gather(1, topk.clamp(min=0)) & (topk >= 0)  # (b, K)
    per_user = metrics.ranking_metrics(hits, relevant_counts[users])
    for j, name in enumerate(_PER_USER):
        sums[j] += per_user[name].sum(dtype=torch.float64)
    listed[topk[topk >= 0]] = True


RELEVANCE = 4.0
"""Stars that make a held-out rating relevant when no threshold is given."""


def default_relevance(train: RatingMatrix, test: RatingMatrix) -> float:
    """:data:`RELEVANCE`, or the highest stars in ``train`` and ``test`` where those are fewer: on data without
    stars (every rating 1) every held-out movie is relevant."""
    top = max((float(m.values.max()) for m in (train, test) if m.nnz), default=RELEVANCE)
    return min(RELEVANCE, top)


def evaluate(
    model: Scorer,
    train: RatingMatrix,
    test: Ratings,
    k: int = 10,
    relevance: float | None = None,
    like_threshold: float = 3.0,
    batch_users: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, float | None]:
    """Every metric of ``model`` on ``test``, given the ``train`` ratings it learned from.

    Keys (K = ``k``): ``rmse``, ``mae``, ``like_error``, ``accuracy``, ``auc``, ``precision@K``, ``recall@K``,
    ``ndcg@K``, ``hit@K``, ``map@K``, ``coverage@K``, ``users`` (int: test users with a relevant test
    movie, the ones the ranking metrics average over), ``ratings`` (int: test ratings). A metric that does
    not apply to the model -- or has nothing to average over -- is ``None``. See the module docstring for
    the protocol.

    Users are scored ``batch_users`` at a time (None: :func:`batch_size_for` the catalogue); the batch size
    never changes a result. ``progress(done, total)`` is called after every batch with the test users done
    so far and all of them.
    """
    if k < 1:
        raise MovierecError(f"K must be at least 1 (got {k}).")
    if batch_users is None:
        batch_users = batch_size_for(train.n_cols)
    if batch_users < 1:
        raise MovierecError(f"The user batch size must be at least 1 (got {batch_users}).")
    _check_shapes(model, train, test)
    kind = score_kind(model.kind)  # ValueError for an unknown kind
    discriminates = bool(getattr(model, "discriminates", True))
    device = model.device
    train = train.to(device)
    test_matrix = test.matrix(device)  # users x movies, CSR: one user's test ratings are contiguous

    test_users = torch.nonzero(test_matrix.row_counts() > 0).flatten()  # (U,) ascending
    n_test_users = int(test_users.shape[0])
    if relevance is None:
        relevance = default_relevance(train, test_matrix)
    relevant_counts = torch.zeros(test_matrix.n_rows, dtype=torch.int64, device=device)
    relevant_counts.index_add_(0, test_matrix.row_ids(), (test_matrix.values >= relevance).long())
    n_ranked = int((relevant_counts > 0).sum())
    rank = discriminates and n_ranked > 0

    rank_score = getattr(model, "rank_score", None)  # what its lists are ordered by, when not its scores
    pred = torch.empty(test_matrix.nnz, dtype=torch.float32, device=device)  # in test_matrix entry order
    sums = torch.zeros(len(_PER_USER), dtype=torch.float64, device=device)
    listed = torch.zeros(train.n_cols, dtype=torch.bool, device=device)  # movies in some user's list
    offset = 0
    with torch.no_grad(), _EvalMode(model):
        for start in range(0, n_test_users, batch_users):
            users = test_users[start:start + batch_users]  # (B,)
            scores = model.score(users, train).float()  # (B, I)
            pos, cols, _ = test_matrix.entries(users)
            pred[offset:offset + pos.shape[0]] = scores[pos, cols]
            offset += pos.shape[0]
            if rank:
                lists = rank_score(users, train).float() if rank_score is not None else scores  # (B, I)
                _rank_batch(lists, users, train, test_matrix, relevant_counts, k, relevance, sums, listed)
            if progress is not None:
                progress(min(start + batch_users, n_test_users), n_test_users)

    out: dict[str, float | None] = {}
    truth = test_matrix.values
    stars = clamp_stars(model, pred)
    rated = kind is ScoreKind.RATING and len(test) > 0
    out["rmse"] = metrics.rmse(stars, truth) if rated else None
    out["mae"] = metrics.mae(stars, truth) if rated else None

    liked = truth >= _liked_threshold(model, like_threshold)
    judge = kind.predicts and discriminates and len(test) > 0
    # Like models' scores are P(liked), which the metrics call liked at >= 0.5.
    pred_liked = stars >= _liked_threshold(model, like_threshold) if kind is ScoreKind.RATING else pred
    out["like_error"] = metrics.like_error(pred_liked, liked) if judge else None
    out["accuracy"] = metrics.accuracy(pred_liked, liked) if judge else None
    # AUC only needs an ordering, so it is also defined for rank-only scores such as popularity.
    out["auc"] = metrics.roc_auc(pred, liked) if discriminates and len(test) else None

    means = (sums / n_ranked).tolist() if rank else [None] * len(_PER_USER)
    for name, value in zip(_PER_USER, means, strict=True):
        out[f"{name}@{k}"] = value
    out[f"coverage@{k}"] = float(listed.sum()) / train.n_cols if rank else None
    out["users"] = n_ranked
    out["ratings"] = len(test)
    return out


def split_key(meta: CheckpointMeta) -> tuple:
    """What decides a checkpoint's test split: dataset and split, plus the seed and test fraction where
    they matter (the official splits are fixed files; the temporal split has no randomness)."""
    dataset, split = meta.dataset, meta.split
    if split == "random":
        return (dataset, split, int(meta.seed), float(meta.test_fraction))
    if split == "temporal":
        return (dataset, split, float(meta.test_fraction))
    return (dataset, split)


def describe_split(meta: CheckpointMeta) -> str:
    """The test split in words: "ml-1m, random split, seed 0, 10% held out" or "ml-100k, split u1"."""
    share = f"{float(meta.test_fraction):.0%}" if float(meta.test_fraction) >= 0.01 else f"{meta.test_fraction:g}"
    if meta.split == "random":
        return f"{meta.dataset}, random split, seed {meta.seed}, {share} held out"
    if meta.split == "temporal":
        return f"{meta.dataset}, temporal split, each user's latest {share} held out"
    return f"{meta.dataset}, split {meta.split}"


@dataclass(frozen=True)
class Selection:
    """The checkpoints :func:`evaluate_checkpoints` will evaluate, and which ones the default left out."""

    paths: list[str]
    left_out: list[str]
    """Names of checkpoints not evaluated because their test split differs from the default one's
    (only when no names were given)."""
    untested: list[str] = dataclasses.field(default_factory=list)
    """Names of checkpoints not evaluated because they were trained on every rating (``--split none``), so
    they have no test split (only when no names were given)."""


def _no_test_split(subject: str, one: bool = True) -> MovierecError:
    """"mf-final was trained on every rating, so it has no test split to evaluate on; ..." """
    return MovierecError(
        f"{subject} was trained on every rating, so {'it has' if one else 'none has'} no test split to evaluate "
        "on; to compare, evaluate a model trained on a split (`movierec train MODEL` holds one out by default)."
    )


def select_checkpoints(names: list[str] | None = None) -> Selection:
    """Which saved models to evaluate.

    ``names`` are checkpoint names/paths (a saved name always means that model, as for every command) or, when
    no saved model has that name, model names (``mf`` = the newest ``mf`` checkpoint trained on the newest
    checkpoint's test split, else the newest ``mf`` of any). Without names: every checkpoint
    whose test split (:func:`split_key`) is the default checkpoint's (pinned, else the newest; the newest tested
    one's if the default has no test split), so the table compares like with
    like; the others are named in ``left_out``, and those trained on every rating (no test split) in
    ``untested``. A named model without a test split is refused in one sentence.
    """
    from movierec import checkpoint
    from movierec.models import MODELS

    every = checkpoint.list_checkpoints()
    if not every:
        raise MovierecError("No trained models yet; train one with `movierec train MODEL`.")
    found = [(p, m) for p, m in every if m.has_test_split]
    untested = [m.name for _, m in every if not m.has_test_split]
    if not found and not names:
        raise _no_test_split("Every saved model", one=False)
    chosen = checkpoint.default_of(every)
    if chosen is not None and not chosen[1].has_test_split:
        chosen = found[-1] if found else None  # a default trained on every rating: the newest tested one's split
    newest = split_key(chosen[1]) if chosen else None
    same = [(p, m) for p, m in found if split_key(m) == newest]
    if not names:
        left_out = [m.name for _, m in found if split_key(m) != newest]
        return Selection([str(p) for p, _ in same], left_out, untested)
    picked: list[str] = []
    saved = {m.name for _, m in every}
    for name in names:
        if name in MODELS and name not in saved:
            of_model = [p for p, m in same if m.model == name] or [p for p, m in found if m.model == name]
            if not of_model:
                if any(m.model == name for _, m in every):
                    raise _no_test_split(f"Every saved {name} model", one=False)
                raise MovierecError(f"No saved {name} model; train one with `movierec train {name}`.")
            picked.append(str(of_model[-1]))
        else:
            path = checkpoint.resolve(name)
            meta = next((m for p, m in every if p == path), None) or checkpoint.read_meta(path)
            if not meta.has_test_split:
                raise _no_test_split(meta.name)
            picked.append(str(path))
    return Selection(list(dict.fromkeys(picked)), [])


def evaluate_checkpoints(
    names: list[str] | None = None,
    *,
    k: int = 10,
    relevance: float | None = None,
    device: torch.device | str = "cpu",
    baselines: bool = True,
    batch_users: int | None = None,
    selection: Selection | None = None,
    on_step: Callable[[str], None] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> list[dict[str, object]]:
    """Evaluate saved models on their test splits, with the reference baselines of each split.

    The models are ``selection`` (or :func:`select_checkpoints` of ``names``). One row per model, each split's
    baselines before its first model: ``model``, ``checkpoint``, ``kind`` (what the model predicts: "rating",
    "like" or "rank"; :func:`movierec.metrics.judged_by` says which metrics judge it), ``dataset``, ``split``,
    ``seed``, ``test_fraction``, ``split_label`` (:func:`describe_split`), ``fit_seconds`` and the metrics of
    :func:`evaluate`. ``on_step(description)`` is told of each step as it begins (loading a model and its data,
    evaluating one model), ``progress(done, total)`` of the test users each evaluation has done.
    """
    from movierec import loading

    def step(description: str) -> None:
        if on_step is not None:
            on_step(description)

    selection = selection or select_checkpoints(names)
    rows: list[dict[str, object]] = []
    baseline_done: set[tuple] = set()
    for path in selection.paths:
        step(f"Loading {Path(path).stem} and its data")
        trained = loading.load_trained(path, device)
        meta = trained.meta
        if k > trained.train.n_cols:  # ranked lists padded past the catalogue would only cost memory, by K
            raise MovierecError(
                f"K must be at most the number of movies in {meta.dataset}, {trained.train.n_cols:,} (got {k:,})."
            )
        test = trained.split.test
        group = split_key(meta)
        common = {"dataset": meta.dataset, "split": meta.split, "seed": meta.seed,
                  "test_fraction": meta.test_fraction, "split_label": describe_split(meta)}
        if baselines and group not in baseline_done:
            baseline_done.add(group)
            for name, cls in (("popularity", PopularityBaseline), ("global mean", GlobalMeanBaseline)):
                step(f"Evaluating the {name} baseline")
                scores = evaluate(cls(trained.train), trained.train, test, k=k, relevance=relevance,
                                  batch_users=batch_users, progress=progress)
                rows.append({"model": name, "checkpoint": None, "kind": cls.kind, **common, "fit_seconds": None,
                             **scores})
        step(f"Evaluating {meta.name}")
        scores = evaluate(trained.ranked, trained.train, test, k=k, relevance=relevance, batch_users=batch_users,
                          progress=progress)
        rows.append({"model": meta.model, "checkpoint": meta.name, "kind": trained.model.kind, **common,
                     "fit_seconds": meta.fit_seconds, **scores})
    return rows


def reference_metrics(
    model: Scorer, train: RatingMatrix, test: Ratings, progress: Callable[[int, int], None] | None = None
) -> tuple[str, dict[str, float]]:
    """The trivial answer a model of this kind must beat on ``test``, with the same validation numbers.

    Rating models: the global mean; like/dislike models: always answering "liked"; top-N models: popularity.
    """
    if model.kind == ScoreKind.LIKE:
        assert model.like_threshold is not None  # a like model's threshold is its stars' midpoint or set
        liked = torch.from_numpy(test.ratings) >= model.like_threshold
        always = torch.ones_like(liked, dtype=torch.float32)
        return "always like", {"like_error": metrics.like_error(always, liked),
                               "accuracy": metrics.accuracy(always, liked)}
    if model.kind == ScoreKind.RANK:
        return "popularity", heldout_metrics(PopularityBaseline(train), train, test, progress)
    return "global mean", heldout_metrics(GlobalMeanBaseline(train), train, test, progress)
