"""MovieLens releases parsed into one ratings table and one movies table, cached in a fast format.

Every release, whatever its layout, becomes a :class:`Dataset`: the ratings in movierec's index
space (users and movies that have ratings, sorted by MovieLens id, numbered ``0..n-1``), the id of
each index, a movies table (title, year, genres) and, where the release has one, a users table.

The extracted release is parsed once (pandas' C parser, explicit dtypes) by :func:`prepare`, which
writes the parsed cache: uncompressed ``.npy`` arrays (loaded with ``allow_pickle=False``) and the two
small tables as JSON, plus ``meta.json`` that :func:`summary` reads without touching the arrays.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import json
import logging
import os
import shutil
import tempfile
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

import numpy as np
import pandas as pd

from movierec import paths
from movierec.data.catalog import get_dataset_info
from movierec.data.ids import lookup_id
from movierec.data.registry import DatasetInfo
from movierec.errors import MovierecError

if TYPE_CHECKING:
    # Imported where ratings are built: it brings in torch, which `movierec datasets` must not wait for.
    from movierec.data.ratings import Ratings

log = logging.getLogger(__name__)

CACHE_FORMAT = 1
"""Bumped whenever the parsed cache's files change; an older cache is re-parsed, never misread."""

PARSED_FOLDER = "parsed"
META_FILE = "meta.json"
_ARRAYS = ("users", "items", "ratings", "timestamps", "user_ids", "item_ids")

INTEGER_STARS: tuple[float, ...] = (1.0, 2.0, 3.0, 4.0, 5.0)
HALF_STARS: tuple[float, ...] = tuple(float(x) / 2 for x in range(1, 11))
# Only these two releases predate half stars; every later one rates 0.5..5.0.
_INTEGER_STAR_RELEASES = frozenset({"ml-100k", "ml-1m"})

# "Toy Story (1995)", "Babylon 5 (1994-1998)", "Land Before Time III ... (1995) (V)", trailing spaces.
_YEAR = r"\((\d{4})(?:[-\u2013]\d{4})?\)(?:\s*\([^()\d]*\))?\s*$"
_NO_GENRES = {"", "(no genres listed)", "unknown"}

# ml-1m's users.dat stores occupations as codes; its README gives the names. ml-100k stores names.
_ML1M_OCCUPATIONS = (
    "other",
    "academic/educator",
    "artist",
    "clerical/admin",
    "college/grad student",
    "customer service",
    "doctor/health care",
    "executive/managerial",
    "farmer",
    "homemaker",
    "K-12 student",
    "lawyer",
    "programmer",
    "retired",
    "sales/marketing",
    "scientist",
    "self-employed",
    "technician/engineer",
    "tradesman/craftsman",
    "unemployed",
    "writer",
)

# Above this, a lookup table indexed by id would waste memory; np.unique's sort is used instead.
_MAX_LOOKUP_ID = 50_000_000

FINGERPRINT_CHECK_MAX_RATINGS = 2_000_000
"""Loading a cache of at most this many ratings re-hashes it against its fingerprint (about 15-30 ms per
million ratings). Bigger caches get only the range checks: at 25 million ratings those take about 0.05 s,
where the hash would add 0.35-0.7 s to a load of about 0.3 s."""

_INT64_MAX = np.iinfo(np.int64).max


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


# ---------------------------------------------------------------------------------------------------
# Where things are


def parsed_dir(name: str) -> Path:
    """The parsed cache of release ``name``."""
    return paths.dataset_dir(get_dataset_info(name).name) / PARSED_FOLDER


def extracted_dir(name: str) -> Path:
    """The folder the release's zip unpacks to, e.g. ``.../ml-10m/ml-10M100K``."""
    info = get_dataset_info(name)
    return paths.dataset_dir(info.name) / info.folder


def rating_scale(name: str) -> tuple[float, ...]:
    """The star values a release (or an imported dataset) uses."""
    info = get_dataset_info(name)
    if info.scale is not None:
        return info.scale
    return INTEGER_STARS if get_dataset_info(name).name in _INTEGER_STAR_RELEASES else HALF_STARS


# ---------------------------------------------------------------------------------------------------
# Public entry points


def summary(name: str) -> DatasetSummary | None:
    """The summary of a parsed release, or None when it has not been parsed (cheap: one small JSON)."""
    info = get_dataset_info(name)
    meta = _read_meta(parsed_dir(info.name))
    if meta is None:
        return None
    return _summary_from_meta(info.name, meta)


def prepare(name: str) -> DatasetSummary:
    """Parse the extracted release and (re)write its parsed cache, atomically."""
    return _prepare(name)[0]


