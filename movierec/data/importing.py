"""Your own ratings as a dataset: a CSV, TSV or Parquet file, or a pandas DataFrame, parsed into the same
:class:`~movierec.data.dataset.Dataset` and the same parsed cache a MovieLens release has.

:func:`import_ratings` (`movierec import NAME FILE`) writes ``paths.dataset_dir(NAME)``::

    parsed/       the parsed cache, exactly as a release's (:func:`movierec.data.cache.write_files`)
    import.json   where the ratings came from, which columns, the star scale: what makes NAME a dataset

into a hidden temporary folder renamed into place at the end, so a failed or interrupted import leaves
nothing behind (and a failed ``--force`` leaves the old dataset as it was). :func:`read_dataset` does the
parsing alone, in memory (``mr.load_dataset(df)``).

Columns are found by name (case-insensitive) unless given: user ``user``/``userId``/``user_id``, movie
``item``/``movieId``/``movie_id``/``item_id``, stars ``rating``/``stars``, time ``timestamp``/``time``
(seconds since 1970, or dates). Without a rating column the data is implicit: every rating is 1 on the
one-value scale ``(1,)``, and only models that rank (implicit ALS) train on it. Ids that are not all whole
numbers are strings: they are numbered 1..n in the strings' sorted order (the ids saved everywhere a
MovieLens id is) and the strings are kept in the cache, so ``--user alice`` finds alice; a string movie id
is the movie's title unless ``--movies`` names it.

The file itself is read by :mod:`movierec.data.userfiles`: pandas' C parser and explicit dtypes, as the
releases are; only when that fails is the file read again as text, to say which line is wrong.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import shutil
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from movierec import paths
from movierec.data.catalog import IMPORT_RECORD, MAX_SCALE_VALUES, RECORD_FORMAT, check_name, read_import_record
from movierec.data.userfiles import (
    RATING_COLUMNS,
    Columns,
    Progress,
    Where,
    ids_of,
    movie_table,
    numbers_of,
    pick_columns,
    read_source,
    seconds_of,
)
from movierec.errors import MovierecError

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

    from movierec.data.dataset import Dataset

log = logging.getLogger(__name__)

IMPLICIT_SCALE: tuple[float, ...] = (1.0,)
"""The scale of data without stars: every rating is 1."""


@dataclass(frozen=True)
class Imported:
    """What :func:`read_dataset` made of the ratings, and what the import says about them."""

    dataset: Dataset
    columns: dict[str, str | None]
    """user, item, rating, time -> the column read (None: no such column)."""
    scale_note: str
    """How the scale was chosen, e.g. "stars 0.5-5 in steps of 0.5, inferred from the data"."""
    source: str
    sep: str | None = None
    """The field separator of a text file (None for Parquet and DataFrames)."""

    @property
    def implicit(self) -> bool:
        return self.dataset.rating_values == IMPLICIT_SCALE and self.columns["rating"] is None


@dataclass(frozen=True)
class ImportSummary:
    """What `movierec import` left on disk (its output, and its ``--json``)."""

    name: str
    users: int
    items: int
    ratings: int
    scale: tuple[float, ...]
    scale_note: str
    implicit: bool
    string_ids: tuple[str, ...]
    """Which ids were strings: ``("user",)``, ``("user", "movie")``..."""
    duplicates_dropped: int
    columns: dict[str, str | None]
    source: str
    path: Path
    size_bytes: int

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name, "users": self.users, "items": self.items, "ratings": self.ratings,
            "scale": list(self.scale), "scale_note": self.scale_note, "implicit": self.implicit,
            "string_ids": list(self.string_ids), "duplicates_dropped": self.duplicates_dropped,
            "columns": self.columns, "source": self.source, "path": str(self.path), "size_bytes": self.size_bytes,
        }


# -- the star scale -----------------------------------------------------------------------------------------
def parse_scale(text: str | Sequence[float]) -> tuple[float, ...]:
    """``"MIN,MAX"`` or ``"MIN,MAX,STEP"`` (or a sequence of those numbers) as the scale's values. Without a
    step: 1 when MIN and MAX are whole numbers, else 0.5 when they are halves."""
    parts = [p.strip() for p in text.split(",")] if isinstance(text, str) else list(text)
    try:
        numbers = [float(p) for p in parts]
    except (TypeError, ValueError):
        numbers = []
    if len(numbers) not in (2, 3) or not all(math.isfinite(v) for v in numbers):
        raise MovierecError(f"--scale takes MIN,MAX or MIN,MAX,STEP (e.g. 1,5 or 0.5,5), not {text!r}.")
    low, high = numbers[:2]
    if len(numbers) == 3:
        step = numbers[2]
    elif low.is_integer() and high.is_integer():
        step = 1.0
    elif (2 * low).is_integer() and (2 * high).is_integer():
        step = 0.5
    else:
        raise MovierecError(f"Give --scale {text} its step too: MIN,MAX,STEP.")
    if not low < high or step <= 0:
        raise MovierecError(f"--scale {text!r} needs MIN below MAX and a positive step.")
    count = (high - low) / step
    if abs(count - round(count)) > 1e-6:
        raise MovierecError(f"--scale {text!r}: steps of {step:g} do not lead from {low:g} to {high:g}.")
    if round(count) + 1 > MAX_SCALE_VALUES:
        raise MovierecError(f"--scale {text!r} has {round(count) + 1} values; a scale has at most {MAX_SCALE_VALUES}.")
    return tuple(round(low + k * step, 9) for k in range(round(count) + 1))


def describe_scale(scale: Sequence[float]) -> str:
    """``"stars 0.5-5 in steps of 0.5"``, or ``"implicit: every rating is 1"`` for the one-value scale."""
    if tuple(scale) == IMPLICIT_SCALE:
        return "implicit: every rating is 1"
    if len(scale) == 1:
        return f"stars {scale[0]:g} only"
    return f"stars {scale[0]:g}-{scale[-1]:g} in steps of {scale[1] - scale[0]:g}"


def _infer_scale(stars: np.ndarray, where: Where) -> tuple[float, ...]:
    """The evenly spaced scale from the lowest to the highest stars in the data: in steps of 1 for whole numbers,
    0.5 for halves, else the finest step between two of the values."""
    import numpy as np
    import pandas as pd

    values = np.sort(pd.unique(stars).astype(np.float64))
    if len(values) == 1:
        return (float(values[0]),)
    if len(values) > MAX_SCALE_VALUES:
        where.fail(None, f"has {len(values):,} different ratings, more than a star scale holds; give --scale")
    # Whole stars in steps of 1 and half stars in steps of 0.5 even where the data skips some (only 1 and 5).
    if np.all(values == np.round(values)):
        step = 1.0
    elif np.all(2 * values == np.round(2 * values)):
        step = 0.5
    else:
        step = float(np.min(np.diff(values)))
    k = (values - values[0]) / step
    if not np.allclose(k, np.round(k), atol=1e-4) or round(k[-1]) + 1 > MAX_SCALE_VALUES:
        shown = ", ".join(f"{v:g}" for v in values[:6])
        where.fail(None, f"has ratings ({shown}...) that are not evenly spaced stars; give --scale MIN,MAX,STEP")
    return tuple(round(float(values[0]) + i * step, 9) for i in range(round(k[-1]) + 1))


def _snap(stars: np.ndarray, scale: tuple[float, ...], where: Where) -> np.ndarray:
    """``stars`` as float32 values of ``scale`` exactly; a rating off the scale names its row."""
    import numpy as np

    if len(scale) == 1:
        off = np.abs(stars - scale[0]) > 1e-6
        snapped = np.full(len(stars), scale[0], dtype=np.float32)
    else:
        step = scale[1] - scale[0]
        k = (stars - scale[0]) / step  # (N,) float64
        nearest = np.round(k)
        off = (np.abs(k - nearest) > 1e-4) | (nearest < 0) | (nearest > len(scale) - 1)
        snapped = np.asarray(scale, dtype=np.float32)[np.clip(nearest, 0, len(scale) - 1).astype(np.int64)]
    if off.any():
        row = int(np.argmax(off))
        where.fail(row, f"has rating {stars[row]:g}, which is not on the scale ({describe_scale(scale)})")
    return snapped


# -- a dataset of the ratings -------------------------------------------------------------------------------
def read_dataset(
    source: str | Path | pd.DataFrame, *, name: str = "dataframe", sep: str | None = None,
    columns: Columns | None = None, scale: str | Sequence[float] | None = None,
    movies: str | Path | pd.DataFrame | None = None, progress: Progress | None = None,
) -> Imported:
    """Parse a ratings file (CSV, TSV, Parquet) or DataFrame into a :class:`Dataset` called ``name``, in memory.

    ``sep``: a text file's field separator (default: found from its first lines). ``scale``: the star
    values, :func:`parse_scale`'s ``"MIN,MAX[,STEP]"`` (default: inferred from the data). ``movies``: a
    file or DataFrame of the movies' titles and genres (``movieId,title,genres`` with ``|``-separated
    genres, as MovieLens' movies.csv). Bad input is one :class:`MovierecError` naming the file and line.
    """
    import numpy as np

    from movierec.data import movielens
    from movierec.data.registry import IMPORTED_LAYOUT, DatasetInfo

    columns = columns or Columns()
    chosen_scale = None if scale is None else parse_scale(scale)
    frame, where, label, used_sep = read_source(source, sep, columns, progress)
    picked = pick_columns(list(frame.columns), columns, where, used_sep)
    if len(frame) == 0:
        where.fail(None, "has a header but no ratings")
    users, user_names = ids_of(frame[picked["user"]], "user id", where)
    items, item_names = ids_of(frame[picked["item"]], "movie id", where)
    if picked["rating"] is None:
        if chosen_scale is not None and chosen_scale != IMPLICIT_SCALE:
            where.fail(None, f"has no rating column (looked for {', '.join(RATING_COLUMNS)}), so it has no stars "
                             "for --scale; name the column with --rating-col")
        stars = np.ones(len(frame), dtype=np.float64)
        final_scale, note = IMPLICIT_SCALE, f"{describe_scale(IMPLICIT_SCALE)} (no rating column)"
    else:
        stars = numbers_of(frame[picked["rating"]], "rating", where)
        final_scale = chosen_scale or _infer_scale(stars, where)
        note = f"{describe_scale(final_scale)}, {'as given' if chosen_scale else 'inferred from the data'}"
    times = (np.zeros(len(frame), dtype=np.int64) if picked["time"] is None
             else seconds_of(frame[picked["time"]], where))
    stars32 = _snap(stars, final_scale, where)
    del frame
    info = DatasetInfo(name, "parsed", IMPORTED_LAYOUT, f"ratings imported from {label}", scale=final_scale)
    titles = movie_table(movies, items, item_names) if movies is not None else None
    movie_frame = _complete_movies(items, item_names, titles)
    parsed = movielens._Parsed(users, items, stars32, times, movie_frame, None)
    dataset = movielens._build_dataset(info, parsed, final_scale)
    dataset = dataclasses.replace(
        dataset,
        user_names=None if user_names is None else tuple(user_names),
        item_names=None if item_names is None else tuple(item_names),
    )
    return Imported(dataset, picked, note, label, used_sep)


def pairs_of(dataset: Dataset, frame: pd.DataFrame, what: str) -> tuple[np.ndarray, np.ndarray]:
    """The (user index, movie index) pairs of ``frame``'s rows in ``dataset`` (a split's ``what`` side): its user
    and movie columns found by their usual names, as an import finds them; an id the dataset does not have is
    one sentence."""
    import numpy as np
    import pandas as pd

    from movierec.data.ids import indices_of

    if not isinstance(frame, pd.DataFrame):
        raise MovierecError(f"The {what} ratings are a pandas DataFrame, not a {type(frame).__name__}.")
    where = Where(f"The {what} DataFrame", row_offset=0)
    frame = frame.reset_index(drop=True)
    picked = pick_columns([str(c) for c in frame.columns], Columns(), where, None)
    found = []
    for key, ids, names, label in (("user", dataset.user_ids, dataset.user_names, "User"),
                                   ("item", dataset.item_ids, dataset.item_names, "Movie")):
        column = frame[picked[key]]
        if names is not None:  # string ids: the dataset numbered them 1..n in sorted order
            position = {name: i for i, name in enumerate(names)}
            text = column.astype(str).str.strip()
            index = text.map(position)
            if bool(index.isna().any()):
                row = int(np.argmax(index.isna().to_numpy()))
                where.fail(row, f"has {label.lower()} {text.iloc[row]!r}, which is not in {dataset.name}")
            found.append(index.to_numpy(dtype=np.int64))
        else:
            values, strings = ids_of(column, f"{label.lower()} id", where)
            if strings is not None:
                where.fail(None, f"has {label.lower()} ids that are not numbers, such as {strings[0]!r}; "
                                 f"{dataset.name}'s are")
            found.append(indices_of(ids, values, label, dataset.name))
    return found[0], found[1]


# -- movies -------------------------------------------------------------------------------------------------
def _complete_movies(items: np.ndarray, item_names: list[str] | None, titles: pd.DataFrame | None) -> pd.DataFrame:
    """Every rated movie with a title: the movies table's, else its string id, else "Movie 123"."""
    import numpy as np
    import pandas as pd

    from movierec.data import movielens

    if item_names is not None:
        ids = np.arange(1, len(item_names) + 1, dtype=np.int64)
    else:
        ids = np.unique(items)
    known = titles.index.to_numpy() if titles is not None else np.zeros(0, dtype=np.int64)
    missing = np.setdiff1d(ids, known)
    if titles is not None and len(missing):
        log.warning("the movies table does not list %d of the rated movies; they are titled by their id", len(missing))
    names = [item_names[i - 1] for i in missing] if item_names is not None else [f"Movie {m}" for m in missing]
    extra = movielens._movies_frame(missing, pd.Series(names, dtype="str"), [[] for _ in missing])
    if titles is None:
        return extra
    return pd.concat([titles, extra]).sort_index()


