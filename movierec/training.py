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

Nothing runs silently: :func:`train_and_save` names each step as it begins (``on_step``) and reports the
countable ones' progress as ``on_progress(done, total)``: the batches of every epoch (each model's trainer calls
:meth:`~movierec.models.base.Trainer.advance` once per batch) and the users of every evaluation.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from movierec import metrics
from movierec.advice import LIST_METRIC
from movierec.data.ratings import RatingMatrix, Ratings
from movierec.device import make_generator, seed_everything
from movierec.errors import MovierecError
from movierec.evaluate import PopularityBaseline, evaluate, heldout_metrics, reference_metrics
from movierec.models.base import Recommender
from movierec.models.picks import Ranked

StepCallback = Callable[[str], None]
"""``on_step(description)``: a new step begins ("Loading ml-1m", "Epoch 3/20", "Saving"); the previous one ended."""
ProgressCallback = Callable[[int, int], None]
"""``on_progress(done, total)``: how far the current step is, in its own units; ``done`` only grows."""

VALID_RANK_USERS = 2000
"""Ranking models validate every epoch on a fixed seeded sample of at most this many validation users."""


def validation_sample(valid: Ratings, kind: str, seed: int = 0) -> Ratings:
    """What :func:`fit` validates a model of ``kind`` on: the slice itself, or for ``"rank"`` models the ratings
    of a seeded sample of :data:`VALID_RANK_USERS` of its users (ranking a user costs a pass over the catalogue;
    predicting a rating costs one dot product)."""
    users = np.unique(valid.users)
    if kind != "rank" or users.shape[0] <= VALID_RANK_USERS:
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
    on_epoch: Callable[[EpochReport], None] | None = None,
    matrix: RatingMatrix | None = None,
    on_step: StepCallback | None = None,
    on_progress: ProgressCallback | None = None,
) -> FitResult:
    """Train ``model`` (already on its device) on ``train``, validating on ``valid`` after every epoch.

    ``valid`` must not be the test split when numbers are reported (see the module docstring). With
    ``patience``, training stops once the monitored validation metric (the training loss when there is no
    ``valid``) has not improved for that many epochs, and the best epoch's weights are kept. ``matrix`` is
    ``train`` as a :class:`RatingMatrix` on the model's device, when the caller has built it already.
    Raises :class:`MovierecError` when training diverges (a non-finite loss or weight). A ranking model is
    validated on :func:`validation_sample` of ``valid``. ``on_step`` is told of every epoch and every
    validation as it begins, ``on_progress`` of their batches (see the module docstring).
    """
    device = model.device
    epochs = int(epochs if epochs is not None else model.config.epochs)
    if epochs < 1:
        raise MovierecError("--epochs must be at least 1.")
    if patience is not None and patience < 1:
        raise MovierecError("--patience must be at least 1.")
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
        if on_progress is not None:
            on_progress(min(done, total), total)

    if on_step is not None:
        on_step("Preparing the model")  # e.g. ALS lays out both sides' solves
    trainer = model.trainer(matrix, generator)
    trainer.on_advance = advance
    for epoch in range(1, epochs + 1):
        if on_step is not None:
            on_step(f"Epoch {epoch}/{epochs}")
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
            if on_step is not None:
                on_step(f"Validating epoch {epoch}")
            scores = heldout_metrics(model, matrix, valid, progress=on_progress)
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
        if on_epoch is not None:
            on_epoch(report)
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
        raise MovierecError(
            f"Training diverged at epoch {epoch} ({bad[0]} is not a finite number); "
            "try a lower learning rate or stronger regularisation."
        )


@dataclass(frozen=True)
class TrainPlan:
    """What a training run will do, known before the first epoch (the CLI prints it)."""

    dataset: str
    dataset_why: str | None
    """Why this dataset when none was named ("the most recently fetched dataset"), else None."""
    split: object  # data.split.Split: the test split is split.test
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
    path: object  # pathlib.Path of the saved checkpoint
    meta: object  # checkpoint.CheckpointMeta
    result: FitResult
    plan: TrainPlan


DEFAULT_VALID_FRACTION = 0.05
"""The validation slice carved from the training ratings when early stopping needs one."""


def resolve_valid_fraction(patience: int | None, valid_fraction: float | None) -> float:
    """The validation slice's share of the training ratings: ``valid_fraction``, or when None
    :data:`DEFAULT_VALID_FRACTION` with ``patience`` and 0 (no slice) without; both checked."""
    if valid_fraction is None:
        valid_fraction = DEFAULT_VALID_FRACTION if patience is not None else 0.0
    if not 0.0 <= valid_fraction < 1.0:
        raise MovierecError(f"--valid-fraction must be at least 0 and below 1, not {valid_fraction:g}.")
    if patience is not None and patience < 1:
        raise MovierecError("--patience must be at least 1.")
    return valid_fraction


