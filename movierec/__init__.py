"""movierec: movie recommendations on the MovieLens data sets.

Importing the package is cheap: torch and pandas are imported only by the modules that need them.
"""

import os

# OpenMP's busy-waiting threads make torch 10-100x slower on a machine whose cores are busy with other work
# (an ALS fit: 1.2 s against 214 s on 2 busy cores); passive waiting costs nothing measurable on an idle
# machine. OpenMP reads it once, when torch loads, so it is set here, before any movierec module can import
# torch, for the command line and library users alike. A user's own setting wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from movierec.errors import MovierecError, NotFound
from movierec.version import __version__

# The Python API (movierec/api.py), loaded on first use so that `import movierec` stays instant.
_API = ("Model", "MovieLens", "cross_validate", "datasets", "evaluate_models", "fetch", "fit", "import_ratings",
        "load", "load_dataset", "model_config", "remove", "saved_models", "set_default", "train", "tune")

__all__ = ["MovierecError", "NotFound", "__version__", *_API]


def __getattr__(name: str) -> object:
    if name in _API:
        from movierec import api

        return getattr(api, name)
    raise AttributeError(f"module 'movierec' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_API])
