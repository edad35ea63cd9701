"""The autoencoder model: known answers on tiny hand-made cases, shapes, determinism, checkpoints, and
(slow) its accuracy on the real MovieLens-100K u1 split."""

from __future__ import annotations

import math

import numpy as np
import pytest
import synthetic
import torch

from movierec.data.ratings import RatingMatrix, Ratings
from movierec.device import make_generator, seed_everything
from movierec.errors import MovierecError
from movierec.models import autoencoder, model_class
from movierec.models.autoencoder import (
    AutoEncoder,
    AutoEncoderConfig,
    ItemAutoEncoder,
    ItemAutoEncoderConfig,
    UserAutoEncoder,
    UserAutoEncoderConfig,
)

STARS = (1.0, 2.0, 3.0, 4.0, 5.0)


def low_rank(n_users: int = 60, n_items: int = 40, density: float = 0.4, seed: int = 0) -> Ratings:
    """Rank-2 tastes plus item biases, rounded to stars, every user rating something: structure an autoencoder can
    learn."""
    return synthetic.low_rank(n_users, n_items, 2, density, seed, mean=3.2, taste=0.8, user_bias=None,
                              item_bias=0.5, noise=None, every_user_rates=True)


def tiny_matrix() -> RatingMatrix:
    """2 users x 3 movies: user 0 rated movie 0 = 4 and movie 2 = 2; user 1 rated movie 1 = 5."""
    return RatingMatrix.from_coo(np.array([0, 0, 1]), np.array([0, 2, 1]), np.array([4.0, 2.0, 5.0]), 2, 3)


def fit(model: AutoEncoder, ratings: Ratings, epochs: int, seed: int = 0) -> list[float]:
    """What the training loop does, minus validation: the per-epoch losses."""
    train = ratings.matrix()
    trainer = model.trainer(train, make_generator(torch.device("cpu"), seed))
    losses = []
    for _ in range(epochs):
        model.train()
        losses.append(trainer.train_epoch()["loss"])
        model.eval()
    trainer.finalize()
    return losses


CLASSES = {"user": UserAutoEncoder, "item": ItemAutoEncoder}


def make(config: AutoEncoderConfig, n_users: int, n_items: int) -> AutoEncoder:
    """The autoencoder a config is for."""
    cls = ItemAutoEncoder if isinstance(config, ItemAutoEncoderConfig) else UserAutoEncoder
    return cls(config, n_users, n_items, STARS)


def build(ratings: Ratings, seed: int = 0, mode: str = "user", **config) -> AutoEncoder:
    seed_everything(seed)
    cls = CLASSES[mode]
    return cls(cls.config_class(**config), ratings.n_users, ratings.n_items, STARS)


SMALL = {"user": dict(layers="8,4,8", batch_size=8), "item": dict(mode="item", layers="16", batch_size=8)}


# -- known answers ----------------------------------------------------------------------------------
def test_registry_and_seed_architecture_layer_shapes():
    assert model_class("autoencoder") is UserAutoEncoder and model_class("autoencoder", "item") is ItemAutoEncoder
    model = UserAutoEncoder(UserAutoEncoderConfig(), 943, 1682, STARS)
    assert model.layer_shapes() == [(1682, 20), (20, 10), (10, 20), (20, 1682)]
    assert model.input_weight.shape == (1682, 20) and model.output_weight.shape == (1682, 20)
    assert [tuple(layer.weight.shape) for layer in model.hidden] == [(10, 20), (20, 10)]
    assert model.config.activation == "sigmoid" and model.mode == "user"
    item = ItemAutoEncoder(ItemAutoEncoderConfig(), 943, 1682, STARS)
    assert item.layer_shapes() == [(943, 500), (500, 943)]  # one input and one output unit per user


