"""A checkpoint's metadata (:class:`CheckpointMeta`), checked field by field whatever container carried it, and
its arrays checked against it."""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from movierec.checkpoint.schema import conforms, show, typed_fields
from movierec.data.registry import NO_TEST_SPLIT
from movierec.errors import MovierecError
from movierec.models import migrate_settings
from movierec.version import __version__

log = logging.getLogger(__name__)


MAX_NAME = 150
"""Longest model name: with the temporary file's extra characters it stays within the usual 255-byte limit."""
_NAME_OK = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def plain_name(name: str) -> bool:
    """Whether ``name`` can name a saved model or an imported dataset: letters, digits, '.', '_' and '-', not
    starting with a symbol (no path), at most :data:`MAX_NAME` characters."""
    return bool(_NAME_OK.match(name)) and len(name) <= MAX_NAME


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
    """The test split's metrics, measured once after training: those the model's kind is judged by, and for
    every kind ``ndcg@10`` (how good its lists are; missing in checkpoints from before). Empty when
    :attr:`has_test_split` is false."""
    train_metrics: dict[str, Any] = field(default_factory=dict)
    baseline: dict[str, Any] = field(default_factory=dict)
    """The trivial reference on the same held-out split: {"name": ..., metric: value}."""
    popularity: dict[str, Any] = field(default_factory=dict)
    """The "most popular" lists' ranking metrics on the same test split (``ndcg@10``), whatever the model's
    kind: what its own lists must beat. Empty: not measured (no test split, or a checkpoint from before)."""
    history: list[dict[str, Any]] = field(default_factory=list)
    fit_seconds: float = 0.0
    epochs: int = 0
    device: str = "cpu"
    test_fraction: float = 0.1
    valid_metrics: dict[str, Any] = field(default_factory=dict)
    """The kept epoch's metrics on the validation slice carved from the training ratings (empty: none)."""
    valid_fraction: float = 0.0
    created: str = ""
    version: str = __version__

    @property
    def has_test_split(self) -> bool:
        """Whether ratings were held out to test the model on: false for ``--split none``, trained on every
        rating (no test metrics; nothing to evaluate it on)."""
        return self.split != NO_TEST_SPLIT

    @property
    def fitted_on_training_ratings(self) -> bool:
        """Whether the model was fitted on exactly its split's training ratings (the ones saved with it): true
        unless a validation slice was held out of them. Then what it derived from them at the end of training
        may be reused (:meth:`~movierec.models.base.Recommender.reuse_fit_state`)."""
        return not self.valid_fraction

    @classmethod
    def from_json(cls, text: str) -> CheckpointMeta:
        """The metadata in ``text``, checked by :func:`meta_from_dict`; raises ValueError saying what is wrong."""
        try:
            data = json.loads(text)
        except (TypeError, ValueError):
            raise ValueError("its metadata is not valid JSON") from None
        return _meta_or_reason(data)



# -- metadata: checked field by field, whatever container carried it ------------------------------------
def meta_from_dict(data: Any, source: str | Path) -> CheckpointMeta:
    """The metadata in ``data`` (decoded JSON), every field checked for type and shape.

    Anything wrong raises one sentence, "SOURCE is damaged (...).", naming the first bad field.
    """
    try:
        return _meta_or_reason(data)
    except ValueError as exc:
        raise MovierecError(f"{source} is damaged ({exc}).") from None


def _meta_or_reason(data: Any) -> CheckpointMeta:
    meta = CheckpointMeta(**_renamed_metrics(typed_fields(CheckpointMeta, data, "metadata")))
    problem = _implausible(meta)
    if problem:
        raise ValueError(problem)
    return meta


RENAMED_METRICS = {"loss": "like_error"}
"""Metric keys renamed since a checkpoint could have been written (old -> new): the like/dislike RBM's share of
wrong like calls was ``loss`` before 0.2. Its test, validation and baseline metrics are read under the new key;
training statistics keep ``loss`` (the training objective). To be dropped with the format-1 reader, in 0.3."""


