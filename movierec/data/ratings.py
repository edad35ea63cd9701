"""Ratings in movierec's index space, and the sparse matrices models read them through.

Inside the library users and movies are contiguous indices ``0..n-1``; raw MovieLens ids live only in
:class:`~movierec.data.dataset.Dataset` (``user_ids`` / ``item_ids``) and in CLI output.

Models never see a dense users x movies matrix: :meth:`RatingMatrix.dense_rows` builds just the rows
of one mini-batch, on the model's device, so ML-25M (162k x 59k) trains in a few GB.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

# Entries / rows handled per step of the chunked sorts: each step takes well under 0.1 s, so Ctrl-C is never kept
# waiting for one large numpy call.
_CHUNK = 1 << 20
_ROW_CHUNK = 1 << 14


def _counting_sort_positions(keys: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """Where each entry goes when ``keys`` (n,) are sorted stably: ``starts[k]`` is where key ``k``'s run begins
    (the exclusive cumulative count of the keys). Works a chunk of entries at a time."""
    dest = np.empty(keys.shape[0], dtype=np.int64)
    filled = np.asarray(starts, dtype=np.int64).copy()  # (K,) the next free slot of each key
    narrow = starts.shape[0] <= 1 << 16  # 16-bit keys sort by radix, in linear time
    for lo in range(0, keys.shape[0], _CHUNK):
        chunk = keys[lo:lo + _CHUNK]
        order = np.argsort(chunk.astype(np.uint16) if narrow else chunk, kind="stable")
        ranked = chunk[order]  # (c,) sorted keys
        first = np.flatnonzero(np.r_[True, ranked[1:] != ranked[:-1]])  # start of each key's run in the chunk
        run = np.repeat(first, np.diff(np.r_[first, ranked.shape[0]]))  # (c,) start of the entry's run
        dest[lo + order] = filled[ranked] + (np.arange(ranked.shape[0]) - run)
        filled += np.bincount(chunk, minlength=filled.shape[0])
    return dest


@dataclass(frozen=True)
class Ratings:
    """A table of ratings: parallel arrays, one entry per rating."""

    users: np.ndarray  # (N,) int32 user index
    items: np.ndarray  # (N,) int32 movie index
    ratings: np.ndarray  # (N,) float32 stars
    timestamps: np.ndarray  # (N,) int64 seconds since the epoch
    n_users: int
    n_items: int

    def __len__(self) -> int:
        return int(self.users.shape[0])

    def take(self, index: np.ndarray) -> Ratings:
        """The ratings at ``index`` (a boolean mask or integer positions), same index space."""
        return Ratings(
            self.users[index], self.items[index], self.ratings[index], self.timestamps[index],
            self.n_users, self.n_items,
        )

    def matrix(self, device: torch.device | str = "cpu") -> RatingMatrix:
        """The users x movies matrix of these ratings, compressed by user rows."""
        return RatingMatrix.from_coo(self.users, self.items, self.ratings, self.n_users, self.n_items, device)


class RatingMatrix:
    """A sparse (rows x cols) matrix in CSR form, as torch tensors on one device.

    Rows are users and columns movies (or the other way round after :meth:`transpose`).
    """

    def __init__(self, indptr: torch.Tensor, indices: torch.Tensor, values: torch.Tensor, n_cols: int):
        self.indptr = indptr  # (R+1,) int64
        self.indices = indices  # (nnz,) int64 column of each entry
        self.values = values  # (nnz,) float32
        self.n_rows = int(indptr.shape[0] - 1)
        self.n_cols = int(n_cols)
        self._transposed: RatingMatrix | None = None

    @classmethod
    def from_coo(
        cls, rows: np.ndarray, cols: np.ndarray, values: np.ndarray, n_rows: int, n_cols: int,
        device: torch.device | str = "cpu",
    ) -> RatingMatrix:
        rows = np.asarray(rows, dtype=np.int64)
        cols = np.asarray(cols, dtype=np.int64)
        # One stable sort of a combined int64 key (rows x n_cols + col) gives lexsort's order several times
        # faster; n_rows x n_cols stays far below 2**63 for any MovieLens release.
        order = np.argsort(rows * np.int64(n_cols) + cols, kind="stable")
        counts = np.bincount(rows, minlength=n_rows)
        indptr = np.zeros(n_rows + 1, dtype=np.int64)
        np.cumsum(counts, out=indptr[1:])
        return cls(
            torch.from_numpy(indptr).to(device),
            torch.from_numpy(cols[order]).to(device),
            torch.from_numpy(np.asarray(values, dtype=np.float32)[order]).to(device),
            n_cols,
        )

    @property
    def device(self) -> torch.device:
        return self.values.device

    @property
    def nnz(self) -> int:
        return int(self.values.shape[0])

    def to(self, device: torch.device | str) -> RatingMatrix:
        return RatingMatrix(self.indptr.to(device), self.indices.to(device), self.values.to(device), self.n_cols)

    def row_ids(self) -> torch.Tensor:
        """The row of every stored entry, (nnz,) int64: the COO view."""
        counts = self.indptr[1:] - self.indptr[:-1]
        return torch.repeat_interleave(torch.arange(self.n_rows, device=self.device), counts)

    def row_counts(self) -> torch.Tensor:
        return self.indptr[1:] - self.indptr[:-1]

    def transposed(self) -> RatingMatrix:
        """:meth:`transpose`, made once and kept with the matrix: the models that read it by movie (the item RBM,
        I-AutoRec, ALS's movie half-steps) ask for it every epoch."""
        if self._transposed is None:
            self._transposed = self.transpose()
        return self._transposed

    def transpose(self) -> RatingMatrix:
        """The (cols x rows) matrix: movies x users from users x movies.

        A counting sort by column, a chunk of entries at a time: the entries are already in row order, so
        each column's entries only need to be written, in order, after those of the columns before it.
        O(nnz), and no single step long enough to keep Ctrl-C waiting (one argsort of 25M entries held the
        interpreter ~2 s on a busy machine)."""
        cols = self.indices.cpu().numpy()
        counts = np.bincount(cols, minlength=self.n_cols)
        indptr = np.zeros(self.n_cols + 1, dtype=np.int64)
        np.cumsum(counts, out=indptr[1:])
        dest = _counting_sort_positions(cols, indptr[:-1])  # (nnz,) where each entry goes
        rows = np.empty(self.nnz, dtype=np.int64)
        values = np.empty(self.nnz, dtype=np.float32)
        src_values = self.values.cpu().numpy()
        src_indptr = self.indptr.cpu().numpy()
        for start in range(0, self.n_rows, _ROW_CHUNK):  # chunked, so a signal is handled between chunks
            stop = min(start + _ROW_CHUNK, self.n_rows)
            lo, hi = src_indptr[start], src_indptr[stop]
            rows[dest[lo:hi]] = np.repeat(np.arange(start, stop, dtype=np.int64), np.diff(src_indptr[start:stop + 1]))
            values[dest[lo:hi]] = src_values[lo:hi]
        device = self.device
        return RatingMatrix(
            torch.from_numpy(indptr).to(device), torch.from_numpy(rows).to(device), torch.from_numpy(values).to(device),
            self.n_rows,
        )

    def entries(self, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The stored entries of ``rows``: (position in ``rows``, column, value), each (n,)."""
        rows = rows.to(self.device, torch.int64)
        starts = self.indptr[rows]
        lengths = self.indptr[rows + 1] - starts
        batch_pos = torch.repeat_interleave(torch.arange(rows.shape[0], device=self.device), lengths)
        first = torch.cumsum(lengths, 0) - lengths
        offset = torch.arange(batch_pos.shape[0], device=self.device) - first[batch_pos]
        flat = starts[batch_pos] + offset
        return batch_pos, self.indices[flat], self.values[flat]

    def dense_rows(self, rows: torch.Tensor, fill: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
        """Rows ``rows`` as a dense (B, n_cols) float tensor, and the (B, n_cols) mask of stored entries."""
        pos, cols, vals = self.entries(rows)
        dense = torch.full((rows.shape[0], self.n_cols), fill, dtype=torch.float32, device=self.device)
        mask = torch.zeros((rows.shape[0], self.n_cols), dtype=torch.bool, device=self.device)
        dense[pos, cols] = vals
        mask[pos, cols] = True
        return dense, mask
