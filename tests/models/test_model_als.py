"""ALS: each half-step is the hand-computed ridge solution, the objective never rises, batching is exact; the same
for implicit mode, whose half-steps are Hu, Koren & Volinsky's closed form computed with the dense confidences."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch
from conftest import assert_one_line_error
from synthetic import STARS, close, low_rank

from movierec.data.ratings import Ratings
from movierec.device import make_generator
from movierec.errors import MovierecError
from movierec.models import als, model_class
from movierec.models.als import (
    ALSBase,
    ALSTrainer,
    ExplicitALS,
    ExplicitALSConfig,
    ImplicitALS,
    ImplicitALSConfig,
)


def model_for(config: ExplicitALSConfig | ImplicitALSConfig, n_users: int, n_items: int) -> ALSBase:
    cls = ImplicitALS if isinstance(config, ImplicitALSConfig) else ExplicitALS
    return cls(config, n_users, n_items, STARS)


def trained(config: ExplicitALSConfig | ImplicitALSConfig, data: Ratings, iters: int, seed: int = 0
            ) -> tuple[ALSTrainer, list]:
    """A model of ``config`` after ``iters`` iterations on ``data``: its trainer (which can go on) and the stats."""
    torch.manual_seed(seed)
    model = model_for(config, data.n_users, data.n_items)
    trainer = model.trainer(data.matrix(), make_generator(torch.device("cpu"), seed))
    return trainer, [trainer.train_epoch() for _ in range(iters)]


def fitted(config: ExplicitALSConfig | ImplicitALSConfig, data: Ratings, iters: int, seed: int = 0
           ) -> tuple[ALSBase, list]:
    trainer, stats = trained(config, data, iters, seed)
    return trainer.model, stats


def ridge_by_hand(rated: list[np.ndarray], stars: list[np.ndarray], other: np.ndarray, other_bias: np.ndarray,
                  mean: float, lam: float, tau: float, gamma: float) -> np.ndarray:
    """Per row: solve (lam F^T F + diag(tau, .., tau, gamma)) x = lam F^T (r - mean - b_other), F = [v, 1]."""
    d = other.shape[1]
    out = np.zeros((len(rated), d + 1))
    for row, (cols, r) in enumerate(zip(rated, stars)):
        F = np.hstack([other[cols], np.ones((len(cols), 1))])
        A = lam * F.T @ F + np.diag([tau] * d + [gamma])
        out[row] = np.linalg.solve(A, lam * F.T @ (r - mean - other_bias[cols]))
    return out


def objective_by_hand(model: ALSBase, data: Ratings) -> float:
    cfg = model.config
    U, V = model.user_factors.double().numpy(), model.item_factors.double().numpy()
    bu, bi = model.user_bias.double().numpy(), model.item_bias.double().numpy()
    pred = model.mean.item() + (U[data.users] * V[data.items]).sum(1) + bu[data.users] + bi[data.items]
    sse = float(((data.ratings - pred) ** 2).sum())
    return (cfg.lam / 2 * sse + cfg.tau / 2 * ((U**2).sum() + (V**2).sum())
            + cfg.gamma / 2 * ((bu**2).sum() + (bi**2).sum()))


def test_registry_and_cli_flags():
    assert model_class("als") is ExplicitALS and model_class("als", "explicit") is ExplicitALS
    assert model_class("als", "implicit") is ImplicitALS
    assert (ExplicitALS.name, ExplicitALS.mode, ImplicitALS.name, ImplicitALS.mode) == (
        "als", "explicit", "als", "implicit")
    fields = {f.name: f for f in dataclasses.fields(ImplicitALSConfig)}
    assert "--lambda" in fields["lam"].metadata["flags"]
    assert "--iters" in fields["epochs"].metadata["flags"]


def test_one_iteration_is_two_hand_computed_ridge_half_steps():
    # 4 users x 5 movies with gaps; user 3 and movie 4 rate / are rated once.
    users = np.array([0, 0, 0, 1, 1, 1, 1, 2, 2, 3], np.int32)
    items = np.array([0, 1, 2, 0, 1, 3, 4, 2, 3, 1], np.int32)
    stars = np.array([5, 3, 4, 4, 2, 1, 5, 3, 3, 4], np.float32)
    data = Ratings(users, items, stars, np.zeros(10, np.int64), 4, 5)
    cfg = ExplicitALSConfig(factors=2, lam=1.5, tau=0.7, gamma=0.3)
    model = model_for(cfg, 4, 5)
    rng = np.random.default_rng(0)
    V0, bi0 = rng.normal(0, 0.5, (5, 2)), rng.normal(0, 0.3, 5)
    with torch.no_grad():
        model.item_factors.copy_(torch.tensor(V0))
        model.item_bias.copy_(torch.tensor(bi0))
    train = data.matrix()
    trainer = model.trainer(train, make_generator(torch.device("cpu"), 0))
    mean = float(stars.mean())
    stats = trainer.train_epoch()

    # Users first, from the starting movies...
    x_users = ridge_by_hand([items[users == m] for m in range(4)], [stars[users == m] for m in range(4)],
                            V0, bi0, mean, 1.5, 0.7, 0.3)
    np.testing.assert_allclose(model.user_factors.numpy(), x_users[:, :2], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(model.user_bias.numpy(), x_users[:, 2], rtol=1e-4, atol=1e-5)
    # ... then movies, from those users.
    x_items = ridge_by_hand([users[items == n] for n in range(5)], [stars[items == n] for n in range(5)],
                            x_users[:, :2], x_users[:, 2], mean, 1.5, 0.7, 0.3)
    np.testing.assert_allclose(model.item_factors.numpy(), x_items[:, :2], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(model.item_bias.numpy(), x_items[:, 2], rtol=1e-4, atol=1e-5)
    # The reported loss is the objective per rating; rmse the training error, both after the iteration.
    assert stats["loss"] == pytest.approx(objective_by_hand(model, data) / 10, rel=1e-5)
    pred = model.predict(torch.from_numpy(users.astype(np.int64)), torch.from_numpy(items.astype(np.int64)),
                         train)
    assert stats["rmse"] == pytest.approx(float(np.sqrt(np.mean((pred.numpy() - stars) ** 2))), rel=1e-4)


def test_objective_decreases_monotonically():
    data = low_rank()
    cfg = ExplicitALSConfig(factors=6, tau=2.0, gamma=1.0)
    trainer, stats = trained(cfg, data, iters=1)
    model = trainer.model
    losses = [stats[0]["loss"]]
    for _ in range(12):
        losses.append(trainer.train_epoch()["loss"])
        assert losses[-1] == pytest.approx(objective_by_hand(model, data) / len(data), rel=1e-5)
    # Every half-step is an exact minimiser: never up (beyond float32 rounding), and clearly down overall.
    assert all(b <= a * (1 + 1e-6) for a, b in zip(losses, losses[1:])), losses
    assert losses[-1] < 0.9 * losses[0]


def test_batching_does_not_change_the_answer():
    # Tiny chunks split every degree group into many solves; rows with no ratings are solved too (to 0).
    data = low_rank(50, 30)
    keep = (data.users != 7) & (data.items != 11)
    data = data.take(keep)
    big, _ = fitted(ExplicitALSConfig(factors=4, chunk_size=1 << 20), data, iters=3)
    small, _ = fitted(ExplicitALSConfig(factors=4, chunk_size=7), data, iters=3)
    for a, b in zip(big.parameters(), small.parameters()):
        close(a, b, rtol=1e-4, atol=1e-5)
    assert big.user_factors[7].abs().sum() == 0 and big.user_bias[7] == 0
    assert big.item_factors[11].abs().sum() == 0 and big.item_bias[11] == 0


def test_fold_in_is_one_user_half_step():
    data = low_rank()
    trainer, _ = trained(ExplicitALSConfig(factors=5, tau=3.0, gamma=0.5), data, iters=3)
    model = trainer.model
    items = np.array([2, 5, 11, 17, 30, 31])
    stars = np.array([4.0, 5.0, 2.0, 3.0, 1.0, 4.0], np.float32)
    vector, bias = model.fold_in_factors(torch.from_numpy(items), torch.from_numpy(stars))
    x = ridge_by_hand([items], [stars], model.item_factors.double().numpy(), model.item_bias.double().numpy(),
                      model.mean.item(), 1.0, 3.0, 0.5)[0]
    np.testing.assert_allclose(np.append(vector.numpy(), bias.item()), x, rtol=1e-4, atol=1e-5)
    # Folding in a training user's own ratings reproduces what the next user half-step gives them.
    m = 4
    mine = data.users == m
    vector, bias = model.fold_in_factors(torch.from_numpy(data.items[mine].astype(np.int64)),
                                         torch.from_numpy(data.ratings[mine]))
    trainer.half_step(trainer.train, trainer.user_plan, model.item_factors, model.item_bias, model.user_factors,
                      model.user_bias)
    close(vector, model.user_factors[m], rtol=1e-4, atol=1e-5)
    close(bias, model.user_bias[m], rtol=1e-4, atol=1e-5)


def test_shapes_and_ranges():
    data = low_rank()
    model, _ = fitted(ExplicitALSConfig(factors=5), data, iters=2)
    train = data.matrix()
    model.item_bias[1] += 3.0  # a movie everyone would rate past 5 stars
    users = torch.tensor([0, 3, 7])
    scores = model.score(users, train)
    assert scores.shape == (3, data.n_items)
    # score is the raw prediction, past the star scale where the model says so (it ranks by it) ...
    raw = model.mean + model.user_factors[users] @ model.item_factors.T + model.user_bias[users].unsqueeze(1)
    close(scores, raw + model.item_bias, rtol=1e-6, atol=1e-5)
    assert (scores[:, 1] > 5.0).all()
    # ... and predict, pointwise stars, is clipped to the scale.
    items = torch.tensor([1, 2, 39, 0])
    pred = model.predict(torch.tensor([0, 3, 7, 3]), items, train)
    assert pred.shape == (4,)
    close(pred, scores[torch.tensor([0, 1, 2, 1]), items].clamp(1.0, 5.0), rtol=1.3e-6, atol=1e-5)
    assert model.item_vectors().shape == (data.n_items, 5)
    folded = model.fold_in(torch.tensor([0, 1, 2]), torch.tensor([5.0, 1.0, 4.0]))
    vector, bias = model.fold_in_factors(torch.tensor([0, 1, 2]), torch.tensor([5.0, 1.0, 4.0]))
    close(folded, model.item_factors @ vector + bias + model.item_bias + model.mean, rtol=1e-6, atol=1e-5)


def test_state_dict_round_trip_gives_identical_predictions():
    data = low_rank()
    model, _ = fitted(ExplicitALSConfig(factors=6), data, iters=2)
    fresh = model_for(type(model.config).from_dict(model.config.to_dict()), data.n_users, data.n_items)
    fresh.load_state_dict(model.state_dict())
    train = data.matrix()
    users = torch.arange(data.n_users)
    assert torch.equal(model.score(users, train), fresh.score(users, train))
    items = torch.tensor([3, 1, 4, 1, 5])
    assert torch.equal(model.fold_in(items, torch.tensor([2.0, 3, 5, 1, 4])),
                       fresh.fold_in(items, torch.tensor([2.0, 3, 5, 1, 4])))


def test_same_seed_same_parameters():
    data = low_rank()
    first, s1 = fitted(ExplicitALSConfig(factors=4), data, iters=1, seed=7)
    again, s2 = fitted(ExplicitALSConfig(factors=4), data, iters=1, seed=7)
    other, _ = fitted(ExplicitALSConfig(factors=4), data, iters=1, seed=8)
    assert s1 == s2
    for a, b in zip(first.parameters(), again.parameters()):
        assert torch.equal(a, b)
    assert not torch.equal(first.item_factors, other.item_factors)


def test_learns_held_out_ratings_better_than_the_mean():
    data = low_rank(80, 50)
    test_mask = np.random.default_rng(1).random(len(data)) < 0.2
    train_part, test_part = data.take(~test_mask), data.take(test_mask)
    model, stats = fitted(ExplicitALSConfig(factors=8, tau=3.0, gamma=1.0), train_part, iters=6)
    pred = model.predict(torch.from_numpy(test_part.users.astype(np.int64)),
                         torch.from_numpy(test_part.items.astype(np.int64)), train_part.matrix())
    rmse = float(np.sqrt(np.mean((pred.numpy() - test_part.ratings) ** 2)))
    baseline = float(np.sqrt(np.mean((test_part.ratings - train_part.ratings.mean()) ** 2)))
    assert rmse < 0.8 * baseline, (rmse, baseline)


@pytest.mark.parametrize(
    "change", [{"tau": 0.0}, {"gamma": -1.0}, {"lam": 0.0}, {"factors": 0}, {"chunk_size": 0}, {"init_std": math.nan},
               {"lam": math.inf}, {"gamma": -math.inf}]
)
def test_bad_options_are_one_clear_error(change):
    with pytest.raises(MovierecError):
        ExplicitALSConfig(**change)


@pytest.mark.parametrize(
    ("change", "message"),
    [({"init_std": math.nan}, "--init-std must be a finite number, not nan."),
     ({"alpha": math.inf}, "--alpha must be a finite number, not inf."),
     ({"confidence": "loud"}, "--confidence must be one of stars, binary; got 'loud'.")],
)
def test_non_finite_numbers_and_unknown_choices_are_rejected_up_front(change, message):
    with pytest.raises(MovierecError) as err:
        ImplicitALSConfig(**change)
    assert str(err.value) == message


@pytest.mark.slow
@pytest.mark.parametrize(
    "config", [ExplicitALSConfig(), ExplicitALSConfig(factors=32, epochs=15)], ids=["defaults", "factors32-iters15"]
)


# -- implicit mode (Hu, Koren & Volinsky 2008) ---------------------------------------------------------------
def implicit_by_hand(rated: list[np.ndarray], stars: list[np.ndarray], other: np.ndarray, lam: float,
                     tau: float | list[float], alpha: float, binary: bool = False) -> np.ndarray:
    """Per row, the textbook closed form with the whole dense diagonal C_r (no Y^T Y trick):
    x = (lam Y^T C_r Y + tau_r I)^-1 lam Y^T C_r p_r, p = 1 on rated columns, c = 1 + alpha f(stars);
    ``tau`` is every row's penalty or one per row."""
    n_cols, d = other.shape
    out = np.zeros((len(rated), d))
    taus = tau if isinstance(tau, list) else [tau] * len(rated)
    for row, (cols, r, tau) in enumerate(zip(rated, stars, taus)):
        p = np.zeros(n_cols)
        p[cols] = 1.0
        c = np.ones(n_cols)
        c[cols] = 1.0 + alpha * (np.ones_like(r) if binary else r)
        A = lam * other.T @ np.diag(c) @ other + tau * np.eye(d)
        out[row] = np.linalg.solve(A, lam * other.T @ (c * p))
    return out


