"""Every MovieLens release movierec knows: where it lives, how big it is, how to check and parse it."""

from __future__ import annotations

from dataclasses import dataclass

BASE_URL = "https://files.grouplens.org/datasets/movielens"


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    """Name users type, e.g. ``ml-1m``; also the zip's file name without ``.zip``."""
    folder: str
    """Top-level folder inside the zip (``ml-10m`` unpacks to ``ml-10M100K``)."""
    layout: str
    """``100k`` (u.data / u.item), ``dat`` (``::``-separated .dat files) or ``csv`` (ratings.csv)."""
    description: str
    size: int | None = None
    """Size of the official zip in bytes, where fixed."""
    md5: str | None = None
    sha256: str | None = None
    changes: bool = False
    """Re-published over time (``ml-latest*``): checked against ``NAME.zip.md5`` published beside it."""
    scale: tuple[float, ...] | None = None
    """The star values of an imported dataset (:mod:`movierec.data.importing`); None for a release."""

    @property
    def imported(self) -> bool:
        """A user's own ratings file imported with `movierec import`, not a GroupLens release."""
        return self.layout == IMPORTED_LAYOUT

    @property
    def members(self) -> tuple[str, ...]:
        """The files movierec reads, relative to :attr:`folder`: the only ones unpacked from the archive."""
        return LAYOUT_FILES[self.layout]

    @property
    def filename(self) -> str:
        return f"{self.name}.zip"

    def url(self, base: str = BASE_URL) -> str:
        return f"{base.rstrip('/')}/{self.filename}"

    def md5_url(self, base: str = BASE_URL) -> str:
        return f"{self.url(base)}.md5"

    @property
    def has_fixed_checksum(self) -> bool:
        return bool(self.md5 or self.sha256)


IMPORTED_LAYOUT = "imported"
"""The layout of a dataset made by `movierec import`: only its parsed cache is on disk."""

OFFICIAL_SPLITS: dict[str, tuple[str, ...]] = {
    "ml-100k": ("u1", "u2", "u3", "u4", "u5", "ua", "ub"),
}

NO_TEST_SPLIT = "none"
"""The split that holds nothing out: every rating trains the model (a final model, with no test metrics).
Here rather than in :mod:`movierec.data.split` so that reading a checkpoint's header needs no pandas."""

# Links and the tag genome (ml-25m's is 400 MB unpacked) are not read, so they stay in the archive. The tags files
# are unpacked where a release has them (ml-1m has no tags.dat; movierec.data.tags).
LAYOUT_FILES: dict[str, tuple[str, ...]] = {
    "100k": ("u.data", "u.item", "u.genre", "u.user", "u.info", "u.occupation")
    + tuple(f"{split}.{part}" for split in OFFICIAL_SPLITS["ml-100k"] for part in ("base", "test")),
    "dat": ("ratings.dat", "movies.dat", "users.dat", "tags.dat"),
    "csv": ("ratings.csv", "movies.csv", "tags.csv"),
    IMPORTED_LAYOUT: (),
}

DATASETS: dict[str, DatasetInfo] = {
    d.name: d
    for d in (
        DatasetInfo(
            "ml-100k", "ml-100k", "100k", "100,000 ratings from 943 users on 1,682 movies (1998)",
            size=4_924_029, md5="0e33842e24a9c977be4e0107933c0723",
            sha256="50d2a982c66986937beb9ffb3aa76efe955bf3d5c6b761f4e3a7cd717c6a3229",
        ),
        DatasetInfo(
            "ml-1m", "ml-1m", "dat", "1 million ratings from 6,040 users on 3,706 movies (2003)",
            size=5_917_549, md5="c4d9eecfca2ab87c1945afe126590906",
            sha256="a6898adb50b9ca05aa231689da44c217cb524e7ebd39d264c56e2832f2c54e20",
        ),
        DatasetInfo(
            "ml-10m", "ml-10M100K", "dat", "10 million ratings from 69,878 users on 10,677 movies (2009)",
            md5="ce571fd55effeba0271552578f2648bd",
        ),
        DatasetInfo(
            "ml-20m", "ml-20m", "csv", "20 million ratings from 138,493 users on 26,744 movies (2015)",
            size=198_702_078, md5="cd245b17a1ae2cc31bb14903e1204af3",
            sha256="96f243c338a8665f6bcc89c53edf6ee39162a846940de6b7c8c48aeada765ff3",
        ),
        DatasetInfo(
            "ml-25m", "ml-25m", "csv", "25 million ratings from 162,541 users on 59,047 movies (2019)",
            size=261_978_986, md5="6b51fb2759a8657d3bfcbfc42b592ada",
            sha256="8b21cfb7eb1706b4ec0aac894368d90acf26ebdfb6aced3ebd4ad5bd1eb9c6aa",
        ),
        DatasetInfo(
            "ml-32m", "ml-32m", "csv", "32 million ratings from 200,948 users on 84,432 movies (2023)",
            md5="d472be332d4daa821edc399621853b57",
        ),
        DatasetInfo(
            "ml-latest-small", "ml-latest-small", "csv",
            "about 100,000 ratings from 600 users, re-published by GroupLens over time", changes=True,
        ),
        DatasetInfo(
            "ml-latest", "ml-latest", "csv",
            "the full current data set, re-published by GroupLens over time", changes=True,
        ),
    )
}
