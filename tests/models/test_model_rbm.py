"""The RBMs: hand-computed CD updates, masking of unrated movies, shapes, checkpoints, seeding, learning
a known structure, item orientation and its fold-in, and (slow) the real MovieLens-100K u1 split."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from synthetic import holdout, low_rank_ratings

from movierec.data.ratings import Ratings
from movierec.device import make_generator, seed_everything
from movierec.errors import MovierecError
from movierec.models import build_model, migrate_settings
from movierec.models.rbm import RBM, cd_update
from movierec.models.rbm_like import LikeRBM, LikeRBMConfig
from movierec.models.rbm_rating import RatingRBM, RatingRBMConfig

STARS = (1.0, 2.0, 3.0, 4.0, 5.0)
HALF_STARS = tuple(v / 2 for v in range(1, 11))


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def ratings_from(triples: list[tuple[int, int, float]], n_users: int, n_items: int) -> Ratings:
    u, i, r = (np.array(col) for col in zip(*triples, strict=True))
    return Ratings(u.astype(np.int32), i.astype(np.int32), r.astype(np.float32),
                   np.zeros(len(u), np.int64), n_users, n_items)


def set_params(model: RBM, **values: np.ndarray) -> None:
    with torch.no_grad():
        for name, value in values.items():
            getattr(model, name).copy_(torch.tensor(value, dtype=torch.float32))


def fit(model: RBM, train: Ratings, seed: int = 0, epochs: int | None = None) -> list[dict[str, float]]:
    """What the shared training loop does, minus validation."""
    matrix = train.matrix("cpu")
    gen = make_generator(torch.device("cpu"), seed)
    trainer = model.trainer(matrix, gen)
    stats = []
    for _ in range(model.config.epochs if epochs is None else epochs):
        model.train()
        stats.append(trainer.train_epoch())
        model.eval()
    trainer.finalize()
    return stats


def config(mode: str = "like", **fields) -> LikeRBMConfig | RatingRBMConfig:
    """A config of the RBM for ``mode``; ``rating-item`` / ``rating-user`` also pick the orientation."""
    if mode == "like":
        return LikeRBMConfig(**fields)
    orientation = mode.split("-")[1] if "-" in mode else "user"
    return RatingRBMConfig(**{"orientation": orientation, **fields})


def build(cfg: LikeRBMConfig | RatingRBMConfig, n_users: int, n_items: int, values=STARS) -> RBM:
    cls = LikeRBM if isinstance(cfg, LikeRBMConfig) else RatingRBM
    return cls(cfg, n_users, n_items, values)


def make_model(cfg: LikeRBMConfig | RatingRBMConfig, n_users: int, n_items: int, values=STARS, seed: int = 0) -> RBM:
    seed_everything(seed)
    return build(cfg, n_users, n_items, values)


def two_tastes(n_users: int = 80, n_items: int = 40, density: float = 0.5, seed: int = 0) -> tuple[Ratings, Ratings]:
    """Two kinds of users and two kinds of movies: each user rates their own kind 4-5 stars and the
    other kind 1-2 stars. Returns (train, held-out) ratings, 80/20."""
    rng = np.random.default_rng(seed)
    observed = rng.random((n_users, n_items)) < density
    users, items = np.nonzero(observed)
    same = (users % 2) == (items % 2)
    stars = np.where(same, rng.choice([4.0, 5.0], users.shape), rng.choice([1.0, 2.0], users.shape))
    full = Ratings(users.astype(np.int32), items.astype(np.int32), stars.astype(np.float32),
                   np.zeros(users.shape, np.int64), n_users, n_items)
    test = rng.random(users.shape) < 0.2
    return full.take(~test), full.take(test)


@pytest.fixture(autouse=True)
def one_thread():
    """These matrices are tiny: extra CPU threads only add synchronisation, which on a busy shared
    machine made the tests several times slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


SYNTH = dict(epochs=30, hidden=10, gibbs_steps=1, batch_size=10, lr=0.5, weight_decay=0.001)


# -- known answers -------------------------------------------------------------------------------
W3 = np.array([[0.5, -0.3, 0.2], [-0.4, 0.1, 0.6]], np.float32)  # (hidden 2, movies 3)
A3 = np.array([[0.1, -0.2]], np.float32)
B3 = np.array([[0.3, 0.05, -0.1]], np.float32)
# user 0 liked movie 0 and disliked movie 2; user 1 disliked movie 0; nobody rated movie 1.
TRIPLES = [(0, 0, 5.0), (0, 2, 1.0), (1, 0, 2.0)]
V0 = np.array([[1, 0, 0], [0, 0, 0]], np.float32)  # like/dislike (0 also where unrated)
RATED = np.array([[1, 0, 1], [1, 0, 0]], np.float32)


