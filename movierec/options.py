"""What a training run is asked to do, and who hears how it goes: one options object in, one listener out.

:class:`TrainOptions` holds every choice of a run -- the model, its mode and settings, the data, the split,
the seed, the device, early stopping, the checkpoint's name -- with its defaults and checks written once.
`movierec train`, `movierec cv`, the Python API and tuning all build one and hand it to
:mod:`movierec.training` (or :mod:`movierec.crossval`), which never take those choices one by one.

:class:`TrainingEvents` is what a run tells whoever listens (the CLI draws it; the library never prints).
Every method does nothing by default, so a listener overrides only what it shows.

Importing this module imports neither torch nor pandas: the CLI builds its options before anything heavy loads.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from movierec.device import DEFAULT_DEVICE
from movierec.errors import MovierecError

if TYPE_CHECKING:
    from movierec.models.base import ModelConfig, Recommender
    from movierec.training import EpochReport, TrainPlan

DEFAULT_TEST_FRACTION = 0.1
"""The share of ratings the random and temporal splits hold out."""
DEFAULT_VALID_FRACTION = 0.05
"""The validation slice carved from the training ratings when early stopping needs one."""


@dataclass(frozen=True)
class TrainOptions:
    """One training run's choices, checked when made (an impossible one is a :class:`MovierecError` here,
    before any data loads).

    ``mode`` None is the model's default mode and is resolved on creation; ``config`` holds the model
    settings that were given (a ``ModelConfig`` of the right class, or a mapping of field names); the model's
    own defaults fill the rest when it is built. ``valid_fraction`` None is resolved too:
    :data:`DEFAULT_VALID_FRACTION` with ``patience``, else 0 (no validation slice).
    """

    model: str
    mode: str | None = None
    config: Mapping[str, Any] = field(default_factory=dict)
    dataset: str | None = None
    """A fetched or imported dataset's name; None: the default one (:func:`movierec.data.default.default_dataset`)."""
    split: str | None = None
    """u1..u5, ua, ub, random, temporal, or none (train on every rating); None: the dataset's default."""
    test_fraction: float = DEFAULT_TEST_FRACTION
    seed: int = 0
    device: str = DEFAULT_DEVICE
    patience: int | None = None
    valid_fraction: float | None = None
    name: str | None = None
    """The checkpoint's name; None: the model's (als, als-2, ...)."""

    def __post_init__(self) -> None:
        from movierec.models import model_entry, resolve_mode

        model = self.model.strip().lower()
        model_entry(model)  # an unknown model is one sentence
        mode, config = _config_values(model, self.mode, self.config)
        set_ = object.__setattr__  # frozen: the resolved values are written once, here
        set_(self, "model", model)
        set_(self, "mode", resolve_mode(model, mode))
        set_(self, "config", config)
        set_(self, "seed", int(self.seed))
        if not (isinstance(self.test_fraction, (int, float)) and 0.0 < self.test_fraction < 1.0):
            raise MovierecError(f"--test-fraction must be between 0 and 1, not {self.test_fraction}; to train on "
                                "every rating, use --split none.")
        if self.patience is not None and int(self.patience) < 1:
            raise MovierecError("--patience must be at least 1.")
        valid = self.valid_fraction
        if valid is None:
            valid = DEFAULT_VALID_FRACTION if self.patience is not None else 0.0
        if not (math.isfinite(valid) and 0.0 <= valid < 1.0):
            raise MovierecError(f"--valid-fraction must be at least 0 and below 1, not {valid:g}.")
        set_(self, "valid_fraction", float(valid))

    def replace(self, **changes: Any) -> TrainOptions:
        """These options with ``changes`` (checked again)."""
        return dataclasses.replace(self, **changes)

    def settings(self) -> dict[str, Any]:
        """The model settings given, as a plain dict (a copy)."""
        return dict(self.config)


def _config_values(model: str, mode: str | None, config: ModelConfig | Mapping[str, Any] | None
                   ) -> tuple[str | None, dict[str, Any]]:
    """The mode and settings dict of ``config``: a mapping as it is; a ``ModelConfig`` says its mode by its
    class, which must agree with ``mode`` when both are given."""
    if config is None:
        return mode, {}
    if not dataclasses.is_dataclass(config):
        return mode, dict(config)
    from movierec.models import model_classes

    modes = [m for m, cls in model_classes(model).items() if cls.config_class is type(config)]
    if not modes or (mode is not None and mode.strip().lower() not in modes):
        raise MovierecError(f"A {type(config).__name__} is not the config of {model}"
                            f"{f' --mode {mode}' if mode else ''}; make one with model_config({model!r}).")
    return modes[0], config.to_dict()


class TrainingEvents:
    """What a training run tells its listener, in order: ``step`` as each step begins ("Loading ml-1m",
    "Epoch 3/20", "Saving"), ``progress`` within a countable step, ``start`` once the model is built and the
    data split, ``epoch`` after each epoch. Cross-validation adds ``fold`` after each fold, tuning ``trial`` after
    each trial. Every method does
    nothing here; a listener overrides what it shows."""

    def step(self, description: str) -> None:
        """A new step begins; the previous one ended."""

    def progress(self, done: int, total: int) -> None:
        """How far the current step is, in its own units; ``done`` only grows within a step."""

    def start(self, model: Recommender, plan: TrainPlan) -> None:
        """The model is built and the ratings split: what will be trained on what."""

    def epoch(self, report: EpochReport) -> None:
        """An epoch ended (its training and validation numbers)."""

    def fold(self, result: Any) -> None:
        """A cross-validation fold ended (a :class:`movierec.crossval.FoldResult`)."""

    def trial(self, record: Any) -> None:
        """A tuning trial ended (a :class:`movierec.tuning.TrialRecord`)."""


class Prefixed(TrainingEvents):
    """``events`` with every step's description prefixed ("u2: Epoch 3/20"); ``start`` passed on only when
    ``first`` (cross-validation describes the first fold's model once)."""

    def __init__(self, events: TrainingEvents, prefix: str, *, first: bool = True):
        self.events, self.prefix, self.first = events, prefix, first

    def step(self, description: str) -> None:
        self.events.step(f"{self.prefix}{description}")

    def progress(self, done: int, total: int) -> None:
        self.events.progress(done, total)

    def start(self, model: Recommender, plan: TrainPlan) -> None:
        if self.first:
            self.events.start(model, plan)

    def epoch(self, report: EpochReport) -> None:
        self.events.epoch(report)


QUIET = TrainingEvents()
"""A listener that hears nothing."""
