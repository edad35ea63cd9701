"""The one training loop: every model goes through :func:`fit`.

Each model supplies a :class:`~movierec.models.base.Trainer` (``train_epoch() -> dict``, ``finalize()``);
this loop owns everything around it: seeding,
the device, per-epoch validation, divergence detection, early stopping, timing, and reporting progress to
whoever is listening (the CLI draws it; the library never prints).

Validation is not the test set. :func:`train_and_save` carves a seeded validation slice out of the training
ratings (``valid_fraction``; by default only with ``patience``), and everything that chooses by a metric --
early stopping, the epoch whose weights are kept -- reads that slice. The test split is read once, at the
end, to report the model's metrics and the trivial baseline's beside them. Without a validation slice no
held-out ranking runs between epochs. Ranking models validate on a fixed seeded sample of at most
:data:`VALID_RANK_USERS` of the slice's users, so validating costs a small part of an epoch at any scale.

What to train comes in as one :class:`~movierec.options.TrainOptions`; what happens goes out to one
:class:`~movierec.options.TrainingEvents` listener. Nothing runs silently: each step is named as it begins
(``events.step``) and the countable ones report their progress (``events.progress(done, total)``): the batches of
every epoch (each model's trainer calls :meth:`~movierec.models.base.Trainer.advance` once per batch) and the
users of every evaluation.
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from movierec import metrics
from movierec.advice import LIST_METRIC
from movierec.data.ratings import RatingMatrix, Ratings
from movierec.device import make_generator, seed_everything
from movierec.errors import Diverged, MovierecError
from movierec.evaluate import PopularityBaseline, Scorer, evaluate, heldout_metrics, reference_metrics
from movierec.kinds import ScoreKind
from movierec.models.base import Recommender
from movierec.models.picks import Ranked
from movierec.options import QUIET, TrainingEvents, TrainOptions

if TYPE_CHECKING:
    from movierec.data.dataset import Dataset
    from movierec.data.split import Split

VALID_RANK_USERS = 2000
"""Ranking models validate every epoch on a fixed seeded sample of at most this many validation users."""


def validation_sample(valid: Ratings, kind: str, seed: int = 0) -> Ratings:
    """What :func:`fit` validates a model of ``kind`` on: the slice itself, or for ``"rank"`` models the ratings
    of a seeded sample of :data:`VALID_RANK_USERS` of its users (ranking a user costs a pass over the catalogue;
    predicting a rating costs one dot product)."""
    users = np.unique(valid.users)
    if kind != ScoreKind.RANK or users.shape[0] <= VALID_RANK_USERS:
        return valid
    chosen = np.random.default_rng(seed).choice(users, VALID_RANK_USERS, replace=False)
    return valid.take(np.isin(valid.users, chosen))


@dataclass(frozen=True)
class EpochReport:
    epoch: int
    epochs: int
    train: dict[str, float]
    valid: dict[str, float]
    seconds: float
    improved: bool


@dataclass
class FitResult:
    history: list[EpochReport] = field(default_factory=list)
    best_epoch: int = 0
    """The epoch with the best monitored validation value."""
    kept_epoch: int = 0
    """The epoch whose weights the model holds now (the best one under early stopping, else the last)."""
    stopped_early: bool = False
    fit_seconds: float = 0.0
    """Time spent in training epochs (excluding per-epoch validation)."""
    picks_seconds: float = 0.0
    """Time spent training the picks model (:func:`fit_picks`), not in ``fit_seconds``."""
    monitor: str = ""

    @property
    def final_valid(self) -> dict[str, float]:
        return self.history[self.kept_epoch - 1].valid if self.history else {}

    @property
    def final_train(self) -> dict[str, float]:
        return self.history[self.kept_epoch - 1].train if self.history else {}


def monitored_metric(model: Recommender) -> tuple[str, bool]:
    """The validation number early stopping watches (:data:`movierec.metrics.HEADLINE` of the model's kind),
    and whether higher is better."""
    key = metrics.headline(model.kind)
    return key, metrics.higher_is_better(key)


def fit(
    model: Recommender,
    train: Ratings,
    valid: Ratings | None,
    *,
    seed: int = 0,
    epochs: int | None = None,
    patience: int | None = None,
    matrix: RatingMatrix | None = None,
    events: TrainingEvents = QUIET,
) -> FitResult:
    """Train ``model`` (already on its device) on ``train``, validating on ``valid`` after every epoch.

    ``valid`` must not be the test split when numbers are reported (see the module docstring). With
    ``patience``, training stops once the monitored validation metric (the training loss when there is no
    ``valid``) has not improved for that many epochs, and the best epoch's weights are kept. ``matrix`` is
    ``train`` as a :class:`RatingMatrix` on the model's device, when the caller has built it already.
    Raises :class:`~movierec.errors.Diverged` when training diverges (a non-finite loss or weight). A ranking model is
    validated on :func:`validation_sample` of ``valid``. ``events`` hears of every epoch and every validation
    as it begins, of their batches, and of every epoch's report (see the module docstring).
    """
    device = model.device
    epochs = int(epochs if epochs is not None else model.config.epochs)
    if epochs < 1:
        raise MovierecError("--epochs must be at least 1.")
    if len(train) == 0:
        raise MovierecError("The training split has no ratings.")

    seed_everything(seed)
    generator = make_generator(device, seed)
    matrix = matrix if matrix is not None else train.matrix(device)
    monitor, higher_is_better = monitored_metric(model)
    sign = -1.0 if higher_is_better else 1.0  # compare as "lower is better"
    result = FitResult(monitor=monitor)
    best_value = math.inf
    best_state: dict[str, torch.Tensor] | None = None
    since_best = 0

    if valid is not None and len(valid):
        valid = validation_sample(valid, model.kind, seed)
    done = 0

    def advance(amount: int, total: int) -> None:
        nonlocal done
        done += int(amount)
        events.progress(min(done, total), total)

    events.step("Preparing the model")  # e.g. ALS lays out both sides' solves
    trainer = model.trainer(matrix, generator)
    trainer.on_advance = advance
    for epoch in range(1, epochs + 1):
        events.step(f"Epoch {epoch}/{epochs}")
        start = time.perf_counter()
        model.train()
        done = 0
        stats = {k: float(v) for k, v in trainer.train_epoch().items()}
        model.eval()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        seconds = time.perf_counter() - start
        result.fit_seconds += seconds
        _check_finite(model, stats, epoch)

        scores = {}
        if valid is not None and len(valid):
            events.step(f"Validating epoch {epoch}")
            scores = heldout_metrics(model, matrix, valid, progress=events.progress)
        value = sign * scores[monitor] if monitor in scores else stats.get("loss", math.inf)
        improved = value < best_value
        if improved:
            best_value, since_best, result.best_epoch = value, 0, epoch
            if patience is not None:
                best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        else:
            since_best += 1
        report = EpochReport(epoch, epochs, stats, scores, seconds, improved)
        result.history.append(report)
        events.epoch(report)
        if patience is not None and since_best >= patience:
            result.stopped_early = True
            break

    result.kept_epoch = len(result.history)
    if patience is not None and best_state is not None:
        model.load_state_dict(best_state)
        result.kept_epoch = result.best_epoch
    trainer.on_advance = None
    trainer.finalize()
    return result


def _check_finite(model: Recommender, stats: dict[str, float], epoch: int) -> None:
    bad = [k for k, v in stats.items() if not math.isfinite(v)]
    if not bad:
        bad = [n for n, p in model.state_dict().items() if p.is_floating_point() and not torch.isfinite(p).all()]
    if bad:
        raise Diverged(
            f"Training diverged at epoch {epoch} ({bad[0]} is not a finite number); "
            "try a lower learning rate or stronger regularisation."
        )


@dataclass(frozen=True)
class TrainPlan:
    """What a training run will do, known before the first epoch (the CLI prints it)."""

    dataset: str
    dataset_why: str | None
    """Why this dataset when none was named ("the most recently fetched dataset"), else None."""
    split: Split
    """The split trained on: its test ratings are ``split.test``."""
    train: Ratings
    """The ratings the model learns from: the split's training ratings less the validation slice."""
    valid: Ratings | None
    valid_fraction: float
    valid_users: int | None = None
    """How many validation users a ranking model is validated on when that is a sample of the slice's users."""
    scaled: dict = field(default_factory=dict)
    """The defaults changed for the size of the training set (config field -> value), already in the model's
    config; empty when none changed (see :func:`movierec.models.scaled_defaults`)."""


@dataclass(frozen=True)
class TrainOutcome:
    """A trained and saved model: where, what its checkpoint says, and how training went."""

    path: Path
    meta: Any  # checkpoint.CheckpointMeta
    result: FitResult
    plan: TrainPlan

    def to_json(self) -> dict[str, Any]:
        """What `movierec train --json` prints. ``metrics``, ``baseline`` and ``popularity`` are None when
        nothing was tested (``--split none``)."""
        meta, tested = self.meta, self.meta.has_test_split
        return {"name": meta.name, "model": meta.model, "mode": meta.mode, "dataset": meta.dataset,
                "split": meta.split, "path": str(self.path), "epochs": meta.epochs, "fit_seconds": meta.fit_seconds,
                "stopped_early": self.result.stopped_early, "train": meta.train_metrics,
                "metrics": meta.metrics if tested else None, "valid": meta.valid_metrics,
                "valid_fraction": meta.valid_fraction, "baseline": meta.baseline if tested else None,
                "popularity": meta.popularity if tested else None, "config": meta.config}


@dataclass(frozen=True)
class Fitted:
    """A model trained in this process and not saved: everything its checkpoint holds (:meth:`save` writes it),
    and how training went. ``meta.name`` is the name it will be saved under unless another is given."""

    meta: Any  # checkpoint.CheckpointMeta
    state: dict[str, np.ndarray]
    """The model's arrays (``state.*``, :func:`movierec.loading.state_arrays`)."""
    user_ids: np.ndarray
    item_ids: np.ndarray
    serving: Any  # serving.ServingData: what `recommend` reads instead of the dataset
    result: FitResult
    plan: TrainPlan

    def save(self, path: Path) -> tuple[Path, Any]:
        """Write the checkpoint to ``path`` (a name reserved by :func:`movierec.checkpoint.reserve`), named by its
        stem; the path and the metadata as saved."""
        from movierec import checkpoint

        meta = dataclasses.replace(self.meta, name=path.stem, created="")
        return checkpoint.save(self.state, meta, self.user_ids, self.item_ids, path, serving=self.serving)


def _chosen_dataset(options: TrainOptions, data: Dataset | None) -> tuple[str, str | None]:
    """The dataset a run trains on and why it, when the user named none (see :func:`train_and_save`)."""
    from movierec.data.default import default_dataset

    if data is not None:
        return data.name, None
    if options.dataset is not None:
        return options.dataset, None
    chosen = default_dataset()
    return chosen.name, chosen.why


def train_and_save(options: TrainOptions, events: TrainingEvents = QUIET, *, data: Dataset | None = None,
                   split: Split | None = None) -> TrainOutcome:
    """Train the model ``options`` name on a fetched dataset's split and save the checkpoint: what `movierec
    train` does.

    ``options.dataset`` None is the default one (:func:`movierec.data.default.default_dataset`); ``data``,
    ratings already read in memory (``mr.train(data=df)``), is used as it is instead, under its own name. The
    checkpoint's ``metrics`` are the test split's, measured once after training; ``valid_metrics`` those of the
    kept epoch on the validation slice. ``events`` hears of every step (see the module docstring).
    ``split="none"`` trains on every rating: nothing is tested, and the checkpoint has no test metrics.
    ``split``: a split of the user's own of ``data`` (:func:`movierec.data.split.own_split`) instead of
    ``options.split``.
    """
    from movierec import checkpoint

    if options.name is not None:
        checkpoint.path_for(options.name)  # validates the name before any work
    dataset, why = _chosen_dataset(options, data)
    fresh = options.name is None
    if options.name is None:
        from movierec.models import model_entry

        name = checkpoint.default_name(options.model, options.mode, model_entry(options.model).default_mode)
    else:
        name = options.name
    # The name is checked, its folder proven writable and locked before any work, and held until the model
    # is saved: a long run must not end in a failed save, nor two runs of one name overwrite each other.
    # A default name is the first free one of als, als-2, als-3...
    with checkpoint.reserve(name, fresh=fresh) as out_path:
        fitted = _train(options.replace(dataset=dataset, name=out_path.stem), why, events, data, split)
        events.step("Saving")
        path, saved = fitted.save(out_path)
        return TrainOutcome(path, saved, fitted.result, fitted.plan)


def train_unsaved(options: TrainOptions, events: TrainingEvents = QUIET, *, data: Dataset | None = None,
                  split: Split | None = None) -> Fitted:
    """What :func:`train_and_save` does, without saving: the model in memory (``mr.fit``), to answer at once and
    save later (:meth:`Fitted.save`) or never. Named ``options.name``, or the model's own name until saved."""
    from movierec import checkpoint

    if options.name is not None:
        checkpoint.path_for(options.name)  # validates the name before any work
    dataset, why = _chosen_dataset(options, data)
    return _train(options.replace(dataset=dataset, name=options.name or options.model), why, events, data, split)


def _train(options: TrainOptions, why: str | None, events: TrainingEvents, data: Dataset | None,
           split: Split | None) -> Fitted:
    """Train, test and describe the model: :func:`train_and_save` once the dataset and the name are chosen."""
    from movierec import checkpoint, loading
    from movierec.data.movielens import load_dataset
    from movierec.data.split import default_split, make_split
    from movierec.device import resolve_device
    from movierec.serving import ServingData

    torch_device = resolve_device(options.device)
    if data is None:
        assert options.dataset is not None  # chosen by the callers (_chosen_dataset)
        events.step(f"Loading {options.dataset}")
        data = load_dataset(options.dataset)
    the_split = split
    if the_split is None:
        events.step("Splitting the ratings")
        the_split = make_split(data, options.split or default_split(data.name), seed=options.seed,
                               test_fraction=options.test_fraction)
    fitted = fit_split(options, data, the_split, device=torch_device, why=why, events=events)
    model, result, known = fitted.model, fitted.result, fitted.known
    # Its lists as `recommend` ranks them: through its picks model, where it has one.
    tested = score_test_split(fitted.ranked, known, the_split.test, events=events)
    meta = checkpoint.CheckpointMeta(
        name=str(options.name),
        model=options.model,
        mode=str(options.mode),
        config=model.config.to_dict(),
        dataset=data.name,
        fingerprint=data.fingerprint,
        split=the_split.name,
        seed=options.seed,
        n_users=data.n_users,
        n_items=data.n_items,
        rating_values=list(data.rating_values),
        metrics=tested.metrics,
        train_metrics=result.final_train,
        baseline=tested.baseline,
        popularity=tested.popularity,
        history=[
            {"epoch": r.epoch, "train": r.train, "valid": r.valid, "seconds": r.seconds} for r in result.history
        ],
        fit_seconds=result.fit_seconds + result.picks_seconds,
        epochs=len(result.history),
        device=str(torch_device),
        test_fraction=options.test_fraction,
        valid_metrics=result.final_valid,
        valid_fraction=float(options.valid_fraction or 0.0),
    )
    # What `recommend` reads instead of the dataset, with the picks model its lists rank through.
    serving = ServingData.build(model, the_split.train, data, picks=fitted.picks)
    return Fitted(meta, loading.state_arrays(model), np.asarray(data.user_ids, dtype=np.int64),
                  np.asarray(data.item_ids, dtype=np.int64), serving, result, fitted.plan)


@dataclass(frozen=True)
class HeldOutReport:
    """What :func:`score_test_split` measured on the test split (all empty when there is none)."""

    metrics: dict[str, float]
    """The model's: the metrics its kind is judged by on every epoch (:func:`heldout_metrics`) and
    :data:`LIST_METRIC`."""
    baseline: dict[str, float | str]
    """The trivial answer of the model's kind (:func:`reference_metrics`): {"name": ..., metric: value}."""
    popularity: dict[str, float]
    """The "most popular" lists' :data:`LIST_METRIC`: what the model's lists must beat."""


def score_test_split(
    model: Scorer, known: RatingMatrix, test: Ratings, *, events: TrainingEvents = QUIET,
) -> HeldOutReport:
    """The one look at the test split after training: the model's metrics, its kind's trivial answer, and its
    lists against the most popular movies' (:data:`LIST_METRIC`, by :func:`evaluate`'s ranking protocol).
    ``known`` is every training rating. Nothing when ``test`` is empty (``--split none``)."""
    if len(test) == 0:
        return HeldOutReport({}, {}, {})

    def ranked(scorer: Scorer) -> float:
        value = evaluate(scorer, known, test, k=10, progress=events.progress)[LIST_METRIC]
        return math.nan if value is None else float(value)

    events.step("Testing")
    scores = heldout_metrics(model, known, test, progress=events.progress)
    if LIST_METRIC not in scores:  # rank models have it already; the others' lists are ranked once more
        events.step("Ranking the test users' movies")
        scores[LIST_METRIC] = ranked(model)
    events.step("Testing the baseline")
    baseline_name, baseline = reference_metrics(model, known, test, progress=events.progress)
    if LIST_METRIC in baseline and baseline_name == PopularityBaseline.name:
        popular = baseline[LIST_METRIC]
    else:
        events.step("Ranking the most popular movies")
        popular = ranked(PopularityBaseline(known))
    return HeldOutReport(scores, {"name": baseline_name, **baseline}, {LIST_METRIC: popular})


@dataclass(frozen=True)
class SplitFit:
    """A model trained on one split's training ratings (:func:`fit_split`), not yet tested."""

    model: Recommender
    plan: TrainPlan
    result: FitResult
    known: RatingMatrix
    """Every training rating of the split, validation slice included, on the model's device: the history the
    test split is scored against, as `evaluate` does."""
    picks: Recommender | None = None
    """The picks model its lists rank through (rating and like models, :mod:`movierec.models.picks`)."""

    @property
    def ranked(self) -> Ranked:
        """The model and its picks model, as evaluation scores them."""
        return Ranked(self.model, self.picks)


def fit_split(
    options: TrainOptions, data: Any, the_split: Any, *, device: torch.device, why: str | None = None,
    events: TrainingEvents = QUIET, picks: bool = True,
) -> SplitFit:
    """Build the model ``options`` name for ``data`` (a :class:`~movierec.data.dataset.Dataset`) and
    :func:`fit` it on ``the_split``'s training ratings, less a seeded validation slice of
    ``options.valid_fraction`` (0: none) that early stopping reads. The test split is not read here: what
    `train` and `cv` do with it is theirs. Without ``picks`` no picks model is trained (tuning judges the
    model by its validation numbers alone)."""
    from movierec.data.split import validation_slice
    from movierec.models import build_model, scaled_defaults

    seed, config = options.seed, options.settings()
    fit_ratings, valid = the_split.train, None
    if options.valid_fraction:
        fit_ratings, valid = validation_slice(the_split.train, options.valid_fraction, seed)
    seed_everything(seed)
    scaled = scaled_defaults(options.model, options.mode, config, data.n_users, data.n_items, len(fit_ratings))
    model = build_model(options.model, options.mode, {**scaled, **config}, data.n_users, data.n_items,
                        tuple(data.rating_values))
    model.to(device)
    if model.uses_side_information:
        from movierec.data.features import movie_features, people_features

        genres, tags = getattr(model, "movie_groups", (True, False))
        model.use_side_information(movie_features(data, tags=tags, genres=genres), people_features(data))
    sample = validation_sample(valid, model.kind, seed) if valid is not None else None
    sampled = sample is not None and valid is not None and len(sample) < len(valid)
    plan = TrainPlan(data.name, why, the_split, fit_ratings, valid, float(options.valid_fraction or 0.0),
                     VALID_RANK_USERS if sampled else None, scaled)
    events.start(model, plan)
    events.step("Building the training matrix")
    fit_matrix = fit_ratings.matrix(device)  # built once: training, validation and, without a slice, test
    result = fit(model, fit_ratings, sample, seed=seed, patience=options.patience, matrix=fit_matrix,
                 events=events)
    if valid is not None:
        events.step("Building the full training matrix")
    picked = fit_picks(model, fit_ratings, fit_matrix, seed=seed, events=events) if picks else None
    if picked is not None:
        result.picks_seconds = picked[1].fit_seconds
    known = fit_matrix if valid is None else the_split.train.matrix(device)
    return SplitFit(model, plan, result, known, None if picked is None else picked[0])


class _Picking(TrainingEvents):
    """The picks model's steps, told as such ("Learning what each user picks: epoch 3/15"); its epochs are
    not the model's, so they are not reported as epochs."""

    def __init__(self, events: TrainingEvents):
        self.events = events

    def step(self, description: str) -> None:
        self.events.step(f"Learning what each user picks: {description[0].lower()}{description[1:]}")

    def progress(self, done: int, total: int) -> None:
        self.events.progress(done, total)


def fit_picks(
    model: Recommender, train: Ratings, matrix: RatingMatrix, *, seed: int, events: TrainingEvents = QUIET,
) -> tuple[Recommender, FitResult] | None:
    """The picks model of a rating or like ``model`` (:mod:`movierec.models.picks`), trained through :func:`fit`
    on the same training ratings, and its result; None for models whose scores already rank."""
    from movierec.models.picks import build_picks, needs_picks

    if not needs_picks(model.kind):
        return None
    picks = build_picks(model)
    result = fit(picks, train, None, seed=seed, matrix=matrix, events=_Picking(events))
    model.complete_picks(picks, matrix)
    return picks, result
