"""The sparse rating matrix: CSR layout and its transpose (movies x users), which item-based models train on."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from movierec.data import ratings as ratings_module
from movierec.data.ratings import RatingMatrix


def _dense(m: RatingMatrix) -> np.ndarray:
    out = np.zeros((m.n_rows, m.n_cols), dtype=np.float32)
    out[m.row_ids().numpy(), m.indices.numpy()] = m.values.numpy()
    return out


def test_transpose_of_a_small_matrix_by_hand():
    # users x movies: user 0 rated movies 1 (4 stars) and 2 (3); user 1 movie 0 (5); user 2 movies 0 (1) and 2 (2).
    m = RatingMatrix.from_coo(np.array([2, 0, 1, 0, 2]), np.array([2, 1, 0, 2, 0]),
                              np.array([2.0, 4.0, 5.0, 3.0, 1.0]), 3, 3)
    t = m.transpose()
    assert (t.n_rows, t.n_cols) == (3, 3)
    assert t.indptr.tolist() == [0, 2, 3, 5]  # movie 0: users 1 and 2; movie 1: user 0; movie 2: users 0 and 2
    assert t.indices.tolist() == [1, 2, 0, 0, 2]
    assert t.values.tolist() == [5.0, 1.0, 4.0, 3.0, 2.0]
    assert t.indptr.dtype == t.indices.dtype == torch.int64 and t.values.dtype == torch.float32


@pytest.mark.parametrize("n_cols", [37, 70_000])  # 16-bit column keys and wider ones take different sorts
def test_transpose_in_chunks_is_the_exact_transpose(monkeypatch, n_cols):
    # Chunks far smaller than the data, so runs of one column span many chunks.
    monkeypatch.setattr(ratings_module, "_CHUNK", 7)
    monkeypatch.setattr(ratings_module, "_ROW_CHUNK", 3)
    rng = np.random.default_rng(5)
    n_rows = 41
    keys = np.unique(rng.integers(0, n_rows, 600) * n_cols + rng.zipf(1.5, 600) % n_cols)
    rows, cols = keys // n_cols, keys % n_cols
    values = rng.integers(1, 11, rows.shape[0]).astype(np.float32) / 2
    order = rng.permutation(rows.shape[0])  # from_coo sorts whatever order it is given
    m = RatingMatrix.from_coo(rows[order], cols[order], values[order], n_rows, n_cols)
    t = m.transpose()
    assert np.array_equal(_dense(t), _dense(m).T)
    # Within each movie, users in ascending order (CSR order, as from_coo builds it).
    expected = RatingMatrix.from_coo(cols, rows, values, n_cols, n_rows)
    assert torch.equal(t.indptr, expected.indptr)
    assert torch.equal(t.indices, expected.indices)
    assert torch.equal(t.values, expected.values)
    back = t.transpose()
    assert torch.equal(back.indptr, m.indptr) and torch.equal(back.indices, m.indices)
    assert torch.equal(back.values, m.values)


def test_transpose_keeps_empty_rows_and_columns():
    m = RatingMatrix.from_coo(np.array([1]), np.array([3]), np.array([4.0]), 4, 5)
    t = m.transpose()
    assert t.indptr.tolist() == [0, 0, 0, 0, 1, 1]
    assert t.indices.tolist() == [1] and t.n_cols == 4
    empty = RatingMatrix.from_coo(np.array([], dtype=np.int64), np.array([], dtype=np.int64), np.array([]), 2, 3)
    assert empty.transpose().indptr.tolist() == [0, 0, 0, 0] and empty.transpose().nnz == 0