def _prepare(name: str) -> tuple[DatasetSummary, Dataset]:
    info = get_dataset_info(name)
    dataset = parse_release(info.name)
    _write_cache(dataset)
    size = _disk_usage(dataset.path)
    counts = (dataset.n_users, dataset.n_items, len(dataset.ratings))
    return DatasetSummary(info.name, *counts, dataset.path, size, dataset.duplicates_dropped), dataset


def check_cache(name: str) -> DatasetSummary | None:
    """The summary of a parsed cache that loads and passes :func:`load_dataset`'s checks, else None."""
    info = get_dataset_info(name)
    target = parsed_dir(info.name)
    meta = _read_meta(target)
    if meta is None:
        return None
    try:
        _load_cache(info.name, target, meta)
    except _CACHE_ERRORS as exc:
        log.info("parsed cache of %s is damaged: %s", info.name, exc)
        return None
    return _summary_from_meta(info.name, meta)


def load_dataset(name: str) -> Dataset:
    """The parsed release, from the cache; parses first when only the extracted files are there.

    A cache that fails its checks (array shapes and types, index ranges, finite stars on the scale,
    sorted ids, titles for every movie, and for small releases the fingerprint) is never used: the
    release is parsed again from the extracted files, or the error says how to get them back.
    """
    info = get_dataset_info(name)
    target = parsed_dir(info.name)
    meta = _read_meta(target)
    if meta is None and (target / META_FILE).is_file() and not extracted_dir(info.name).is_dir():
        raise MovierecError(
            f"The parsed cache of {info.name} in {target} cannot be read (its {META_FILE} is damaged or from "
            f"another version of movierec); {_again(info)}."
        )
    if meta is not None:
        try:
            return _load_cache(info.name, target, meta)
        except _CACHE_ERRORS as exc:
            if not extracted_dir(info.name).is_dir():
                raise MovierecError(
                    f"The parsed cache of {info.name} in {target} is damaged ({_first_line(exc)}); "
                    f"{_again(info)}."
                ) from exc
            log.warning("parsed cache of %s is damaged (%s); parsing the release again", info.name, exc)
    if not extracted_dir(info.name).is_dir():
        raise MovierecError(f"Dataset {info.name} is not fetched yet; {_again(info, 'run `movierec fetch {}`')}.")
    return _prepare(info.name)[1]


def _again(info: DatasetInfo, fetch: str = "run `movierec fetch {}` again") -> str:
    """How to get ``info``'s data back: fetch a release, import a user's file again."""
    if info.imported:
        return f"import it again with `movierec import {info.name} FILE --force`"
    return fetch.format(info.name)


def parse_release(name: str) -> Dataset:
    """Parse the extracted release (no cache involved): what :func:`prepare` writes to the cache."""
    info = get_dataset_info(name)
    folder = paths.dataset_dir(info.name) / info.folder
    if not folder.is_dir():
        raise MovierecError(f"Dataset {info.name} is not fetched yet; run `movierec fetch {info.name}`.")
    scale = rating_scale(info.name)
    parsers: dict[str, Callable[[Path, str, tuple[float, ...]], _Parsed]] = {
        "100k": _parse_100k,
        "dat": _parse_dat,
        "csv": _parse_csv,
    }
    if info.layout not in parsers:
        raise MovierecError(f"movierec cannot parse {info.name}: unknown layout {info.layout!r}.")
    parsed = parsers[info.layout](folder, info.name, scale)
    return _build_dataset(info, parsed, scale)


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
        h.update(memoryview(np.ascontiguousarray(arr, dtype=dtype)).cast("B"))
    return h.hexdigest()


# ---------------------------------------------------------------------------------------------------
# Parsing


@dataclass(frozen=True)
class _Parsed:
    users: np.ndarray  # (N,) int64 MovieLens user ids
    items: np.ndarray  # (N,) int64 MovieLens movie ids
    ratings: np.ndarray  # (N,) float32
    timestamps: np.ndarray  # (N,) int64
    movies: pd.DataFrame
    people: pd.DataFrame | None


def _require(path: Path, name: str) -> Path:
    if not path.is_file():
        raise MovierecError(
            f"{path} is missing: the extracted {name} release does not have the expected layout; "
            f"run `movierec fetch {name}` again."
        )
    return path


