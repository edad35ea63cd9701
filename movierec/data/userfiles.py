"""Reading a user's own ratings file (CSV, TSV, Parquet) or DataFrame: its separator, its columns, its values.

A text file is read with pandas' C parser and explicit dtypes, as the releases are; only when that fails is it
read again as text, to say which line is wrong (:class:`Where` names it). Columns are found by name
(case-insensitive) unless given (:class:`Columns`). :mod:`movierec.data.importing` makes a dataset of what is read.
"""

from __future__ import annotations

import csv
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from movierec.errors import MovierecError

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

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



# -- where a row came from, for the error -------------------------------------------------------------------
class Where:
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
def read_source(
    source: str | Path | pd.DataFrame, sep: str | None, columns: Columns, progress: Progress | None
) -> tuple[pd.DataFrame, Where, str, str | None]:
    import pandas as pd

    if isinstance(source, pd.DataFrame):
        frame = source.reset_index(drop=True)
        frame.columns = [str(c) for c in frame.columns]
        return frame, Where("The DataFrame", row_offset=0), "a DataFrame", None
    if not isinstance(source, (str, os.PathLike)):
        raise MovierecError(f"Ratings come from a file path or a pandas DataFrame, not a {type(source).__name__}.")
    path = Path(source).expanduser()
    if not path.is_file():
        raise MovierecError(f"{path} is not a file.")
    if path.stat().st_size == 0:
        raise MovierecError(f"{path} is empty.")
    if _is_parquet(path):
        return _read_parquet(path), Where(str(path), row_offset=1), path.name, None
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
) -> tuple[pd.DataFrame, Where, str]:
    import numpy as np
    import pandas as pd

    header = _header(path)
    if not header.strip():
        raise MovierecError(f"{path} line 1 is blank: movierec needs a first line naming the columns.")
    sep = _separator(sep) if sep is not None else ("\t" if path.suffix.lower() == ".tsv" and "\t" in header
                                                    else _sniff(path, header))
    where = Where(str(path), path, sep)
    names = next(csv.reader([header], delimiter=sep))
    picked = pick_columns(names, columns, where, sep)
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


def _tokenizing_error(where: Where, exc: Exception, fields: int, sep: str) -> NoReturn:
    found = re.search(r"Expected (\d+) fields in line (\d+), saw (\d+)", str(exc))
    if found:
        raise MovierecError(
            f"{where.label} line {found.group(2)} has {found.group(3)} fields where the header has {fields} "
            f"(separated by {_SEP_NAMES.get(sep, repr(sep))}); check the separator (--sep) and the quoting."
        ) from None
    raise MovierecError(f"{where.label} could not be read: {_first_line(exc)}.") from None


def pick_columns(names: list[str], columns: Columns, where: Where, sep: str | None) -> dict[str, str | None]:
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


# -- the values of a column ----------------------------------------------------------------------------------
def ids_of(column: pd.Series, what: str, where: Where) -> tuple[np.ndarray, list[str] | None]:
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


def numbers_of(column: pd.Series, what: str, where: Where) -> np.ndarray:
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


def seconds_of(column: pd.Series, where: Where) -> np.ndarray:
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
def movie_table(
    movies: str | Path | pd.DataFrame, items: np.ndarray, item_names: list[str] | None
) -> pd.DataFrame:
    """The ``--movies`` table as movie id -> title, genres, its ids in the ratings' id space."""
    import numpy as np
    import pandas as pd

    from movierec.data import movielens

    if isinstance(movies, pd.DataFrame):
        raw, where = movies.reset_index(drop=True).astype(str), Where("The movies DataFrame", row_offset=0)
    else:
        path = Path(movies).expanduser()
        if not path.is_file() or path.stat().st_size == 0:
            raise MovierecError(f"{path} is {'empty' if path.is_file() else 'not a file'}.")
        if _is_parquet(path):
            raw, where = _read_parquet(path).astype(str), Where(str(path), row_offset=1)
        else:
            header = _header(path)
            sep = "\t" if path.suffix.lower() == ".tsv" and "\t" in header else _sniff(path, header)
            where = Where(str(path), path, sep)
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




# -- small helpers ------------------------------------------------------------------------------------------
def _shown(text: str) -> str:
    return repr(text if len(text) <= 60 else text[:57] + "...")


def _listed(names: Sequence[str]) -> str:
    shown = ", ".join(_shown(str(n)) for n in names[:12])
    return shown + (f" and {len(names) - 12} more" if len(names) > 12 else "")


def _first_line(exc: BaseException) -> str:
    from movierec.data.movielens import _first_line

    return _first_line(exc)[:200]