def train_and_save(
    model_name: str,
    config: dict | None = None,
    *,
    mode: str | None = None,
    dataset: str | None = None,
    split: str | None = None,
    seed: int = 0,
    device: str = "auto",
    patience: int | None = None,
    valid_fraction: float | None = None,
    name: str | None = None,
    test_fraction: float = 0.1,
    on_start: Callable[[Recommender, TrainPlan], None] | None = None,
    on_epoch: Callable[[EpochReport], None] | None = None,
    on_step: StepCallback | None = None,
    on_progress: ProgressCallback | None = None,
) -> TrainOutcome:
    """Train ``model_name`` on a fetched dataset's split and save the checkpoint: what `movierec train` does.

    ``dataset`` None is the fetched one (:func:`movierec.data.default.default_dataset`). ``valid_fraction``
    None means :data:`DEFAULT_VALID_FRACTION` with ``patience``, else no validation slice. The checkpoint's
    ``metrics`` are the test split's, measured once after training; ``valid_metrics`` those of the kept
    epoch on the validation slice. ``on_step`` and ``on_progress`` follow every step (see the module docstring).
    ``split="none"`` trains on every rating: nothing is tested, and the checkpoint has no test metrics.
    """
    from movierec import checkpoint
    from movierec.data.default import default_dataset

    valid_fraction = resolve_valid_fraction(patience, valid_fraction)
    if name is not None:
        checkpoint.path_for(name)  # validates the name before any work
    why = None
    if dataset is None:
        chosen = default_dataset()
        dataset, why = chosen.name, chosen.why
    fresh = name is None
    if fresh:
        from movierec.models import model_entry, resolve_mode

        default_mode = model_entry(model_name).default_mode
        name = checkpoint.default_name(model_name, resolve_mode(model_name, mode), default_mode)
    # The name is checked, its folder proven writable and locked before any work, and held until the model
    # is saved: a long run must not end in a failed save, nor two runs of one name overwrite each other.
    # A default name is the first free one of als, als-2, als-3...
    with checkpoint.reserve(name, fresh=fresh) as out_path:
        name = out_path.stem
        return _train_reserved(
            model_name, config, mode=mode, dataset=dataset, why=why, split=split, seed=seed, device=device,
            patience=patience, valid_fraction=valid_fraction, name=name, test_fraction=test_fraction,
            out_path=out_path, on_start=on_start, on_epoch=on_epoch, on_step=on_step, on_progress=on_progress,
        )


