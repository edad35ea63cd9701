"""The parsed form of a dataset, whatever it came from: :class:`Dataset`, its star scale and its fingerprint.

Every release, whatever its layout (:mod:`movierec.data.movielens`), and every import of a user's own ratings
(:mod:`movierec.data.importing`) becomes a :class:`Dataset`: the ratings in movierec's index space (users and
movies that have ratings, sorted by id, numbered ``0..n-1``), the id of each index, a movies table (title, year,
genres) and, where the release has one, a users table.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from movierec.data.catalog import get_dataset_info
from movierec.data.ids import lookup_id
from movierec.errors import MovierecError

if TYPE_CHECKING:
    import pandas as pd

    # Imported where ratings are built: it brings in torch, which `movierec datasets` must not wait for.
    from movierec.data.ratings import Ratings

INTEGER_STARS: tuple[float, ...] = (1.0, 2.0, 3.0, 4.0, 5.0)
HALF_STARS: tuple[float, ...] = tuple(float(x) / 2 for x in range(1, 11))
# Only these two releases predate half stars; every later one rates 0.5..5.0.
_INTEGER_STAR_RELEASES = frozenset({"ml-100k", "ml-1m"})


@dataclass(frozen=True)
class DatasetSummary:
    """What ``movierec datasets`` shows for a parsed release, read from the cache's small JSON."""

    name: str
    users: int
    items: int
    ratings: int
    path: Path
    """The release's folder, ``paths.dataset_dir(name)``."""
    size_bytes: int
    """Total bytes on disk under ``path``: archive, extracted files and parsed cache."""
    duplicates_dropped: int = 0
    """Ratings dropped because the same user rated the same movie again later (the latest one is kept)."""


# eq=False: the fields are arrays and DataFrames, whose ``==`` is elementwise, not a truth value.
@dataclass(frozen=True, eq=False)
class Dataset:
    """One parsed MovieLens release."""

    name: str
    ratings: Ratings
    user_ids: np.ndarray  # (n_users,) int64 MovieLens user id of each user index, ascending
    item_ids: np.ndarray  # (n_items,) int64 MovieLens movie id of each movie index, ascending
    movies: pd.DataFrame
    """Index ``movie_id`` (int64); columns ``title`` (str), ``year`` (Int64, NA when the title has none),
    ``genres`` (list of str). Covers every rated movie, and unrated ones the release lists."""
    users: pd.DataFrame | None
    """Index ``user_id``; columns ``gender``, ``age``, ``occupation``, ``zip`` (ml-100k, ml-1m), else None.
    ml-1m's ``age`` is the lower bound of an age group (1 means under 18), as in its README."""
    fingerprint: str
    """sha256 hex of the parsed arrays: the same data gives the same fingerprint on every run."""
    rating_values: tuple[float, ...]
    """The star values of the release's scale, ascending."""
    path: Path
    """The release's folder, ``paths.dataset_dir(name)``."""
    duplicates_dropped: int = 0
    """Ratings the release repeats for the same user and movie, dropped while parsing (the latest is kept)."""
    user_names: tuple[str, ...] | None = None
    """An imported dataset's own user ids when they are strings, by user index (``user_ids`` are then 1..n in
    the strings' order); None when the ids are numbers."""
    item_names: tuple[str, ...] | None = None
    """The same for movie ids."""

    @property
    def n_users(self) -> int:
        return self.ratings.n_users

    @property
    def n_items(self) -> int:
        return self.ratings.n_items

    def user_index(self, user_id: int) -> int:
        """The index of MovieLens user ``user_id``."""
        return lookup_id(self.user_ids, user_id, "User", self.name)

    def item_index(self, movie_id: int) -> int:
        """The index of MovieLens movie ``movie_id``."""
        return lookup_id(self.item_ids, movie_id, "Movie", self.name)

    def title(self, item_index: int) -> str:
        """The title of the movie at ``item_index``."""
        if not 0 <= int(item_index) < self.n_items:
            raise MovierecError(
                f"Movie index {item_index} is out of range: "
                f"{self.name} has movie indices 0 to {self.n_items - 1}."
            )
        return str(self.movies.at[int(self.item_ids[int(item_index)]), "title"])


def rating_scale(name: str) -> tuple[float, ...]:
    """The star values a release (or an imported dataset) uses."""
    info = get_dataset_info(name)
    if info.scale is not None:
        return info.scale
    return INTEGER_STARS if get_dataset_info(name).name in _INTEGER_STAR_RELEASES else HALF_STARS


def fingerprint_of(ratings: Ratings, user_ids: np.ndarray, item_ids: np.ndarray) -> str:
    """sha256 hex of the rating arrays and id maps, in a fixed dtype and byte order."""
    h = hashlib.sha256(f"movierec-ratings-v1:{ratings.n_users}:{ratings.n_items}:{len(ratings)}".encode())
    for arr, dtype in (
        (ratings.users, "<i4"),
        (ratings.items, "<i4"),
        (ratings.ratings, "<f4"),
        (ratings.timestamps, "<i8"),
        (user_ids, "<i8"),
        (item_ids, "<i8"),
    ):
        h.update(np.ascontiguousarray(arr, dtype=dtype).data.cast("B"))
    return h.hexdigest()