def test_masked_loss_counts_rated_entries_only():
    # All weights 0: every reconstruction is output_bias + row_bias whatever the input.
    model = UserAutoEncoder(UserAutoEncoderConfig(layers="2", row_bias=True), 2, 3, STARS)
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
        model.output_bias.copy_(torch.tensor([3.5, 4.0, 1.0]))
        model.row_bias.copy_(torch.tensor([0.0, -1.0]))
    loss = model.batch_loss(tiny_matrix(), torch.tensor([0, 1]))
    # User 0: (3.5 - 4)^2 + (1 - 2)^2; user 1: (4 - 1 - 5)^2. The 3 unrated entries do not count.
    assert loss.item() == pytest.approx((0.25 + 1.0 + 4.0) / 3)
    assert model.batch_loss(tiny_matrix(), torch.tensor([1])).item() == pytest.approx(4.0)


@pytest.mark.parametrize("mode", ["user", "item"])
@pytest.mark.parametrize("min_density", [0.0, 2.0], ids=["dense-decode", "sparse-decode"])
def test_loss_equals_dense_masked_mse(mode, min_density, monkeypatch):
    monkeypatch.setattr(autoencoder, "DENSE_DECODE_MIN_DENSITY", min_density)
    ratings = low_rank(12, 9)
    model = build(ratings, **SMALL[mode], output_activation="sigmoid")
    model.trainer(ratings.matrix(), make_generator(torch.device("cpu"), 0))  # the output biases at the mean
    with torch.no_grad():
        model.row_bias.normal_()
    matrix = model._row_matrix(ratings.matrix())
    rows = torch.tensor([3, 0, 5])
    dense, mask = matrix.dense_rows(rows)
    recon = model(dense, rows)  # (3, cols): the dense reference network
    expected = ((recon - dense)[mask] ** 2).mean()
    assert torch.allclose(model.batch_loss(matrix, rows), expected, atol=1e-6)


def test_item_mode_score_is_the_network_on_the_transposed_matrix():
    ratings = low_rank(5, 4)
    model = build(ratings, mode="item", layers="3,2")
    train = ratings.matrix()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_()
    dense_t = np.zeros((4, 5), np.float32)  # movies x users, built by hand from the ratings table
    dense_t[ratings.items, ratings.users] = ratings.ratings
    out = model(torch.from_numpy(dense_t), torch.arange(4))  # (movies, users)
    users = torch.tensor([2, 0, 4])
    expected = out.T[users]  # the users' output units, for every movie, unclipped
    assert torch.allclose(model.score(users, train), expected, atol=1e-5)


def test_user_mode_score_is_the_network_on_the_users_rows():
    ratings = low_rank(6, 5)
    model = build(ratings, layers="3,2", row_bias=True)
    train = ratings.matrix()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_()
    dense = np.zeros((6, 5), np.float32)
    dense[ratings.users, ratings.items] = ratings.ratings
    users = torch.tensor([4, 1])
    expected = model(torch.from_numpy(dense[[4, 1]]), users)  # raw: score does not clip
    assert torch.allclose(model.score(users, train), expected, atol=1e-5)


def test_item_mode_fold_in_is_ridge_regression_on_movie_codes():
    model = ItemAutoEncoder(ItemAutoEncoderConfig(layers="2", row_bias=False), 4, 6, STARS)
    codes = torch.tensor([[0.1, 0.9], [0.5, 0.5], [0.9, 0.2], [0.3, 0.3], [0.7, 0.8], [0.2, 0.6]])
    w, b = torch.tensor([2.0, -1.0]), 3.0
    with torch.no_grad():
        model.item_codes.copy_(codes)
        model.prior_mean.copy_(torch.tensor([0.5, 0.5, 2.5]))
    truth = codes @ w + b  # (6,) a user whose stars are exactly linear in the movie codes
    rated = torch.tensor([0, 2, 3, 5])
    exact = model.fold_in(rated, truth[rated])  # fold_in_l2 = 1, noise 1, identity prior precision
    # Hand-computed generalized ridge: (A'A + I) x = A'r + m.
    a = torch.cat([codes[rated], torch.ones(4, 1)], 1)
    x = torch.linalg.solve(a.T @ a + torch.eye(3), a.T @ truth[rated] + model.prior_mean)
    assert torch.allclose(exact, torch.cat([codes, torch.ones(6, 1)], 1) @ x, atol=1e-5)
    model.config = model.config.replace(fold_in_l2=0.0)  # no prior: the linear user is recovered exactly
    assert torch.allclose(model.fold_in(rated, truth[rated]), truth, atol=1e-3)
    # Without ratings a new user is the prior's average user.
    average = torch.cat([codes, torch.ones(6, 1)], 1) @ model.prior_mean
    model.config = model.config.replace(fold_in_l2=1.0)
    assert torch.allclose(model.fold_in(torch.tensor([], dtype=torch.long), torch.tensor([])), average)


