"""The compiled CPU loops (the ``fast`` extra, numba) give the torch path's numbers for the same seed: ALS's
conjugate-gradient half-steps and mf's SGD epochs, factors to float32 rounding and the same top-10 lists."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch
from synthetic import STARS, close, low_rank

from movierec.data.ratings import Ratings
from movierec.device import make_generator
from movierec.models import kernels
from movierec.models.als import ImplicitALS, ImplicitALSConfig
from movierec.models.factors import FactorModel
from movierec.models.mf import MatrixFactorization, MFConfig

pytestmark = pytest.mark.skipif(importlib.util.find_spec("numba") is None,
                                reason="numba is not installed (pip install movierec[fast])")


def fit(cls: type[FactorModel], config, data: Ratings, epochs: int, compiled: bool,
        monkeypatch: pytest.MonkeyPatch) -> tuple[FactorModel, list[dict[str, float]]]:
    monkeypatch.setenv("MOVIEREC_KERNELS", "1" if compiled else "0")
    torch.manual_seed(0)
    model = cls(config, data.n_users, data.n_items, STARS)
    trainer = model.trainer(data.matrix(), make_generator(torch.device("cpu"), 0))
    if cls is MatrixFactorization:
        assert (trainer.compiled is not None) == compiled
    stats = [trainer.train_epoch() for _ in range(epochs)]
    trainer.finalize()
    return model, stats


def top10(model: FactorModel, data: Ratings) -> list[list[int]]:
    scores = (model.user_factors @ model.item_factors.T + model.item_bias).numpy()  # (U, I) ranks within a user
    scores[data.users, data.items] = -np.inf  # what a user rated is not recommended
    return np.argsort(-scores, axis=1, kind="stable")[:, :10].tolist()


def assert_same_model(a: FactorModel, b: FactorModel, data: Ratings, stats_a: list, stats_b: list) -> None:
    for x, y in zip(a.parameters(), b.parameters()):
        close(x, y, rtol=1e-4, atol=1e-5)
    for s, t in zip(stats_a, stats_b):
        assert s.keys() == t.keys()
        for key in s:
            assert s[key] == pytest.approx(t[key], rel=1e-5), key
    assert top10(a, data) == top10(b, data)


def test_loader_runs_the_compiled_loops_on_the_cpu_unless_turned_off(monkeypatch):
    monkeypatch.delenv("MOVIEREC_KERNELS", raising=False)
    assert kernels.load(torch.device("cpu")) is not None
    assert kernels.load(torch.device("cuda")) is None
    monkeypatch.setenv("MOVIEREC_KERNELS", "0")
    assert kernels.load(torch.device("cpu")) is None
    monkeypatch.setenv("MOVIEREC_KERNELS", "1")
    assert kernels.load(torch.device("cpu")) is not None


@pytest.mark.parametrize("threads", [1, 2])
def test_the_compiled_loops_use_as_many_threads_as_torch_and_leave_torch_its_own(monkeypatch, threads):
    import numba

    before = torch.get_num_threads()
    monkeypatch.setenv("MOVIEREC_KERNELS", "1")
    try:
        torch.set_num_threads(threads)
        loops = kernels.load(torch.device("cpu"))
        data = low_rank(30, 20, density=0.4)
        model = ImplicitALS(ImplicitALSConfig(factors=4), data.n_users, data.n_items, STARS)
        model.trainer(data.matrix(), make_generator(torch.device("cpu"), 0)).train_epoch()
        assert loops is not None and torch.get_num_threads() == threads  # starting numba's threads changed it
        # The loops run in a worker thread (see run), where numba's setting starts from all the cores.
        assert kernels.run(numba.get_num_threads) == min(threads, numba.config.NUMBA_NUM_THREADS)
    finally:
        torch.set_num_threads(before)


def test_a_compiled_call_returns_its_value_and_raises_its_error():
    assert kernels.run(lambda a, b: a + b, 2, 3) == 5

    def broken() -> None:
        raise ValueError("bad input")

    with pytest.raises(ValueError, match="bad input"):
        kernels.run(broken)


def test_ctrl_c_lands_while_a_compiled_call_still_runs():
    """The first call compiles for seconds and a call holds no bytecode boundary: the signal must not wait."""
    import _thread
    import threading
    import time

    release = threading.Event()
    timer = threading.Timer(0.2, _thread.interrupt_main)
    timer.start()
    start = time.monotonic()
    try:
        with pytest.raises(KeyboardInterrupt):
            kernels.run(release.wait, 30)
        assert time.monotonic() - start < 1.0
    finally:
        release.set()
        timer.cancel()


@pytest.mark.parametrize("change", [
    {},  # the defaults: stars confidence, one penalty
    {"confidence": "binary", "reg_exponent": 0.5, "alpha": 3.0, "cg_steps": 2},
    {"chunk_size": 37},  # many calls of the loop per half-step, rows that alone exceed a call's ratings
])
def test_implicit_als_conjugate_gradient_matches_the_torch_path(monkeypatch, change):
    data = low_rank(70, 45, density=0.3)
    cfg = ImplicitALSConfig(factors=6, tau=3.0).replace(**change)
    compiled, stats_c = fit(ImplicitALS, cfg, data, 4, True, monkeypatch)
    plain, stats_p = fit(ImplicitALS, cfg, data, 4, False, monkeypatch)
    assert_same_model(compiled, plain, data, stats_c, stats_p)


def test_implicit_als_rows_without_ratings_stay_at_zero(monkeypatch):
    data = low_rank(30, 20, density=0.4)
    keep = data.items != 0  # movie 0 is rated by no one
    empty = Ratings(data.users[keep], data.items[keep], data.ratings[keep], data.timestamps[keep], 30, 20)
    model, _ = fit(ImplicitALS, ImplicitALSConfig(factors=4), empty, 2, True, monkeypatch)
    assert torch.count_nonzero(model.item_factors[0]) == 0


def test_implicit_als_progress_covers_every_row_once_per_iteration(monkeypatch):
    data = low_rank(40, 25, density=0.4)
    monkeypatch.setenv("MOVIEREC_KERNELS", "1")
    model = ImplicitALS(ImplicitALSConfig(factors=4, chunk_size=30), data.n_users, data.n_items, STARS)
    trainer = model.trainer(data.matrix(), make_generator(torch.device("cpu"), 0))
    calls: list[tuple[int, int]] = []
    trainer.on_advance = lambda amount, total: calls.append((amount, total))
    trainer.train_epoch()
    assert sum(a for a, _ in calls) == 40 + 25 and {t for _, t in calls} == {65}
    assert len(calls) > 2  # several calls of the loop, each a chance for Ctrl-C


@pytest.mark.parametrize("change", [
    {},  # the defaults: batches of 4,096 (one batch here)
    {"batch_size": 16, "lr": 0.2, "reg": 0.1},  # many batches, rows repeated in a batch past the step limit
])
def test_mf_sgd_epoch_matches_the_torch_path(monkeypatch, change):
    data = low_rank(50, 35, density=0.5)
    cfg = MFConfig(factors=5).replace(**change)
    compiled, stats_c = fit(MatrixFactorization, cfg, data, 3, True, monkeypatch)
    plain, stats_p = fit(MatrixFactorization, cfg, data, 3, False, monkeypatch)
    assert_same_model(compiled, plain, data, stats_c, stats_p)


def test_mf_adam_keeps_the_torch_path(monkeypatch):
    data = low_rank(20, 15)
    monkeypatch.setenv("MOVIEREC_KERNELS", "1")
    model = MatrixFactorization(MFConfig(optimizer="adam"), data.n_users, data.n_items, STARS)
    assert model.trainer(data.matrix(), make_generator(torch.device("cpu"), 0)).compiled is None
