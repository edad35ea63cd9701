"""A saved model with its dataset: rebuilt in torch, checked against the data it was trained on, converted from
older formats, and opened to answer.

This layer sits above the store (:mod:`movierec.checkpoint`: the file format, metadata, names) and the
answering core (:mod:`movierec.serving`), and below everything that uses saved models (training, evaluation,
the CLI, the Python API, the server)::

    checkpoint  <-  serving  <-  loading  <-  {training, evaluate, crossval, api, cli, server}

Only :func:`load` and :func:`load_trained` import torch; :func:`open_model` does not for the models
answered in numpy.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from movierec import checkpoint
from movierec.checkpoint import CheckpointMeta
from movierec.device import DEFAULT_DEVICE, needs_gpu, resolve_device
from movierec.errors import MovierecError
from movierec.serving import Served, ServingData, build_from_state

if TYPE_CHECKING:
    import torch

    from movierec.models.base import Recommender
    from movierec.training import Fitted

log = logging.getLogger(__name__)


def state_arrays(model: Recommender) -> dict[str, np.ndarray]:
    """A model's ``state_dict`` as the checkpoint's ``state.*`` arrays (CPU, contiguous)."""
    return {f"state.{k}": v.detach().cpu().contiguous().numpy() for k, v in model.state_dict().items()}


@dataclass(frozen=True)
class Checkpoint:
    path: Path
    meta: CheckpointMeta
    model: Recommender
    user_ids: torch.Tensor  # (n_users,) MovieLens user id of each user index
    item_ids: torch.Tensor  # (n_items,) MovieLens movie id of each movie index



def load(path: Path, device: torch.device | str = DEFAULT_DEVICE) -> Checkpoint:
    """Rebuild the model saved at ``path`` (either format) on ``device`` (a name is resolved:
    :func:`movierec.device.resolve_device`)."""
    import torch

    device = resolve_device(device) if isinstance(device, str) else device
    path = Path(path)
    meta, state, user_ids, item_ids = checkpoint.read_all(path)
    meta = checkpoint.current_meta(meta)
    model = build_from_state(meta, state, path)
    model.to(device)
    return Checkpoint(path, meta, model, torch.from_numpy(user_ids), torch.from_numpy(item_ids))


# -- with the dataset: evaluation, and serving data for files that lack it -------------------------------------
@dataclass(frozen=True)
class Trained:
    """A checkpoint together with the dataset and split it was trained on: what later commands need."""

    checkpoint: Checkpoint
    dataset: Any  # movierec.data.dataset.Dataset
    split: Any  # movierec.data.split.Split
    train: Any  # RatingMatrix of the training ratings (users x movies), on the model's device
    picks: Recommender | None = None
    """The picks model the checkpoint's lists rank through (rating and like models), when it has one."""

    @property
    def model(self) -> Recommender:
        return self.checkpoint.model

    @property
    def ranked(self) -> Any:
        """The model and its picks model, as evaluation scores them (:class:`movierec.models.picks.Ranked`)."""
        from movierec.models.picks import Ranked

        return Ranked(self.model, self.picks)

    @property
    def meta(self) -> CheckpointMeta:
        return self.checkpoint.meta


def load_trained(name: str | Path | None = None, device: torch.device | str = DEFAULT_DEVICE) -> Trained:
    """Load a checkpoint (the default when ``name`` is None), its dataset and its training split.

    A checkpoint without serving data (format 1, or saved without it) gets it now, rewritten in place:
    see :func:`upgrade`."""
    from movierec.data.movielens import load_dataset
    from movierec.data.split import make_split

    path = checkpoint.resolve(None if name is None else str(name))
    ckpt = load(path, device)
    meta = ckpt.meta
    data = load_dataset(meta.dataset)
    if data.fingerprint != meta.fingerprint:
        raise MovierecError(
            f"The cached {meta.dataset} ratings differ from the ones {meta.name} was trained on; retrain it."
        )
    _check_against_dataset(ckpt, data)
    split = make_split(data, meta.split, seed=meta.seed, test_fraction=meta.test_fraction)
    trained = Trained(ckpt, data, split, split.train.matrix(ckpt.model.device), _load_picks(path, ckpt))
    if meta.fitted_on_training_ratings:
        ckpt.model.reuse_fit_state(trained.train)
    if not _has_serving(path):
        upgrade(trained)
    return trained


