"""The one training loop: every model goes through :func:`fit`.

Each model supplies ``fit_start`` and ``train_epoch``; this loop owns everything around them: seeding,
the device, per-epoch validation on the held-out split, divergence detection, early stopping, timing,
and reporting progress to whoever is listening (the CLI draws it; the library never prints).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from movierec.data.ratings import Ratings
from movierec.device import make_generator, seed_everything
from movierec.errors import MovierecError
from movierec.evaluate import heldout_metrics, reference_metrics
from movierec.models.base import Recommender


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
    monitor: str = ""

    @property
    def final_valid(self) -> dict[str, float]:
        return self.history[self.kept_epoch - 1].valid if self.history else {}

    @property
    def final_train(self) -> dict[str, float]:
        return self.history[self.kept_epoch - 1].train if self.history else {}


def monitored_metric(model: Recommender) -> tuple[str, bool]:
    """The validation number early stopping watches, and whether higher is better."""
    return {"rating": ("rmse", False), "like": ("loss", False)}.get(model.kind, ("ndcg@10", True))


def fit(
    model: Recommender,
    train: Ratings,
    valid: Ratings | None,
    *,
    seed: int = 0,
    epochs: int | None = None,
    patience: int | None = None,
    on_epoch: Callable[[EpochReport], None] | None = None,
) -> FitResult:
    """Train ``model`` (already on its device) on ``train``, validating on ``valid`` after every epoch.

    With ``patience``, training stops once the monitored validation metric has not improved for that
    many epochs, and the best epoch's weights are kept. Raises :class:`MovierecError` when training
    diverges (a non-finite loss or weight).
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
    matrix = train.matrix(device)
    monitor, higher_is_better = monitored_metric(model)
    sign = -1.0 if higher_is_better else 1.0  # compare as "lower is better"
    result = FitResult(monitor=monitor)
    best_value = math.inf
    best_state: dict[str, torch.Tensor] | None = None
    since_best = 0

    model.fit_start(matrix, generator)
    for epoch in range(1, epochs + 1):
        start = time.perf_counter()
        model.train()
        stats = {k: float(v) for k, v in model.train_epoch(matrix, generator).items()}
        model.eval()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        seconds = time.perf_counter() - start
        result.fit_seconds += seconds
        _check_finite(model, stats, epoch)

        scores = heldout_metrics(model, matrix, valid) if valid is not None and len(valid) else {}
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
class TrainOutcome:
    path: object  # pathlib.Path of the saved checkpoint
    meta: object  # checkpoint.CheckpointMeta
    result: FitResult


def train_and_save(
    model_name: str,
    config: dict | None = None,
    *,
    mode: str | None = None,
    dataset: str = "ml-100k",
    split: str | None = None,
    seed: int = 0,
    device: str = "auto",
    patience: int | None = None,
    name: str | None = None,
    test_fraction: float = 0.1,
    on_start: Callable[[Recommender, object], None] | None = None,
    on_epoch: Callable[[EpochReport], None] | None = None,
) -> TrainOutcome:
    """Train ``model_name`` on a fetched dataset's split and save the checkpoint: what `movierec train` does."""
    from movierec import checkpoint
    from movierec.data.movielens import load_dataset
    from movierec.data.split import default_split, make_split
    from movierec.device import resolve_device
    from movierec.models import build_model, resolve_mode

    torch_device = resolve_device(device)
    name = name or checkpoint.default_name(model_name, dataset, split or default_split(dataset))
    out_path = checkpoint.path_for(name)  # validates the name before any work
    data = load_dataset(dataset)
    the_split = make_split(data, split or default_split(dataset), seed=seed, test_fraction=test_fraction)
    seed_everything(seed)
    mode = resolve_mode(model_name, mode)
    model = build_model(model_name, mode, config, data.n_users, data.n_items, tuple(data.rating_values))
    model.to(torch_device)
    if on_start is not None:
        on_start(model, the_split)
    result = fit(model, the_split.train, the_split.test, seed=seed, patience=patience, on_epoch=on_epoch)
    baseline_name, baseline = reference_metrics(model, the_split.train.matrix(torch_device), the_split.test)
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
        metrics=result.final_valid,
        train_metrics=result.final_train,
        baseline={"name": baseline_name, **baseline},
        history=[
            {"epoch": r.epoch, "train": r.train, "valid": r.valid, "seconds": r.seconds} for r in result.history
        ],
        fit_seconds=result.fit_seconds,
        epochs=len(result.history),
        device=str(torch_device),
        test_fraction=test_fraction,
    )
    path = checkpoint.save(model, meta, data.user_ids, data.item_ids, out_path)
    return TrainOutcome(path, checkpoint.read_meta(path), result)
