"""k-fold cross-validation: train a model on each fold's training ratings, score its test fold once, and report
every metric's mean and standard deviation over the folds -- what `movierec cv MODEL` prints.

The folds: a release with official cross-validation folds (ml-100k's u1..u5, disjoint test sets covering every
rating once) uses them unless another number of folds is asked for; otherwise ``folds`` seeded random folds of
the ratings (:func:`movierec.data.split.fold_of_ratings`; same seed, same folds).

Each fold trains through the one training loop (:func:`movierec.training.fit_split`) and nothing is saved. A
fold's test ratings are read once, after training, by :func:`movierec.evaluate.evaluate` (the protocol of
`movierec evaluate`, with the fold's training ratings as every user's history); anything that chooses by a
metric (``patience``) reads a validation slice carved from the fold's training ratings, never its test fold.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from movierec.errors import MovierecError
from movierec.options import QUIET, Prefixed, TrainingEvents, TrainOptions

DEFAULT_FOLDS = 5
"""The number of random folds when a release has no official ones and none is asked for."""


@dataclass(frozen=True)
class FoldResult:
    """One fold: its name, sizes, the test metrics of the model and of the trivial answer, and its training."""

    name: str
    train_ratings: int
    test_ratings: int
    metrics: dict[str, float]
    """The test fold's metrics (:func:`movierec.evaluate.evaluate`, K = 10), NaN where undefined."""
    baseline: dict[str, float]
    """The same split's trivial answer (:func:`movierec.evaluate.reference_metrics`)."""
    epochs: int
    fit_seconds: float


@dataclass(frozen=True)
class CrossValidation:
    """The result of :func:`cross_validate`."""

    model: str
    mode: str
    dataset: str
    folds: list[str]
    """The folds' names, in order: ``u1``..``u5``, or ``fold 1/5``..``fold 5/5``."""
    metrics: list[dict[str, float]]
    """Each fold's test metrics, in the order of ``folds``."""
    mean: dict[str, float]
    std: dict[str, float]
    """The standard deviation over the folds (population, ddof 0, as Surprise and scikit-learn report it)."""
    baseline_name: str
    baseline_mean: dict[str, float]
    seed: int
    config: dict[str, Any]
    fold_results: list[FoldResult] = field(default_factory=list)

    @property
    def fit_seconds(self) -> float:
        return sum(f.fit_seconds for f in self.fold_results)

    def to_json(self) -> dict[str, Any]:
        """What `movierec cv --json` prints: each fold, the mean and standard deviation, the baseline's mean."""
        return {
            "model": self.model, "mode": self.mode, "dataset": self.dataset, "seed": self.seed,
            "folds": [{"fold": f.name, "train_ratings": f.train_ratings, "test_ratings": f.test_ratings,
                       "epochs": f.epochs, "fit_seconds": f.fit_seconds, "metrics": f.metrics,
                       "baseline": f.baseline} for f in self.fold_results],
            "mean": self.mean, "std": self.std,
            "baseline": {"name": self.baseline_name, "mean": self.baseline_mean},
            "config": self.config,
        }

    def to_frame(self) -> Any:
        """One row per fold (``fold``, its test metrics, ``fit_seconds``), then ``mean`` and ``std`` rows: a
        pandas DataFrame, what the Python API's ``cross_validate`` returns."""
        import pandas as pd

        rows = [{"fold": f.name, **metrics, "fit_seconds": f.fit_seconds}
                for f, metrics in zip(self.fold_results, self.metrics)]
        rows += [{"fold": "mean", **self.mean, "fit_seconds": self.fit_seconds / len(self.folds)},
                 {"fold": "std", **self.std}]
        return pd.DataFrame(rows)


def cross_validate(options: TrainOptions, folds: int | None = None,
                   events: TrainingEvents = QUIET) -> CrossValidation:
    """Cross-validate the model ``options`` name (its mode and settings, as for `movierec train`) on
    ``options.dataset`` (None: the default one) over ``folds`` folds (see the module docstring); nothing is
    saved, so the options' split, test fraction and name play no part.

    ``options.patience`` and ``valid_fraction`` are those of training, within each fold's training ratings.
    ``events`` hears of each step as it begins, prefixed by the fold ("u2: Epoch 3/20"), of each step's
    batches, of each fold as it ends, and ``start`` of the first fold's model and training plan (the defaults
    it chose, for one).
    """
    from movierec.data.default import default_dataset
    from movierec.data.movielens import load_dataset
    from movierec.data.split import fold_of_ratings, fold_split, make_split, official_folds
    from movierec.device import resolve_device
    from movierec.evaluate import evaluate, reference_metrics
    from movierec.training import fit_split

    if folds is not None and folds < 2:
        raise MovierecError(f"Cross-validation needs at least 2 folds, not {folds}.")
    torch_device = resolve_device(options.device)
    dataset = options.dataset if options.dataset is not None else default_dataset().name
    seed = options.seed

    events.step(f"Loading {dataset}")
    data = load_dataset(dataset)
    official = official_folds(data.name)
    if official and folds in (None, len(official)):
        names = list(official)
        assignment = None
    else:
        k = DEFAULT_FOLDS if folds is None else folds
        events.step("Drawing the folds")
        assignment = fold_of_ratings(len(data.ratings), k, seed)  # checks 2 <= k <= ratings
        names = [f"fold {i}/{k}" for i in range(1, k + 1)]

    results: list[FoldResult] = []
    config_used: dict[str, Any] = {}
    baseline_name = ""
    for i, name in enumerate(names, 1):
        fold_events = Prefixed(events, f"{name}: ", first=i == 1)
        fold_events.step("Splitting the ratings")
        if assignment is None:
            split = make_split(data, name, seed=seed)
        else:
            split = fold_split(data, i, len(names), seed, assignment)
        fitted = fit_split(options, data, split, device=torch_device, events=fold_events)
        fold_events.step("Testing")
        scores = evaluate(fitted.ranked, fitted.known, split.test, k=10, progress=events.progress)
        fold_events.step("Testing the baseline")
        baseline_name, baseline = reference_metrics(fitted.model, fitted.known, split.test,
                                                    progress=events.progress)
        config_used = fitted.model.config.to_dict()
        metrics = {key: math.nan if value is None else float(value) for key, value in scores.items()
                   if key not in ("users", "ratings")}
        result = FoldResult(name, len(split.train), len(split.test), metrics, baseline,
                            len(fitted.result.history), fitted.result.fit_seconds)
        results.append(result)
        del fitted, split  # the next fold's model and matrices replace them, not join them
        events.fold(result)

    # A metric that applies to the model in no fold (the RMSE of a top-N model) is left out.
    keys = [key for key in results[0].metrics if any(not math.isnan(r.metrics[key]) for r in results)]
    per_fold = [{key: r.metrics[key] for key in keys} for r in results]
    base_keys = list(results[0].baseline)
    return CrossValidation(
        model=options.model, mode=str(options.mode), dataset=data.name, folds=names, metrics=per_fold,
        mean={key: _mean([m[key] for m in per_fold]) for key in keys},
        std={key: _std([m[key] for m in per_fold]) for key in keys},
        baseline_name=baseline_name,
        baseline_mean={key: _mean([r.baseline[key] for r in results]) for key in base_keys},
        seed=int(seed), config=config_used, fold_results=results,
    )


def _mean(values: list[float]) -> float:
    return math.fsum(values) / len(values)


def _std(values: list[float]) -> float:
    mean = _mean(values)
    return math.sqrt(math.fsum((v - mean) ** 2 for v in values) / len(values))
