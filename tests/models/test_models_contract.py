"""Every model class (each mode of each model) goes through the same checks, on a small matrix whose structure
is known."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from synthetic import holdout, low_rank_ratings
from torch_lists import user_list as recommend

from movierec import checkpoint, loading, serving
from movierec.data.ratings import Ratings
from movierec.device import make_generator
from movierec.evaluate import PopularityBaseline, evaluate
from movierec.models import MODELS, build_model
from movierec.models.base import RatingsMemo, Trainer
from movierec.training import fit

RATING_VALUES = (1.0, 2.0, 3.0, 4.0, 5.0)
# Per-class settings for a 150 x 90 matrix: the defaults are sized for MovieLens, not for this toy.
SMALL: dict[tuple[str, str], dict] = {
    ("rbm", "like"): {"epochs": 15, "batch_size": 20},
    ("rbm", "rating"): {"epochs": 15, "batch_size": 20},
    ("autoencoder", "user"): {"epochs": 30, "batch_size": 16},
    ("autoencoder", "item"): {"epochs": 30, "batch_size": 16, "layers": "32", "hidden_dropout": 0.2},
    ("autoencoder", "vae"): {"epochs": 30, "batch_size": 25, "layers": "32,8,32"},
    ("autoencoder", "dae"): {"epochs": 30, "batch_size": 25, "layers": "32"},
    ("mf", "explicit"): {"epochs": 20},
    ("hybrid", "explicit"): {"epochs": 20},
    ("als", "explicit"): {"epochs": 8},
    ("als", "implicit"): {"epochs": 8, "factors": 8, "tau": 5.0},
}
CASES = list(SMALL)
IDS = [f"{name}-{mode}" for name, mode in CASES]


@pytest.fixture(scope="module")
def data():
    train, test = holdout(low_rank_ratings())
    return train, test


def _train(model_name: str, mode: str, data, seed: int = 0):
    train, test = data
    torch.manual_seed(seed)
    model = build_model(model_name, mode, SMALL[model_name, mode], train.n_users, train.n_items, RATING_VALUES)
    result = fit(model, train, test, seed=seed)
    return model, result


@pytest.mark.parametrize(("model_name", "mode"), CASES, ids=IDS)
def test_contract(model_name, mode, data, home):
    train, test = data
    model, result = _train(model_name, mode, data)
    losses = [r.train["loss"] for r in result.history]
    assert losses[-1] < losses[0], f"training loss did not go down: {losses}"

    # Beats the trivial baseline on held-out ratings.
    if model.kind == "rating":
        baseline = float(np.sqrt(np.mean((test.ratings - train.ratings.mean()) ** 2)))
        assert result.final_valid["rmse"] < baseline * 0.9, (result.final_valid, baseline)
    elif model.kind == "like":
        liked = test.ratings >= model.like_threshold
        always_like = float(np.mean(~liked))
        assert result.final_valid["like_error"] < always_like, (result.final_valid, always_like)
    else:  # a top-N model: ranks held-out favourites better than popularity does
        popular = evaluate(PopularityBaseline(train.matrix()), train.matrix(), test, k=10)["ndcg@10"]
        assert result.final_valid["ndcg@10"] > popular, (result.final_valid, popular)

    # Save -> load gives identical predictions.
    matrix = train.matrix()
    users = torch.from_numpy(test.users.astype(np.int64))
    items = torch.from_numpy(test.items.astype(np.int64))
    before = model.predict(users, items, matrix)
    meta = checkpoint.CheckpointMeta(
        name="contract", model=model_name, mode=mode, config=model.config.to_dict(), dataset="synthetic",
        fingerprint="x", split="holdout", seed=0, n_users=train.n_users, n_items=train.n_items,
        rating_values=list(RATING_VALUES),
    )
    path, _ = checkpoint.save(loading.state_arrays(model), meta, np.arange(train.n_users) + 1,
                              np.arange(train.n_items) + 1)
    loaded = loading.load(path)
    after = loaded.model.predict(users, items, matrix)
    assert torch.equal(before, after)
    assert loaded.meta.model == model_name and loaded.user_ids[0].item() == 1
    assert type(loaded.model) is type(model) and loaded.meta.mode == mode
    # Told that these are the ratings it was fitted on, a loaded model may reuse what it saved of them
    # (`recommend` and `evaluate` do so): the same scores as computing everything from the ratings.
    reused = loading.load(path).model
    reused.reuse_fit_state(matrix)
    assert torch.allclose(reused.score(torch.arange(5), matrix), model.score(torch.arange(5), matrix), atol=1e-5)

    # Every interface method answers with the right shapes.
    batch = torch.arange(5)
    scores = model.score(batch, matrix)
    assert scores.shape == (5, train.n_items) and torch.isfinite(scores).all()
    assert model.item_vectors().shape[0] == train.n_items
    folded = model.fold_in(torch.tensor([0, 1, 2]), torch.tensor([5.0, 1.0, 4.0]))
    assert folded.shape == (train.n_items,) and torch.isfinite(folded).all()
    # score is the raw prediction; predict, pointwise stars, stays on the rating scale.
    assert torch.equal(before, model.predict(users, items, matrix))
    if model.kind == "rating":
        assert before.min() >= 1.0 and before.max() <= 5.0
        raw = model.score(users[:1], matrix)[0, items[:1]]
        assert torch.allclose(before[:1], raw.clamp(1.0, 5.0), atol=1e-5)

    # Movies a user already rated can be left out of their list, and kept on request.
    user = int(train.users[0])
    seen = set(train.items[train.users == user].tolist())
    recs = recommend(model, matrix, user, n=train.n_items)
    assert recs and not {r.item for r in recs} & seen
    assert len(recs) == train.n_items - len(seen)
    with_seen = recommend(model, matrix, user, n=train.n_items, include_seen=True)
    assert {r.item for r in with_seen} >= seen


def stray_training_state(model: torch.nn.Module) -> list[str]:
    """The attributes of ``model`` and its submodules that hold tensors, optimizers or trainers without being
    parameters or buffers: training state left on the module (a memo of what scoring derived from a rating
    matrix, :class:`RatingsMemo`, is the one thing allowed)."""

    def leaves(value):
        if isinstance(value, dict):
            for v in value.values():
                yield from leaves(v)
        elif isinstance(value, (list, tuple, set)):
            for v in value:
                yield from leaves(v)
        else:
            yield value

    found = []
    for prefix, module in model.named_modules():
        for name, value in vars(module).items():
            if name in ("_parameters", "_buffers", "_modules") or isinstance(value, RatingsMemo):
                continue
            if any(isinstance(leaf, (torch.Tensor, torch.optim.Optimizer, Trainer)) for leaf in leaves(value)):
                found.append(f"{prefix}.{name}" if prefix else name)
    return found


@pytest.mark.parametrize(("model_name", "mode"), CASES, ids=IDS)
def test_the_module_holds_only_what_is_saved(model_name, mode, data, home):
    """Training state (optimizers, momentum, shuffled batches, solve plans) lives in the trainer: not on the
    module during training, nor after it; and training adds nothing to the state a checkpoint saves."""
    train, _ = data
    torch.manual_seed(0)
    model = build_model(model_name, mode, SMALL[model_name, mode], train.n_users, train.n_items, RATING_VALUES)
    fresh_shapes = {k: v.shape for k, v in model.state_dict().items()}
    trainer = model.trainer(train.matrix(), make_generator(torch.device("cpu"), 0))
    trainer.train_epoch()
    assert stray_training_state(model) == []
    trainer.finalize()
    assert stray_training_state(model) == []

    model, _ = _train(model_name, mode, data)
    assert stray_training_state(model) == []
    assert {k: v.shape for k, v in model.state_dict().items()} == fresh_shapes
    meta = checkpoint.CheckpointMeta(
        name="only-state", model=model_name, mode=mode, config=model.config.to_dict(), dataset="synthetic",
        fingerprint="x", split="holdout", seed=0, n_users=train.n_users, n_items=train.n_items,
        rating_values=list(RATING_VALUES),
    )
    path, _ = checkpoint.save(loading.state_arrays(model), meta, np.arange(train.n_users) + 1,
                              np.arange(train.n_items) + 1)
    with checkpoint.open_file(path) as saved:
        names = {k.removeprefix("state.") for k in saved.names() if k.startswith("state.")}
        state = {k: saved.get(k) for k in saved.names() if k.startswith("state.")}
    assert names == set(fresh_shapes)
    # Built back from its arrays without drawing initial weights first: no random number is used, and every
    # tensor is the saved one.
    before = torch.get_rng_state()
    built = serving.build_from_state(meta, state, path)
    assert torch.equal(torch.get_rng_state(), before)
    assert not any(t.is_meta for t in (*built.parameters(), *built.buffers()))
    for key, value in model.state_dict().items():
        assert torch.equal(built.state_dict()[key], value), key


@pytest.mark.parametrize(("model_name", "mode"), CASES, ids=IDS)
def test_same_seed_same_numbers(model_name, mode, data):
    _, first = _train(model_name, mode, data, seed=3)
    _, again = _train(model_name, mode, data, seed=3)
    assert [r.valid for r in first.history] == [r.valid for r in again.history]
    assert [r.train for r in first.history] == [r.train for r in again.history]


def test_every_registered_class_is_covered():
    assert set(CASES) == {(name, mode) for name, entry in MODELS.items() for mode in entry.modes}


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize(("model_name", "mode"), CASES, ids=IDS)
def test_cuda_trains_like_cpu(model_name, mode, data):
    """The same code runs on CUDA: it trains, beats the baseline and saves tensors that load on the CPU."""
    train, test = data
    torch.manual_seed(0)
    config = SMALL[model_name, mode]
    model = build_model(model_name, mode, config, train.n_users, train.n_items, RATING_VALUES).to("cuda")
    result = fit(model, train, test, seed=0)
    assert model.device.type == "cuda"
    losses = [r.train["loss"] for r in result.history]
    assert losses[-1] < losses[0]
    cpu = build_model(model_name, mode, config, train.n_users, train.n_items, RATING_VALUES)
    cpu.load_state_dict({k: v.cpu() for k, v in model.state_dict().items()})
    users = torch.from_numpy(test.users.astype(np.int64))
    items = torch.from_numpy(test.items.astype(np.int64))
    on_gpu = model.predict(users, items, train.matrix("cuda")).cpu()
    on_cpu = cpu.predict(users, items, train.matrix())
    assert torch.allclose(on_gpu, on_cpu, atol=1e-4)


@pytest.mark.parametrize(
    ("model_name", "old_config", "cls_name", "kept"),
    [
        # Before each mode was a class: the mode sat in the config, None meant "the mode's default", and the
        # config held every mode's fields.
        ("als", {"mode": "implicit", "factors": 6, "tau": None, "gamma": 2.0, "alpha": 3.0, "epochs": 2},
         "ImplicitALS", {"factors": 6, "tau": 35.0, "alpha": 3.0, "epochs": 2}),
        ("als", {"mode": "explicit", "factors": 5, "tau": 7.0, "gamma": 1.5, "alpha": 1.0, "confidence": "stars"},
         "ExplicitALS", {"factors": 5, "tau": 7.0, "gamma": 1.5}),
        ("autoencoder", {"mode": "item", "layers": "12", "dropout": 0.3, "epochs": 60, "batch_size": 64},
         "ItemAutoEncoder", {"layers": "12", "dropout": 0.3, "epochs": 60, "batch_size": 64}),
        ("mf", {"factors": 4, "reg": 0.05}, "MatrixFactorization", {"factors": 4, "reg": 0.05}),
    ],
)
def test_checkpoints_from_before_modes_were_classes_load_through_the_right_class(
    model_name, old_config, cls_name, kept, home
):
    mode = old_config.get("mode")
    new_config = {k: v for k, v in old_config.items() if k != "mode" and v is not None}
    fields = set(build_model(model_name, mode, {}, 12, 9, RATING_VALUES).config_class.__dataclass_fields__)
    model = build_model(model_name, mode, {k: v for k, v in new_config.items() if k in fields}, 12, 9, RATING_VALUES)
    meta = checkpoint.CheckpointMeta(
        name="old", model=model_name, config=old_config, dataset="synthetic", fingerprint="x", split="holdout",
        seed=0, n_users=12, n_items=9, rating_values=list(RATING_VALUES),
    )
    path, _ = checkpoint.save(loading.state_arrays(model), meta, np.arange(12) + 1, np.arange(9) + 1)
    loaded = loading.load(path)
    assert type(loaded.model).__name__ == cls_name
    assert loaded.meta.mode == loaded.model.mode and "mode" not in loaded.meta.config
    assert {k: getattr(loaded.model.config, k) for k in kept} == kept
    assert torch.equal(loaded.model.item_vectors(), model.item_vectors())


def checker_board(n: int = 40, dislikes: bool = True, seed: int = 0) -> Ratings:
    """Even users like (5 stars) every even movie and odd users every odd one; with ``dislikes`` half of the
    other pairs are rated 1 star, the rest unseen; the diagonal (user u, movie u) is held out. Among a user's
    unseen movies the held-out one is the only one of their parity, so it is the one right top-1 (after
    benfred/implicit's get_checker_board). A model of who rated what gets the likes only."""
    rng = np.random.default_rng(seed)
    uu, ii = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
    liked = (uu % 2 == ii % 2) & (uu != ii)
    disliked = (uu % 2 != ii % 2) & (rng.random((n, n)) < 0.5) & dislikes
    users, items = np.nonzero(liked | disliked)
    stars = np.where(liked[users, items], 5.0, 1.0).astype(np.float32)
    return Ratings(users.astype(np.int32), items.astype(np.int32), stars, np.zeros(users.shape[0], np.int64), n, n)


# Settings for the 40 x 40 board; what is not here is the class's default.
CHECKER: dict[tuple[str, str], dict] = {
    ("autoencoder", "user"): {"epochs": 60, "batch_size": 8, "layers": "8", "dropout": 0.0},
    ("autoencoder", "item"): {"epochs": 60, "batch_size": 8, "layers": "8", "dropout": 0.0, "hidden_dropout": 0.0},
    ("autoencoder", "vae"): {"epochs": 60, "batch_size": 8, "layers": "16,4,16", "dropout": 0.0, "anneal_epochs": 30},
    ("autoencoder", "dae"): {"epochs": 60, "batch_size": 8, "layers": "8", "dropout": 0.0},
    ("mf", "explicit"): {"epochs": 60, "factors": 4, "batch_size": 64},
    ("hybrid", "explicit"): {"epochs": 60, "factors": 4, "batch_size": 64},
    ("als", "explicit"): {"epochs": 8, "factors": 4, "tau": 1.0},
    ("als", "implicit"): {"epochs": 8, "factors": 4, "tau": 1.0},
}


@pytest.mark.parametrize(("model_name", "mode"), list(CHECKER), ids=[f"{n}-{m}" for n, m in CHECKER])
def test_checker_board_top_1_is_the_held_out_movie(model_name, mode):
    torch.manual_seed(0)
    model = build_model(model_name, mode, CHECKER[model_name, mode], 40, 40, RATING_VALUES)
    board = checker_board(40, dislikes=model.kind != "rank")
    fit(model, board, None, seed=0)
    matrix = board.matrix()
    assert [recommend(model, matrix, user, n=1)[0].item for user in range(board.n_users)] == list(range(board.n_users))