def test_user_mode_fold_in_runs_the_vector_through_the_network():
    ratings = low_rank()
    model = build(ratings, **SMALL["user"], row_bias=False)
    fit(model, ratings, 3)
    train = ratings.matrix()
    user = 7
    _, items, stars = train.entries(torch.tensor([user]))
    assert torch.allclose(model.fold_in(items, stars), model.score(torch.tensor([user]), train)[0])


# -- interface, determinism, checkpoints ------------------------------------------------------------
@pytest.mark.parametrize("mode", ["user", "item"])
def test_shapes_and_rating_scale(mode):
    ratings = low_rank()
    model = build(ratings, **SMALL[mode])
    fit(model, ratings, 2)
    train = ratings.matrix()
    with torch.no_grad():
        # A movie the network puts past 5 stars: its output unit's bias, or in item mode its row's bias.
        (model.row_bias if mode == "item" else model.output_bias)[1] += 10.0
    scores = model.score(torch.tensor([0, 5, 59]), train)
    assert scores.shape == (3, 40) and (scores[:, 1] > 5).all()  # raw: ranks by what the model knows
    pred = model.predict(torch.tensor([0, 0, 3, 59]), torch.tensor([1, 39, 2, 0]), train)
    assert pred.shape == (4,) and pred[0] == 5.0 and pred.min() >= 1 and pred.max() <= 5  # stars: clipped
    assert torch.allclose(pred[1], scores[0, 39].clamp(1, 5))
    assert model.item_vectors().shape == (40, 16 if mode == "item" else 8)
    folded = model.fold_in(torch.tensor([0, 3]), torch.tensor([5.0, 1.0]))
    assert folded.shape == (40,) and torch.isfinite(folded).all()


@pytest.mark.parametrize("mode", ["user", "item"])
def test_predict_reads_the_score_rows_at_each_pair(mode):
    """predict works pair by pair (validation and RMSE at scale), and must be the score rows at those pairs."""
    ratings = low_rank()
    model = build(ratings, **SMALL[mode])
    fit(model, ratings, 2)
    train = ratings.matrix()
    rng = np.random.default_rng(3)
    users, items = torch.from_numpy(rng.integers(0, 60, 500)), torch.from_numpy(rng.integers(0, 40, 500))
    rows = model.score(torch.arange(60), train)  # (U, I)
    assert torch.allclose(model.predict(users, items, train), rows[users, items].clamp(1, 5), atol=1e-5)
    assert model.predict(users[:0], items[:0], train).shape == (0,)


@pytest.mark.parametrize("mode", ["user", "item"])
def test_state_dict_round_trip_gives_identical_predictions(mode, tmp_path):
    ratings = low_rank()
    model = build(ratings, **SMALL[mode])
    fit(model, ratings, 3)
    path = tmp_path / "ae.pt"
    torch.save(model.state_dict(), path)
    assert not any("cache" in k or "matrix" in k for k in model.state_dict())  # the transpose is not saved
    fresh = build(ratings, seed=99, **SMALL[mode])
    fresh.load_state_dict(torch.load(path, weights_only=True))
    train = ratings.matrix()  # a new matrix object: item mode has to transpose it again
    users = torch.arange(60)
    assert torch.equal(model.score(users, train), fresh.score(users, train))
    assert torch.equal(model.item_vectors(), fresh.item_vectors())
    items, stars = torch.tensor([1, 2, 30]), torch.tensor([4.0, 2.0, 5.0])
    assert torch.equal(model.fold_in(items, stars), fresh.fold_in(items, stars))