def _load_picks(path: Path, ckpt: Checkpoint) -> Recommender | None:
    """The picks model saved with ``ckpt`` (its ``picks.*`` arrays), on the model's device; None without one."""
    import torch

    from movierec.models.picks import build_picks

    if checkpoint.is_legacy(path):
        return None
    with checkpoint.open_file(path) as saved:
        state = {k.removeprefix("picks."): saved.get(k) for k in saved.names() if k.startswith("picks.")}
    if not state:
        return None
    picks = build_picks(ckpt.model)
    try:
        picks.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()})
    except (KeyError, TypeError, ValueError, RuntimeError):
        raise MovierecError(f"{path} is damaged: its picks model does not match its model description.") from None
    if not all(bool(torch.isfinite(v).all()) for v in picks.state_dict().values()):
        raise MovierecError(f"{path} holds non-finite weights (in its picks model); retrain it.")
    return picks.to(ckpt.model.device).eval()


def _has_serving(path: Path) -> bool:
    try:
        with checkpoint.open_file(path) as saved:
            return "serving" in saved.metadata
    except checkpoint.LegacyCheckpoint:
        return False


def upgrade(trained: Trained) -> ServingData:
    """Rewrite ``trained``'s file in the current format with its serving data, atomically; returns that data.

    When the file cannot be rewritten (a read-only folder, or its name is being trained right now) it is left
    as it is, with a warning: the next use converts it again."""
    from filelock import FileLock, Timeout


    ckpt = trained.checkpoint
    serving = ServingData.build(ckpt.model, trained.split.train, trained.dataset)
    path = ckpt.path
    lock = FileLock(str(path.parent / f".{path.stem}.lock"), timeout=0)
    try:
        with lock:
            checkpoint.write(path, ckpt.meta, state_arrays(ckpt.model), ckpt.user_ids.numpy(), ckpt.item_ids.numpy(),
                             serving)
    except Timeout:
        log.warning("%s is being trained right now, so it was not converted to the current format", ckpt.meta.name)
    except (OSError, MovierecError) as exc:
        log.warning("Could not convert %s to the current checkpoint format (%s); it is converted again on each use",
                    path, str(exc).rstrip("."))
    else:
        log.info("converted %s to checkpoint format %d", path, checkpoint.FORMAT_VERSION)
    return serving


def _check_against_dataset(ckpt: Checkpoint, data: Any) -> None:
    """The checkpoint's users and movies are the dataset's, index for index: otherwise every answer is wrong."""
    meta = ckpt.meta
    if (meta.n_users, meta.n_items) != (data.n_users, data.n_items):
        raise MovierecError(
            f"{ckpt.path} is damaged (it has {meta.n_users:,} users and {meta.n_items:,} movies, {meta.dataset} "
            f"has {data.n_users:,} and {data.n_items:,}); retrain it."
        )
    for what, saved, actual in (("user", ckpt.user_ids, data.user_ids), ("movie", ckpt.item_ids, data.item_ids)):
        if not np.array_equal(np.asarray(saved.cpu(), dtype=np.int64), np.asarray(actual, dtype=np.int64)):
            raise MovierecError(f"{ckpt.path} is damaged (its {what} ids are not those of {meta.dataset}); retrain it.")


def _served_from_file(path: Path, device: Any) -> Served | None:
    """The model at ``path`` served from its own serving data, or None when the file has none (yet)."""
    try:
        saved = checkpoint.open_file(path)
    except checkpoint.LegacyCheckpoint:
        return None
    if "serving" in saved.metadata:
        return _serve(saved, device)
    saved.close()
    return None


