"""Compiled CPU loops for ALS's conjugate-gradient half-step and mf's SGD epoch (numba, the ``fast`` extra).

Imported only through :func:`movierec.models.kernels.load`, never at the package's import: numba takes ~0.3 s
to import and compiled functions are cached on disk (``cache=True``) after their first call. Every loop works
in float32, as the torch path does, and computes the same algorithm: the same CG steps from the same start,
the same mini-batch steps in the same order; only the order of some float32 additions differs.
"""

from __future__ import annotations

import numba
import numpy as np

# Guards a division by a converged row's zero curvature or residual, as the torch path's clamp_min does.
_FLOOR = np.float32(1e-30)
# float32 additions may be reordered, so sums vectorise: about 2.5x faster, and within float32 rounding of the
# torch path (which reorders them too). No flag that assumes finite numbers or changes a division.
_FAST = {"reassoc", "contract", "nsz"}


@numba.njit(cache=True, fastmath=_FAST, nogil=True, inline="always")
def _dot(a, b):
    """``a . b`` in float32, vectorised (the additions may be reordered)."""
    acc = np.float32(0.0)
    for f in range(a.shape[0]):
        acc += a[f] * b[f]
    return acc


@numba.njit(cache=True, fastmath=_FAST, nogil=True)
def _cg_row(  # noqa: PLR0913 (one row's solve: the arrays it reads and its scratch)
    indices, weight, confidence, start, stop, other, shared, tau, x, cg_steps, res, p, ap,
):
    """``cg_steps`` CG steps on one row's system from ``x`` (d,), in place; ``res`` ends as the residual."""
    d = x.shape[0]
    # residual = rhs - A x = Y_r^T (lam c - lam (c - 1) y.x) - lam Y^T Y x - tau_r x
    for f in range(d):
        res[f] = -_dot(shared[f], x) - tau * x[f]
    for j in range(start, stop):
        y = other[indices[j]]
        coef = confidence[j] - weight[j] * _dot(y, x)
        for f in range(d):
            res[f] += coef * y[f]
    rs = _dot(res, res)
    p[:] = res
    for _ in range(cg_steps):
        # A p = lam Y^T Y p + Y_r^T (lam (c - 1) y.p) + tau_r p
        for f in range(d):
            ap[f] = _dot(shared[f], p) + tau * p[f]
        for j in range(start, stop):
            y = other[indices[j]]
            coef = weight[j] * _dot(y, p)
            for f in range(d):
                ap[f] += coef * y[f]
        step = rs / max(_dot(p, ap), _FLOOR)
        for f in range(d):
            x[f] += step * p[f]
            res[f] -= step * ap[f]
        rs_new = _dot(res, res)
        ratio = rs_new / max(rs, _FLOOR)
        for f in range(d):
            p[f] = p[f] * ratio + res[f]
        rs = rs_new


@numba.njit(cache=True, fastmath=_FAST, nogil=True)
def _error_share(other, indices, confidence, start, stop, x, res, tau):  # noqa: PLR0913
    """One row's ``x.rhs + x.residual + tau_r |x|^2`` in float64, ``x.rhs = sum lam c y.x`` over its rated
    columns with ``y.x`` in float32, as the torch path has it."""
    total = 0.0
    for j in range(start, stop):
        total += np.float64(_dot(other[indices[j]], x)) * np.float64(confidence[j])
    for f in range(x.shape[0]):
        total += np.float64(x[f]) * np.float64(res[f]) + np.float64(tau) * np.float64(x[f]) ** 2
    return total


def cg_rows(  # noqa: PLR0913 (one compiled call: the arrays it reads)
    indptr, indices, weight, confidence, other, shared, penalty, factors, first, last, cg_steps, with_error,
):
    """``cg_steps`` conjugate-gradient steps for rows ``first..last`` of ``factors`` (R, d), in place, on
    ``(lam Y^T Y + lam Y_r^T (C_r - I) Y_r + tau_r I) x = lam Y_r^T c_r`` from the row's current vector.

    ``indptr`` (R + 1,) and ``indices`` (nnz,) are the ratings (CSR), ``weight`` and ``confidence`` (nnz,)
    ``lam (c - 1)`` and ``lam c``, ``other`` (C, d) the other side's vectors ``Y``, ``shared`` (d, d)
    ``lam Y^T Y``, ``penalty`` (R,) each row's ``tau_r``. Returns (last - first,) float64: each row's
    ``x.rhs + x.residual + tau_r |x|^2`` (0 unless ``with_error``), the share of the weighted squared error
    that the torch path subtracts.

    The rows are cut into 4 runs per thread of about equal work (ratings plus rows), one thread each at a
    time: ratings per row follow a power law, and equal numbers of rows would leave a thread idle."""
    parts = max(1, min(last - first, 4 * numba.get_num_threads()))
    return _cg_rows(indptr, indices, weight, confidence, other, shared, penalty, factors, first, last, cg_steps,
                    with_error, parts)


