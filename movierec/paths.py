"""Where movierec keeps its data: one home folder, chosen once.

Order of precedence: the ``--home`` option, the ``MOVIEREC_HOME`` environment variable, then the
platform's user data folder (platformdirs).
"""

from __future__ import annotations

import os
from pathlib import Path

ENV_HOME = "MOVIEREC_HOME"

_home_override: Path | None = None


def set_home(path: str | Path | None) -> None:
    """Use ``path`` as the home folder for the rest of this process (the CLI's ``--home``)."""
    global _home_override
    _home_override = Path(path).expanduser().resolve() if path else None


def home() -> Path:
    """The folder that holds datasets and models (not created here)."""
    if _home_override is not None:
        return _home_override
    env = os.environ.get(ENV_HOME)
    if env:
        return Path(env).expanduser().resolve()
    from platformdirs import user_data_path

    return user_data_path("movierec", appauthor=False)


def datasets_dir() -> Path:
    return home() / "datasets"


def dataset_dir(name: str) -> Path:
    return datasets_dir() / name


def models_dir() -> Path:
    return home() / "models"


def studies_dir() -> Path:
    """Where `movierec tune` keeps its studies, a SQLite file each."""
    return home() / "studies"