def _parse_100k(folder: Path, name: str, scale: tuple[float, ...]) -> _Parsed:
    data = _require(folder / "u.data", name)
    item = _require(folder / "u.item", name)
    genre = _require(folder / "u.genre", name)
    user = _require(folder / "u.user", name)
    users, items, stars, times = read_ratings_file(data, "\t", header=False, scale=scale)

    genre_names = _read_100k_genres(genre)
    raw = _read_table(item, "|", n_fields=5 + len(genre_names))
    flags = raw.iloc[:, 5:].to_numpy()
    if not np.isin(flags, ("0", "1")).all():
        raise MovierecError(f"{item} has genre flags other than 0/1: it is not an ml-100k u.item file.")
    # The "unknown" genre column means no genre, like later releases' "(no genres listed)".
    named = [g if g not in _NO_GENRES else None for g in genre_names]
    genres = [[g for g, on in zip(named, row, strict=True) if on and g] for row in flags == "1"]
    movies = _movies_frame(_int_column(raw[0], item, "movie id"), raw[1], genres)

    u = _read_table(user, "|", n_fields=5)
    people = pd.DataFrame(
        {
            "gender": u[2].astype("str").to_numpy(),
            "age": _int_column(u[1], user, "age"),
            "occupation": u[3].astype("str").to_numpy(),
            "zip": u[4].astype("str").to_numpy(),
        },
        index=pd.Index(_int_column(u[0], user, "user id"), name="user_id"),
    )
    return _Parsed(users, items, stars, times, movies, people)


def _read_100k_genres(path: Path) -> list[str]:
    names: dict[int, str] = {}
    for lineno, line in enumerate(_decode(path).splitlines(), 1):
        if not line.strip():
            continue
        genre, sep, index = line.rpartition("|")
        if not sep or not index.strip().isdigit():
            raise MovierecError(f"{path} line {lineno} is not `name|number`: {line[:80]!r}.")
        names[int(index)] = genre
    if sorted(names) != list(range(len(names))):
        raise MovierecError(f"{path} does not number its genres 0 to {len(names) - 1}.")
    return [names[i] for i in range(len(names))]


def _parse_dat(folder: Path, name: str, scale: tuple[float, ...]) -> _Parsed:
    ratings = _require(folder / "ratings.dat", name)
    movies_file = _require(folder / "movies.dat", name)
    # ml-1m has users.dat; ml-10m has tags.dat instead and no user side information.
    users_file = folder / "users.dat"
    if name == "ml-1m":
        _require(users_file, name)
    users, items, stars, times = read_ratings_file(ratings, "::", header=False, scale=scale)

    ids: list[int] = []
    titles: list[str] = []
    genres: list[list[str]] = []
    for lineno, line in enumerate(_decode(movies_file).splitlines(), 1):
        if not line.strip():
            continue
        movie_id, sep1, rest = line.partition("::")
        # A title may contain "::" in principle; genres never do, so split the genres off the right.
        title, sep2, genre_text = rest.rpartition("::")
        if not (sep1 and sep2) or not movie_id.strip().isdigit() or int(movie_id) > _INT64_MAX:
            raise MovierecError(
                f"{movies_file} line {lineno} is not `MovieID::Title::Genres`: {line[:80]!r}."
            )
        ids.append(int(movie_id))
        titles.append(title)
        genres.append(_split_genres(genre_text))
    movies = _movies_frame(np.asarray(ids, dtype=np.int64), pd.Series(titles, dtype="str"), genres)

    people = None
    if users_file.is_file():
        u = _read_table(users_file, "::", n_fields=5)
        codes = _int_column(u[3], users_file, "occupation")
        people = pd.DataFrame(
            {
                "gender": u[1].astype("str").to_numpy(),
                "age": _int_column(u[2], users_file, "age"),
                "occupation": [
                    _ML1M_OCCUPATIONS[c] if 0 <= c < len(_ML1M_OCCUPATIONS) else str(c) for c in codes
                ],
                "zip": u[4].astype("str").to_numpy(),
            },
            index=pd.Index(_int_column(u[0], users_file, "user id"), name="user_id"),
        )
    return _Parsed(users, items, stars, times, movies, people)


_CSV_RATINGS_HEADER = "userId,movieId,rating,timestamp"
_CSV_MOVIES_HEADER = "movieId,title,genres"


def _parse_csv(folder: Path, name: str, scale: tuple[float, ...]) -> _Parsed:
    ratings = _require(folder / "ratings.csv", name)
    movies_file = _require(folder / "movies.csv", name)
    _check_header(ratings, _CSV_RATINGS_HEADER)
    _check_header(movies_file, _CSV_MOVIES_HEADER)
    users, items, stars, times = read_ratings_file(ratings, ",", header=True, scale=scale)
    try:
        raw = pd.read_csv(
            _text_buffer(movies_file),
            engine="c",
            dtype=str,
            na_filter=False,
            keep_default_na=False,
        )
    except ValueError as exc:
        raise MovierecError(f"{movies_file} is not a MovieLens movies.csv: {_first_line(exc)}.") from exc
    movies = _movies_frame(
        _int_column(raw["movieId"], movies_file, "movieId"),
        raw["title"],
        [_split_genres(g) for g in raw["genres"].tolist()],
    )
    return _Parsed(users, items, stars, times, movies, None)