def implicit_objective_by_hand(model: ALSBase, data: Ratings, user_tau: np.ndarray | float | None = None,
                               item_tau: np.ndarray | float | None = None) -> float:
    """lam/2 sum over every (user, movie) of c (p - u.v)^2 + sum_r tau_r/2 |x_r|^2, on the dense matrix; the
    penalties are the config's rule applied to each row's count unless given."""
    cfg = model.config
    if user_tau is None:
        user_tau = cfg.tau * (1 + np.bincount(data.users, minlength=data.n_users)) ** cfg.reg_exponent
    if item_tau is None:
        item_tau = cfg.tau * (1 + np.bincount(data.items, minlength=data.n_items)) ** cfg.reg_exponent
    U, V = model.user_factors.double().numpy(), model.item_factors.double().numpy()
    p = np.zeros((data.n_users, data.n_items))
    c = np.ones((data.n_users, data.n_items))
    p[data.users, data.items] = 1.0
    f = np.ones(len(data)) if cfg.confidence == "binary" else data.ratings
    c[data.users, data.items] = 1.0 + cfg.alpha * f
    return float(cfg.lam / 2 * (c * (p - U @ V.T) ** 2).sum()
                 + ((user_tau * (U**2).sum(1)).sum() + (item_tau * (V**2).sum(1)).sum()) / 2)


