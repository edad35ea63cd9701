"""The tags people gave movies, where a release ships them, as each movie's most-used tags.

ml-10m (``tags.dat``, ``userId::movieId::tag::timestamp``), ml-20m, ml-25m, ml-32m and ml-latest(-small)
(``tags.csv``, ``userId,movieId,tag,timestamp`` with a header) ship the free-text tags their users typed; ml-100k
and ml-1m have none. A tag is normalised (lower case, control characters to spaces, surrounding spaces stripped,
runs of spaces collapsed, at most :data:`MAX_TAG_CHARS` characters), and used only when at least
:data:`MIN_TAG_USERS` different people gave it to at least :data:`MIN_TAG_MOVIES` different movies: a word only one
person uses, or one that names a handful of movies, says nothing a model could carry over to a new movie. Each
movie keeps its :data:`TOP_TAGS` tags given by the most people (ties by the tag's text).

Nothing in a tags file stops a release from loading: a missing file is a release without tags, and lines that
cannot be read, tags that are empty, or name movies the release does not list are left out, each kind with one
note. The tags file is read from the unpacked release when features are built (about a second for ml-25m's 1.1
million lines), never kept in the parsed cache.
"""

from __future__ import annotations

import csv
import io
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from movierec import paths
from movierec.data.catalog import get_dataset_info

if TYPE_CHECKING:
    from movierec.data.movielens import Dataset

log = logging.getLogger(__name__)

TAG_FILES = {"dat": "tags.dat", "csv": "tags.csv"}
"""The tags file of each layout (ml-1m's ``dat`` layout has none: a missing file means no tags)."""
SHIPS_TAGS = frozenset({"ml-10m", "ml-20m", "ml-25m", "ml-32m", "ml-latest-small", "ml-latest"})
"""The releases whose archive has a tags file."""
CSV_HEADER = "userId,movieId,tag,timestamp"
MAX_TAG_CHARS = 64
"""A tag is cut to this many characters (after normalising): ml-25m's longest real tags are sentences, and
nothing longer names a theme that other movies share."""
MIN_TAG_MOVIES = 5
"""A tag is used only when it was given to at least this many movies."""
MIN_TAG_USERS = 2
"""... by at least this many different people (one person's private labels are not a theme)."""
TOP_TAGS = 20
"""Each movie keeps at most this many tags, the ones the most people gave it."""
_BOM = b"\xef\xbb\xbf"


@dataclass(frozen=True, eq=False)
class Tags:
    """Every readable tag line of a release: one row per (person, movie, normalised tag), duplicates dropped."""

    user_ids: np.ndarray
    """(N,) int64 MovieLens user id."""
    movie_ids: np.ndarray
    """(N,) int64 MovieLens movie id."""
    tags: np.ndarray
    """(N,) object: the normalised tag text."""

    def __len__(self) -> int:
        return len(self.tags)


def tags_path(name: str) -> Path | None:
    """Where release ``name``'s tags file is when unpacked, or None when its layout has none."""
    info = get_dataset_info(name)
    file = TAG_FILES.get(info.layout)
    return None if file is None else paths.dataset_dir(info.name) / info.folder / file


def read_tags(path: Path, name: str = "") -> Tags | None:
    """The tags in ``path`` (a ``tags.csv`` by its name, else a ``::``-separated ``tags.dat``), or None, with one
    note, when it holds none that can be read."""
    what = f"{name}'s {path.name}" if name else str(path)
    raw = path.read_bytes().removeprefix(_BOM)
    if b"\x00" in raw[:1 << 20]:
        log.warning("%s is not a text file; its tags are not used", what)
        return None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        text = raw.decode("latin-1")  # ml-10m's own files are latin-1 where they are not UTF-8
    del raw
    is_csv = path.suffix == ".csv"
    if is_csv:
        first, _, _ = text[:200].partition("\n")
        if first.strip().replace('"', "") != CSV_HEADER:
            log.warning("%s does not start with the header %s; its tags are not used", what, CSV_HEADER)
            return None
    else:
        text = text.replace("::", "\x1f")
    lines = text.count("\n") + (not text.endswith("\n") and bool(text)) - is_csv
    try:
        frame = pd.read_csv(
            io.StringIO(text), sep="," if is_csv else "\x1f", header=0 if is_csv else None,
            names=["user", "movie", "tag", "time"], usecols=[0, 1, 2], engine="c", dtype=str, na_filter=False,
            keep_default_na=False, quoting=csv.QUOTE_MINIMAL if is_csv else csv.QUOTE_NONE, on_bad_lines="skip",
            skip_blank_lines=True,
        )
    except (ValueError, pd.errors.ParserError) as exc:
        log.warning("%s cannot be read (%s); its tags are not used", what, str(exc).splitlines()[0][:200])
        return None
    del text
    users = pd.to_numeric(frame["user"], errors="coerce")
    movies = pd.to_numeric(frame["movie"], errors="coerce")
    tags = normalise(frame["tag"])
    good = users.notna() & movies.notna() & (users == users.round()) & (movies == movies.round())
    unreadable = max(lines - len(frame), 0) + int((~good).sum())
    empty = int((good & (tags == "")).sum())
    good &= tags != ""
    if unreadable:
        log.warning("%s: %d line(s) are not `user, movie, tag, time` with whole-number ids and are left out", what,
                    unreadable)
    if empty:
        log.warning("%s: %d tag(s) are empty once spaces are stripped and are left out", what, empty)
    kept = pd.DataFrame({"user": users[good].astype(np.int64), "movie": movies[good].astype(np.int64),
                         "tag": tags[good]}).drop_duplicates()
    if kept.empty:
        log.warning("%s has no tag that can be used", what)
        return None
    return Tags(kept["user"].to_numpy(np.int64), kept["movie"].to_numpy(np.int64), kept["tag"].to_numpy(object))


