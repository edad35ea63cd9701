"""Your own ratings as a dataset: a CSV, TSV or Parquet file, or a pandas DataFrame, parsed into the same
:class:`~movierec.data.movielens.Dataset` and the same parsed cache a MovieLens release has.

:func:`import_ratings` (`movierec import NAME FILE`) writes ``paths.dataset_dir(NAME)``::

    parsed/       the parsed cache, exactly as a release's (:func:`movierec.data.movielens._write_cache`)
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

A ratings file is read with pandas' C parser and explicit dtypes, as the releases are; only when that fails
is the file read again as text, to say which line is wrong.
"""

from __future__ import annotations

import csv
import dataclasses
import logging
import math
import os
import re
import shutil
import tempfile
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from movierec import paths
from movierec.data.catalog import IMPORT_RECORD, MAX_SCALE_VALUES, RECORD_FORMAT, check_name, read_import_record
from movierec.errors import MovierecError

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

    from movierec.data.movielens import Dataset

log = logging.getLogger(__name__)

IMPLICIT_SCALE: tuple[float, ...] = (1.0,)
"""The scale of data without stars: every rating is 1."""
MAX_ID_CHARS = 256
"""Longest string id accepted: a longer one is a damaged file or a wrong column, not an id."""
MAX_TITLE_CHARS = 1000
MAX_HEADER_BYTES = 1 << 20
"""A first line longer than this is not a header."""

USER_COLUMNS = ("user", "userid", "user_id")
ITEM_COLUMNS = ("item", "movieid", "movie_id", "item_id", "itemid", "movie")
RATING_COLUMNS = ("rating", "stars")
TIME_COLUMNS = ("timestamp", "time")
TITLE_COLUMNS = ("title", "name")
GENRE_COLUMNS = ("genres", "genre")
_SEPARATORS = (",", "\t", ";", "|")
_SEP_NAMES = {",": "','", "\t": "tab", ";": "';'", "|": "'|'", " ": "space"}

Progress = Callable[[int, int], None]
"""Called as ``progress(done, total)`` while a file is read (megabytes)."""


@dataclass(frozen=True)
class Columns:
    """Which columns hold the user, the movie, the stars and the time; None finds it by its usual names."""

    user: str | None = None
    item: str | None = None
    rating: str | None = None
    """None finds ``rating``/``stars``; with neither the data is implicit."""
    time: str | None = None


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


def _infer_scale(stars: np.ndarray, where: _Where) -> tuple[float, ...]:
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


def _snap(stars: np.ndarray, scale: tuple[float, ...], where: _Where) -> np.ndarray:
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


# -- where a row came from, for the error -------------------------------------------------------------------
class _Where:
    """Names a row of the source in an error: a text file's line, a Parquet file's or a DataFrame's row."""

    def __init__(self, label: str, path: Path | None = None, sep: str | None = None, row_offset: int = 1):
        self.label = label
        self._path, self._sep = path, sep
        self._row_offset = row_offset

    def fail(self, row: int | None, reason: str) -> NoReturn:
        """Raise the one sentence: ``LABEL line N reason.`` (or ``LABEL reason.`` for ``row`` None)."""
        raise MovierecError(f"{self.label}{'' if row is None else ' ' + self.place(row)} {reason}.")

    def place(self, row: int) -> str:
        if self._path is None:
            return f"row {row + self._row_offset}"
        return f"line {_line_of_row(self._path, self._sep or ',', row)}"


def _line_of_row(path: Path, sep: str, row: int) -> int:
    """The 1-based line of data row ``row`` (0-based, after the header), as pandas counts rows: blank lines
    skipped, quoted fields may span lines. A slow scan, run only to name a bad row."""
    old = csv.field_size_limit()
    csv.field_size_limit(1 << 30)
    try:
        with open(path, encoding="utf-8-sig", errors="replace", newline="") as f:
            reader = csv.reader(f, delimiter=sep)
            next(reader, None)
            seen = -1
            for fields in reader:
                if fields and any(fields):
                    seen += 1
                    if seen == row:
                        return reader.line_num
    finally:
        csv.field_size_limit(old)
    return row + 2