def tiny() -> Ratings:
    # 4 users x 5 movies with gaps; user 3 and movie 4 rate / are rated once.
    users = np.array([0, 0, 0, 1, 1, 1, 1, 2, 2, 3], np.int32)
    items = np.array([0, 1, 2, 0, 1, 3, 4, 2, 3, 1], np.int32)
    stars = np.array([5, 3, 4, 4, 2, 1, 5, 3, 3, 4], np.float32)
    return Ratings(users, items, stars, np.zeros(10, np.int64), 4, 5)


def one_iteration_from_seeded_movies(cfg: ImplicitALSConfig, data: Ratings):
    """One implicit-ALS iteration on ``data`` (4 users x 5 movies) from seeded movie vectors: (trainer, V0, stats)."""
    model = model_for(cfg, 4, 5)
    V0 = np.random.default_rng(0).normal(0, 0.5, (5, 2))
    with torch.no_grad():
        model.item_factors.copy_(torch.tensor(V0))
    trainer = model.trainer(data.matrix(), make_generator(torch.device("cpu"), 0))
    return trainer, V0, trainer.train_epoch()


@pytest.mark.parametrize("confidence", ["stars", "binary"])
def test_implicit_iteration_is_two_hand_computed_closed_forms(confidence):
    data = tiny()
    cfg = ImplicitALSConfig(factors=2, lam=1.5, tau=0.7, alpha=2.5, confidence=confidence, solver="cholesky",
                            reg_exponent=0.0)
    trainer, V0, stats = one_iteration_from_seeded_movies(cfg, data)
    model = trainer.model

    binary = confidence == "binary"
    by_user = [data.items[data.users == m] for m in range(4)], [data.ratings[data.users == m] for m in range(4)]
    x_users = implicit_by_hand(*by_user, V0, 1.5, 0.7, 2.5, binary)
    np.testing.assert_allclose(model.user_factors.numpy(), x_users, rtol=1e-4, atol=1e-5)
    by_item = [data.users[data.items == n] for n in range(5)], [data.ratings[data.items == n] for n in range(5)]
    x_items = implicit_by_hand(*by_item, x_users, 1.5, 0.7, 2.5, binary)
    np.testing.assert_allclose(model.item_factors.numpy(), x_items, rtol=1e-4, atol=1e-5)
    # No biases and no offset in HKV: they stay 0 (but exist, so checkpoints keep FactorModel's shapes).
    assert model.user_bias.abs().sum() == 0 and model.item_bias.abs().sum() == 0 and model.mean.item() == 0
    assert set(stats) == {"loss"}
    assert stats["loss"] == pytest.approx(implicit_objective_by_hand(model, data) / len(data), rel=1e-5)


