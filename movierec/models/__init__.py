"""The registry of model names. Importing this module does not import torch; a model's module is
imported only when that model is asked for.

Each model name has one or more modes, and each mode is its own class (a different algorithm, with its
own config, defaults and kind); the first mode listed is the default. A class carries ``name`` and
``mode`` as ClassVars matching its entry here.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

from movierec.errors import MovierecError

if TYPE_CHECKING:
    from movierec.models.base import Recommender


@dataclass(frozen=True)
class ModelEntry:
    summary: str
    """One line, shown by `movierec train --help`."""
    modes: dict[str, tuple[str, str]]
    """mode -> (module, class); the first is the default mode."""

    @property
    def default_mode(self) -> str:
        return next(iter(self.modes))


MODELS: dict[str, ModelEntry] = {
    "rbm": ModelEntry(
        "Restricted Boltzmann Machine (contrastive divergence): like/dislike, or star ratings (item-based).",
        {"like": ("movierec.models.rbm_like", "LikeRBM"), "rating": ("movierec.models.rbm_rating", "RatingRBM")},
    ),
    "autoencoder": ModelEntry(
        "Autoencoders: star ratings, user- or item-based (I-AutoRec); top-N lists (--mode vae, dae: Mult-VAE/DAE).",
        {"user": ("movierec.models.autoencoder", "UserAutoEncoder"),
         "item": ("movierec.models.autoencoder", "ItemAutoEncoder"),
         "vae": ("movierec.models.multvae", "MultVAE"),
         "dae": ("movierec.models.multvae", "MultDAE")},
    ),
    "mf": ModelEntry(
        "Matrix factorization with biases, trained by mini-batch gradient descent.",
        {"explicit": ("movierec.models.mf", "MatrixFactorization")},
    ),
    "als": ModelEntry(
        "Latent factors by alternating least squares: star ratings with biases, or top-N (--mode implicit).",
        {"explicit": ("movierec.models.als", "ExplicitALS"), "implicit": ("movierec.models.als", "ImplicitALS")},
    ),
    "hybrid": ModelEntry(
        "Matrix factorization that also knows movies by genre and decade, people by age, gender and occupation.",
        {"explicit": ("movierec.models.hybrid", "HybridMF")},
    ),
}


def model_entry(name: str) -> ModelEntry:
    """The registry entry of model ``name``; an unknown name lists the valid ones."""
    key = name.strip().lower()
    if key not in MODELS:
        raise MovierecError(f"Unknown model {name!r}; choose one of: {', '.join(MODELS)}.")
    return MODELS[key]


def resolve_mode(name: str, mode: str | None) -> str:
    """``mode`` checked against model ``name``'s modes; None is the model's default mode."""
    entry = model_entry(name)
    if mode is None:
        return entry.default_mode
    key = mode.strip().lower()
    if key not in entry.modes:
        raise MovierecError(f"Unknown {name} mode {mode!r}; choose one of: {', '.join(entry.modes)}.")
    return key


def model_class(name: str, mode: str | None = None) -> type[Recommender]:
    """The class of model ``name`` in ``mode`` (None: its default mode)."""
    module, cls = model_entry(name).modes[resolve_mode(name, mode)]
    return getattr(importlib.import_module(module), cls)


def model_classes(name: str) -> dict[str, type[Recommender]]:
    """Every mode of model ``name`` and its class, default mode first."""
    return {mode: model_class(name, mode) for mode in model_entry(name).modes}


def build_model(
    name: str, mode: str | None, config: dict | None, n_users: int, n_items: int, rating_values: tuple[float, ...]
) -> Recommender:
    """A fresh model ``name`` in ``mode`` (None: the default) from a config dict; the class's defaults fill
    the missing fields. For training or loading."""
    mode = resolve_mode(name, mode)
    cls = model_class(name, mode)
    try:
        cfg = cls.config_class.from_dict(dict(config or {}))
    except (TypeError, ValueError) as exc:
        raise MovierecError(f"Invalid {name} settings: {exc}.") from None
    implicit = len(rating_values) < 2  # an import without stars: every rating is 1
    try:
        model = cls(cfg, n_users, n_items, rating_values)
    except MovierecError:
        if not implicit:
            raise
        model = None  # a like model finds no threshold on a one-value scale
    if model is None or (implicit and model.kind != "rank"):  # None: only ever on an implicit dataset
        # Nothing to predict or to like more or less when every rating is the same.
        raise MovierecError(
            f"{name} --mode {mode} learns from stars, and this dataset has none (every rating is 1); "
            "train `als --mode implicit` on it instead."
        )
    return model


def scaled_defaults(
    name: str, mode: str | None, config: dict | None, n_users: int, n_items: int, n_ratings: int
) -> dict:
    """The defaults of model ``name`` in ``mode`` that change for a training set of ``n_ratings`` ratings of
    ``n_users`` x ``n_items`` (:meth:`~movierec.models.base.ModelConfig.for_data`), less the options ``config``
    gives: field -> value."""
    given = config or {}
    changes = model_class(name, mode).config_class.for_data(int(n_users), int(n_items), int(n_ratings))
    return {k: v for k, v in changes.items() if k not in given}


def migrate_settings(name: str, config: dict) -> tuple[str, dict]:
    """The mode and config dict to rebuild a model saved before each mode was its own class.

    Such a checkpoint kept its mode in the config (none for ``mf``), could hold None for "the mode's
    default", and held the fields of every mode. The numbers it stored were the ones it trained with, so
    they are kept; a None is dropped (the class default applies) and so is a field the mode's class does
    not have (another mode's setting, which never took part).
    """
    values = dict(config)
    mode = resolve_mode(name, values.pop("mode", None))
    config_class = model_class(name, mode).config_class
    known = set(config_class.__dataclass_fields__)
    return mode, config_class.migrate({k: v for k, v in values.items() if v is not None and k in known})
