"""The numpy L-BFGS that answers a new user of the item-based rating RBM without torch: torch.optim.LBFGS's
steps, so the same minimiser, and the right one."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from movierec.models.forward import _softmax_unit_objective
from movierec.models.lbfgs import minimize
from movierec.models.rbm_rating import _fit_softmax_unit


def test_a_quadratic_ends_at_its_minimiser():
    rng = np.random.default_rng(0)
    m = rng.normal(size=(30, 30))
    a, b = m @ m.T + 0.5 * np.eye(30), rng.normal(size=30)
    x = minimize(lambda x: (0.5 * x @ a @ x - b @ x, a @ x - b), np.zeros(30), max_iter=500, tolerance_grad=1e-10,
                 tolerance_change=1e-15)
    np.testing.assert_allclose(x, np.linalg.solve(a, b), rtol=1e-7, atol=1e-8)


@pytest.mark.parametrize(("hidden", "ratings", "l2", "seed"),
                         [(8, 5, 0.01, 0), (8, 1, 1.0, 1), (50, 20, 0.1, 2), (200, 3, 0.01, 3)])
def test_a_new_visible_unit_is_the_torch_fit(hidden, ratings, l2, seed):
    rng = np.random.default_rng(seed)
    k = 5
    design = np.concatenate([rng.random((ratings, hidden)), np.ones((ratings, 1))], 1).astype(np.float32)
    target = rng.integers(0, k, ratings)
    mean = rng.normal(0, 0.3, (hidden + 1, k)).astype(np.float32)
    std = (rng.random((hidden + 1, k)) + 0.05).astype(np.float32)
    want = _fit_softmax_unit(*(torch.from_numpy(a) for a in (design, target, mean, std)), l2).numpy()
    got = minimize(_softmax_unit_objective(design, target, mean, std, l2), np.zeros(mean.size), max_iter=200,
                   tolerance_grad=1e-6).reshape(mean.shape)
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-9)


def test_a_start_at_the_minimiser_stays_there():
    x = minimize(lambda x: (float((x - 2.0) @ (x - 2.0)), 2 * (x - 2.0)), np.full(4, 2.0))
    assert np.array_equal(x, np.full(4, 2.0))