def test_implicit_objective_decreases_monotonically():
    data = low_rank()
    trainer, stats = trained(ImplicitALSConfig(factors=6, tau=2.0, alpha=3.0), data, iters=1)
    model = trainer.model
    losses = [stats[0]["loss"]]
    for _ in range(10):
        losses.append(trainer.train_epoch()["loss"])
        assert losses[-1] == pytest.approx(implicit_objective_by_hand(model, data) / len(data), rel=1e-5)
    assert all(b <= a * (1 + 1e-6) for a, b in zip(losses, losses[1:])), losses
    assert losses[-1] < 0.9 * losses[0]


def test_implicit_batching_does_not_change_the_answer():
    data = low_rank(40, 25)
    data = data.take((data.users != 7) & (data.items != 11))
    for solver in ("cg", "cholesky"):
        big, _ = fitted(ImplicitALSConfig(factors=4, chunk_size=1 << 20, solver=solver), data, iters=2)
        small, _ = fitted(ImplicitALSConfig(factors=4, chunk_size=7, solver=solver), data, iters=2)
        for a, b in zip(big.parameters(), small.parameters()):
            close(a, b, rtol=1e-4, atol=1e-5)
        # Nobody rated movie 11 and user 7 rated nothing: preference 0 everywhere, so their vectors are 0.
        assert big.user_factors[7].abs().sum() == 0 and big.item_factors[11].abs().sum() == 0


