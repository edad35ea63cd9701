"""MovieLens ids to movierec's contiguous indices: the one lookup every command and module uses (no pandas)."""

from __future__ import annotations

import numpy as np

from movierec.errors import NotFound


def lookup_id(ids: np.ndarray, raw_id: int, what: str, dataset: str) -> int:
    """The index of MovieLens id ``raw_id`` in ascending ``ids``; an unknown id is one sentence saying why."""
    pos = int(np.searchsorted(ids, raw_id))
    if pos < len(ids) and int(ids[pos]) == int(raw_id):
        return pos
    if len(ids) and ids[0] <= raw_id <= ids[-1]:
        raise NotFound(f"{what} {raw_id} has no ratings in {dataset}, so movierec does not know it.")
    raise NotFound(
        f"{what} {raw_id} is not in {dataset}: its {what.lower()} ids run from {ids[0]} to {ids[-1]}."
    )


def indices_of(ids: np.ndarray, wanted: np.ndarray, what: str, dataset: str) -> np.ndarray:
    """The indices of MovieLens ids ``wanted`` (N,) in ascending ``ids``, all at once; the first unknown one is
    the sentence :func:`lookup_id` says."""
    wanted = np.asarray(wanted, dtype=np.int64)
    pos = np.searchsorted(ids, wanted)
    found = pos < len(ids)
    found[found] = ids[pos[found]] == wanted[found]
    if not bool(found.all()):
        lookup_id(ids, int(wanted[~found][0]), what, dataset)  # raises, saying why
    return pos.astype(np.int64)