# -- reading ------------------------------------------------------------------------------------------------
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
    frame, where, label, used_sep = _read_source(source, sep, columns, progress)
    picked = _pick_columns(list(frame.columns), columns, where, used_sep)
    if len(frame) == 0:
        where.fail(None, "has a header but no ratings")
    users, user_names = _ids(frame[picked["user"]], "user id", where)
    items, item_names = _ids(frame[picked["item"]], "movie id", where)
    if picked["rating"] is None:
        if chosen_scale is not None and chosen_scale != IMPLICIT_SCALE:
            where.fail(None, f"has no rating column (looked for {', '.join(RATING_COLUMNS)}), so it has no stars "
                             "for --scale; name the column with --rating-col")
        stars = np.ones(len(frame), dtype=np.float64)
        final_scale, note = IMPLICIT_SCALE, f"{describe_scale(IMPLICIT_SCALE)} (no rating column)"
    else:
        stars = _numbers(frame[picked["rating"]], "rating", where)
        final_scale = chosen_scale or _infer_scale(stars, where)
        note = f"{describe_scale(final_scale)}, {'as given' if chosen_scale else 'inferred from the data'}"
    times = (np.zeros(len(frame), dtype=np.int64) if picked["time"] is None
             else _seconds(frame[picked["time"]], where))
    stars32 = _snap(stars, final_scale, where)
    del frame
    info = DatasetInfo(name, "parsed", IMPORTED_LAYOUT, f"ratings imported from {label}", scale=final_scale)
    titles = _movie_table(movies, items, item_names) if movies is not None else None
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
    where = _Where(f"The {what} DataFrame", row_offset=0)
    frame = frame.reset_index(drop=True)
    picked = _pick_columns([str(c) for c in frame.columns], Columns(), where, None)
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
            values, strings = _ids(column, f"{label.lower()} id", where)
            if strings is not None:
                where.fail(None, f"has {label.lower()} ids that are not numbers, such as {strings[0]!r}; "
                                 f"{dataset.name}'s are")
            found.append(indices_of(ids, values, label, dataset.name))
    return found[0], found[1]


def _read_source(
    source: str | Path | pd.DataFrame, sep: str | None, columns: Columns, progress: Progress | None
) -> tuple[pd.DataFrame, _Where, str, str | None]:
    import pandas as pd

    if isinstance(source, pd.DataFrame):
        frame = source.reset_index(drop=True)
        frame.columns = [str(c) for c in frame.columns]
        return frame, _Where("The DataFrame", row_offset=0), "a DataFrame", None
    if not isinstance(source, (str, os.PathLike)):
        raise MovierecError(f"Ratings come from a file path or a pandas DataFrame, not a {type(source).__name__}.")
    path = Path(source).expanduser()
    if not path.is_file():
        raise MovierecError(f"{path} is not a file.")
    if path.stat().st_size == 0:
        raise MovierecError(f"{path} is empty.")
    if _is_parquet(path):
        return _read_parquet(path), _Where(str(path), row_offset=1), path.name, None
    return (*_read_text(path, sep, columns, progress), path.name)