def test_penalties_follow_each_rows_number_of_ratings():
    # tiny(): users rated 3, 4, 2 and 1 movies; movies were rated 2, 3, 2, 2 and 1 times.
    cfg = ImplicitALSConfig(factors=2, lam=1.5, tau=0.7, alpha=2.5, reg_exponent=0.5, solver="cholesky")
    np.testing.assert_allclose(cfg.row_penalties(torch.tensor([3, 4, 2, 1, 0])).numpy(),
                               [1.4, 0.7 * 5**0.5, 0.7 * 3**0.5, 0.7 * 2**0.5, 0.7], rtol=1e-6)
    # Exponent 0 is one penalty for every row, whatever its count.
    assert ImplicitALSConfig(tau=2.0, reg_exponent=0.0).row_penalties(torch.tensor([0, 7, 900])).tolist() == [2.0] * 3
    data = tiny()
    trainer, V0, stats = one_iteration_from_seeded_movies(cfg, data)
    model = trainer.model
    user_tau = [0.7 * (1 + n) ** 0.5 for n in (3, 4, 2, 1)]
    item_tau = [0.7 * (1 + n) ** 0.5 for n in (2, 3, 2, 2, 1)]
    by_user = [data.items[data.users == m] for m in range(4)], [data.ratings[data.users == m] for m in range(4)]
    x_users = implicit_by_hand(*by_user, V0, 1.5, user_tau, 2.5)
    np.testing.assert_allclose(model.user_factors.numpy(), x_users, rtol=1e-4, atol=1e-5)
    by_item = [data.users[data.items == n] for n in range(5)], [data.ratings[data.items == n] for n in range(5)]
    x_items = implicit_by_hand(*by_item, x_users, 1.5, item_tau, 2.5)
    np.testing.assert_allclose(model.item_factors.numpy(), x_items, rtol=1e-4, atol=1e-5)
    # The loss is the objective with those penalties.
    expected = implicit_objective_by_hand(model, data, np.array(user_tau), np.array(item_tau))
    assert stats["loss"] == pytest.approx(expected / len(data), rel=1e-5)
    # A new user with 3 ratings gets the penalty of a training user with 3 ratings: user 0 comes back.
    vector, _ = model.fold_in_factors(torch.from_numpy(by_user[0][0].astype(np.int64)), torch.from_numpy(by_user[1][0]))
    trainer.half_step(trainer.train, trainer.user_plan, model.item_factors, model.user_factors)
    close(vector, model.user_factors[0], rtol=1e-4, atol=1e-5)


