"""Which dataset a command uses when the user names none: the one they fetched (or imported).

The only fetched release, or with several the most recently fetched one, by the fetch time that
``movierec fetch`` records in the release's folder (``download.json``; ``import.json`` for a dataset made
by ``movierec import``). Nothing fetched is one sentence
saying how to fetch one.
"""

from __future__ import annotations

from dataclasses import dataclass

from movierec.errors import MovierecError


@dataclass(frozen=True)
class DefaultDataset:
    name: str
    why: str
    """Why this one, for the output: "the only fetched dataset" or "the most recently fetched dataset"."""


def default_dataset() -> DefaultDataset:
    """The dataset commands use without ``--dataset``; raises :class:`MovierecError` when none is fetched."""
    from movierec.data.catalog import imported_names
    from movierec.data.download import is_cached, read_record, record_path
    from movierec.data.registry import DATASETS

    fetched = []
    for name in (*DATASETS, *imported_names()):
        if not is_cached(name):
            continue
        record = read_record(name) or {}
        try:  # the record's date has whole seconds; the file's time orders two fetches in one second
            mtime = record_path(name).stat().st_mtime_ns
        except OSError:
            mtime = 0
        fetched.append((str(record.get("date", "")), mtime, name))
    if not fetched:
        raise MovierecError("No dataset is fetched yet; run `movierec fetch ml-100k` first.")
    if len(fetched) == 1:
        return DefaultDataset(fetched[0][2], "the only fetched dataset")
    return DefaultDataset(max(fetched)[2], "the most recently fetched dataset")
