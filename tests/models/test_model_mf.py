"""Matrix factorization: hand-computed gradient steps, exact fold-in, checkpoint and seed behaviour."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from synthetic import STARS, close, low_rank

from movierec.data.ratings import Ratings
from movierec.device import make_generator
from movierec.errors import MovierecError
from movierec.models import model_class
from movierec.models.mf import MatrixFactorization, MFConfig


def fitted(config: MFConfig, data: Ratings, epochs: int, seed: int = 0) -> tuple[MatrixFactorization, list]:
    """What the training loop does, without validation."""
    torch.manual_seed(seed)
    model = MatrixFactorization(config, data.n_users, data.n_items, STARS)
    trainer = model.trainer(data.matrix(), make_generator(torch.device("cpu"), seed))
    stats = [trainer.train_epoch() for _ in range(epochs)]
    trainer.finalize()
    return model, stats


def test_registry_finds_the_class():
    assert model_class("mf") is MatrixFactorization
    assert MatrixFactorization.config_class is MFConfig


@pytest.mark.parametrize("reg", [0.0, 0.3])
def test_sgd_step_matches_hand_computed_update(reg):
    # 2 users x 2 movies, all four rated; one batch holds them all, so the step is the full gradient.
    ratings = Ratings(np.array([0, 0, 1, 1], np.int32), np.array([0, 1, 0, 1], np.int32),
                      np.array([5.0, 3.0, 4.0, 1.0], np.float32), np.zeros(4, np.int64), 2, 2)
    lr = 0.05
    cfg = MFConfig(factors=2, lr=lr, reg=reg, batch_size=8, optimizer="sgd")
    model = MatrixFactorization(cfg, 2, 2, STARS)
    P = np.array([[0.3, -0.2], [0.1, 0.4]])
    Q = np.array([[0.5, 0.1], [-0.3, 0.2]])
    bu = np.array([0.2, -0.1])
    bi = np.array([-0.3, 0.4])
    with torch.no_grad():
        model.user_factors.copy_(torch.tensor(P))
        model.item_factors.copy_(torch.tensor(Q))
        model.user_bias.copy_(torch.tensor(bu))
        model.item_bias.copy_(torch.tensor(bi))
    train = ratings.matrix()
    stats = model.trainer(train, make_generator(torch.device("cpu"), 0)).train_epoch()

    mean = 13.0 / 4
    gP, gQ, gbu, gbi = np.zeros_like(P), np.zeros_like(Q), np.zeros_like(bu), np.zeros_like(bi)
    squared = penalty = 0.0
    for u, i, r in [(0, 0, 5.0), (0, 1, 3.0), (1, 0, 4.0), (1, 1, 1.0)]:
        e = r - (mean + P[u] @ Q[i] + bu[u] + bi[i])
        squared += e * e
        penalty += P[u] @ P[u] + Q[i] @ Q[i] + bu[u] ** 2 + bi[i] ** 2
        # d/dx of e^2 + reg * (|p|^2 + |q|^2 + bu^2 + bi^2)
        gP[u] += -2 * e * Q[i] + 2 * reg * P[u]
        gQ[i] += -2 * e * P[u] + 2 * reg * Q[i]
        gbu[u] += -2 * e + 2 * reg * bu[u]
        gbi[i] += -2 * e + 2 * reg * bi[i]
    assert model.mean.item() == pytest.approx(mean)
    np.testing.assert_allclose(model.user_factors.numpy(), P - lr * gP, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(model.item_factors.numpy(), Q - lr * gQ, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(model.user_bias.numpy(), bu - lr * gbu, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(model.item_bias.numpy(), bi - lr * gbi, rtol=1e-5, atol=1e-6)
    assert stats["loss"] == pytest.approx((squared + reg * penalty) / 4, rel=1e-5)
    assert stats["rmse"] == pytest.approx(np.sqrt(squared / 4), rel=1e-5)


@pytest.mark.parametrize("factors", [1, 3])
def test_sgd_epoch_matches_a_plain_loop_over_the_same_batches(factors):
    # Several batches in the epoch's random order, movies rated up to 6 times in one batch: the step of such
    # a row is its summed gradient divided by max(1, 2 lr (1 + reg) k), here past 1 from k = 3.
    data = low_rank(12, 9, density=0.6)
    cfg = MFConfig(factors=factors, lr=0.2, reg=0.1, batch_size=16, optimizer="sgd")
    torch.manual_seed(3)
    model = MatrixFactorization(cfg, data.n_users, data.n_items, STARS)
    P, Q = model.user_factors.double().numpy().copy(), model.item_factors.double().numpy().copy()
    bu, bi = np.zeros(data.n_users), np.zeros(data.n_items)
    train = data.matrix()
    stats = model.trainer(train, make_generator(torch.device("cpu"), 2)).train_epoch()

    order_gen = make_generator(torch.device("cpu"), 2)
    order = torch.randperm(train.nnz, generator=order_gen)  # the trainer's shuffle, then the epoch's batch order
    rows, cols, vals = (t[order].numpy().astype(np.float64) for t in (train.row_ids(), train.indices, train.values))
    rows, cols = rows.astype(np.int64), cols.astype(np.int64)
    mean, lr, reg = float(train.values.double().mean()), cfg.lr, cfg.reg
    squared = penalty = 0.0
    largest_repeat = 0
    for batch in torch.randperm(-(-train.nnz // cfg.batch_size), generator=order_gen).tolist():
        part = slice(batch * cfg.batch_size, (batch + 1) * cfg.batch_size)
        u, i, r = rows[part], cols[part], vals[part]
        e = r - (mean + (P[u] * Q[i]).sum(1) + bu[u] + bi[i])
        squared += (e * e).sum()
        penalty += (P[u] ** 2).sum() + (Q[i] ** 2).sum() + (bu[u] ** 2).sum() + (bi[i] ** 2).sum()
        ku, ki = np.bincount(u)[u], np.bincount(i)[i]  # how often each rating's user / movie is in the batch
        largest_repeat = max(largest_repeat, ki.max())
        su = 1 / np.maximum(1, 2 * lr * (1 + reg) * ku)
        si = 1 / np.maximum(1, 2 * lr * (1 + reg) * ki)
        steps = [np.zeros_like(P), np.zeros_like(Q), np.zeros_like(bu), np.zeros_like(bi)]
        np.add.at(steps[0], u, -lr * su[:, None] * (-2 * e[:, None] * Q[i] + 2 * reg * P[u]))
        np.add.at(steps[1], i, -lr * si[:, None] * (-2 * e[:, None] * P[u] + 2 * reg * Q[i]))
        np.add.at(steps[2], u, -lr * su * (-2 * e + 2 * reg * bu[u]))
        np.add.at(steps[3], i, -lr * si * (-2 * e + 2 * reg * bi[i]))
        P, Q, bu, bi = P + steps[0], Q + steps[1], bu + steps[2], bi + steps[3]
    assert largest_repeat >= 3  # some steps were scaled down
    np.testing.assert_allclose(model.user_factors.numpy(), P, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(model.item_factors.numpy(), Q, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(model.user_bias.numpy(), bu, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(model.item_bias.numpy(), bi, rtol=1e-4, atol=1e-5)
    assert stats["loss"] == pytest.approx((squared + reg * penalty) / train.nnz, rel=1e-5)
    assert stats["rmse"] == pytest.approx(np.sqrt(squared / train.nnz), rel=1e-5)


def test_adam_step_matches_torch_adam_on_the_autograd_gradient():
    data = low_rank(12, 9, density=0.6)
    cfg = MFConfig(factors=4, lr=0.02, reg=0.1, batch_size=3, optimizer="adam")
    torch.manual_seed(5)
    model = MatrixFactorization(cfg, data.n_users, data.n_items, STARS)
    train = data.matrix()
    reference = [p.detach().clone().requires_grad_(True) for p in model.parameters()]
    trainer = model.trainer(train, make_generator(torch.device("cpu"), 1))
    order_gen = make_generator(torch.device("cpu"), 1)
    trainer.train_epoch()

    # The same batches, differentiated by autograd and stepped by torch.optim.Adam: the ratings shuffled once
    # by the trainer, then the batches in the epoch's random order.
    order = torch.randperm(train.nnz, generator=order_gen)
    rows, cols, vals = train.row_ids()[order], train.indices[order], train.values[order]
    n_batches = -(-train.nnz // cfg.batch_size)
    P, Q, bu, bi = reference
    opt = torch.optim.Adam(reference, lr=cfg.lr)
    for batch in torch.randperm(n_batches, generator=order_gen).tolist():
        start = batch * cfg.batch_size
        stop = start + cfg.batch_size
        u, i, r = rows[start:stop], cols[start:stop], vals[start:stop]
        err = r - (model.mean + (P[u] * Q[i]).sum(-1) + bu[u] + bi[i])
        objective = err.square().sum() + cfg.reg * (
            P[u].square().sum() + Q[i].square().sum() + bu[u].square().sum() + bi[i].square().sum())
        opt.zero_grad()
        objective.backward()
        opt.step()
    for mine, ref in zip(model.parameters(), reference):
        close(mine, ref.detach(), rtol=1e-4, atol=1e-6)


def test_fold_in_recovers_a_known_user_vector():
    # Noise-free low-rank ratings of a new user: ridge with a negligible penalty is least squares,
    # which recovers the vector and bias exactly.
    rng = np.random.default_rng(3)
    n_items, d = 30, 3
    model = MatrixFactorization(MFConfig(factors=d, reg=1e-9), 5, n_items, STARS)
    V = rng.normal(0, 0.5, (n_items, d))
    b_item = rng.normal(0, 0.3, n_items)
    with torch.no_grad():
        model.item_factors.copy_(torch.tensor(V))
        model.item_bias.copy_(torch.tensor(b_item))
        model.mean.fill_(3.0)
    p, b = np.array([0.8, -0.5, 0.3]), 0.25
    truth = 3.0 + V @ p + b + b_item  # (I,) all inside 1..5 for this seed
    assert truth.min() > 1 and truth.max() < 5
    seen = np.arange(0, n_items, 3)  # 10 of the 30 movies
    stars = torch.tensor(truth[seen], dtype=torch.float32)
    vector, bias = model.fold_in_factors(torch.from_numpy(seen), stars)
    np.testing.assert_allclose(vector.numpy(), p, atol=1e-3)
    assert bias.item() == pytest.approx(b, abs=1e-3)
    predicted = model.fold_in(torch.from_numpy(seen), stars)
    np.testing.assert_allclose(predicted.numpy(), truth, atol=1e-3)  # unseen movies too


def test_fold_in_with_penalty_is_the_training_objectives_ridge_solution():
    data = low_rank()
    model, _ = fitted(MFConfig(factors=4, reg=0.2), data, epochs=3)
    items = torch.tensor([1, 4, 7, 9, 20])
    stars = torch.tensor([5.0, 4.0, 1.0, 3.0, 2.0])
    vector, bias = model.fold_in_factors(items, stars)
    V = model.item_factors[items].double().numpy()
    F = np.hstack([V, np.ones((5, 1))])
    t = stars.double().numpy() - model.mean.item() - model.item_bias[items].double().numpy()
    # minimise sum (t - F x)^2 + reg * n * |x|^2: the user is penalised once per rating.
    x = np.linalg.solve(F.T @ F + 0.2 * 5 * np.eye(5), F.T @ t)
    np.testing.assert_allclose(np.append(vector.numpy(), bias.item()), x, rtol=1e-4, atol=1e-5)


def test_shapes_and_ranges():
    data = low_rank()
    model, _ = fitted(MFConfig(factors=5), data, epochs=2)
    train = data.matrix()
    scores = model.score(torch.tensor([0, 3, 7]), train)
    assert scores.shape == (3, data.n_items)
    assert scores.min() >= 1.0 and scores.max() <= 5.0
    users = torch.tensor([0, 3, 7, 3])
    items = torch.tensor([1, 2, 39, 0])
    pred = model.predict(users, items, train)
    assert pred.shape == (4,)
    # The direct dot products agree with the score rows.
    close(pred, scores[torch.tensor([0, 1, 2, 1]), items], rtol=1.3e-6, atol=1e-5)
    assert model.item_vectors().shape == (data.n_items, 5)
    folded = model.fold_in(torch.tensor([0, 1, 2]), torch.tensor([5.0, 1.0, 4.0]))
    assert folded.shape == (data.n_items,) and folded.min() >= 1.0 and folded.max() <= 5.0
    # A user with no ratings gets the movie baselines.
    empty = model.fold_in(torch.tensor([], dtype=torch.int64), torch.tensor([]))
    close(empty, model.clip(model.mean + model.item_bias), rtol=1.3e-6, atol=1e-5)


def test_state_dict_round_trip_gives_identical_predictions():
    data = low_rank()
    model, _ = fitted(MFConfig(factors=6), data, epochs=2)
    fresh = MatrixFactorization(MFConfig.from_dict(model.config.to_dict()), data.n_users, data.n_items, STARS)
    fresh.load_state_dict(model.state_dict())
    train = data.matrix()
    users = torch.arange(data.n_users)
    assert torch.equal(model.score(users, train), fresh.score(users, train))
    items = torch.from_numpy(data.items.astype(np.int64))
    assert torch.equal(model.predict(torch.from_numpy(data.users.astype(np.int64)), items, train),
                       fresh.predict(torch.from_numpy(data.users.astype(np.int64)), items, train))
    assert set(model.state_dict()) == {"user_factors", "item_factors", "user_bias", "item_bias", "mean"}


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_same_seed_same_parameters(optimizer):
    data = low_rank()
    cfg = MFConfig(factors=4, batch_size=64, optimizer=optimizer)
    first, s1 = fitted(cfg, data, epochs=1, seed=7)
    again, s2 = fitted(cfg, data, epochs=1, seed=7)
    other, _ = fitted(cfg, data, epochs=1, seed=8)
    assert s1 == s2
    for a, b in zip(first.parameters(), again.parameters()):
        assert torch.equal(a, b)
    assert not torch.equal(first.user_factors, other.user_factors)


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_loss_decreases_and_beats_the_mean_on_held_out_ratings(optimizer):
    data = low_rank(80, 50, density=0.5)
    test_mask = np.random.default_rng(1).random(len(data)) < 0.2
    train_part, test_part = data.take(~test_mask), data.take(test_mask)
    cfg = MFConfig(factors=8, batch_size=256, optimizer=optimizer, lr=0.01 if optimizer == "sgd" else 0.05)
    model, stats = fitted(cfg, train_part, epochs=6)
    losses = [s["loss"] for s in stats]
    assert all(b < a for a, b in zip(losses, losses[1:])), losses
    pred = model.predict(torch.from_numpy(test_part.users.astype(np.int64)),
                         torch.from_numpy(test_part.items.astype(np.int64)), train_part.matrix())
    rmse = float(np.sqrt(np.mean((pred.numpy() - test_part.ratings) ** 2)))
    baseline = float(np.sqrt(np.mean((test_part.ratings - train_part.ratings.mean()) ** 2)))
    assert rmse < 0.8 * baseline, (rmse, baseline)


def test_bad_options_are_one_clear_error():
    with pytest.raises(MovierecError, match="optimizer"):
        MFConfig(optimizer="rmsprop")
    with pytest.raises(MovierecError):
        MFConfig(factors=0)
    with pytest.raises(MovierecError):
        MFConfig(lr=0.0)


def heavy_user_ratings(n_users: int = 300, n_items: int = 3000, heavy: int = 2600, seed: int = 0) -> Ratings:
    """Half-star ratings where one user rated ``heavy`` movies and everyone else about 30, as on a real
    half-star release (one user with ~2,600 ratings among ~600)."""
    rng = np.random.default_rng(seed)
    u, v = rng.normal(0, 0.5, (n_users, 3)), rng.normal(0, 0.5, (n_items, 3))
    bu, bi = rng.normal(0, 0.4, n_users), rng.normal(0, 0.5, n_items)
    users = [np.zeros(heavy, np.int64)] + [np.full(30, k) for k in range(1, n_users)]
    items = [rng.choice(n_items, heavy, replace=False)] + [rng.choice(n_items, 30, replace=False)
                                                          for _ in range(1, n_users)]
    users, items = np.concatenate(users), np.concatenate(items)
    raw = 3.5 + (u[users] * v[items]).sum(1) + bu[users] + bi[items] + rng.normal(0, 0.3, users.shape[0])
    stars = np.clip(np.rint(raw * 2) / 2, 0.5, 5.0).astype(np.float32)
    return Ratings(users.astype(np.int32), items.astype(np.int32), stars, np.zeros(users.shape[0], np.int64),
                   n_users, n_items)


def test_a_very_heavy_user_does_not_make_the_default_step_diverge():
    # ~11,300 ratings: in a default batch of 4,096 the heavy user has ~940 of them. Summed, their bias step
    # was ~19x its error, far past the stable limit, and training diverged in the first epochs.
    data = heavy_user_ratings()
    config = MFConfig(epochs=10)
    assert config.batch_size == 4096 and config.optimizer == "sgd"
    model, stats = fitted(config, data, config.epochs)
    assert all(np.isfinite(s["loss"]) for s in stats), stats
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert stats[-1]["rmse"] < stats[0]["rmse"], stats
    # The heavy user is learned, not frozen: their bias moved towards their mean rating.
    assert abs(model.user_bias[0].item() + model.mean.item() - data.ratings[data.users == 0].mean()) < 0.2
