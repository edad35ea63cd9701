"""What a release says about its movies and its people beyond the ratings, as features a model can learn from.

A movie's features are its genres and its decade; a person's, where the release has them (ml-100k, ml-1m), their
age band, gender and occupation. Which features a release has is read from its files (:class:`Dataset`), never
assumed: ml-latest has no demographics, so its people have no features, and one note says so.

Features come in *fields* (``genre``, ``decade``, ``tag``, ``age``, ``gender``, ``occupation``); a feature is named
``field:value`` (``genre:Comedy``, ``age:25-34``). Each row's features of one field share a weight of 1 (a movie
of three genres has each at 1/3), so every field counts the same whatever the number of values, and a padded
``(rows, K)`` table of feature indices and weights holds them (padding: index ``len(names)``, weight 0).

Data that cannot be meant is left out, each kind with one note: an age outside 1 to 120, a movie listing more
than :data:`MAX_PER_FIELD` genres, and a value that fewer than :data:`MIN_SUPPORT` rows share (a lone
occupation code, a genre no other movie has: nothing learned from it would carry over to anyone else).
What a person types (``--age 300``, an occupation the release does not have) is one sentence instead
(:func:`person_features`).

Imports neither torch nor pandas: serving a factor model reads these names without them.
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from movierec.errors import MovierecError

if TYPE_CHECKING:
    from movierec.data.dataset import Dataset

log = logging.getLogger(__name__)

MIN_SUPPORT = 2
"""A feature value is used only when at least this many movies (or people) have it."""
MAX_PER_FIELD = 20
"""A row listing more values of one field than this (MovieLens movies have at most 10 genres) is not believed:
that field of that row is left out."""
AGE_RANGE = (1, 120)
"""Ages (years) taken as real; ml-1m's age groups are coded by their lower bound, 1 meaning under 18."""
AGE_BANDS = ((1, "under 18"), (18, "18-24"), (25, "25-34"), (35, "35-44"), (45, "45-49"), (50, "50-55"),
             (56, "56+"))
"""Lower bound of each age band and its name: ml-1m's own groups, so its codes and ml-100k's ages agree."""
PERSON_FIELDS = ("age", "gender", "occupation")


@dataclass(frozen=True, eq=False)
class SideFeatures:
    """The features of every movie (or every person) of a release, by index."""

    names: tuple[str, ...]
    """Every feature used, ``field:value``, in a fixed order (by field, then value)."""
    index: np.ndarray
    """(rows, K) int64: each row's feature indices into :attr:`names`; padding is ``len(names)``."""
    weight: np.ndarray
    """(rows, K) float32: each feature's weight (a field's weights sum to 1 in a row); padding 0."""

    @property
    def fields(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(n.partition(":")[0] for n in self.names))

    @classmethod
    def none(cls, rows: int) -> SideFeatures:
        return cls((), np.zeros((rows, 0), np.int64), np.zeros((rows, 0), np.float32))


def movie_features(data: Dataset, tags: bool | None = False, genres: bool = True) -> SideFeatures:
    """Genres and decade of each of ``data``'s movies (by movie index) unless not ``genres``, and their tags
    (``tag:value``, :mod:`movierec.data.tags`) when ``tags`` is True (a note where the release has none) or None
    (where it has them)."""
    rows = _genre_rows(data) if genres else [[] for _ in range(data.n_items)]
    if tags is not False:
        from movierec.data.tags import movie_tags

        for row, given in zip(rows, movie_tags(data, asked=bool(tags)) or []):
            row += [("tag", t) for t in given]
    return _table(rows, f"{data.name}'s movies")


def _genre_rows(data: Dataset) -> list[list[tuple[str, str]]]:
    movies = data.movies.reindex(data.item_ids)
    genres = [list(g) if isinstance(g, (list, tuple, np.ndarray)) else [] for g in movies["genres"]]
    too_many = sum(len(g) > MAX_PER_FIELD for g in genres)
    if too_many:
        log.warning("%s: %d movie(s) list more than %d genres; their genres are not used", data.name, too_many,
                    MAX_PER_FIELD)
    decades = [None if _missing(y) else f"{int(y) // 10 * 10}s" for y in movies["year"]]
    rows = [[("genre", str(g)) for g in dict.fromkeys(gs)] if len(gs) <= MAX_PER_FIELD else [] for gs in genres]
    for row, decade in zip(rows, decades):
        if decade is not None:
            row.append(("decade", decade))
    return rows


def people_features(data: Dataset) -> SideFeatures:
    """Age band, gender and occupation of each of ``data``'s people (by user index), where the release has them;
    else none, with a note."""
    people = data.users
    if people is None:
        log.warning("%s has no ages, genders or occupations of its people; only the movies' features are used",
                    data.name)
        return SideFeatures.none(data.n_users)
    people = people.reindex(data.user_ids)
    ages = people["age"].to_numpy()
    bad_age = 0
    rows: list[list[tuple[str, str]]] = []
    for age, gender, occupation in zip(ages, people["gender"], people["occupation"]):
        row = []
        band = None if _missing(age) else age_band(int(age))
        bad_age += band is None and not _missing(age)
        if band is not None:
            row.append(("age", band))
        for field, value in (("gender", gender), ("occupation", occupation)):
            text = "" if _missing(value) else str(value).strip()
            if text:
                row.append((field, text))
        rows.append(row)
    if bad_age:
        log.warning("%s: %d person(s) have an age outside %d to %d years; their age is not used", data.name,
                    bad_age, *AGE_RANGE)
    return _table(rows, f"{data.name}'s people")