def open_model(name: str | None, device: Any = DEFAULT_DEVICE) -> Served:
    """The saved model ``name`` (the default when None: pinned, else the newest), ready to answer.

    A checkpoint without serving data (format 1, or saved without it) is converted first: its dataset and
    split are loaded once, and the file rewritten in place (:func:`upgrade`).
    ``device``: where models that need torch run ("cpu", "cuda", "auto" or a torch.device), resolved only
    when one does; factor models are answered in numpy whatever it says, the RBMs, autoencoders and
    Mult-VAE/DAE unless it names a GPU (:mod:`movierec.models.forward`), and import no torch. A device that
    does not exist is refused first, whatever the model (a GPU asked for by name is looked for at once)."""
    if isinstance(device, str) and needs_gpu(device):
        device = resolve_device(device)
    path = checkpoint.resolve(name)
    served = _served_from_file(path, device)
    if served is not None:
        return served
    trained = load_trained(path, device)  # converts the file, when it can
    served = _served_from_file(path, device)
    if served is not None:
        return served
    serving = ServingData.build(trained.model, trained.split.train, trained.dataset)
    ckpt = trained.checkpoint
    return _serve(_InMemory(ckpt.path, ckpt.meta, state_arrays(ckpt.model), ckpt.user_ids.numpy(),
                            ckpt.item_ids.numpy(), serving), device)


def serve_unsaved(model: Recommender, train: Any, data: Any, *, picks: Recommender | None = None,
                  split: str = "custom", seed: int = 0) -> Served:
    """A model trained in this process on ``train`` (the :class:`~movierec.data.ratings.Ratings` of ``data`` it
    learned from) with its ``picks`` model, answering exactly as it would once saved, without a file: for
    benchmarks and tests that hold out ratings no named split does."""
    meta = CheckpointMeta(name=f"unsaved-{model.name}", model=model.name, mode=model.mode,
                          config=model.config.to_dict(), dataset=data.name, fingerprint=data.fingerprint, split=split,
                          seed=seed, n_users=data.n_users, n_items=data.n_items,
                          rating_values=list(data.rating_values))
    serving = ServingData.build(model, train, data, picks=picks)
    return _serve(_InMemory(Path(meta.name), meta, state_arrays(model), np.asarray(data.user_ids),
                            np.asarray(data.item_ids), serving), "cpu")


def serve_fitted(fitted: Fitted, device: Any = DEFAULT_DEVICE) -> Served:
    """A model trained in this process and not saved (:func:`movierec.training.train_unsaved`), answering exactly
    as it will once saved."""
    return _serve(_InMemory(Path(fitted.meta.name), fitted.meta, fitted.state, fitted.user_ids, fitted.item_ids,
                            fitted.serving), device)


def _serve(saved: Any, device: Any) -> Served:
    try:
        return Served(saved, device)
    except BaseException:
        saved.close()
        raise


class _InMemory:
    """A model's arrays in memory, as a SavedFile: a checkpoint converted when its file could not be rewritten, or a
    model never saved (:func:`serve_unsaved`)."""

    def __init__(self, path: Path, meta: CheckpointMeta, state: Mapping[str, np.ndarray], user_ids: np.ndarray,
                 item_ids: np.ndarray, serving: ServingData):
        self.path = path
        self.meta = meta
        self.metadata = {"serving": serving.info.to_json()}
        self._arrays = {**state, "user_ids": user_ids, "item_ids": item_ids, **serving.arrays}

    def close(self) -> None:
        pass

    def names(self) -> list[str]:
        return list(self._arrays)

    def __contains__(self, name: str) -> bool:
        return name in self._arrays

    def shape(self, name: str) -> tuple[int, ...]:
        return tuple(self._arrays[name].shape)

    def get(self, name: str) -> np.ndarray:
        return self._arrays[name]

    def rows(self, name: str, start: int, stop: int) -> np.ndarray:
        return self._arrays[name][start:stop]
