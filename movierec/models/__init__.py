"""The registry of model names. Importing this module does not import torch; a model's module is
imported only when that model is asked for."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from movierec.errors import MovierecError

if TYPE_CHECKING:
    from movierec.models.base import Recommender

MODELS: dict[str, tuple[str, str, str]] = {
    # name: (module, class, one-line summary shown by `movierec train --help`)
    "rbm": ("movierec.models.rbm", "RBM",
            "Restricted Boltzmann Machine (contrastive divergence): like/dislike or star ratings."),
    "autoencoder": ("movierec.models.autoencoder", "AutoEncoder",
                    "Stacked autoencoder for rating prediction, user- or item-based (I-AutoRec)."),
    "mf": ("movierec.models.mf", "MatrixFactorization",
           "Matrix factorization with biases, trained by mini-batch gradient descent."),
    "als": ("movierec.models.als", "ALS",
            "Latent factors by alternating least squares: star ratings with biases, or top-N (--mode implicit)."),
}


def model_class(name: str) -> type[Recommender]:
    """The class of model ``name``; an unknown name lists the valid ones."""
    key = name.strip().lower()
    if key not in MODELS:
        raise MovierecError(f"Unknown model {name!r}; choose one of: {', '.join(MODELS)}.")
    module, cls, _ = MODELS[key]
    return getattr(importlib.import_module(module), cls)


def build_model(
    name: str, config: dict | None, n_users: int, n_items: int, rating_values: tuple[float, ...]
) -> Recommender:
    """A fresh model ``name`` from a config dict (defaults for missing fields), for training or loading."""
    cls = model_class(name)
    try:
        cfg = cls.config_class.from_dict(dict(config or {}))
    except (TypeError, ValueError) as exc:
        raise MovierecError(f"Invalid {name} settings: {exc}.") from None
    return cls(cfg, n_users, n_items, rating_values)