def normalise(tags: pd.Series) -> pd.Series:
    """Lower case, control characters as spaces, spaces stripped and collapsed, cut to :data:`MAX_TAG_CHARS`."""
    text = tags.astype(str).str.slice(0, 4 * MAX_TAG_CHARS)  # a megabyte-long tag costs no more than a short one
    text = text.str.lower().str.replace(r"[\s\x00-\x1f\x7f-\x9f]+", " ", regex=True).str.strip()
    return text.str.slice(0, MAX_TAG_CHARS).str.rstrip()


def release_tags(data: Dataset, asked: bool) -> Tags | None:
    """``data``'s tags, or None where it has none: with one note when ``asked`` (someone chose tags), else
    quietly (tags are used where there are some)."""
    path = tags_path(data.name)
    if path is None or not path.is_file():
        if asked:
            name = get_dataset_info(data.name).name
            where = "the release ships none"
            if name in SHIPS_TAGS and path is not None:
                where = (f"there is no {path.name} in {path.parent}; `movierec fetch {name} --force` unpacks it")
            log.warning("%s has no tags (%s); the model learns without them", data.name, where)
        return None
    return read_tags(path, data.name)


def movie_tags(data: Dataset, asked: bool = True) -> list[list[str]] | None:
    """Each of ``data``'s movies' (by movie index) tags: its :data:`TOP_TAGS` most-given tags among those given to
    at least :data:`MIN_TAG_MOVIES` movies by at least :data:`MIN_TAG_USERS` people; None when it has no tags."""
    found = release_tags(data, asked)
    if found is None:
        return None
    frame = pd.DataFrame({"user": found.user_ids, "movie": found.movie_ids, "tag": found.tags})
    index = pd.Index(data.item_ids)
    position = index.get_indexer(frame["movie"].to_numpy())
    unknown = position < 0
    if unknown.any():
        strangers = int((~frame["movie"][unknown].isin(data.movies.index)).sum())  # unrated ones: quietly
        if strangers:
            log.warning("%s: %d tag(s) name movies the release does not list and are left out", data.name, strangers)
    frame = frame[~unknown].assign(item=position[~unknown])
    codes, names = pd.factorize(frame["tag"], sort=True)
    frame = frame.assign(code=codes)
    movies_per_tag = frame.groupby("code")["item"].nunique()
    users_per_tag = frame.groupby("code")["user"].nunique()
    common = movies_per_tag.index[(movies_per_tag >= MIN_TAG_MOVIES) & (users_per_tag >= MIN_TAG_USERS)]
    counts = frame[frame["code"].isin(common)].groupby(["item", "code"]).size().rename("people").reset_index()
    counts = counts.sort_values(["item", "people", "code"], ascending=[True, False, True], kind="stable")
    counts = counts[counts.groupby("item").cumcount() < TOP_TAGS]
    log.info("%s: %d of %d distinct tags are given to at least %d movies by at least %d people; %d movies have one",
             data.name, len(common), len(names), MIN_TAG_MOVIES, MIN_TAG_USERS, counts["item"].nunique())
    rows: list[list[str]] = [[] for _ in range(data.n_items)]
    for item, code in zip(counts["item"].to_numpy(), counts["code"].to_numpy()):
        rows[item].append(str(names[code]))
    return rows