@pytest.mark.parametrize("mode", ["user", "item"])
def test_same_seed_same_parameters(mode):
    ratings = low_rank()
    runs = []
    for seed in (4, 4, 5):
        model = build(ratings, seed=seed, **SMALL[mode], dropout=0.3, hidden_dropout=0.2)
        fit(model, ratings, 1, seed=seed)
        runs.append(model.state_dict())
    assert all(torch.equal(runs[0][k], runs[1][k]) for k in runs[0])
    assert not all(torch.equal(runs[0][k], runs[2][k]) for k in runs[0])


@pytest.mark.parametrize("mode", ["user", "item"])
def test_training_draws_only_from_the_generator(mode):
    ratings = low_rank()
    runs = []
    for global_seed in (1, 2):
        model = build(ratings, seed=0, **SMALL[mode], dropout=0.3, hidden_dropout=0.2)
        torch.manual_seed(global_seed)  # the global RNG differs, the training generator does not
        fit(model, ratings, 1, seed=7)
        runs.append(model.state_dict())
    assert all(torch.equal(runs[0][k], runs[1][k]) for k in runs[0])


@pytest.mark.parametrize("mode", ["user", "item"])
def test_loss_decreases_and_predictions_learn_the_structure(mode):
    ratings = low_rank(80, 50, seed=3)
    rng = np.random.default_rng(0)
    test = rng.random(len(ratings)) < 0.15
    train, held = ratings.take(~test), ratings.take(test)
    model = build(train, **SMALL[mode], lr=0.01, lr_decay=1.0)
    losses = fit(model, train, 40)
    assert losses[-1] < losses[5] < losses[0]
    pred = model.predict(torch.from_numpy(held.users).long(), torch.from_numpy(held.items).long(), train.matrix())
    rmse = float(((pred.numpy() - held.ratings) ** 2).mean() ** 0.5)
    baseline = float(((train.ratings.mean() - held.ratings) ** 2).mean() ** 0.5)
    assert rmse < 0.9 * baseline, (rmse, baseline)


def test_rows_without_ratings_and_unrated_movies():
    base = low_rank(20, 10)
    keep = (base.users != 19) & (base.items != 9)  # user 19 and movie 9 have no training ratings
    ratings = base.take(keep)
    for mode in ("user", "item"):
        model = build(ratings, **SMALL[mode])
        losses = fit(model, ratings, 2)
        assert all(math.isfinite(x) for x in losses)
        scores = model.score(torch.arange(20), ratings.matrix())
        assert torch.isfinite(scores).all()


def test_config_validation_and_fixed_defaults():
    with pytest.raises(MovierecError, match="layers"):
        UserAutoEncoderConfig(layers="20,x")
    with pytest.raises(MovierecError, match="--activation must be one of"):
        UserAutoEncoderConfig(activation="softmax")
    with pytest.raises(MovierecError, match="dropout"):
        ItemAutoEncoderConfig(dropout=1.0)
    with pytest.raises(MovierecError, match="--lr must be a finite number"):
        ItemAutoEncoderConfig(lr=math.nan)
    # Each class has its own fixed defaults: the seed's network, and I-AutoRec as tuned on ML-100K u1.
    user, item = UserAutoEncoderConfig(), ItemAutoEncoderConfig(epochs=5)
    assert (user.layers, user.epochs, user.lr, user.batch_size) == ("20,10,20", 100, 0.01, 32)
    assert (item.layers, item.epochs, item.hidden_dropout, item.lr, item.batch_size) == ("500", 5, 0.7, 0.003, 64)
    assert ItemAutoEncoderConfig.from_dict(item.to_dict()) == item