@numba.njit(parallel=True, cache=True, fastmath=_FAST, nogil=True)
def _cg_rows(  # noqa: PLR0913
    indptr, indices, weight, confidence, other, shared, penalty, factors, first, last, cg_steps, with_error, parts,
):
    """:func:`cg_rows` over ``parts`` runs of rows."""
    d = factors.shape[1]
    n = last - first
    out = np.zeros(n, np.float64)
    bounds = np.empty(parts + 1, np.int64)
    bounds[0], bounds[parts] = first, last
    base, work = indptr[first], indptr[last] - indptr[first] + n  # a row's work: its ratings, plus one
    for k in range(1, parts):
        target = work * k // parts
        lo, hi = bounds[k - 1], last  # the first row r with (ratings before r) + (r - first) >= target
        while lo < hi:
            mid = (lo + hi) // 2
            if indptr[mid] - base + mid - first < target:
                lo = mid + 1
            else:
                hi = mid
        bounds[k] = lo
    for k in numba.prange(parts):
        x = np.empty(d, np.float32)
        res = np.empty(d, np.float32)
        p = np.empty(d, np.float32)
        ap = np.empty(d, np.float32)
        for r in range(bounds[k], bounds[k + 1]):
            start, stop = indptr[r], indptr[r + 1]
            x[:] = factors[r]
            _cg_row(indices, weight, confidence, start, stop, other, shared, penalty[r], x, cg_steps, res, p, ap)
            factors[r] = x
            if with_error:
                out[r - first] = _error_share(other, indices, confidence, start, stop, x, res, penalty[r])
    return out


@numba.njit(cache=True, fastmath=_FAST, nogil=True)
def sgd_batches(  # noqa: PLR0913 (one compiled call: the arrays it reads)
    factors, biases, rows, centered, scale, bounds, order, reg, step, sums,
):
    """mf's SGD steps for the batches ``order`` (indices into ``bounds``), in that order, in place.

    ``factors`` (U + I, d) and ``biases`` (U + I,) are the users' then the movies' parameters; batch ``k`` holds
    ratings ``bounds[k]..bounds[k + 1]`` of ``centered`` (nnz,) (stars minus the mean) and, at twice those
    positions, its users then its movies in ``rows`` and their step scales in ``scale`` (2 nnz,). As the torch
    path does, every rating's error and step is computed from the parameters before the batch, and a row
    rated several times in the batch takes the sum of its steps (added users first, in rating order, then
    movies). ``step`` is (2 b_max, d) scratch; ``sums`` (3,) float64 gains the squared errors, the squared
    factors and the squared biases the batches read."""
    d = factors.shape[1]
    for k in order:
        lo, hi = bounds[k], bounds[k + 1]
        b = hi - lo
        base = 2 * lo
        squared = 0.0
        pen_f = 0.0
        pen_b = 0.0
        for j in range(b):
            u = rows[base + j]
            i = rows[base + b + j]
            dot = _dot(factors[u], factors[i])
            bu, bi = biases[u], biases[i]
            err = centered[lo + j] - dot - bu - bi
            squared += np.float64(err) * np.float64(err)
            su, si = scale[base + j], scale[base + b + j]
            own_u, own_i = su * -reg, si * -reg
            cross_u, cross_i = su * err, si * err
            for f in range(d):
                pu, qi = factors[u, f], factors[i, f]
                pen_f += np.float64(pu) * np.float64(pu) + np.float64(qi) * np.float64(qi)
                step[j, f] = pu * own_u + qi * cross_u
                step[b + j, f] = qi * own_i + pu * cross_i
            pen_b += np.float64(bu) * np.float64(bu) + np.float64(bi) * np.float64(bi)
            # The biases' steps, kept until the batch's reads are done: in the scratch's last column pair.
            step[j, d] = cross_u + own_u * bu
            step[b + j, d] = cross_i + own_i * bi
        for j in range(2 * b):
            row = rows[base + j]
            for f in range(d):
                factors[row, f] += step[j, f]
            biases[row] += step[j, d]
        sums[0] += squared
        sums[1] += pen_f
        sums[2] += pen_b