def test_conjugate_gradient_reaches_the_exact_solvers_objective():
    data = low_rank(80, 60)
    base = ImplicitALSConfig(factors=8, tau=2.0, alpha=2.0, reg_exponent=0.5, epochs=12)
    exact, exact_stats = fitted(base.replace(solver="cholesky"), data, iters=12)
    cg, cg_stats = fitted(base.replace(solver="cg", cg_steps=3), data, iters=12)
    # Each CG step lowers a row's quadratic from its warm start, so the objective still never rises ...
    losses = [s["loss"] for s in cg_stats]
    assert all(b <= a * (1 + 1e-6) for a, b in zip(losses, losses[1:])), losses
    assert losses[-1] == pytest.approx(
        implicit_objective_by_hand(cg, data, base.row_penalties(torch.from_numpy(np.bincount(data.users))).numpy(),
                                   base.row_penalties(torch.from_numpy(np.bincount(data.items))).numpy())
        / len(data), rel=1e-5)
    # ... and ends within 0.5 % of the exact solver's, clearly below where it started.
    assert losses[-1] == pytest.approx(exact_stats[-1]["loss"], rel=5e-3), (losses[-1], exact_stats[-1]["loss"])
    assert losses[-1] < 0.9 * losses[0]
    # With as many steps as unknowns CG is exact (in exact arithmetic): one half-step gives Cholesky's answer.
    one_exact, _ = fitted(base.replace(solver="cholesky"), data, iters=1)
    one_cg, _ = fitted(base.replace(solver="cg", cg_steps=8), data, iters=1)
    close(one_cg.user_factors, one_exact.user_factors, rtol=1e-3, atol=1e-4)
    close(one_cg.item_factors, one_exact.item_factors, rtol=1e-3, atol=1e-4)


def test_conjugate_gradient_works_in_blocks_of_at_most_chunk_size_ratings():
    # The unit of uninterrupted work (Ctrl-C lands between blocks' products) is bounded whatever the data's
    # size: contiguous rows, every row once, at most chunk_size ratings unless one row alone has more.
    data = low_rank(50, 30)
    train = data.matrix()
    trainer, _ = trained(ImplicitALSConfig(factors=3, chunk_size=40), data, iters=1)
    for matrix, plan in ((train, trainer.user_plan), (trainer.transposed, trainer.item_plan)):
        blocks = [(b.first, b.last) for b in plan.blocks]
        assert blocks[0][0] == 0 and blocks[-1][1] == matrix.n_rows
        assert all(a[1] == b[0] for a, b in zip(blocks, blocks[1:]))
        sizes = [int(matrix.indptr[last] - matrix.indptr[first]) for first, last in blocks]
        assert all(size <= 40 or last - first == 1 for size, (first, last) in zip(sizes, blocks)), sizes
        assert len(blocks) >= matrix.nnz // 40


def test_conjugate_gradient_blocks_stay_cache_sized_on_the_cpu_with_the_same_answer(monkeypatch):
    # On the CPU a block's gathered vectors are bounded by CG_CPU_BLOCK_BYTES per thread whatever chunk_size
    # allows; the blocks are an order of work, not a different answer.
    data = low_rank(50, 30)
    train = data.matrix()
    whole_trainer, _ = trained(ImplicitALSConfig(factors=4, chunk_size=1 << 20), data, iters=2)
    whole = whole_trainer.model
    assert len(whole_trainer.user_plan.blocks) == 1  # 4 MiB hold every rating of this small matrix
    monkeypatch.setattr(als, "CG_CPU_BLOCK_BYTES", 4 * 4 * 25)  # 25 ratings of 4 factors per thread
    limit = 25 * torch.get_num_threads()
    blocked_trainer, _ = trained(ImplicitALSConfig(factors=4, chunk_size=1 << 20), data, iters=2)
    blocked = blocked_trainer.model
    for matrix, plan in ((train, blocked_trainer.user_plan), (blocked_trainer.transposed, blocked_trainer.item_plan)):
        counts = matrix.row_counts()
        sizes = [int(counts[b.first:b.last].sum()) for b in plan.blocks]
        assert all(size <= limit or b.last - b.first == 1 for size, b in zip(sizes, plan.blocks)), sizes
        # Each block is as full as the limit lets it be: the next row would not have fitted.
        assert all(size + int(counts[b.first]) > limit for size, b in zip(sizes, plan.blocks[1:])), sizes
    for a, b in zip(whole.parameters(), blocked.parameters()):
        close(a, b, rtol=1e-4, atol=1e-5)


def test_implicit_fold_in_is_one_user_half_step():
    data = low_rank()
    cfg = ImplicitALSConfig(factors=5, tau=3.0, alpha=2.0, solver="cholesky")
    trainer, _ = trained(cfg, data, iters=3)
    model = trainer.model
    items = np.array([2, 5, 11, 17, 30, 31])
    stars = np.array([4.0, 5.0, 2.0, 3.0, 1.0, 4.0], np.float32)
    vector, bias = model.fold_in_factors(torch.from_numpy(items), torch.from_numpy(stars))
    V = model.item_factors.double().numpy()
    x = implicit_by_hand([items], [stars], V, 1.0, 3.0, 2.0)[0]
    np.testing.assert_allclose(vector.numpy(), x, rtol=1e-4, atol=1e-5)
    assert bias.item() == 0
    # fold_in scores every movie by the folded-in preference, unclipped.
    folded = model.fold_in(torch.from_numpy(items), torch.from_numpy(stars))
    np.testing.assert_allclose(folded.numpy(), V @ x, rtol=1e-4, atol=1e-5)
    # A training user's own ratings reproduce what the next user half-step gives them.
    m = 4
    mine = data.users == m
    vector, _ = model.fold_in_factors(torch.from_numpy(data.items[mine].astype(np.int64)),
                                      torch.from_numpy(data.ratings[mine]))
    trainer.half_step(trainer.train, trainer.user_plan, model.item_factors, model.user_factors)
    close(vector, model.user_factors[m], rtol=1e-4, atol=1e-5)