def _check_header(path: Path, expected: str) -> None:
    with open(path, "rb") as f:
        first = f.readline().decode("utf-8", errors="replace").strip().lstrip("\ufeff")
    if first.replace('"', "") != expected:
        raise MovierecError(
            f"{path} does not start with the MovieLens header `{expected}` (found {first[:80]!r})."
        )


def _split_genres(text: str) -> list[str]:
    text = text.strip()
    if text in _NO_GENRES:
        return []
    return [g for g in text.split("|") if g and g not in _NO_GENRES]


def _movies_frame(ids: np.ndarray, titles: pd.Series, genres: list[list[str]]) -> pd.DataFrame:
    titles = pd.Series(titles, dtype="str").str.strip().reset_index(drop=True)
    years = pd.to_numeric(titles.str.extract(_YEAR, expand=False), errors="coerce").astype("Int64")
    frame = pd.DataFrame(
        {
            "title": titles.to_numpy(),
            "year": years.array,
            "genres": pd.Series(genres, dtype=object).to_numpy(),
        },
        index=pd.Index(np.asarray(ids, dtype=np.int64), name="movie_id"),
    )
    if frame.index.has_duplicates:
        log.warning("movies file lists some movie ids twice; keeping the first entry of each")
        frame = frame[~frame.index.duplicated(keep="first")]
    return frame


_BOM = b"\xef\xbb\xbf"
"""The UTF-8 byte order mark some editors put at the start of a file."""


def _starts_with_bom(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(len(_BOM)) == _BOM


def _decode(path: Path) -> str:
    """A side file's text: UTF-8 when it is valid UTF-8, else latin-1 (ml-100k's and ml-1m's encoding)."""
    data = path.read_bytes().removeprefix(_BOM)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("latin-1")


def _text_buffer(path: Path) -> io.StringIO:
    return io.StringIO(_decode(path))


def _read_table(path: Path, sep: str, n_fields: int) -> pd.DataFrame:
    """A small side table (u.item, u.user, users.dat) as strings, every line with ``n_fields`` fields."""
    text = _decode(path)
    if len(sep) > 1:
        # The C parser takes one-character separators; these files never contain a tab.
        text = text.replace(sep, "\t")
        sep = "\t"
    try:
        frame = pd.read_csv(
            io.StringIO(text),
            sep=sep,
            header=None,
            engine="c",
            dtype=str,
            na_filter=False,
            keep_default_na=False,
            quoting=csv.QUOTE_NONE,
        )
    except ValueError as exc:
        raise MovierecError(f"{path} is malformed: {_first_line(exc)}.") from exc
    # A short line comes back padded with empty strings, so an empty last field means a short line.
    if frame.shape[1] != n_fields or (frame[n_fields - 1] == "").any():
        raise MovierecError(f"{path} is malformed: every line should have {n_fields} fields.")
    return frame


def _int_column(column: pd.Series, path: Path, what: str) -> np.ndarray:
    try:
        return column.astype(str).str.strip().astype(np.int64).to_numpy()
    except (ValueError, TypeError, OverflowError) as exc:
        raise MovierecError(f"{path} has a {what} that is not a whole number: {_first_line(exc)}.") from exc


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0].rstrip(".") if text else type(exc).__name__


# ---------------------------------------------------------------------------------------------------
# The ratings file: fast parse, slow diagnosis