def hand_cd1(h0: np.ndarray | None, lr: float, wd: float = 0.0):
    """CD-1 on the 3x2 example with numpy: the chain's hidden state is ``h0`` if given (a fixed
    sample), else the probabilities; visible reconstructions are probabilities; unrated masked."""
    ph0 = sigmoid(V0 @ W3.T + A3)  # (2, 2)
    h = ph0 if h0 is None else h0
    v1 = sigmoid(h @ W3 + B3) * RATED  # (2, 3): unrated movies are not reconstructed
    ph1 = sigmoid(v1 @ W3.T + A3)
    n = 2
    w = W3 + lr * ((ph0.T @ V0 - ph1.T @ v1) / n - wd * W3)
    a = A3 + lr * (ph0 - ph1).sum(0, keepdims=True) / n
    b = B3 + lr * (V0 * RATED - v1).sum(0, keepdims=True) / n
    return w, a, b


def like_model_3x2(**changes) -> tuple[LikeRBM, Ratings]:
    """The plain RBM (no conditional term, no user offset) with the parameters above; tests that want
    the offset turn it on and set ``like_rate``."""
    cfg = LikeRBMConfig(hidden=2, gibbs_steps=1, lr=0.5, momentum=0.0, weight_decay=0.0, conditional=False,
                        user_bias=False)
    model = LikeRBM(dataclasses.replace(cfg, **changes), 2, 3, STARS)
    set_params(model, W=W3, a=A3, b=B3)
    return model, ratings_from(TRIPLES, 2, 3)