def _train_reserved(
    model_name: str, config: dict | None, *, mode: str | None, dataset: str, why: str | None, split: str | None,
    seed: int, device: str, patience: int | None, valid_fraction: float, name: str, test_fraction: float,
    out_path: object, on_start: Callable[[Recommender, TrainPlan], None] | None,
    on_epoch: Callable[[EpochReport], None] | None, on_step: StepCallback | None,
    on_progress: ProgressCallback | None,
) -> TrainOutcome:
    """:func:`train_and_save` once the dataset is chosen and the checkpoint's name is held."""
    from movierec import checkpoint, loading
    from movierec.data.movielens import load_dataset
    from movierec.data.split import default_split, make_split
    from movierec.device import resolve_device
    from movierec.models import resolve_mode
    from movierec.serving import ServingData

    def step(description: str) -> None:
        if on_step is not None:
            on_step(description)

    torch_device = resolve_device(device)
    step(f"Loading {dataset}")
    data = load_dataset(dataset)
    step("Splitting the ratings")
    the_split = make_split(data, split or default_split(dataset), seed=seed, test_fraction=test_fraction)
    mode = resolve_mode(model_name, mode)
    fitted = fit_split(model_name, mode, config, data, the_split, why=why, seed=seed, device=torch_device,
                       patience=patience, valid_fraction=valid_fraction, on_start=on_start, on_epoch=on_epoch,
                       on_step=on_step, on_progress=on_progress)
    model, result, known = fitted.model, fitted.result, fitted.known
    # Its lists as `recommend` ranks them: through its picks model, where it has one.
    tested = score_test_split(fitted.ranked, known, the_split.test, on_step=on_step, on_progress=on_progress)
    meta = checkpoint.CheckpointMeta(
        name=name,
        model=model_name,
        mode=mode,
        config=model.config.to_dict(),
        dataset=data.name,
        fingerprint=data.fingerprint,
        split=the_split.name,
        seed=seed,
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
        test_fraction=test_fraction,
        valid_metrics=result.final_valid,
        valid_fraction=valid_fraction,
    )
    step("Saving")
    # What `recommend` reads instead of the dataset, with the picks model its lists rank through.
    serving = ServingData.build(model, the_split.train, data, picks=fitted.picks)
    path, saved = checkpoint.save(loading.state_arrays(model), meta, data.user_ids, data.item_ids, out_path,
                                  serving=serving)
    return TrainOutcome(path, saved, result, fitted.plan)


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
    model: Recommender, known: RatingMatrix, test: Ratings, *, on_step: StepCallback | None = None,
    on_progress: ProgressCallback | None = None,
) -> HeldOutReport:
    """The one look at the test split after training: the model's metrics, its kind's trivial answer, and its
    lists against the most popular movies' (:data:`LIST_METRIC`, by :func:`evaluate`'s ranking protocol).
    ``known`` is every training rating. Nothing when ``test`` is empty (``--split none``)."""
    if len(test) == 0:
        return HeldOutReport({}, {}, {})

    def step(description: str) -> None:
        if on_step is not None:
            on_step(description)

    def ranked(scorer: object) -> float:
        value = evaluate(scorer, known, test, k=10, progress=on_progress)[LIST_METRIC]
        return math.nan if value is None else float(value)

    step("Testing")
    scores = heldout_metrics(model, known, test, progress=on_progress)
    if LIST_METRIC not in scores:  # rank models have it already; the others' lists are ranked once more
        step("Ranking the test users' movies")
        scores[LIST_METRIC] = ranked(model)
    step("Testing the baseline")
    baseline_name, baseline = reference_metrics(model, known, test, progress=on_progress)
    if LIST_METRIC in baseline and baseline_name == PopularityBaseline.name:
        popular = baseline[LIST_METRIC]
    else:
        step("Ranking the most popular movies")
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
    model_name: str, mode: str | None, config: dict | None, data: object, the_split: object, *, seed: int,
    device: torch.device, patience: int | None, valid_fraction: float, why: str | None = None,
    on_start: Callable[[Recommender, TrainPlan], None] | None = None,
    on_epoch: Callable[[EpochReport], None] | None = None, on_step: StepCallback | None = None,
    on_progress: ProgressCallback | None = None,
) -> SplitFit:
    """Build model ``model_name`` for ``data`` (a :class:`~movierec.data.movielens.Dataset`) and :func:`fit` it
    on ``the_split``'s training ratings, less a seeded validation slice of ``valid_fraction`` (0: none) that
    early stopping reads. The test split is not read here: what `train` and `cv` do with it is theirs."""
    from movierec.data.split import validation_slice
    from movierec.models import build_model, resolve_mode, scaled_defaults

    fit_ratings, valid = the_split.train, None
    if valid_fraction > 0:
        fit_ratings, valid = validation_slice(the_split.train, valid_fraction, seed)
    seed_everything(seed)
    mode = resolve_mode(model_name, mode)
    scaled = scaled_defaults(model_name, mode, config, data.n_users, data.n_items, len(fit_ratings))
    model = build_model(model_name, mode, {**scaled, **(config or {})}, data.n_users, data.n_items,
                        tuple(data.rating_values))
    model.to(device)
    sample = validation_sample(valid, model.kind, seed) if valid is not None else None
    sampled = sample is not None and len(sample) < len(valid)
    plan = TrainPlan(data.name, why, the_split, fit_ratings, valid, valid_fraction,
                     VALID_RANK_USERS if sampled else None, scaled)
    if on_start is not None:
        on_start(model, plan)
    if on_step is not None:
        on_step("Building the training matrix")
    fit_matrix = fit_ratings.matrix(device)  # built once: training, validation and, without a slice, test
    result = fit(model, fit_ratings, sample, seed=seed, patience=patience, on_epoch=on_epoch, matrix=fit_matrix,
                 on_step=on_step, on_progress=on_progress)
    if valid is not None and on_step is not None:
        on_step("Building the full training matrix")
    picks = fit_picks(model, fit_ratings, fit_matrix, seed=seed, on_step=on_step, on_progress=on_progress)
    if picks is not None:
        result.picks_seconds = picks[1].fit_seconds
    known = fit_matrix if valid is None else the_split.train.matrix(device)
    return SplitFit(model, plan, result, known, None if picks is None else picks[0])


def fit_picks(
    model: Recommender, train: Ratings, matrix: RatingMatrix, *, seed: int, on_step: StepCallback | None = None,
    on_progress: ProgressCallback | None = None,
) -> tuple[Recommender, FitResult] | None:
    """The picks model of a rating or like ``model`` (:mod:`movierec.models.picks`), trained through :func:`fit`
    on the same training ratings, and its result; None for models whose scores already rank."""
    from movierec.models.picks import build_picks, needs_picks

    if not needs_picks(model.kind):
        return None
    picks = build_picks(model)

    def step(description: str) -> None:
        if on_step is not None:
            on_step(f"Learning what each user picks: {description[0].lower()}{description[1:]}")

    result = fit(picks, train, None, seed=seed, matrix=matrix, on_step=step, on_progress=on_progress)
    return picks, result