def read_ratings_file(
    path: Path, sep: str, header: bool, scale: tuple[float, ...]
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(user ids int64, movie ids int64, stars float32, timestamps int64) of a MovieLens ratings file.

    ``sep`` is ``"\\t"`` (u.data, uN.base), ``"::"`` (ratings.dat) or ``","`` (ratings.csv, with a
    header). A malformed line is a :class:`MovierecError` naming the file and its 1-based line number.
    """
    dtypes = {"user": np.int64, "item": np.int64, "rating": np.float32, "timestamp": np.int64}
    source: Path | io.BytesIO = path
    c_sep = sep
    if len(sep) > 1:
        # The C parser needs a one-character separator; rating lines are all digits, so a tab is safe once
        # we know the file has none, and keeping every field means a line with extra or missing fields
        # still fails the parse.
        data = path.read_bytes()
        tab = data.find(b"\t")
        if tab >= 0:
            lineno = data.count(b"\n", 0, tab) + 1
            raise MovierecError(
                f"{path} line {lineno} is malformed: it has a tab, but its fields are separated by {sep!r}."
            )
        source = io.BytesIO(data.removeprefix(_BOM).replace(sep.encode(), b"\t"))
        del data
        c_sep = "\t"
    elif _starts_with_bom(path):
        source = io.BytesIO(path.read_bytes().removeprefix(_BOM))
    # No ``names=``: given names, pandas would silently turn a surplus first field into the index.
    columns: list = _CSV_RATINGS_HEADER.split(",") if header else [0, 1, 2, 3]
    try:
        frame = pd.read_csv(
            source,
            sep=c_sep,
            header=0 if header else None,
            dtype=dict(zip(columns, dtypes.values(), strict=True)),
            engine="c",
            na_filter=False,
            skip_blank_lines=True,
            encoding="latin-1",
        )
    except (ValueError, OverflowError) as exc:  # pandas' ParserError and dtype failures are ValueErrors
        _raise_bad_line(path, sep, header, scale, _first_line(exc))
    del source
    if list(frame.columns) != columns:
        _raise_bad_line(path, sep, header, scale, f"{frame.shape[1]} columns instead of 4")
    users, items, stars, times = (frame[c].to_numpy(copy=True) for c in columns)
    del frame
    if any(a.dtype != t for a, t in zip((users, items, stars, times), dtypes.values(), strict=True)):
        # Some pandas versions keep a value beyond int64 as uint64 or object instead of failing the parse.
        _raise_bad_line(path, sep, header, scale, "a number too large for a 64-bit id or timestamp")
    if len(users) == 0:
        raise MovierecError(f"{path} has no ratings.")
    # Cheap whole-array checks; the slow line scan runs only when one fails, to say which line.
    if users.min() < 0 or items.min() < 0 or not np.isin(stars, np.asarray(scale, dtype=np.float32)).all():
        _raise_bad_line(path, sep, header, scale, "a negative id or a rating off the scale")
    return users, items, stars, times


def _raise_bad_line(
    path: Path, sep: str, header: bool, scale: tuple[float, ...], parser_message: str
) -> NoReturn:
    found = find_bad_line(path, sep, header, scale)
    if found is None:
        raise MovierecError(f"{path} could not be parsed: {parser_message}.")
    lineno, reason = found
    raise MovierecError(f"{path} line {lineno} is malformed: {reason}.")


def find_bad_line(path: Path, sep: str, header: bool, scale: tuple[float, ...]) -> tuple[int, str] | None:
    """The first malformed rating line of ``path`` as (1-based line number, reason), or None.

    A line-by-line scan: slow on big files, so it runs only after the fast parser has failed.
    """
    bsep = sep.encode()
    allowed = set(scale)
    shown = ", ".join(f"{v:g}" for v in scale)
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, 1):
            if header and lineno == 1:
                continue
            line = raw.rstrip(b"\r\n").removeprefix(_BOM) if lineno == 1 else raw.rstrip(b"\r\n")
            if not line.strip():
                continue  # the fast parser skips blank lines too
            fields = line.split(bsep)
            if len(fields) != 4:
                return lineno, f"expected 4 fields separated by {sep!r}, found {len(fields)} in {_show(line)}"
            try:
                user, item, stars, _ = int(fields[0]), int(fields[1]), float(fields[2]), int(fields[3])
            except ValueError:
                return (
                    lineno,
                    f"expected user id, movie id, rating, timestamp as numbers, found {_show(line)}",
                )
            if user < 0 or item < 0:
                return lineno, f"negative id in {_show(line)}"
            if max(user, item, abs(int(fields[3]))) > _INT64_MAX:
                return lineno, f"a number too large for a 64-bit id or timestamp in {_show(line)}"
            if stars not in allowed:
                return lineno, f"rating {fields[2].decode('latin-1')} is not one of {shown}"
    return None


def _show(line: bytes) -> str:
    text = line.decode("latin-1")
    return repr(text if len(text) <= 60 else text[:57] + "...")


# ---------------------------------------------------------------------------------------------------
# From raw ids to the index space


def _to_index(ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(index of each entry int32, sorted distinct ids int64): ids renumbered 0..n-1 by ascending id."""
    top = int(ids.max())
    if top <= _MAX_LOOKUP_ID:
        # O(N) with a lookup table; np.unique would sort all N entries.
        present = np.zeros(top + 1, dtype=bool)
        present[ids] = True
        distinct = np.flatnonzero(present).astype(np.int64)
        lookup = np.cumsum(present, dtype=np.int32) - 1
        return lookup[ids], distinct
    distinct, inverse = np.unique(ids, return_inverse=True)
    return inverse.astype(np.int32).reshape(-1), distinct.astype(np.int64)


def _latest_of_each_pair(
    user_index: np.ndarray, item_index: np.ndarray, timestamps: np.ndarray, n_items: int
) -> np.ndarray | None:
    """Positions to keep so each (user, movie) pair is rated once, or None when no pair repeats.

    Of a repeated pair the rating with the latest timestamp is kept (the later line on a tie): it is
    the user's current opinion. The kept positions stay in file order.
    """
    key = user_index.astype(np.int64) * n_items + item_index  # (N,) one number per (user, movie)
    if len(key) < 2 or bool(np.all(key[1:] > key[:-1])):
        return None  # the usual layout, sorted by user then movie: an O(N) check and no sort
    order = np.argsort(key, kind="stable")  # (N,) equal keys in file order
    sorted_key = key[order]
    if bool(np.all(sorted_key[1:] != sorted_key[:-1])):
        return None
    # Sort by (key, timestamp, line) and keep the last entry of each key.
    order = np.lexsort((np.arange(len(key)), timestamps, key))
    sorted_key = key[order]
    last = np.append(sorted_key[1:] != sorted_key[:-1], True)
    return np.sort(order[last])


def _build_dataset(info: DatasetInfo, parsed: _Parsed, scale: tuple[float, ...]) -> Dataset:
    from movierec.data.ratings import Ratings

    user_index, user_ids = _to_index(parsed.users)
    item_index, item_ids = _to_index(parsed.items)
    stars, timestamps = parsed.ratings, parsed.timestamps
    dropped = 0
    keep = _latest_of_each_pair(user_index, item_index, timestamps, len(item_ids))
    if keep is not None:
        dropped = len(user_index) - len(keep)
        log.info("%s rates %d (user, movie) pairs more than once; keeping the latest", info.name, dropped)
        # A user or movie left only with dropped ratings still has a kept one: only repeats are dropped.
        user_index, item_index, stars, timestamps = (a[keep] for a in (user_index, item_index, stars, timestamps))
    ratings = Ratings(user_index, item_index, stars, timestamps, int(len(user_ids)), int(len(item_ids)))
    movies = parsed.movies
    missing = np.setdiff1d(item_ids, movies.index.to_numpy())
    if len(missing):
        log.warning(
            "%s rates %d movies its movies file does not list; they get placeholder titles",
            info.name,
            len(missing),
        )
        extra = _movies_frame(missing, pd.Series([f"Movie {m}" for m in missing]), [[] for _ in missing])
        movies = pd.concat([movies, extra]).sort_index()
    return Dataset(
        name=info.name,
        ratings=ratings,
        user_ids=user_ids,
        item_ids=item_ids,
        movies=movies,
        users=parsed.people,
        fingerprint=fingerprint_of(ratings, user_ids, item_ids),
        rating_values=scale,
        path=paths.dataset_dir(info.name),
        duplicates_dropped=dropped,
    )


# ---------------------------------------------------------------------------------------------------
# The parsed cache


def _write_cache(dataset: Dataset) -> None:
    base = dataset.path
    base.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{PARSED_FOLDER}-tmp-", dir=base))
    try:
        r = dataset.ratings
        arrays = {
            "users": r.users.astype(np.int32, copy=False),
            "items": r.items.astype(np.int32, copy=False),
            "ratings": r.ratings.astype(np.float32, copy=False),
            "timestamps": r.timestamps.astype(np.int64, copy=False),
            "user_ids": dataset.user_ids.astype(np.int64, copy=False),
            "item_ids": dataset.item_ids.astype(np.int64, copy=False),
        }
        for key, arr in arrays.items():
            np.save(tmp / f"{key}.npy", np.ascontiguousarray(arr), allow_pickle=False)
        _write_json(tmp / "movies.json", _movies_to_json(dataset.movies))
        if dataset.users is not None:
            _write_json(tmp / "people.json", _people_to_json(dataset.users))
        has_names = dataset.user_names is not None or dataset.item_names is not None
        if has_names:
            names = (dataset.user_names, dataset.item_names)
            _write_json(tmp / "names.json", dict(zip(("user", "movie"), (n and list(n) for n in names), strict=True)))
        meta = {
            "format": CACHE_FORMAT,
            "name": dataset.name,
            "users": dataset.n_users,
            "items": dataset.n_items,
            "ratings": len(r),
            "fingerprint": dataset.fingerprint,
            "rating_values": list(dataset.rating_values),
            "has_users": dataset.users is not None,
            "duplicates_dropped": dataset.duplicates_dropped,
            "names": has_names,
        }
        # meta.json last: its presence marks a complete cache.
        _write_json(tmp / META_FILE, meta)
        _swap_in(tmp, base / PARSED_FOLDER)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _swap_in(tmp: Path, target: Path) -> None:
    """Move ``tmp`` to ``target``, replacing an older cache: readers see the old or the new one whole."""
    old = None
    if target.exists():
        old = target.with_name(f".{PARSED_FOLDER}-old-{uuid.uuid4().hex}")
        os.rename(target, old)
    try:
        os.rename(tmp, target)
    except OSError:
        # Another process swapped its cache in meanwhile; its copy is as good as ours.
        if not (target / META_FILE).is_file():
            raise
        shutil.rmtree(tmp, ignore_errors=True)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _write_json(path: Path, data: object) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(data, f, ensure_ascii=False, separators=(",", ":"))


def _read_meta(folder: Path) -> dict | None:
    """``meta.json`` of a parsed cache, or None when it is missing, older or damaged (then re-parse)."""
    try:
        with open(folder / META_FILE, encoding="utf-8") as f:
            meta = json.load(f)
    except (OSError, ValueError):
        return None
    if not isinstance(meta, dict) or meta.get("format") != CACHE_FORMAT:
        return None
    if not all(_is_count(meta.get(key)) for key in ("users", "items", "ratings")):
        return None
    if not _is_count(meta.get("duplicates_dropped", 0)) or not isinstance(meta.get("has_users"), bool):
        return None
    if not isinstance(meta.get("names", False), bool):
        return None
    fingerprint, values = meta.get("fingerprint"), meta.get("rating_values")
    if not isinstance(fingerprint, str) or len(fingerprint) != 64:
        return None
    if not isinstance(values, list) or not values or not all(_is_number(v) for v in values):
        return None
    return meta


def _is_count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and np.isfinite(value)


def _summary_from_meta(name: str, meta: dict) -> DatasetSummary:
    path = paths.dataset_dir(name)
    return DatasetSummary(
        name, meta["users"], meta["items"], meta["ratings"], path, _disk_usage(path),
        meta.get("duplicates_dropped", 0),
    )


def _disk_usage(folder: Path) -> int:
    total = 0
    for root, _dirs, files in os.walk(folder):
        for file in files:
            # A file may vanish while we walk (a concurrent prepare's temp folder).
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(root, file)).st_size
    return total