# -- importing ----------------------------------------------------------------------------------------------
def import_ratings(
    name: str, source: str | Path | pd.DataFrame, *, force: bool = False, sep: str | None = None,
    columns: Columns | None = None, scale: str | Sequence[float] | None = None,
    movies: str | Path | pd.DataFrame | None = None, progress: Progress | None = None,
    on_step: Callable[[str], None] | None = None,
) -> ImportSummary:
    """Parse ``source`` (:func:`read_dataset`) and save it as dataset ``name``: `movierec import NAME FILE`.

    The parsed cache is written to a temporary folder that replaces ``paths.dataset_dir(name)`` only once
    it is whole; an existing import of ``name`` is replaced only with ``force``.
    """
    from movierec.data import cache, download

    key = check_name(name)
    target = paths.dataset_dir(key)
    say = on_step or (lambda _text: None)

    def existing() -> None:
        if target.exists() and read_import_record(key) is None:
            raise MovierecError(f"{target} exists but is not an imported dataset; remove it or pick another name.")
        if target.exists() and not force:
            raise MovierecError(f"Dataset {key} is already imported; add --force to replace it.")

    existing()  # before the parse, which may take a while
    say(f"Reading {Path(source).name if not _is_frame(source) else 'the DataFrame'}")
    imported = read_dataset(source, name=key, sep=sep, columns=columns, scale=scale, movies=movies,
                            progress=progress)
    data = imported.dataset
    origin = str(Path(source).resolve()) if not _is_frame(source) else "a DataFrame"
    say("Saving the parsed ratings")
    with download._locked(key, wait=True):
        existing()
        with cache.staged(paths.datasets_dir(), f".import-{key}-") as tmp:
            cache.write_files(data, tmp / cache.PARSED_FOLDER)
            record = {
                "format": RECORD_FORMAT, "name": key, "description": f"ratings imported from {imported.source}",
                "source": origin,
                "date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "columns": imported.columns,
                "sep": imported.sep, "scale": list(data.rating_values), "scale_note": imported.scale_note,
                "implicit": imported.implicit,
            }
            cache.write_json(tmp / IMPORT_RECORD, record)
            _swap(tmp, target)
    strings = tuple(what for what, names in (("user", data.user_names), ("movie", data.item_names)) if names)
    return ImportSummary(
        key, data.n_users, data.n_items, len(data.ratings), data.rating_values, imported.scale_note,
        imported.implicit, strings, data.duplicates_dropped, imported.columns, origin, target,
        download.disk_usage(target),
    )


def _is_frame(source: object) -> bool:
    return not isinstance(source, (str, os.PathLike))


def _swap(tmp: Path, target: Path) -> None:
    """``tmp`` becomes ``target``; an older ``target`` goes to the trash first, which the next fetch or removal
    empties should this process die before it does."""
    from movierec.data.download import _TRASH_PREFIX

    old = None
    if target.exists():
        old = target.with_name(f"{_TRASH_PREFIX}{target.name}-{uuid.uuid4().hex}")
        os.rename(target, old)
    try:
        os.rename(tmp, target)
    except OSError:
        if old is not None:
            os.rename(old, target)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