def age_band(age: int) -> str | None:
    """The name of the band of ``age`` years, None outside :data:`AGE_RANGE`."""
    if not AGE_RANGE[0] <= age <= AGE_RANGE[1]:
        return None
    return [name for low, name in AGE_BANDS if age >= low][-1]


def person_features(
    names: Sequence[str], *, age: Any = None, gender: str | None = None, occupation: str | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """The feature indices (k,) and weights (k,) of a person described by what they typed, among a model's
    ``names`` (:attr:`SideFeatures.names`). Anything not given is not used; a value the model does not know is one
    sentence naming the ones it does."""
    known = {n.partition(":")[0] for n in names}
    given = {"age": age, "gender": gender, "occupation": occupation}
    asked = [f for f in PERSON_FIELDS if given[f] is not None and str(given[f]).strip() != ""]
    missing = [f for f in asked if f not in known]
    if missing:
        raise MovierecError(f"This model knows nobody's {' or '.join(missing)} (its release does not have them); "
                            f"leave out --{' and --'.join(missing)}.")
    chosen = []
    for field in asked:
        value = given[field]
        values = [n.partition(":")[2] for n in names if n.startswith(field + ":")]
        if field == "age":
            years = _whole(value)
            if years is None or age_band(years) is None:
                raise MovierecError(f"An age is a whole number of years from {AGE_RANGE[0]} to {AGE_RANGE[1]}, "
                                    f"not {value!r}.")
            text = age_band(years)
            if text not in values:
                raise MovierecError(f"This model has nobody aged {text}; it knows the ages "
                                    f"{', '.join(sorted(values, key=band_order))}.")
        else:
            text = _match(str(value), values, field)
        chosen.append(names.index(f"{field}:{text}"))
    return np.asarray(chosen, dtype=np.int64), np.ones(len(chosen), dtype=np.float32)


def _match(value: str, values: list[str], field: str) -> str:
    wanted = value.strip().lower()
    exact = [v for v in values if v.lower() == wanted]
    if exact:
        return exact[0]
    # "female" for F, "student" for "college/grad student" when that is the only one it can mean.
    partial = [v for v in values if (len(v) == 1 and wanted.startswith(v.lower())) or wanted in v.lower()]
    if len(partial) == 1:
        return partial[0]
    shown = ", ".join(sorted(values, key=str.lower))
    if len(shown) > 400:
        shown = shown[:397].rsplit(", ", 1)[0] + ", ..."
    raise MovierecError(f"Unknown {field} {value.strip()[:80]!r}; this model knows: {shown}.")


def band_order(name: str) -> int:
    """Where the age band ``name`` falls among :data:`AGE_BANDS` (its lower bound)."""
    return next(low for low, n in AGE_BANDS if n == name)


def _whole(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return int(number) if math.isfinite(number) and number == int(number) else None


def _missing(value: Any) -> bool:
    if value is None:
        return True
    try:
        return bool(value != value) or str(value) == "<NA>"
    except (TypeError, ValueError):  # pandas' NA refuses to be a truth value
        return True


def _table(rows: Iterable[list[tuple[str, str]]], what: str) -> SideFeatures:
    """Rows of ``(field, value)`` pairs as a :class:`SideFeatures`, values fewer than :data:`MIN_SUPPORT` rows
    share left out (with a note)."""
    rows = list(rows)
    support = Counter(pair for row in rows for pair in set(row))
    rare = sorted({pair for pair, n in support.items() if n < MIN_SUPPORT})
    if rare:
        fields = sorted({f for f, _ in rare})
        log.warning("%s: %d value(s) of %s are shared by fewer than %d and are not used", what, len(rare),
                    ", ".join(fields), MIN_SUPPORT)
    kept = sorted((pair for pair, n in support.items() if n >= MIN_SUPPORT), key=lambda p: (p[0], p[1]))
    names = tuple(f"{f}:{v}" for f, v in kept)
    number = {pair: k for k, pair in enumerate(kept)}
    width = max((sum(p in number for p in row) for row in rows), default=0)
    index = np.full((len(rows), width), len(names), dtype=np.int64)
    weight = np.zeros((len(rows), width), dtype=np.float32)
    for r, row in enumerate(rows):
        used = [p for p in row if p in number]
        per_field = Counter(f for f, _ in used)
        for k, pair in enumerate(used):
            index[r, k] = number[pair]
            weight[r, k] = 1.0 / per_field[pair[0]]
    return SideFeatures(names, index, weight)