def _movies_to_json(movies: pd.DataFrame) -> dict:
    return {
        "movie_id": movies.index.to_numpy(dtype=np.int64).tolist(),
        "title": movies["title"].astype(str).tolist(),
        "year": [None if pd.isna(y) else int(y) for y in movies["year"]],
        "genres": [list(g) for g in movies["genres"]],
    }


def _people_to_json(people: pd.DataFrame) -> dict:
    return {
        "user_id": people.index.to_numpy(dtype=np.int64).tolist(),
        "gender": people["gender"].astype(str).tolist(),
        "age": people["age"].to_numpy(dtype=np.int64).tolist(),
        "occupation": people["occupation"].astype(str).tolist(),
        "zip": people["zip"].astype(str).tolist(),
    }


def _load_cache(name: str, folder: Path, meta: dict) -> Dataset:
    from movierec.data.ratings import Ratings

    # Copy-on-write memory maps: the arrays come straight from the page cache instead of being copied
    # into fresh memory (which costs seconds for ML-25M's 500 MB), yet stay writable; a write copies
    # just the touched page and never reaches the file. A later prepare() writes new files and
    # renames folders, so a mapped file is never changed under a running process.
    arrays = {
        key: np.asarray(np.load(folder / f"{key}.npy", mmap_mode="c", allow_pickle=False)) for key in _ARRAYS
    }
    n = int(meta["ratings"])
    n_users, n_items = int(meta["users"]), int(meta["items"])
    expected = {
        "users": (n, np.int32), "items": (n, np.int32), "ratings": (n, np.float32),
        "timestamps": (n, np.int64), "user_ids": (n_users, np.int64), "item_ids": (n_items, np.int64),
    }  # fmt: skip
    for key, (length, dtype) in expected.items():
        if arrays[key].shape != (length,) or arrays[key].dtype != dtype:
            raise ValueError(f"{key}.npy does not match meta.json")
    scale = tuple(float(v) for v in meta["rating_values"])
    _check_arrays(name, arrays, n_users, n_items, scale)
    if n <= FINGERPRINT_CHECK_MAX_RATINGS:
        ratings = Ratings(arrays["users"], arrays["items"], arrays["ratings"], arrays["timestamps"], n_users, n_items)
        if fingerprint_of(ratings, arrays["user_ids"], arrays["item_ids"]) != meta["fingerprint"]:
            raise ValueError("the arrays do not match their fingerprint")
    with open(folder / "movies.json", encoding="utf-8") as f:
        m = json.load(f)
    _check_columns(m, ("movie_id", "title", "year", "genres"), "movies.json")
    movies = pd.DataFrame(
        {
            "title": pd.array(m["title"], dtype="str"),
            "year": pd.array(m["year"], dtype="Int64"),
            "genres": pd.Series(m["genres"], dtype=object).to_numpy(),
        },
        index=pd.Index(np.asarray(m["movie_id"], dtype=np.int64), name="movie_id"),
    )
    if not movies.index.is_unique or not np.isin(arrays["item_ids"], movies.index.to_numpy()).all():
        raise ValueError("movies.json does not list every rated movie once")
    people = None
    if meta.get("has_users"):
        with open(folder / "people.json", encoding="utf-8") as f:
            p = json.load(f)
        _check_columns(p, ("user_id", "gender", "age", "occupation", "zip"), "people.json")
        people = pd.DataFrame(
            {
                "gender": pd.array(p["gender"], dtype="str"),
                "age": np.asarray(p["age"], dtype=np.int64),
                "occupation": pd.array(p["occupation"], dtype="str"),
                "zip": pd.array(p["zip"], dtype="str"),
            },
            index=pd.Index(np.asarray(p["user_id"], dtype=np.int64), name="user_id"),
        )
    names: dict = {"user": None, "movie": None}
    if meta.get("names"):
        with open(folder / "names.json", encoding="utf-8") as f:
            names = json.load(f)
        for key, count in (("user", n_users), ("movie", n_items)):
            listed = names.get(key)
            if listed is not None and (len(listed) != count or not all(isinstance(x, str) for x in listed)):
                raise _DamagedCache(f"names.json does not name every {key} once")
    ratings = Ratings(
        arrays["users"], arrays["items"], arrays["ratings"], arrays["timestamps"], n_users, n_items
    )
    return Dataset(
        name=name,
        ratings=ratings,
        user_ids=arrays["user_ids"],
        item_ids=arrays["item_ids"],
        movies=movies,
        users=people,
        fingerprint=str(meta["fingerprint"]),
        rating_values=scale,
        path=paths.dataset_dir(name),
        duplicates_dropped=int(meta.get("duplicates_dropped", 0)),
        user_names=None if names.get("user") is None else tuple(names["user"]),
        item_names=None if names.get("movie") is None else tuple(names["movie"]),
    )


