"""Which datasets there are: the GroupLens releases of :mod:`movierec.data.registry` and the ratings imported on
this machine (:mod:`movierec.data.importing` writes them; an ``import.json`` record beside the parsed cache says
what each one is). Every lookup of a dataset by name goes through :func:`get_dataset_info` here.
"""

from __future__ import annotations

import json
import math
from typing import Any

from movierec import paths
from movierec.checkpoint.meta import MAX_NAME, plain_name
from movierec.data.registry import DATASETS, IMPORTED_LAYOUT, DatasetInfo
from movierec.errors import MovierecError

IMPORT_RECORD = "import.json"
"""The record an import writes in its dataset's folder."""
RECORD_FORMAT = 1
MAX_SCALE_VALUES = 101
"""Most distinct star values a scale may have (0-100 in steps of 1); more is a score, not stars."""


def get_dataset_info(name: str) -> DatasetInfo:
    """The registry entry for ``name``, a release or a dataset imported on this machine; an unknown name lists
    the valid ones."""
    key = name.strip().lower()
    if key in DATASETS:
        return DATASETS[key]
    info = imported_info(key)
    if info is None:
        names = [*DATASETS, *imported_names()]
        raise MovierecError(f"Unknown dataset {name!r}; choose one of: {', '.join(names)}.")
    return info


# -- names --------------------------------------------------------------------------------------------------
def check_name(name: str) -> str:
    """``name`` as an imported dataset is called (lowercase, as release names are): valid like a model name
    and not a release's name."""
    key = name.strip().lower()
    if not plain_name(key):
        raise MovierecError(
            f"Invalid dataset name {name!r}: use letters, digits, '.', '_' and '-' (no path), at most {MAX_NAME}."
        )
    if key in DATASETS:
        raise MovierecError(f"{key} is a MovieLens release; give your ratings another name.")
    return key


def _plausible_name(key: str) -> bool:
    return plain_name(key) and key not in DATASETS


def read_import_record(key: str) -> dict[str, Any] | None:
    """The ``import.json`` of imported dataset ``key`` (lowercase), or None when there is none that reads."""
    if not _plausible_name(key):
        return None
    try:
        record = json.loads((paths.dataset_dir(key) / IMPORT_RECORD).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or record.get("format") != RECORD_FORMAT or record.get("name") != key:
        return None
    scale = record.get("scale")
    if (not isinstance(scale, list) or not 1 <= len(scale) <= MAX_SCALE_VALUES
            or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in scale)
            or any(a >= b for a, b in zip(scale, scale[1:]))):
        return None
    return record


def imported_info(key: str) -> DatasetInfo | None:
    """The registry entry of imported dataset ``key`` (lowercase), or None when no such import is on disk."""
    record = read_import_record(key)
    if record is None:
        return None
    description = str(record.get("description", "imported ratings"))
    # folder "parsed": an imported dataset has nothing extracted, and its parsed cache is all there is.
    return DatasetInfo(key, "parsed", IMPORTED_LAYOUT, description, scale=tuple(float(v) for v in record["scale"]))


def imported_names() -> list[str]:
    """Every dataset imported on this machine, by name."""
    try:
        folders = sorted(p.name for p in paths.datasets_dir().iterdir() if not p.name.startswith("."))
    except OSError:
        return []
    return [name for name in folders if read_import_record(name) is not None]