def test_implicit_is_a_rank_model_with_unclipped_scores_and_right_shapes():
    data = low_rank()
    model, _ = fitted(ImplicitALSConfig(factors=5, tau=1.0, alpha=1.0), data, iters=3)
    assert model.kind == "rank" and ExplicitALS(ExplicitALSConfig(), 3, 4, STARS).kind == "rating"
    train = data.matrix()
    users = torch.tensor([0, 3, 7])
    scores = model.score(users, train)
    assert scores.shape == (3, data.n_items)
    # Preferences u . v, nothing added and nothing clipped: they sit around 0..1, not on the star scale.
    close(scores, model.user_factors[users] @ model.item_factors.T, rtol=1e-6, atol=1e-6)
    assert scores.max() < 2.0 and scores.min() < 1.0
    items = torch.tensor([1, 2, 39, 0])
    pred = model.predict(torch.tensor([0, 3, 7, 3]), items, train)
    assert pred.shape == (4,)
    close(pred, scores[torch.tensor([0, 1, 2, 1]), items], rtol=1e-5, atol=1e-6)
    assert model.item_vectors().shape == (data.n_items, 5)
    assert model.fold_in(torch.tensor([0, 1, 2]), torch.tensor([5.0, 1.0, 4.0])).shape == (data.n_items,)


def test_implicit_state_dict_round_trip_gives_identical_predictions():
    data = low_rank()
    model, _ = fitted(ImplicitALSConfig(factors=6), data, iters=2)
    fresh = model_for(type(model.config).from_dict(model.config.to_dict()), data.n_users, data.n_items)
    fresh.load_state_dict(model.state_dict())
    train = data.matrix()
    users = torch.arange(data.n_users)
    assert fresh.kind == "rank"
    assert torch.equal(model.score(users, train), fresh.score(users, train))
    items = torch.tensor([3, 1, 4, 1, 5])
    assert torch.equal(model.fold_in(items, torch.tensor([2.0, 3, 5, 1, 4])),
                       fresh.fold_in(items, torch.tensor([2.0, 3, 5, 1, 4])))


def test_implicit_same_seed_same_parameters():
    data = low_rank()
    cfg = ImplicitALSConfig(factors=4)
    first, s1 = fitted(cfg, data, iters=1, seed=7)
    again, s2 = fitted(cfg, data, iters=1, seed=7)
    other, _ = fitted(cfg, data, iters=1, seed=8)
    assert s1 == s2
    for a, b in zip(first.parameters(), again.parameters()):
        assert torch.equal(a, b)
    assert not torch.equal(first.item_factors, other.item_factors)


def test_each_mode_has_its_own_fixed_defaults():
    explicit, implicit = ExplicitALS(ExplicitALSConfig(), 3, 4, STARS), ImplicitALS(ImplicitALSConfig(), 3, 4, STARS)
    assert (explicit.config.factors, explicit.config.tau, explicit.kind) == (16, 12.0, "rating")
    assert (implicit.config.factors, implicit.config.tau, implicit.kind) == (64, 35.0, "rank")
    assert (implicit.config.reg_exponent, implicit.config.solver, implicit.config.cg_steps) == (0.0, "cg", 3)
    assert implicit.user_factors.shape == (3, 64)
    # Each mode has only its own settings.
    assert not hasattr(explicit.config, "alpha") and not hasattr(implicit.config, "gamma")
    # The checkpoint holds the numbers and rebuilds the same config from them.
    assert ImplicitALSConfig.from_dict(implicit.config.to_dict()) == implicit.config


def test_checkpoints_saved_before_the_penalty_rule_keep_how_they_were_trained():
    from movierec.models import build_model

    # Written before --reg-exponent and --solver existed: one penalty for every row. A saved config lacks
    # those fields and loading fills in the defaults, so they must keep that penalty (a new user's fold-in
    # would otherwise get another penalty than the model was trained with).
    old = {"epochs": 8, "factors": 4, "lam": 1.0, "tau": 35.0, "alpha": 1.0, "confidence": "stars",
           "init_std": 0.1, "chunk_size": 1 << 20}
    loaded = build_model("als", "implicit", old, 3, 4, STARS).config
    assert (loaded.tau, loaded.reg_exponent) == (35.0, 0.0)
    assert loaded.row_penalties(torch.tensor([0, 3, 500])).tolist() == [35.0] * 3


