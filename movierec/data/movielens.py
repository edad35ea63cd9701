"""MovieLens releases parsed into one ratings table and one movies table: a parser for each release layout.

Every release, whatever its layout, becomes a :class:`~movierec.data.dataset.Dataset`. The extracted release
is parsed once (pandas' C parser, explicit dtypes) by :func:`prepare`, which writes the parsed cache
(:mod:`movierec.data.cache`); :func:`load_dataset` loads that cache, and parses again only when it is missing
or fails its checks.
"""

from __future__ import annotations

import csv
import io
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

import numpy as np
import pandas as pd

from movierec import paths
from movierec.data.cache import (
    CACHE_ERRORS,
    META_FILE,
    folder_size,
    load_cache,
    parsed_dir,
    read_meta,
    write_cache,
)
from movierec.data.catalog import get_dataset_info
from movierec.data.dataset import Dataset, DatasetSummary, fingerprint_of, rating_scale
from movierec.data.registry import DatasetInfo
from movierec.errors import MovierecError

log = logging.getLogger(__name__)

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

_INT64_MAX = np.iinfo(np.int64).max


def extracted_dir(name: str) -> Path:
    """The folder the release's zip unpacks to, e.g. ``.../ml-10m/ml-10M100K``."""
    info = get_dataset_info(name)
    return paths.dataset_dir(info.name) / info.folder


def prepare(name: str) -> DatasetSummary:
    """Parse the extracted release and (re)write its parsed cache, atomically."""
    return _prepare(name)[0]


def _prepare(name: str) -> tuple[DatasetSummary, Dataset]:
    info = get_dataset_info(name)
    dataset = parse_release(info.name)
    write_cache(dataset)
    size = folder_size(dataset.path)
    counts = (dataset.n_users, dataset.n_items, len(dataset.ratings))
    return DatasetSummary(info.name, *counts, dataset.path, size, dataset.duplicates_dropped), dataset


def load_dataset(name: str) -> Dataset:
    """The parsed release, from the cache; parses first when only the extracted files are there.

    A cache that fails its checks (array shapes and types, index ranges, finite stars on the scale,
    sorted ids, titles for every movie, and for small releases the fingerprint) is never used: the
    release is parsed again from the extracted files, or the error says how to get them back.
    """
    info = get_dataset_info(name)
    target = parsed_dir(info.name)
    meta = read_meta(target)
    if meta is None and (target / META_FILE).is_file() and not extracted_dir(info.name).is_dir():
        raise MovierecError(
            f"The parsed cache of {info.name} in {target} cannot be read (its {META_FILE} is damaged or from "
            f"another version of movierec); {_again(info)}."
        )
    if meta is not None:
        try:
            return load_cache(info.name, target, meta)
        except CACHE_ERRORS as exc:
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