def _renamed_metrics(values: dict[str, Any]) -> dict[str, Any]:
    """``values`` with the measured metrics' old keys (:data:`RENAMED_METRICS`) under their new names."""
    def renamed(metrics: Any) -> Any:
        if not isinstance(metrics, dict):
            return metrics
        return {RENAMED_METRICS.get(k, k) if isinstance(k, str) else k: v for k, v in metrics.items()}

    out = {k: renamed(values[k]) if k in ("metrics", "baseline", "valid_metrics") and k in values else v
           for k, v in values.items()}
    if isinstance(out.get("history"), list):
        out["history"] = [{**row, "valid": renamed(row["valid"])} if isinstance(row, dict) and "valid" in row
                          else row for row in out["history"]]
    return out


def _implausible(meta: CheckpointMeta) -> str | None:
    """What is wrong with metadata whose fields all have the right types, if anything."""
    if not _NAME_OK.match(meta.name) or len(meta.name) > MAX_NAME:
        return f"its name {show(meta.name)} is not a model name"
    if not meta.model:
        return "its 'model' is empty"
    for what, count in (("users", meta.n_users), ("movies", meta.n_items)):
        if count < 1:
            return f"it has {count} {what}"
    stars = meta.rating_values
    if not stars:
        return "its 'rating_values' is empty"
    if not all(math.isfinite(v) for v in stars) or any(a >= b for a, b in zip(stars, stars[1:])):
        return "its 'rating_values' are not ascending finite numbers"
    for key in ("metrics", "train_metrics", "popularity"):
        if not all(conforms(v, float) for v in getattr(meta, key).values()):
            return f"its {key!r} are not all numbers"
    if not all(conforms(v, str | float) for v in meta.baseline.values()):
        return "its 'baseline' holds something that is neither a name nor a number"
    try:
        datetime.fromisoformat(meta.created)
    except ValueError:
        return f"its 'created' is {show(meta.created)}, not a date and time"
    if meta.epochs < 0 or not math.isfinite(meta.fit_seconds) or meta.fit_seconds < 0:
        return "its epoch count or fit time is negative or not finite"
    if not 0.0 < meta.test_fraction < 1.0:
        return f"its 'test_fraction' is {show(meta.test_fraction)}, not between 0 and 1"
    return None


def check_arrays(
    state: Mapping[str, np.ndarray], user_ids: Any, item_ids: Any, meta: CheckpointMeta, path: Path
) -> None:
    """The arrays agree with the metadata and are finite: checked before a model is built from them."""
    for ids, count, what in ((user_ids, meta.n_users, "user"), (item_ids, meta.n_items, "movie")):
        if not isinstance(ids, np.ndarray) or ids.ndim != 1 or ids.dtype.kind not in "iu":
            raise MovierecError(f"{path} is damaged (its {what} ids are not a list of whole numbers).")
        if len(ids) != count:
            raise MovierecError(f"{path} is damaged (it has {len(ids):,} {what} ids for {count:,} {what}s).")
        ordered = np.sort(ids)  # not np.unique: its hashing imports numpy.ma (12 ms of every answer) and is slower
        if bool((ordered[1:] == ordered[:-1]).any()):
            raise MovierecError(f"{path} is damaged (its {what} ids repeat).")
    for key, array in state.items():
        if array.dtype.kind in "fc" and not bool(np.isfinite(array).all()):
            raise MovierecError(f"{path} holds non-finite weights (in {key.removeprefix('state.')}); retrain it.")


def current_meta(meta: CheckpointMeta) -> CheckpointMeta:
    if not meta.mode:  # written before each mode had its own class
        mode, config = migrate_settings(meta.model, meta.config)
        meta = dataclasses.replace(meta, mode=mode, config=config)
    return meta