def clustered(n_users: int = 90, n_items: int = 60, seed: int = 0) -> Ratings:
    """Three taste groups: each user rates about half of their own group's movies (4-5 stars) and a few
    others (1-3 stars); the movies' popularity also varies, so popularity alone is a fair baseline."""
    rng = np.random.default_rng(seed)
    group_u, group_i = np.arange(n_users) % 3, np.arange(n_items) % 3
    same = group_u[:, None] == group_i[None, :]
    appeal = rng.uniform(0.5, 1.0, n_items)
    rated = rng.random((n_users, n_items)) < np.where(same, 0.6, 0.08) * appeal
    users, items = np.nonzero(rated)
    stars = np.where(same[users, items], rng.integers(4, 6, users.shape[0]), rng.integers(1, 4, users.shape[0]))
    return Ratings(users.astype(np.int32), items.astype(np.int32), stars.astype(np.float32),
                   np.zeros(users.shape[0], np.int64), n_users, n_items)


def test_implicit_ranks_held_out_movies_better_than_popularity():
    from synthetic import holdout

    from movierec.evaluate import PopularityBaseline, evaluate

    train_part, test_part = holdout(clustered(), fraction=0.25)
    model, _ = fitted(ImplicitALSConfig(factors=6, tau=2.0), train_part, iters=5)
    matrix = train_part.matrix()
    ours = evaluate(model, matrix, test_part, k=5)
    popular = evaluate(PopularityBaseline(matrix), matrix, test_part, k=5)
    assert ours["rmse"] is None and ours["like_error"] is None  # a rank model predicts no stars and no likes
    assert ours["ndcg@5"] > popular["ndcg@5"] + 0.15, (ours["ndcg@5"], popular["ndcg@5"])


@pytest.mark.parametrize(
    "change", [{"confidence": "log"}, {"alpha": -1.0}, {"tau": 0.0}, {"reg_exponent": -0.5}, {"cg_steps": 0},
               {"solver": "lu"}]
)
def test_bad_implicit_options_are_one_clear_error(change):
    with pytest.raises(MovierecError):
        ImplicitALSConfig(**change)


def test_train_implicit_from_the_cli(home, ml100k_zip, runner):
    import json

    from movierec.cli import app

    fetched = runner.invoke(app, ["fetch", "ml-100k", "--from-file", str(ml100k_zip), "--no-verify"])
    assert fetched.exit_code == 0, fetched.stderr
    result = runner.invoke(app, ["train", "als", "--mode", "implicit", "--iters", "1", "--factors", "4", "--alpha",
                                 "2", "--device", "cpu", "--json"])
    assert result.exit_code == 0, result.stderr
    out = json.loads(result.stdout)
    # Unset options took the implicit defaults; the given ones reached the config as plain values.
    assert out["mode"] == "implicit" and out["config"]["factors"] == 4
    assert out["config"]["tau"] == 35.0 and out["config"]["alpha"] == 2.0
    assert out["config"]["reg_exponent"] == 0.0 and out["config"]["solver"] == "cg"
    # A rank model is validated by ranking the held-out split (u1): one 4-factor iteration is already far
    # from a random order of the ~1,600 unseen movies (NDCG@10 ~0.01).
    assert set(out["metrics"]) == {"ndcg@10", "recall@10"}
    assert out["metrics"]["ndcg@10"] > 0.1, out["metrics"]
    # The exact solver and the penalty rule are options too.
    exact = runner.invoke(app, ["train", "als", "--mode", "implicit", "--iters", "1", "--factors", "4", "--solver",
                                "cholesky", "--reg-exponent", "0.5", "--cg-steps", "5", "--device", "cpu", "--json",
                                "--name", "exact"])
    assert exact.exit_code == 0, exact.stderr
    config = json.loads(exact.stdout)["config"]
    assert (config["solver"], config["reg_exponent"], config["cg_steps"]) == ("cholesky", 0.5, 5)
    # An option of the other mode is one clear error, and nothing is trained.
    wrong = runner.invoke(app, ["train", "als", "--mode", "implicit", "--gamma", "3", "--device", "cpu"])
    assert_one_line_error(wrong, "--gamma is not an option of als --mode implicit; it applies to --mode explicit.")
    # A number that is not finite is refused before any work, naming the option.
    nan = runner.invoke(app, ["train", "als", "--init-std", "nan", "--device", "cpu"])
    assert_one_line_error(nan, "--init-std must be a finite number, not nan.")
