"""Top-N lists for every user (or a list of users) of a saved model, written to one CSV or Parquet file.

Users are scored a batch at a time (:func:`movierec.batch.lists`, as many users as fit
:data:`movierec.batch.SCORE_BLOCK` scores by default) and their lists ranked by the rules every list follows
(:func:`movierec.recommend.rank_rows`), so an exported list is the one `movierec recommend --user` shows, and
memory stays one batch x movies block whatever the number of users. Rows: ``user_id``, ``rank`` (1 = best),
``movie_id``, ``title``, ``score`` (the number `recommend` ranks by and shows: for rating and like models
P(picked and liked), see :mod:`movierec.models.picks`).

The file is written to a temporary file in the same folder and renamed over ``path`` only once complete, so an
interrupted or failed export leaves whatever was at ``path`` before, and no partial file.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np

from movierec.errors import MovierecError
from movierec.files import atomic_file

FORMATS = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet"}
"""Output formats by file suffix."""
COLUMNS = ("user_id", "rank", "movie_id", "title", "score")
ROW_GROUP_ROWS = 1 << 16
"""Parquet rows per row group: batches are gathered up to this many rows (a row group per batch of a few dozen
users, as at ML-25M, would make a file slow to read)."""


def export_format(path: str | os.PathLike[str], format: str | None = None) -> str:
    """``format`` checked ("csv" or "parquet"), or when None the one ``path``'s suffix names."""
    if format is not None:
        key = format.strip().lower()
        if key not in set(FORMATS.values()):
            raise MovierecError(f"Unknown export format {format!r}; choose csv or parquet.")
        return key
    suffix = Path(path).suffix.lower()
    if suffix not in FORMATS:
        raise MovierecError(f"Cannot tell the format of {path} from its name; end it in .csv or .parquet, or give "
                            "--format csv or parquet.")
    return FORMATS[suffix]


def export_users(served: Any, users: Iterable[int] | None = None) -> np.ndarray:
    """The user indices an export covers, in order: every user of ``served``, or the MovieLens user ids
    ``users`` in the order given (a repeated id once). An unknown id is one sentence."""
    if users is None:
        return np.arange(served.meta.n_users, dtype=np.int64)
    indices = [served.user_index(int(u)) for u in users]
    if not indices:
        raise MovierecError("No users to export: the list of users is empty.")
    return np.array(list(dict.fromkeys(indices)), dtype=np.int64)


def export_recommendations(
    served: Any,
    path: str | os.PathLike[str],
    *,
    users: Iterable[int] | None = None,
    n: int = 10,
    format: str | None = None,
    include_seen: bool = False,
    batch_users: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> int:
    """Write the top-``n`` lists of ``served``'s users (a :class:`~movierec.serving.Served`) to ``path`` and
    return the number of rows written.

    ``users``: MovieLens user ids (default: every user). ``format``: "csv" or "parquet" (default: from the
    suffix). ``include_seen`` keeps movies the user rated in training. ``batch_users`` users are scored at a
    time (default: as many as fit :data:`movierec.batch.SCORE_BLOCK` scores); ``progress(done, total)``
    hears of the users done after every batch. See the module docstring.
    """
    from movierec import batch

    if n < 1:
        raise MovierecError(f"The number of movies per user must be at least 1, not {n}.")
    kind = export_format(path, format)
    index = export_users(served, users)
    catalogue = served.catalogue
    batch.batch_size_for(catalogue.n_items, batch_users)  # a wrong batch size is refused before any file is opened
    writer = _CsvWriter if kind == "csv" else _parquet_writer()
    titles = np.array(catalogue.titles(), dtype=object)
    user_ids, item_ids = np.asarray(served.user_ids, dtype=np.int64), np.asarray(catalogue.item_ids, dtype=np.int64)

    def batches() -> Iterable[dict[str, np.ndarray]]:
        for lists in batch.lists(served, index, n, include_seen=include_seen, batch_users=batch_users,
                                 progress=progress):
            listed = lists.items >= 0  # (B, n)
            rows, ranks = np.nonzero(listed)
            items = lists.items[listed]
            yield {
                "user_id": user_ids[lists.users[rows]],
                "rank": (ranks + 1).astype(np.int32),
                "movie_id": item_ids[items],
                "title": titles[items],
                "score": lists.scores[listed],
            }

    return _write_atomically(Path(path), writer, batches())


def _write_atomically(path: Path, writer: type, batches: Iterable[dict[str, np.ndarray]]) -> int:
    """Write ``batches`` through ``writer`` into a temporary file beside ``path``, then rename it over ``path``;
    whatever goes wrong (Ctrl-C included), the temporary file is removed and ``path`` is as it was."""
    if path.is_dir():
        raise MovierecError(f"Cannot write the export to {path}: it is a folder.")
    if not path.parent.is_dir():
        raise MovierecError(f"Cannot write the export to {path}: the folder {path.parent} does not exist.")
    rows = 0
    with atomic_file(path, f"Cannot write the export to {path}", suffix=".part") as f:
        out = writer(f)
        try:
            for columns in batches:
                out.write(columns)
                rows += len(columns["user_id"])
        except BaseException:
            out.abort()  # the writer lets go of the file before it is removed
            raise
        out.close()
    return rows


class _CsvWriter:
    """CSV with a header line, UTF-8, through the csv module (titles with commas or quotes are quoted)."""

    def __init__(self, f: Any):
        import csv
        import io

        self._text = io.TextIOWrapper(f, encoding="utf-8", newline="", write_through=True)
        self._csv = csv.writer(self._text, lineterminator="\n")
        self._csv.writerow(COLUMNS)

    def write(self, columns: dict[str, np.ndarray]) -> None:
        # float32 as text: the shortest digits that read back as the same float32 (4.9453125, not 4.945312500001).
        scores = columns["score"].astype(str)
        self._csv.writerows(zip(columns["user_id"].tolist(), columns["rank"].tolist(), columns["movie_id"].tolist(),
                                columns["title"].tolist(), scores.tolist()))

    def close(self) -> None:
        self._text.flush()
        self._text.detach()  # the file itself is closed by its owner

    abort = close


def _parquet_writer() -> type:
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise MovierecError('movierec export needs pyarrow to write Parquet; install it with '
                            'pip install "movierec[parquet]".') from None

    schema = pa.schema([("user_id", pa.int64()), ("rank", pa.int32()), ("movie_id", pa.int64()),
                        ("title", pa.string()), ("score", pa.float32())])

    class ParquetWriter:
        """Parquet through pyarrow, a row group per :data:`ROW_GROUP_ROWS` rows (the last one smaller)."""

        def __init__(self, f: Any):
            self._writer = pq.ParquetWriter(f, schema)
            self._pending: list[Any] = []
            self._rows = 0

        def write(self, columns: dict[str, np.ndarray]) -> None:
            self._pending.append(pa.table({name: columns[name] for name in COLUMNS}, schema=schema))
            self._rows += len(columns["user_id"])
            if self._rows >= ROW_GROUP_ROWS:
                self._flush()

        def _flush(self) -> None:
            if self._pending:
                table = pa.concat_tables(self._pending)
                self._writer.write_table(table, row_group_size=max(1, table.num_rows))
            self._pending, self._rows = [], 0

        def close(self) -> None:
            self._flush()
            self._writer.close()

        def abort(self) -> None:
            self._pending = []
            with contextlib.suppress(Exception):  # a file that will be removed: only let go of it
                self._writer.close()

    return ParquetWriter
