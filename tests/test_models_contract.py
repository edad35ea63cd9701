"""Every model goes through the same checks, on a small matrix whose structure is known."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from movierec import checkpoint
from movierec.evaluate import PopularityBaseline, evaluate
from movierec.models import MODELS, build_model
from movierec.recommend import recommend
from movierec.training import fit
from tests.synthetic import holdout, low_rank_ratings

RATING_VALUES = (1.0, 2.0, 3.0, 4.0, 5.0)
# Per-model settings for a 150 x 90 matrix: the defaults are sized for MovieLens, not for this toy.
SMALL = {
    "rbm": {"epochs": 15, "batch_size": 20},
    "rbm-rating": {"mode": "rating", "epochs": 15, "batch_size": 20},
    "autoencoder": {"epochs": 30, "batch_size": 16},
    "mf": {"epochs": 20},
    "als": {"epochs": 8},
    "als-implicit": {"mode": "implicit", "epochs": 8, "factors": 8, "tau": 5.0},
}
CASES = [(k.split("-")[0], k) for k in SMALL]


@pytest.fixture(scope="module")
def data():
    train, test = holdout(low_rank_ratings())
    return train, test


def _train(model_name: str, case: str, data, seed: int = 0):
    train, test = data
    torch.manual_seed(seed)
    model = build_model(model_name, SMALL[case], train.n_users, train.n_items, RATING_VALUES)
    result = fit(model, train, test, seed=seed)
    return model, result


@pytest.mark.parametrize(("model_name", "case"), CASES, ids=[c for _, c in CASES])
def test_contract(model_name, case, data, home):
    train, test = data
    model, result = _train(model_name, case, data)
    losses = [r.train["loss"] for r in result.history]
    assert losses[-1] < losses[0], f"training loss did not go down: {losses}"

    # Beats the trivial baseline on held-out ratings.
    if model.kind == "rating":
        baseline = float(np.sqrt(np.mean((test.ratings - train.ratings.mean()) ** 2)))
        assert result.final_valid["rmse"] < baseline * 0.9, (result.final_valid, baseline)
    elif model.kind == "like":
        liked = test.ratings >= model.like_threshold
        always_like = float(np.mean(~liked))
        assert result.final_valid["loss"] < always_like, (result.final_valid, always_like)
    else:  # a top-N model: ranks held-out favourites better than popularity does
        popular = evaluate(PopularityBaseline(train.matrix()), train.matrix(), test, k=10)["ndcg@10"]
        assert result.final_valid["ndcg@10"] > popular, (result.final_valid, popular)

    # Save -> load gives identical predictions.
    matrix = train.matrix()
    users = torch.from_numpy(test.users.astype(np.int64))
    items = torch.from_numpy(test.items.astype(np.int64))
    before = model.predict(users, items, matrix)
    meta = checkpoint.CheckpointMeta(
        name="contract", model=model_name, config=model.config.to_dict(), dataset="synthetic", fingerprint="x",
        split="holdout", seed=0, n_users=train.n_users, n_items=train.n_items, rating_values=list(RATING_VALUES),
    )
    path, _ = checkpoint.save(model, meta, np.arange(train.n_users) + 1, np.arange(train.n_items) + 1)
    loaded = checkpoint.load(path)
    after = loaded.model.predict(users, items, matrix)
    assert torch.equal(before, after)
    assert loaded.meta.model == model_name and loaded.user_ids[0].item() == 1

    # Every interface method answers with the right shapes.
    batch = torch.arange(5)
    scores = model.score(batch, matrix)
    assert scores.shape == (5, train.n_items) and torch.isfinite(scores).all()
    assert model.item_vectors().shape[0] == train.n_items
    folded = model.fold_in(torch.tensor([0, 1, 2]), torch.tensor([5.0, 1.0, 4.0]))
    assert folded.shape == (train.n_items,) and torch.isfinite(folded).all()
    if model.kind == "rating":
        assert scores.min() >= 1.0 and scores.max() <= 5.0

    # Movies a user already rated can be left out of their list, and kept on request.
    user = int(train.users[0])
    seen = set(train.items[train.users == user].tolist())
    recs = recommend(model, matrix, user, n=train.n_items)
    assert recs and not {r.item for r in recs} & seen
    assert len(recs) == train.n_items - len(seen)
    with_seen = recommend(model, matrix, user, n=train.n_items, include_seen=True)
    assert {r.item for r in with_seen} >= seen


@pytest.mark.parametrize(("model_name", "case"), CASES, ids=[c for _, c in CASES])
def test_same_seed_same_numbers(model_name, case, data):
    _, first = _train(model_name, case, data, seed=3)
    _, again = _train(model_name, case, data, seed=3)
    assert [r.valid for r in first.history] == [r.valid for r in again.history]
    assert [r.train for r in first.history] == [r.train for r in again.history]


def test_every_registered_model_is_covered():
    assert {m for m, _ in CASES} == set(MODELS)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize(("model_name", "case"), CASES, ids=[c for _, c in CASES])
def test_cuda_trains_like_cpu(model_name, case, data):
    """The same code runs on CUDA: it trains, beats the baseline and saves tensors that load on the CPU."""
    train, test = data
    torch.manual_seed(0)
    model = build_model(model_name, SMALL[case], train.n_users, train.n_items, RATING_VALUES).to("cuda")
    result = fit(model, train, test, seed=0)
    assert model.device.type == "cuda"
    losses = [r.train["loss"] for r in result.history]
    assert losses[-1] < losses[0]
    cpu = build_model(model_name, SMALL[case], train.n_users, train.n_items, RATING_VALUES)
    cpu.load_state_dict({k: v.cpu() for k, v in model.state_dict().items()})
    users = torch.from_numpy(test.users.astype(np.int64))
    items = torch.from_numpy(test.items.astype(np.int64))
    on_gpu = model.predict(users, items, train.matrix("cuda")).cpu()
    on_cpu = cpu.predict(users, items, train.matrix())
    assert torch.allclose(on_gpu, on_cpu, atol=1e-4)