class _DamagedCache(ValueError):
    """A parsed cache whose files load but whose contents are impossible."""


_CACHE_ERRORS = (OSError, ValueError, KeyError, TypeError, OverflowError)


def _check_arrays(
    name: str, arrays: dict[str, np.ndarray], n_users: int, n_items: int, scale: tuple[float, ...]
) -> None:
    """Cheap whole-array checks (one pass over 300 MB at 25 million ratings, about 40 ms): every value in
    range, so a damaged cache can never index out of bounds or feed NaN stars to a model."""
    if scale != rating_scale(name):
        raise _DamagedCache(f"its star scale {scale} is not {name}'s")
    for key, limit in (("users", n_users), ("items", n_items)):
        index = arrays[key]
        if len(index) and (int(index.min()) < 0 or int(index.max()) >= limit):
            raise _DamagedCache(f"{key}.npy has an index outside 0..{limit - 1}")
    stars = arrays["ratings"]
    # min/max are NaN when any star is NaN, and NaN fails both comparisons.
    if len(stars) and not (scale[0] <= float(stars.min()) and float(stars.max()) <= scale[-1]):
        raise _DamagedCache(f"ratings.npy has stars outside {scale[0]:g}..{scale[-1]:g} or not numbers")
    for key in ("user_ids", "item_ids"):
        ids = arrays[key]
        if len(ids) and (int(ids[0]) < 0 or not bool(np.all(ids[1:] > ids[:-1]))):
            raise _DamagedCache(f"{key}.npy is not a sorted list of distinct ids")


def _check_columns(table: object, columns: tuple[str, ...], file: str) -> None:
    if not isinstance(table, dict) or not all(isinstance(table.get(c), list) for c in columns):
        raise _DamagedCache(f"{file} lacks one of the columns {', '.join(columns)}")
    if len({len(table[c]) for c in columns}) != 1:
        raise _DamagedCache(f"{file} has columns of different lengths")
