"""Saved models: plain tensors plus JSON metadata, written atomically, loaded without unpickling code.

A checkpoint file is a ``torch.save`` of a dict holding only tensors, strings and ints::

    {"format": "movierec-checkpoint", "format_version": 1,
     "meta": "<JSON: model, config, dataset, fingerprint, split, seed, history, metrics, ...>",
     "state": {parameter name: tensor}, "user_ids": tensor, "item_ids": tensor}

and is read back with ``torch.load(weights_only=True)``, which refuses anything that is not plain data.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import tempfile
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from movierec import __version__, paths
from movierec.errors import MovierecError
from movierec.models import build_model, migrate_settings
from movierec.models.base import Recommender

FORMAT = "movierec-checkpoint"
FORMAT_VERSION = 1
SUFFIX = ".pt"


@dataclass(frozen=True)
class CheckpointMeta:
    """Everything about a trained model except its tensors; JSON-able."""

    name: str
    model: str
    config: dict[str, Any]
    dataset: str
    fingerprint: str
    split: str
    seed: int
    n_users: int
    n_items: int
    rating_values: list[float]
    mode: str = ""
    """Which of the model's algorithms (its class); empty in checkpoints from before modes were classes."""
    metrics: dict[str, Any] = field(default_factory=dict)
    """Final validation metrics on the held-out split."""
    train_metrics: dict[str, Any] = field(default_factory=dict)
    baseline: dict[str, Any] = field(default_factory=dict)
    """The trivial reference on the same held-out split: {"name": ..., metric: value}."""
    history: list[dict[str, Any]] = field(default_factory=list)
    fit_seconds: float = 0.0
    epochs: int = 0
    device: str = "cpu"
    test_fraction: float = 0.1
    created: str = ""
    version: str = __version__

    @classmethod
    def from_json(cls, text: str) -> CheckpointMeta:
        data = json.loads(text)
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in data.items() if k in known})


@dataclass(frozen=True)
class Checkpoint:
    path: Path
    meta: CheckpointMeta
    model: Recommender
    user_ids: torch.Tensor  # (n_users,) MovieLens user id of each user index
    item_ids: torch.Tensor  # (n_items,) MovieLens movie id of each movie index


_NAME_OK = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def default_name(model: str, dataset: str, split: str) -> str:
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    return f"{model}-{dataset}-{split}-{stamp}"


def path_for(name: str) -> Path:
    if not _NAME_OK.match(name) or name.endswith(SUFFIX):
        raise MovierecError(
            f"Invalid model name {name!r}: use letters, digits, '.', '_' and '-' (no path, no {SUFFIX})."
        )
    return paths.models_dir() / f"{name}{SUFFIX}"


def save(
    model: Recommender, meta: CheckpointMeta, user_ids: Any, item_ids: Any, path: Path | None = None
) -> Path:
    """Write the checkpoint atomically (temp file in the same folder, then rename) and return its path."""
    path = Path(path) if path is not None else path_for(meta.name)
    if not meta.created:
        # Microseconds: `resolve(None)` picks the newest by this stamp, and two saves can share a second.
        created = datetime.now(timezone.utc).isoformat(timespec="microseconds")
        meta = CheckpointMeta(**{**asdict(meta), "created": created})
    payload = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "meta": json.dumps(asdict(meta), allow_nan=True),
        "state": {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()},
        "user_ids": torch.as_tensor(user_ids, dtype=torch.int64).cpu(),
        "item_ids": torch.as_tensor(item_ids, dtype=torch.int64).cpu(),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(payload, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise MovierecError(f"Could not save the model to {path}: {exc.strerror or exc}.") from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _read(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise MovierecError(f"No checkpoint at {path}.")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:
        raise MovierecError(
            f"{path} is not a readable movierec checkpoint (truncated, corrupted or not a checkpoint)."
        ) from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise MovierecError(f"{path} is not a movierec checkpoint.")
    version = payload.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise MovierecError(
            f"{path} was written by a newer movierec (checkpoint format {version}); upgrade movierec to read it."
        )
    return payload


def read_meta(path: Path) -> CheckpointMeta:
    payload = _read(Path(path))
    try:
        return CheckpointMeta.from_json(payload["meta"])
    except (KeyError, TypeError, ValueError):
        raise MovierecError(f"{path} has damaged metadata.") from None


def load(path: Path, device: torch.device | str = "cpu") -> Checkpoint:
    """Rebuild the model saved at ``path`` on ``device``."""
    path = Path(path)
    payload = _read(path)
    try:
        meta = CheckpointMeta.from_json(payload["meta"])
        if not meta.mode:
            mode, config = migrate_settings(meta.model, meta.config)
            meta = dataclasses.replace(meta, mode=mode, config=config)
        model = build_model(meta.model, meta.mode, meta.config, meta.n_users, meta.n_items, tuple(meta.rating_values))
        model.load_state_dict(payload["state"])
        user_ids, item_ids = payload["user_ids"], payload["item_ids"]
    except MovierecError:
        raise
    except (KeyError, TypeError, ValueError, RuntimeError):
        raise MovierecError(f"{path} is damaged: its tensors do not match its model description.") from None
    model.to(device)
    model.eval()
    return Checkpoint(path, meta, model, user_ids, item_ids)


def list_checkpoints() -> list[tuple[Path, CheckpointMeta]]:
    """Every readable checkpoint in the models folder, oldest first (unreadable files are skipped)."""
    folder = paths.models_dir()
    found = []
    for p in sorted(folder.glob(f"*{SUFFIX}")) if folder.is_dir() else []:
        try:
            found.append((p, read_meta(p)))
        except MovierecError:
            continue
    found.sort(key=lambda pm: (pm[1].created, pm[0].name))
    return found


def resolve(name: str | None) -> Path:
    """A checkpoint by name or path; ``None`` means the newest one."""
    if name is None:
        found = list_checkpoints()
        if not found:
            raise MovierecError("No trained models yet; train one with `movierec train MODEL`.")
        return found[-1][0]
    candidate = Path(name).expanduser()
    if candidate.suffix == SUFFIX and candidate.is_file():
        return candidate
    path = path_for(name)
    if not path.is_file():
        names = [p.stem for p, _ in list_checkpoints()]
        hint = f" Saved models: {', '.join(names[-10:])}." if names else " No models are saved yet."
        raise MovierecError(f"No saved model named {name!r}.{hint}")
    return path


@dataclass(frozen=True)
class Trained:
    """A checkpoint together with the dataset and split it was trained on: what later commands need."""

    checkpoint: Checkpoint
    dataset: Any  # movierec.data.movielens.Dataset
    split: Any  # movierec.data.split.Split
    train: Any  # RatingMatrix of the training ratings (users x movies), on the model's device

    @property
    def model(self) -> Recommender:
        return self.checkpoint.model

    @property
    def meta(self) -> CheckpointMeta:
        return self.checkpoint.meta


def load_trained(name: str | None = None, device: torch.device | str = "cpu") -> Trained:
    """Load a checkpoint (newest when ``name`` is None), its dataset and its training split."""
    from movierec.data.movielens import load_dataset
    from movierec.data.split import make_split

    ckpt = load(resolve(name), device)
    meta = ckpt.meta
    data = load_dataset(meta.dataset)
    if data.fingerprint != meta.fingerprint:
        raise MovierecError(
            f"The cached {meta.dataset} ratings differ from the ones {meta.name} was trained on; retrain it."
        )
    split = make_split(data, meta.split, seed=meta.seed, test_fraction=meta.test_fraction)
    return Trained(ckpt, data, split, split.train.matrix(ckpt.model.device))