def _is_parquet(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(4) == b"PAR1"


def _read_parquet(path: Path) -> pd.DataFrame:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise MovierecError(
            f"Reading {path.name} needs pyarrow, which is not installed; pip install 'movierec[parquet]'."
        ) from None
    try:
        return pq.read_table(path).to_pandas()
    except Exception as exc:  # pyarrow raises ArrowInvalid, OSError and others for a damaged file
        raise MovierecError(f"{path} is not a Parquet file movierec can read ({_first_line(exc)}).") from None


def _header(path: Path) -> str:
    with open(path, "rb") as f:
        head = f.read(MAX_HEADER_BYTES)
    end = head.find(b"\n")
    if end < 0 and len(head) == MAX_HEADER_BYTES:
        raise MovierecError(f"{path} line 1 is over {MAX_HEADER_BYTES // (1 << 20)} MB long: it is not a header.")
    return head[: end if end >= 0 else len(head)].decode("utf-8", "replace").lstrip("\ufeff").rstrip("\r")


def _sniff(path: Path, header: str) -> str:
    """The separator that splits the header into the most fields (at least two), as the next line agrees."""
    with open(path, "rb") as f:
        f.readline()
        second = f.readline(MAX_HEADER_BYTES).decode("utf-8", "replace").rstrip("\r\n")
    best, fields = None, 1
    for sep in _SEPARATORS:
        count = len(next(csv.reader([header], delimiter=sep)))
        if count > fields and (not second or len(next(csv.reader([second], delimiter=sep))) == count):
            best, fields = sep, count
    if best is None:
        raise MovierecError(
            f"{path} line 1 is not a header movierec can split (tried , tab ; |): {_shown(header)}; "
            "give its separator with --sep, and a first line naming the columns."
        )
    return best


def _separator(text: str) -> str:
    named = {"tab": "\t", "\\t": "\t", "comma": ",", "semicolon": ";", "space": " ", "pipe": "|"}
    sep = named.get(text.lower(), text) if text.strip() or text == " " else text
    if len(sep) != 1 or sep in "\r\n\"":
        raise MovierecError(f"--sep takes one character (or tab), not {text!r}.")
    return sep


class _Counted:
    """A binary file whose reads report the megabytes read so far: the progress of one pandas parse."""

    def __init__(self, f: Any, total: int, progress: Progress):
        self._f, self._total, self._progress, self._done = f, total, progress, 0

    def read(self, n: int = -1) -> bytes:
        data = self._f.read(n)
        self._done += len(data)
        self._progress(self._done >> 20, max(1, self._total >> 20))
        return data

    def __iter__(self) -> Any:
        return iter(self._f)


def _read_text(
    path: Path, sep: str | None, columns: Columns, progress: Progress | None
) -> tuple[pd.DataFrame, _Where, str]:
    import numpy as np
    import pandas as pd

    header = _header(path)
    if not header.strip():
        raise MovierecError(f"{path} line 1 is blank: movierec needs a first line naming the columns.")
    sep = _separator(sep) if sep is not None else ("\t" if path.suffix.lower() == ".tsv" and "\t" in header
                                                    else _sniff(path, header))
    where = _Where(str(path), path, sep)
    names = next(csv.reader([header], delimiter=sep))
    picked = _pick_columns(names, columns, where, sep)
    if len(set(names)) != len(names):
        where.fail(None, f"names a column twice in its header {_shown(header)}")
    dtypes: dict[str, Any] = {n: str for n in names}
    numeric: dict[str | None, Any] = {picked["rating"]: np.float64}
    for key in ("user", "item", "time"):
        if picked[key] is not None:
            numeric[picked[key]] = np.int64
    dtypes.update({k: v for k, v in numeric.items() if k is not None})

    def parse(types: dict[str, Any]) -> pd.DataFrame:
        with open(path, "rb") as f:
            handle = f if progress is None else _Counted(f, path.stat().st_size, progress)
            return pd.read_csv(handle, sep=sep, dtype=types, engine="c", na_filter=False, skip_blank_lines=True,
                               encoding="utf-8-sig", encoding_errors="replace")

    try:
        return parse(dtypes), where, sep
    except pd.errors.ParserError as exc:
        _tokenizing_error(where, exc, len(names), sep)
    except (ValueError, OverflowError):
        pass  # a value that is not a number (string ids, a bad rating, a short line): read again as text
    try:
        frame = parse(dict.fromkeys(names, str))
    except pd.errors.ParserError as exc:
        _tokenizing_error(where, exc, len(names), sep)
    for key in ("user", "item", "rating", "time"):
        column = picked[key]
        if column is not None:
            empty = (frame[column].str.strip() == "").to_numpy()
            if empty.any():
                row = int(np.argmax(empty))
                short = int(frame.iloc[row].astype(str).eq("").sum())
                reason = (f"has no {column} (it has fewer fields than the header's {len(names)} separated by "
                          f"{_SEP_NAMES.get(sep, repr(sep))})" if short and frame.iloc[row, -1] == ""
                          else f"has an empty {column}")
                where.fail(row, reason)
    return frame, where, sep


def _tokenizing_error(where: _Where, exc: Exception, fields: int, sep: str) -> NoReturn:
    found = re.search(r"Expected (\d+) fields in line (\d+), saw (\d+)", str(exc))
    if found:
        raise MovierecError(
            f"{where.label} line {found.group(2)} has {found.group(3)} fields where the header has {fields} "
            f"(separated by {_SEP_NAMES.get(sep, repr(sep))}); check the separator (--sep) and the quoting."
        ) from None
    raise MovierecError(f"{where.label} could not be read: {_first_line(exc)}.") from None


def _pick_columns(names: list[str], columns: Columns, where: _Where, sep: str | None) -> dict[str, str | None]:
    """user, item, rating, time -> the column that holds it: the one given, else the first usual name."""
    lowered = {n.strip().lower(): n for n in reversed(names)}
    picked: dict[str, str | None] = {}
    for key, given, usual, option in (
        ("user", columns.user, USER_COLUMNS, "--user-col"), ("item", columns.item, ITEM_COLUMNS, "--item-col"),
        ("rating", columns.rating, RATING_COLUMNS, "--rating-col"), ("time", columns.time, TIME_COLUMNS, "--time-col"),
    ):
        if given is not None:
            if given not in names:
                where.fail(None, f"has no column {given!r} ({option}); its columns are {_listed(names)}")
            picked[key] = given
            continue
        picked[key] = next((lowered[u] for u in usual if u in lowered), None)
        if picked[key] is None and key in ("user", "item"):
            if len(names) == 1 and sep is not None:
                where.fail(None, f"has a header of one field, {_listed(names)}, when split at "
                                 f"{_SEP_NAMES.get(sep, repr(sep))}: give its separator with --sep")
            where.fail(None, f"has no {key} column (looked for {', '.join(usual)}; its columns are "
                             f"{_listed(names)}); name it with {option}")
    chosen = [c for c in picked.values() if c is not None]
    if len(set(chosen)) != len(chosen):
        where.fail(None, f"would read one column as two things ({_listed(chosen)}); name each with its own option")
    return picked


def _ids(column: pd.Series, what: str, where: _Where) -> tuple[np.ndarray, list[str] | None]:
    """(int64 ids, None) for whole numbers >= 0; else string ids as (1..n in sorted order, the strings)."""
    import numpy as np
    import pandas as pd

    if pd.api.types.is_bool_dtype(column.dtype):
        where.fail(None, f"has true/false values for the {what}")
    if pd.api.types.is_integer_dtype(column.dtype) or pd.api.types.is_float_dtype(column.dtype):
        values = column.to_numpy(dtype=np.float64 if pd.api.types.is_float_dtype(column.dtype) else np.int64,
                                 na_value=np.nan) if column.hasnans else column.to_numpy()
        if values.dtype.kind == "f":
            bad = ~np.isfinite(values) | (values != np.round(values))
            if bad.any():
                row = int(np.argmax(bad))
                where.fail(row, f"has {what} {values[row]!r}, which is not a whole number")
            values = values.astype(np.int64)
        negative = values < 0
        if negative.any():
            row = int(np.argmax(negative))
            where.fail(row, f"has a negative {what} ({values[row]})")
        return values.astype(np.int64, copy=False), None
    text = column.astype(str).str.strip()
    numbers = pd.to_numeric(text, errors="coerce")
    if not numbers.isna().any() and (numbers >= 0).all() and (numbers == numbers.round()).all() \
            and float(numbers.max()) < 2**62:
        return numbers.to_numpy().astype(np.int64), None
    lengths = text.str.len().to_numpy()
    for bad, reason in ((lengths == 0, f"has an empty {what}"),
                        (lengths > MAX_ID_CHARS, f"has a {what} over {MAX_ID_CHARS} characters long")):
        if bad.any():
            where.fail(int(np.argmax(bad)), reason)
    codes, uniques = pd.factorize(text, sort=True)
    return codes.astype(np.int64) + 1, [str(u) for u in uniques]


def _numbers(column: pd.Series, what: str, where: _Where) -> np.ndarray:
    """float64 stars; a value that is not a finite number names its row."""
    import numpy as np
    import pandas as pd

    if pd.api.types.is_bool_dtype(column.dtype):
        where.fail(None, f"has true/false values for the {what}")
    if pd.api.types.is_numeric_dtype(column.dtype):
        values = column.to_numpy(dtype=np.float64, na_value=np.nan)
        text = None
    else:
        text = column.astype(str).str.strip()
        values = pd.to_numeric(text, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    bad = ~np.isfinite(values)
    if bad.any():
        row = int(np.argmax(bad))
        raw = str(column.iloc[row])
        try:
            float(raw)
            kind = "not a finite number"
        except ValueError:
            kind = "not a number"
        where.fail(row, f"has {what} {_shown(raw)}, which is {kind}")
    return values


def _seconds(column: pd.Series, where: _Where) -> np.ndarray:
    """int64 seconds since 1970 from whole numbers or dates; a value that is neither names its row."""
    import numpy as np
    import pandas as pd

    if pd.api.types.is_datetime64_any_dtype(column.dtype):
        stamps = pd.to_datetime(column, utc=True)
    elif pd.api.types.is_integer_dtype(column.dtype) and not column.hasnans:
        return column.to_numpy().astype(np.int64)
    else:
        numbers = (column.to_numpy(dtype=np.float64, na_value=np.nan) if pd.api.types.is_numeric_dtype(column.dtype)
                   else pd.to_numeric(column.astype(str).str.strip(), errors="coerce").to_numpy(dtype=np.float64,
                                                                                                 na_value=np.nan))
        if np.isfinite(numbers).all() and (numbers == np.round(numbers)).all() and np.abs(numbers).max() < 2**62:
            return numbers.astype(np.int64)
        if pd.api.types.is_numeric_dtype(column.dtype):
            bad = ~np.isfinite(numbers) | (numbers != np.round(numbers))
            row = int(np.argmax(bad))
            where.fail(row, f"has time {numbers[row]!r}, which is not whole seconds since 1970")
        stamps = pd.to_datetime(column.astype(str).str.strip(), utc=True, errors="coerce", format="mixed")
    missing = stamps.isna().to_numpy()
    if missing.any():
        row = int(np.argmax(missing))
        where.fail(row, f"has time {_shown(str(column.iloc[row]))}, which is neither seconds since 1970 nor a date")
    epoch = pd.Timestamp(0, tz="UTC")
    return ((stamps - epoch) // pd.Timedelta(seconds=1)).to_numpy(dtype=np.int64)


# -- movies -------------------------------------------------------------------------------------------------
def _movie_table(
    movies: str | Path | pd.DataFrame, items: np.ndarray, item_names: list[str] | None
) -> pd.DataFrame:
    """The ``--movies`` table as movie id -> title, genres, its ids in the ratings' id space."""
    import numpy as np
    import pandas as pd

    from movierec.data import movielens

    if isinstance(movies, pd.DataFrame):
        raw, where = movies.reset_index(drop=True).astype(str), _Where("The movies DataFrame", row_offset=0)
    else:
        path = Path(movies).expanduser()
        if not path.is_file() or path.stat().st_size == 0:
            raise MovierecError(f"{path} is {'empty' if path.is_file() else 'not a file'}.")
        if _is_parquet(path):
            raw, where = _read_parquet(path).astype(str), _Where(str(path), row_offset=1)
        else:
            header = _header(path)
            sep = "\t" if path.suffix.lower() == ".tsv" and "\t" in header else _sniff(path, header)
            where = _Where(str(path), path, sep)
            try:
                raw = pd.read_csv(movielens._text_buffer(path), sep=sep, dtype=str, engine="c", na_filter=False,
                                  keep_default_na=False)
            except pd.errors.ParserError as exc:
                _tokenizing_error(where, exc, len(next(csv.reader([header], delimiter=sep))), sep)
    names = [str(c) for c in raw.columns]
    lowered = {n.strip().lower(): n for n in reversed(names)}
    id_col = next((lowered[u] for u in ITEM_COLUMNS if u in lowered), None)
    title_col = next((lowered[u] for u in TITLE_COLUMNS if u in lowered), None)
    genre_col = next((lowered[u] for u in GENRE_COLUMNS if u in lowered), None)
    if id_col is None or title_col is None:
        where.fail(None, f"needs a movie id column ({', '.join(ITEM_COLUMNS)}) and a title column "
                         f"({', '.join(TITLE_COLUMNS)}); its columns are {_listed(names)}")
    text = raw[id_col].str.strip()
    titles = raw[title_col].str.strip()
    long = (titles.str.len() > MAX_TITLE_CHARS).to_numpy()
    if long.any():
        where.fail(int(np.argmax(long)), f"has a title over {MAX_TITLE_CHARS} characters long")
    if item_names is None:
        ids = pd.to_numeric(text, errors="coerce")
        bad = (ids.isna() | (ids < 0) | (ids != ids.round())).to_numpy()
        if bad.any():
            row = int(np.argmax(bad))
            where.fail(row, f"has movie id {_shown(text.iloc[row])}, but the ratings' movie ids are whole numbers")
        codes = ids.to_numpy().astype(np.int64)
    else:
        # A string id is known by its number 1..n; movies nobody rated have none and are left out.
        lookup = {name: i + 1 for i, name in enumerate(item_names)}
        codes = np.array([lookup.get(t, -1) for t in text.tolist()], dtype=np.int64)
        keep = codes > 0
        text, titles, codes = text[keep], titles[keep], codes[keep]
        raw = raw[keep]
    genres = ([movielens._split_genres(g) for g in raw[genre_col].tolist()] if genre_col is not None
              else [[] for _ in range(len(codes))])
    return movielens._movies_frame(codes, titles.reset_index(drop=True), genres)


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
    from movierec.data import download, movielens

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
        tmp = Path(tempfile.mkdtemp(prefix=f".import-{key}-", dir=paths.datasets_dir()))
        try:
            movielens._write_cache(dataclasses.replace(data, path=tmp))
            record = {
                "format": RECORD_FORMAT, "name": key, "description": f"ratings imported from {imported.source}",
                "source": origin,
                "date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "columns": imported.columns,
                "sep": imported.sep, "scale": list(data.rating_values), "scale_note": imported.scale_note,
                "implicit": imported.implicit,
            }
            movielens._write_json(tmp / IMPORT_RECORD, record)
            _swap(tmp, target)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
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


# -- small helpers ------------------------------------------------------------------------------------------
def _shown(text: str) -> str:
    return repr(text if len(text) <= 60 else text[:57] + "...")


def _listed(names: Sequence[str]) -> str:
    shown = ", ".join(_shown(str(n)) for n in names[:12])
    return shown + (f" and {len(names) - 12} more" if len(names) > 12 else "")


def _first_line(exc: BaseException) -> str:
    from movierec.data.movielens import _first_line

    return _first_line(exc)[:200]