def test_cd1_update_on_probabilities_matches_hand_computation():
    model, train = like_model_3x2()
    cd_update(model, train.matrix(), torch.tensor([0, 1]), generator=None)
    w, a, b = hand_cd1(None, lr=0.5)
    np.testing.assert_allclose(model.W.numpy(), w, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(model.a.numpy(), a, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(model.b.numpy(), b, rtol=1e-5, atol=1e-6)
    # Movie 1 was rated by nobody: its weights and bias did not move at all.
    assert torch.equal(model.W[:, 1], torch.tensor(W3[:, 1]))
    assert model.b[0, 1].item() == B3[0, 1]
    # ... and the update is not trivially zero elsewhere.
    assert np.abs(w - W3).max() > 1e-3


def test_cd1_update_with_a_fixed_hidden_sample(monkeypatch):
    """With sampling on, the chain runs from the sampled hidden state while the positive statistics
    use p(h|v0): fix the sample and compare with the hand formula."""
    fixed = np.array([[1.0, 0.0], [0.0, 1.0]], np.float32)
    monkeypatch.setattr(RBM, "_sample_hidden", staticmethod(lambda p, g: torch.tensor(fixed)))
    model, train = like_model_3x2(weight_decay=0.1)
    cd_update(model, train.matrix(), torch.tensor([0, 1]), generator=torch.Generator().manual_seed(0))
    w, a, b = hand_cd1(fixed, lr=0.5, wd=0.1)
    np.testing.assert_allclose(model.W.numpy(), w, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(model.a.numpy(), a, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(model.b.numpy(), b, rtol=1e-5, atol=1e-6)
    # Weight decay is the only thing that touches the unrated movie: it shrinks, nothing more.
    np.testing.assert_allclose(model.W[:, 1].numpy(), W3[:, 1] * (1 - 0.5 * 0.1), rtol=1e-6)
    assert model.b[0, 1].item() == B3[0, 1]


def test_conditional_term_update_matches_hand_computation():
    """D sees which movies are rated: p(h|v) = sigmoid(v W^T + r D^T + a); dD = r^T (ph0 - ph1)."""
    d = np.array([[0.2, 0.4, -0.3], [0.1, -0.5, 0.3]], np.float32)
    model, train = like_model_3x2(conditional=True)
    set_params(model, D=d)
    cd_update(model, train.matrix(), torch.tensor([0, 1]), generator=None)
    base = RATED @ d.T + A3  # (2, 2) the fixed part of the hidden input
    ph0 = sigmoid(V0 @ W3.T + base)
    v1 = sigmoid(ph0 @ W3 + B3) * RATED
    ph1 = sigmoid(v1 @ W3.T + base)
    np.testing.assert_allclose(model.D.numpy(), d + 0.5 * (ph0 - ph1).T @ RATED / 2, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(model.W.numpy(), W3 + 0.5 * (ph0.T @ V0 - ph1.T @ v1) / 2, rtol=1e-5, atol=1e-6)
    assert torch.equal(model.D[:, 1], torch.tensor(d[:, 1]))


def test_softmax_cd1_update_matches_hand_computation():
    """Rating mode, 2 movies x 3 star values x 2 hidden; one user gave movie 0 three stars."""
    w = np.array([[[0.2, -0.1, 0.4], [0.3, 0.3, -0.2]], [[-0.5, 0.2, 0.1], [0.0, 0.1, 0.2]]], np.float32)
    a = np.array([[0.05, -0.1]], np.float32)
    b = np.array([[0.1, 0.0, -0.2], [0.2, 0.1, 0.0]], np.float32)
    cfg = RatingRBMConfig(orientation="user", hidden=2, gibbs_steps=1, lr=1.0, momentum=0.0, weight_decay=0.0)
    model = RatingRBM(cfg, 1, 2, (1.0, 2.0, 3.0))
    set_params(model, W=w, a=a, b=b)
    cd_update(model, ratings_from([(0, 0, 3.0)], 1, 2).matrix(), torch.tensor([0]), generator=None)
    v0 = np.array([0.0, 0.0, 1.0], np.float32)  # one-hot of 3 stars
    ph0 = sigmoid(w[:, 0, :] @ v0 + a[0])  # (2,)
    logits = b[0] + ph0 @ w[:, 0, :]  # (3,)
    v1 = np.exp(logits) / np.exp(logits).sum()
    ph1 = sigmoid(w[:, 0, :] @ v1 + a[0])
    expected = w.copy()
    expected[:, 0, :] += np.outer(ph0, v0) - np.outer(ph1, v1)
    np.testing.assert_allclose(model.W.numpy(), expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(model.b.numpy()[0], b[0] + v0 - v1, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(model.a.numpy(), a + (ph0 - ph1), rtol=1e-5, atol=1e-6)
    assert torch.equal(model.W[:, 1, :], torch.tensor(w[:, 1, :]))  # movie 1 unrated: untouched
    assert torch.equal(model.b[1], torch.tensor(b[1]))


def test_mean_field_prediction_matches_hand_computation():
    model, train = like_model_3x2()
    scores = model.score(torch.tensor([0, 1]), train.matrix())
    expected = sigmoid(sigmoid(V0 @ W3.T + A3) @ W3 + B3)
    np.testing.assert_allclose(scores.numpy(), expected, rtol=1e-5)


def logit(p: float) -> float:
    return float(np.log(p / (1 - p)))


@pytest.mark.parametrize("mode", ["like", "rating-user", "rating-item"])
def test_predict_reads_the_score_rows_at_each_pair(mode):
    """predict works pair by pair (validation and RMSE at scale), and must be the score rows at those pairs:
    user offsets, biases and the softmax's expected stars included, whatever the batching of users."""
    train, _ = two_tastes()
    model = make_model(config(mode, **{**SYNTH, "epochs": 2}), 80, 40)
    fit(model, train)
    matrix = train.matrix("cpu")
    rng = np.random.default_rng(4)
    users, items = torch.from_numpy(rng.integers(0, 80, 600)), torch.from_numpy(rng.integers(0, 40, 600))
    rows = model.score(torch.arange(80), matrix)  # (U, I)
    expected = rows[users, items] if mode == "like" else rows[users, items].clamp(1, 5)
    for batch_users in (7, 1024):
        assert torch.allclose(model.predict(users, items, matrix, batch_users=batch_users), expected, atol=1e-5)


def test_user_offset_shifts_each_users_predictions_by_their_like_rate():
    """P(liked) = sigmoid(h W + b + o_u), o_u = logit((likes + k r) / (rated + k)) - logit(r): user 0
    liked 1 of 2, user 1 none of 1; everyone's rate r = 0.6 here, k = user_bias_prior = 2."""
    model, train = like_model_3x2(user_bias=True, user_bias_prior=2.0)
    model.like_rate.fill_(0.6)
    scores = model.score(torch.tensor([0, 1]), train.matrix())
    offset = np.array([[logit((1 + 1.2) / 4) - logit(0.6)], [logit((0 + 1.2) / 3) - logit(0.6)]], np.float32)
    expected = sigmoid(sigmoid(V0 @ W3.T + A3) @ W3 + B3 + offset)
    np.testing.assert_allclose(scores.numpy(), expected, rtol=1e-5)
    assert offset[1, 0] < offset[0, 0] < 0  # the pickier user gets the lower P(liked) everywhere
    # A new user with the same ratings is folded in with the same offset.
    np.testing.assert_allclose(model.fold_in(torch.tensor([0]), torch.tensor([2.0])).numpy(), expected[1], rtol=1e-5)
    # The Gibbs chain of the CD update reconstructs with the same offsets.
    cd_update(model, train.matrix(), torch.tensor([0, 1]), generator=None)
    ph0 = sigmoid(V0 @ W3.T + A3)
    v1 = sigmoid(ph0 @ W3 + B3 + offset) * RATED
    ph1 = sigmoid(v1 @ W3.T + A3)
    np.testing.assert_allclose(model.W.numpy(), W3 + 0.5 * (ph0.T @ V0 - ph1.T @ v1) / 2, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(model.b.numpy(), B3 + 0.5 * (V0 * RATED - v1).sum(0, keepdims=True) / 2, rtol=1e-5,
                               atol=1e-6)


def test_movie_biases_are_fitted_given_the_user_offsets():
    """A picky user (1 like in 10) and a generous one (9 in 10) rate the same ten movies; only the picky
    one rates movie 10, and dislikes it. Its bias must not count that user's pickiness twice: it stays
    above the plain log-odds of its ratings, and every bias satisfies its own likelihood equation."""
    picky = [(0, i, 5.0 if i == 0 else 1.0) for i in range(10)] + [(0, 10, 1.0)]
    generous = [(1, i, 1.0 if i == 9 else 5.0) for i in range(10)]
    train = ratings_from(picky + generous, 2, 12).matrix()  # movie 11: nobody
    model = make_model(config("like", hidden=3, user_bias_prior=5.0), 2, 12)
    model.trainer(train, make_generator(torch.device("cpu"), 0))  # the like rate and the biases, from the data
    rate = model.like_rate.item()
    assert rate == pytest.approx((10 + 1) / (21 + 2))
    liked = model.visible_states(train.values)
    offset = model._case_offset(train.row_ids(), liked, 2)[:, 0]  # (2,)
    assert offset[0] < 0 < offset[1]
    b = model.b[0]
    p = torch.sigmoid(b[train.indices] + offset[train.row_ids()])
    grad = torch.zeros(12).index_add_(0, train.indices, liked[:, 0] - p) + 2.0 * (rate - torch.sigmoid(b))
    assert grad.abs().max() < 1e-4
    plain = logit((0 + 2 * rate) / (1 + 2))  # movie 10's log-odds from its own rating and the same prior
    assert b[10] > plain
    assert b[11] == pytest.approx(logit(rate), abs=1e-4)  # unrated: everyone's rate


def test_movie_confidence_slows_rarely_rated_movies():
    """Each movie's W, D and b move at n / (n + movie_confidence) of the plain update, n its ratings."""
    train = ratings_from(TRIPLES, 2, 3).matrix()  # movie 0: 2 ratings, movie 1: none, movie 2: one
    moved = {}
    for confidence in (0.0, 2.0):
        model = make_model(config("like", hidden=2, gibbs_steps=1, momentum=0.0, weight_decay=0.0,
                                  movie_confidence=confidence), 2, 3)
        trainer = model.trainer(train, make_generator(torch.device("cpu"), 0))
        start = {name: getattr(model, name).clone() for name in ("W", "D", "b", "a")}
        trainer.cd_update(torch.tensor([0, 1]), generator=None)
        moved[confidence] = {name: getattr(model, name) - value for name, value in start.items()}
    share = torch.tensor([2 / 4, 0.0, 1 / 3])
    for name in ("W", "D", "b"):
        torch.testing.assert_close(moved[2.0][name], moved[0.0][name] * share, rtol=1e-5, atol=1e-7)
        assert moved[0.0][name][:, 0].abs().max() > 1e-4
    torch.testing.assert_close(moved[2.0]["a"], moved[0.0]["a"])  # the hidden biases belong to no movie


def test_visible_states_and_thresholds():
    like = LikeRBM(LikeRBMConfig(like_threshold=3.0), 1, 1, HALF_STARS)
    stars = torch.tensor([0.5, 2.5, 3.0, 4.5])
    assert like.visible_states(stars)[:, 0].tolist() == [0.0, 0.0, 1.0, 1.0]
    assert like.kind == "like" and like.like_threshold == 3.0
    rating = RatingRBM(RatingRBMConfig(), 1, 1, HALF_STARS)
    states = rating.visible_states(torch.tensor([0.5, 3.5, 5.0, 3.49999]))
    assert states.shape == (4, 10)
    assert states.argmax(1).tolist() == [0, 6, 9, 6]
    assert rating.kind == "rating" and rating.like_threshold is None


@pytest.mark.parametrize(
    "mode, changes, message",
    [("like", {"like_threshold": 6.0}, "like_threshold"), ("like", {"like_threshold": 1.0}, "like_threshold"),
     ("like", {"hidden": 0}, "--hidden"), ("rating", {"gibbs_steps": 0}, "--gibbs-steps"),
     ("rating", {"orientation": "movie"}, "orientation"), ("rating", {"lr": 0.0}, "--lr must be"),
     ("rating", {"fold_in_l2": -1.0}, "--fold-in-l2"), ("like", {"user_bias_prior": 0.0}, "--user-bias-prior"),
     ("like", {"movie_confidence": -1.0}, "--movie-confidence")],
)
def test_bad_config_is_one_clear_error(mode, changes, message):
    with pytest.raises(MovierecError, match=message):
        build(config(mode, **changes), 3, 3)


def test_each_class_has_its_own_fixed_defaults():
    assert (LikeRBM.name, LikeRBM.mode, RatingRBM.name, RatingRBM.mode) == ("rbm", "like", "rbm", "rating")
    assert (LikeRBM.config_class, RatingRBM.config_class) == (LikeRBMConfig, RatingRBMConfig)
    like, rating = LikeRBMConfig(), RatingRBMConfig()
    assert (like.epochs, like.lr, like.hidden, like.gibbs_steps) == (10, 0.2, 100, 10)  # the seed's
    assert rating.orientation == "item"
    for cfg in (like, rating):
        assert "mode" not in cfg.to_dict()
        assert type(cfg).from_dict(cfg.to_dict()) == cfg


@pytest.mark.parametrize("cfg_class", [LikeRBMConfig, RatingRBMConfig])
def test_config_fields_are_cli_friendly(cfg_class):
    for field in dataclasses.fields(cfg_class):
        assert field.type in ("int", "float", "str", "bool"), field.name
        assert field.metadata["help"], field.name


# What RBM checkpoints stored before the two classes (one RBMConfig with a mode field).
OLD_LIKE = {"epochs": 10, "mode": "like", "hidden": 4, "gibbs_steps": 10, "batch_size": 100, "lr": 0.2,
            "momentum": 0.9, "weight_decay": 0.01, "init_std": 0.01, "sample_visible": False,
            "conditional": True, "like_threshold": 3.5}
OLD_RATING = {**OLD_LIKE, "mode": "rating", "epochs": 25, "lr": 0.05, "like_threshold": 3.0}


@pytest.mark.parametrize("old", [OLD_LIKE, OLD_RATING], ids=["like", "rating"])
def test_old_checkpoint_configs_map_to_the_right_class(old):
    mode, values = migrate_settings("rbm", old)
    seed_everything(0)
    model = build_model("rbm", mode, values, 5, 6, STARS)
    cfg = model.config
    assert type(model) is {"like": LikeRBM, "rating": RatingRBM}[old["mode"]]
    assert (cfg.hidden, cfg.epochs, cfg.lr) == (4, old["epochs"], old["lr"])
    if mode == "like":
        assert cfg.like_threshold == 3.5 and cfg.conditional
        assert not cfg.user_bias and cfg.movie_confidence == 0  # trained and scored as they were
    else:
        assert cfg.orientation == "user"  # the only orientation old rating checkpoints can hold
    # An old checkpoint's tensors (their shapes are unchanged) load into the class its config names.
    k = 1 if mode == "like" else 5
    old_state = {"W": torch.randn((4, 6) if k == 1 else (4, 6, k)), "a": torch.randn(1, 4),
                 "b": torch.randn((1, 6) if k == 1 else (6, k))}
    if mode == "like":
        old_state["D"] = torch.randn(4, 6)
    model.load_state_dict(old_state)
    assert torch.equal(model.W, old_state["W"])
    # New rating checkpoints say their orientation, and it is kept.
    assert build_model("rbm", "rating", RatingRBMConfig().to_dict(), 5, 6, STARS).config.orientation == "item"


# -- shapes and checkpoints -------------------------------------------------------------------------
@pytest.mark.parametrize("mode, width", [("like", 6), ("rating-user", 6 * 5), ("rating-item", 6)])
def test_shapes(mode, width):
    train, _ = two_tastes(n_users=12, n_items=9)
    model = make_model(config(mode, hidden=6, epochs=1), 12, 9)
    fit(model, train)
    matrix = train.matrix()
    scores = model.score(torch.tensor([0, 3, 5]), matrix)
    assert scores.shape == (3, 9) and scores.dtype == torch.float32
    pred = model.predict(torch.tensor([0, 0, 7, 11]), torch.tensor([1, 2, 3, 8]), matrix)
    assert pred.shape == (4,)
    assert torch.allclose(pred[:2], scores[0, 1:3])
    assert model.item_vectors().shape == (9, width)
    folded = model.fold_in(torch.tensor([4, 1]), torch.tensor([5.0, 2.0]))
    assert folded.shape == (9,)
    # Expected stars are an average of star values, P(liked) a probability: in range without clipping.
    low, high = (0.0, 1.0) if mode == "like" else (1.0, 5.0)
    for out in (scores, pred, folded):
        assert torch.isfinite(out).all() and out.min() >= low and out.max() <= high


@pytest.mark.parametrize("mode", ["like", "rating-user"])
def test_fold_in_equals_scoring_a_known_user(mode):
    train, _ = two_tastes(n_users=16, n_items=10)
    model = make_model(config(mode, hidden=5, epochs=2), 16, 10)
    fit(model, train)
    matrix = train.matrix()
    _, items, stars = matrix.entries(torch.tensor([3]))
    shuffled = torch.flip(torch.arange(items.shape[0]), [0])  # order of the new user's ratings is irrelevant
    folded = model.fold_in(items[shuffled], stars[shuffled])
    assert torch.allclose(folded, model.score(torch.tensor([3]), matrix)[0], atol=1e-6)


@pytest.mark.parametrize("mode, conditional", [("like", True), ("like", False), ("rating-user", None),
                                               ("rating-item", None)])
def test_state_dict_round_trip_gives_identical_predictions(mode, conditional):
    train, test = two_tastes(n_users=20, n_items=12)
    cfg = config(mode, hidden=7, epochs=2, **({} if conditional is None else {"conditional": conditional}))
    model = make_model(cfg, 20, 12)
    fit(model, train)
    state = model.state_dict()
    expected_keys = {"W", "a", "b"} | ({"D"} if conditional else set()) | ({"like_rate"} if mode == "like" else set())
    if mode == "rating-item":
        expected_keys |= {"item_hidden", "prior_mean", "prior_std"}  # what fold_in reads without the ratings
    assert set(state) == expected_keys
    fresh = build(type(cfg).from_dict(cfg.to_dict()), 20, 12)
    fresh.load_state_dict(state)
    users, items = torch.from_numpy(test.users.astype(np.int64)), torch.from_numpy(test.items.astype(np.int64))
    matrix = train.matrix()
    assert torch.equal(fresh.predict(users, items, matrix), model.predict(users, items, matrix))
    assert torch.equal(fresh.item_vectors(), model.item_vectors())
    new_user = (torch.tensor([1, 4, 7]), torch.tensor([5.0, 1.0, 4.0]))
    assert torch.allclose(fresh.fold_in(*new_user), model.fold_in(*new_user))


@pytest.mark.parametrize("mode, sample_visible", [("like", True), ("rating-user", True), ("rating-user", False),
                                                  ("rating-item", True)])
def test_same_seed_same_parameters(mode, sample_visible):
    train, _ = two_tastes(n_users=30, n_items=12)
    cfg = config(mode, sample_visible=sample_visible, hidden=6, epochs=1, batch_size=8)
    runs = []
    for seed in (3, 3, 4):
        model = make_model(cfg, 30, 12, seed=seed)
        fit(model, train, seed=seed)
        runs.append((model.state_dict(), model.fold_in(torch.tensor([0, 5]), torch.tensor([4.0, 2.0]))))
    for name in runs[0][0]:
        assert torch.equal(runs[0][0][name], runs[1][0][name]), name
    assert torch.equal(runs[0][1], runs[1][1])  # fold-in too
    assert not torch.equal(runs[0][0]["W"], runs[2][0]["W"])


def test_item_orientation_is_the_user_rbm_of_the_transposed_matrix():
    """One case per movie, a visible unit per user: exactly the user-based RBM trained on the transpose."""
    train, _ = two_tastes(n_users=14, n_items=9)
    flipped = Ratings(train.items, train.users, train.ratings, train.timestamps, 9, 14)
    cfg = dict(hidden=5, epochs=2, batch_size=4, gibbs_steps=2)
    item = make_model(config("rating-item", **cfg), 14, 9, seed=1)
    user = make_model(config("rating-user", **cfg), 9, 14, seed=1)
    fit(item, train, seed=1)
    fit(user, flipped, seed=1)
    for name in ("W", "a", "b"):
        assert torch.allclose(getattr(item, name), getattr(user, name), atol=1e-6), name
    assert item.W.shape == (5, 14, 5)  # (hidden, users, stars)
    # The item RBM's prediction for (user u, movie i) is the user RBM's reconstruction of "user" u from
    # "case" i's ratings.
    scores = item.score(torch.arange(14), train.matrix())  # (U, I)
    assert torch.allclose(scores, user.score(torch.arange(9), flipped.matrix()).T, atol=1e-5)


# -- learning -------------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["like", "rating-user", "rating-item"])
def test_loss_decreases(mode):
    train, _ = two_tastes()
    model = make_model(config(mode, **{**SYNTH, "epochs": 8}), 80, 40)
    stats = fit(model, train)
    losses = [s["loss"] for s in stats]
    assert losses[-1] < 0.8 * losses[0], losses
    assert stats[-1]["accuracy"] > stats[0]["accuracy"]
    assert all(np.isfinite(s["loss"]) for s in stats)
    assert ("rmse" in stats[0]) == (mode != "like")


def test_like_mode_learns_two_tastes():
    train, test = two_tastes()
    model = make_model(config("like", **SYNTH), 80, 40)
    fit(model, train)
    users, items = torch.from_numpy(test.users.astype(np.int64)), torch.from_numpy(test.items.astype(np.int64))
    p = model.predict(users, items, train.matrix())
    liked = torch.from_numpy(test.ratings) >= 3
    # Every movie is liked by half its users, so no per-movie rule beats 50%: the users' taste is learned.
    assert ((p >= 0.5) == liked).float().mean() > 0.95
    # Movies of one kind are each other's nearest neighbours.
    vectors = torch.nn.functional.normalize(model.item_vectors(), dim=1)
    sims = vectors @ vectors.T - 2 * torch.eye(40)
    assert ((sims.argmax(1) % 2) == (torch.arange(40) % 2)).float().mean() > 0.9


@pytest.mark.parametrize("mode", ["rating-user", "rating-item"])
def test_rating_mode_learns_two_tastes(mode):
    train, test = two_tastes()
    model = make_model(config(mode, **SYNTH), 80, 40)
    fit(model, train)
    users, items = torch.from_numpy(test.users.astype(np.int64)), torch.from_numpy(test.items.astype(np.int64))
    truth = torch.from_numpy(test.ratings)
    rmse = ((model.predict(users, items, train.matrix()) - truth) ** 2).mean().sqrt().item()
    # A movie's average is ~3 stars here (RMSE ~1.6); knowing the user's kind leaves ~0.5.
    assert rmse < 0.8, rmse
    vectors = torch.nn.functional.normalize(model.item_vectors(), dim=1)
    sims = vectors @ vectors.T - 2 * torch.eye(40)
    assert ((sims.argmax(1) % 2) == (torch.arange(40) % 2)).float().mean() > 0.9


def checkerboard(n: int = 24, seed: int = 0) -> Ratings:
    """Even users loved (5 stars) every even movie, odd users every odd one, except the diagonal (user u
    never rated movie u); each user hated (1 star) a random half of the other kind and left the rest
    unrated. So each user's unrated movies are their own diagonal movie, of their kind, and movies of
    the other kind: the right top-1 among them is known."""
    rng = np.random.default_rng(seed)
    same = (np.arange(n)[:, None] % 2) == (np.arange(n)[None, :] % 2)
    rated = np.where(same, True, rng.random((n, n)) < 0.5)
    np.fill_diagonal(rated, False)
    users, items = np.nonzero(rated)
    stars = np.where(same[users, items], 5.0, 1.0)
    return Ratings(users.astype(np.int32), items.astype(np.int32), stars.astype(np.float32),
                   np.zeros(users.shape, np.int64), n, n)


@pytest.mark.parametrize("orientation", ["item", "user"])
def test_checkerboard_top1_is_the_withheld_diagonal(orientation):
    train = checkerboard()
    matrix = train.matrix()
    model = make_model(config(f"rating-{orientation}", epochs=40, hidden=8, gibbs_steps=1, batch_size=4,
                              lr=0.2, weight_decay=0.001), 24, 24)
    fit(model, train)
    scores = model.score(torch.arange(24), matrix)  # (U, I)
    rated = torch.zeros(24, 24, dtype=torch.bool)
    rated[torch.from_numpy(train.users.astype(np.int64)), torch.from_numpy(train.items.astype(np.int64))] = True
    top1 = scores.masked_fill(rated, -np.inf).argmax(1)
    assert top1.tolist() == list(range(24))
    assert scores.diagonal().min() > 4.0  # and it is predicted as a loved movie, not just the least bad


def test_item_orientation_beats_the_global_mean_on_a_low_rank_matrix():
    train, test = holdout(low_rank_ratings())
    model = make_model(config("rating-item", epochs=30, hidden=20, gibbs_steps=1, batch_size=10, lr=0.1,
                              weight_decay=0.001), train.n_users, train.n_items)
    fit(model, train)
    users, items = torch.from_numpy(test.users.astype(np.int64)), torch.from_numpy(test.items.astype(np.int64))
    truth = torch.from_numpy(test.ratings)
    pred = model.predict(users, items, train.matrix())
    rmse = ((pred - truth) ** 2).mean().sqrt().item()
    global_mean = float(np.sqrt(np.mean((test.ratings - train.ratings.mean()) ** 2)))
    assert rmse < 0.8 * global_mean, (rmse, global_mean)
    # predict reads the pairs out directly; they are the all-movie scores at those pairs.
    scores = model.score(torch.arange(train.n_users), train.matrix())  # (U, I)
    assert torch.allclose(pred, scores[users, items], atol=1e-5)


def test_item_orientation_folds_in_a_new_user():
    """A new user is a new visible unit fitted to their ratings: folding in a trained user's training
    ratings predicts their held-out ratings about as well as their trained unit, and better than the
    average user (the fold-in of no ratings, the prior)."""
    train, test = holdout(low_rank_ratings())
    model = make_model(config("rating-item", epochs=30, hidden=20, gibbs_steps=1, batch_size=10, lr=0.1,
                              weight_decay=0.001), train.n_users, train.n_items)
    fit(model, train)
    matrix = train.matrix()
    trained, folded, average = [], [], []
    nobody = model.fold_in(torch.tensor([], dtype=torch.int64), torch.tensor([]))  # (I,)
    for user in np.unique(test.users):
        held = test.users == user
        items = torch.from_numpy(test.items[held].astype(np.int64))
        truth = torch.from_numpy(test.ratings[held])
        _, known, stars = matrix.entries(torch.tensor([int(user)]))
        trained.append((model.score(torch.tensor([int(user)]), matrix)[0, items] - truth) ** 2)
        folded.append((model.fold_in(known, stars)[items] - truth) ** 2)
        average.append((nobody[items] - truth) ** 2)
    trained_rmse, folded_rmse, average_rmse = (torch.cat(e).mean().sqrt().item() for e in (trained, folded, average))
    assert folded_rmse < 1.1 * trained_rmse, (folded_rmse, trained_rmse)
    assert folded_rmse < 0.85 * average_rmse, (folded_rmse, average_rmse)
    # The order of a new user's ratings does not matter.
    known, stars = torch.tensor([5, 2, 9]), torch.tensor([4.0, 1.0, 5.0])
    assert torch.equal(model.fold_in(known, stars), model.fold_in(known.flip(0), stars.flip(0)))


@pytest.mark.parametrize("mode", ["like", "rating-item"])
def test_users_without_ratings_and_unrated_movies(mode):
    train, _ = two_tastes(n_users=20, n_items=10)
    # Two more users and two more movies that nobody rated.
    padded = Ratings(train.users, train.items, train.ratings, train.timestamps, 22, 12)
    model = make_model(config(mode, hidden=4, epochs=2), 22, 12)
    fit(model, padded)
    scores = model.score(torch.tensor([20, 21, 0]), padded.matrix())
    assert torch.isfinite(scores).all()
    if mode == "like":
        # A user with no ratings gets the same prediction as a brand-new user with none.
        nobody = model.fold_in(torch.tensor([], dtype=torch.int64), torch.tensor([]))
        assert torch.allclose(scores[0], nobody, atol=1e-6)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("mode", ["like", "rating-user", "rating-item"])
def test_trains_and_predicts_on_cuda(mode):
    train, test = two_tastes()
    device = torch.device("cuda")
    model = make_model(config(mode, **{**SYNTH, "epochs": 3}), 80, 40).to(device)
    matrix = train.matrix(device)
    gen = make_generator(device, 0)
    stats = model.trainer(matrix, gen).train_epoch()
    assert np.isfinite(stats["loss"])
    users = torch.from_numpy(test.users.astype(np.int64))
    out = model.predict(users, torch.from_numpy(test.items.astype(np.int64)), matrix)
    assert out.device.type == "cuda" and torch.isfinite(out).all()
    assert model.fold_in(torch.tensor([1, 2]), torch.tensor([5.0, 1.0])).device.type == "cuda"


# -- serving ---------------------------------------------------------------------------------------------
def test_a_loaded_item_rbm_serves_from_its_saved_hidden_units(monkeypatch):
    """Every movie's hidden units, saved at the end of training, stand in for recomputing them from the fitted
    ratings (most of a `recommend` at ML-10M scale); other ratings are still read."""
    train, _ = holdout(low_rank_ratings())
    model = RatingRBM(config("rating-item", hidden=6, epochs=3, batch_size=20), train.n_users, train.n_items, STARS)
    fit(model, train)
    loaded = RatingRBM(model.config, train.n_users, train.n_items, STARS)
    loaded.load_state_dict(model.state_dict())
    matrix, users = train.matrix(), torch.arange(4)
    expected = model.score(users, train.matrix())
    loaded.reuse_fit_state(matrix)
    monkeypatch.setattr(RatingRBM, "_case_hidden", lambda *args: pytest.fail("recomputed the hidden units"))
    assert torch.allclose(loaded.score(users, matrix), expected, atol=1e-6)
    with pytest.raises(pytest.fail.Exception):
        loaded.score(users, train.matrix())  # another matrix object: not vouched for, so computed again


def test_an_item_rbm_scores_with_the_weights_it_holds_now():
    """The movies' hidden units kept for a rating matrix belong to the weights they came from: loading other
    weights, or training on, scores the same matrix object afresh."""
    train, _ = holdout(low_rank_ratings())
    cfg = config("rating-item", hidden=6, epochs=2, batch_size=20)
    model = RatingRBM(cfg, train.n_users, train.n_items, STARS)
    other = RatingRBM(cfg, train.n_users, train.n_items, STARS)
    fit(model, train, seed=0)
    fit(other, train, seed=1)
    matrix, users = train.matrix(), torch.arange(4)
    before = model.score(users, matrix)  # keeps every movie's hidden units for `matrix`
    model.load_state_dict(other.state_dict())
    after = model.score(users, matrix)
    assert not torch.allclose(before, after, atol=1e-4)
    assert torch.allclose(after, other.score(users, train.matrix()), atol=1e-6)
    trainer = model.trainer(matrix, make_generator(torch.device("cpu"), 2))
    trainer.train_epoch()
    fresh = RatingRBM(cfg, train.n_users, train.n_items, STARS)
    fresh.load_state_dict(model.state_dict())
    assert torch.allclose(model.score(users, matrix), fresh.score(users, train.matrix()), atol=1e-6)
