"""The parsed cache of a dataset: what :func:`movierec.data.movielens.load_dataset` loads in a fraction of a second.

A dataset's ``parsed/`` folder holds uncompressed ``.npy`` arrays (loaded with ``allow_pickle=False``) and the
two small tables as JSON, plus ``meta.json`` that :func:`summary` reads without touching the arrays. It is
written whole into a hidden folder (:func:`staged`) and only then moved into place, so a reader sees the old
cache or the new one, never half of one; a cache that fails :func:`load_cache`'s checks is never used.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd

from movierec import paths
from movierec.data.catalog import get_dataset_info
from movierec.data.dataset import Dataset, DatasetSummary, fingerprint_of, rating_scale

log = logging.getLogger(__name__)

CACHE_FORMAT = 1
"""Bumped whenever the parsed cache's files change; an older cache is re-parsed, never misread."""

PARSED_FOLDER = "parsed"
META_FILE = "meta.json"
_ARRAYS = ("users", "items", "ratings", "timestamps", "user_ids", "item_ids")

FINGERPRINT_CHECK_MAX_RATINGS = 2_000_000
"""Loading a cache of at most this many ratings re-hashes it against its fingerprint (about 15-30 ms per
million ratings). Bigger caches get only the range checks: at 25 million ratings those take about 0.05 s,
where the hash would add 0.35-0.7 s to a load of about 0.3 s."""


def parsed_dir(name: str) -> Path:
    """The parsed cache of release ``name``."""
    return paths.dataset_dir(get_dataset_info(name).name) / PARSED_FOLDER


def summary(name: str) -> DatasetSummary | None:
    """The summary of a parsed release, or None when it has not been parsed (cheap: one small JSON)."""
    info = get_dataset_info(name)
    meta = read_meta(parsed_dir(info.name))
    if meta is None:
        return None
    return summary_from_meta(info.name, meta)


def check_cache(name: str) -> DatasetSummary | None:
    """The summary of a parsed cache that loads and passes :func:`load_cache`'s checks, else None."""
    info = get_dataset_info(name)
    target = parsed_dir(info.name)
    meta = read_meta(target)
    if meta is None:
        return None
    try:
        load_cache(info.name, target, meta)
    except CACHE_ERRORS as exc:
        log.info("parsed cache of %s is damaged: %s", info.name, exc)
        return None
    return summary_from_meta(info.name, meta)


@contextlib.contextmanager
def staged(parent: Path, prefix: str) -> Iterator[Path]:
    """A new hidden folder in ``parent`` to write into, removed with everything in it if the block fails.

    The block moves the folder into place once all is written, so a failed or interrupted write leaves
    nothing behind and whatever the folder was to replace as it was.
    """
    tmp = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def write_cache(dataset: Dataset) -> None:
    """Write the parsed cache of ``dataset`` to ``dataset.path``, replacing an older one atomically."""
    base = dataset.path
    base.mkdir(parents=True, exist_ok=True)
    with staged(base, f".{PARSED_FOLDER}-tmp-") as tmp:
        write_files(dataset, tmp)
        _swap_in(tmp, base / PARSED_FOLDER)


def write_files(dataset: Dataset, folder: Path) -> None:
    """The files of ``dataset``'s parsed cache, written into ``folder`` (made if need be)."""
    folder.mkdir(parents=True, exist_ok=True)
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
        np.save(folder / f"{key}.npy", np.ascontiguousarray(arr), allow_pickle=False)
    write_json(folder / "movies.json", _movies_to_json(dataset.movies))
    if dataset.users is not None:
        write_json(folder / "people.json", _people_to_json(dataset.users))
    has_names = dataset.user_names is not None or dataset.item_names is not None
    if has_names:
        names = (dataset.user_names, dataset.item_names)
        write_json(folder / "names.json", dict(zip(("user", "movie"), (n and list(n) for n in names), strict=True)))
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
    write_json(folder / META_FILE, meta)


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


def write_json(path: Path, data: object) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(data, f, ensure_ascii=False, separators=(",", ":"))


def read_meta(folder: Path) -> dict | None:
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


def summary_from_meta(name: str, meta: dict) -> DatasetSummary:
    path = paths.dataset_dir(name)
    return DatasetSummary(
        name, meta["users"], meta["items"], meta["ratings"], path, folder_size(path),
        meta.get("duplicates_dropped", 0),
    )


def folder_size(folder: Path) -> int:
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


def load_cache(name: str, folder: Path, meta: dict) -> Dataset:
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


CACHE_ERRORS = (OSError, ValueError, KeyError, TypeError, OverflowError)


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
