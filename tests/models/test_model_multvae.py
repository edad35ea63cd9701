"""Mult-VAE and Mult-DAE: the loss is the multinomial likelihood (and KL) computed by hand on dense rows, the KL
weight follows its anneal, scoring and fold-in are one forward pass of the picked movies, same seed same numbers,
and a saved model serves the same lists as the trained one."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from conftest import assert_one_line_error
from synthetic import STARS, holdout, low_rank_ratings

from movierec.data.ratings import Ratings
from movierec.device import make_generator
from movierec.errors import MovierecError
from movierec.models import MODELS, model_class, scaled_defaults
from movierec.models.multvae import MultDAE, MultDAEConfig, MultTrainer, MultVAE, MultVAEConfig
from movierec.training import fit

SMALL = {"epochs": 30, "batch_size": 25, "layers": "32,8,32"}


def small(cls: type, seed: int = 0, **changes) -> MultVAE | MultDAE:
    torch.manual_seed(seed)
    data = low_rank_ratings()
    return cls(cls.config_class(**{**SMALL, **changes}), data.n_users, data.n_items, STARS)


def trained(cls: type, seed: int = 0, **changes):
    data = low_rank_ratings()
    model = small(cls, seed, **changes)
    result = fit(model, data, None, seed=seed)
    return model, data, result


def test_registered_as_modes_of_the_autoencoder_after_the_rating_ones():
    assert list(MODELS["autoencoder"].modes) == ["user", "item", "vae", "dae"]
    assert model_class("autoencoder", "vae") is MultVAE and model_class("autoencoder", "dae") is MultDAE
    assert MultVAE(MultVAEConfig(), 5, 4, STARS).kind == "rank" == MultDAE(MultDAEConfig(), 5, 4, STARS).kind


def test_the_papers_network_and_settings_are_the_defaults():
    vae, dae = MultVAEConfig(), MultDAEConfig()
    assert (vae.layers, vae.dropout, vae.lr, vae.batch_size, vae.weight_decay, vae.beta) == (
        "600,200,600", 0.5, 1e-3, 500, 0.0, 0.2)
    assert (dae.layers, dae.dropout, dae.lr, dae.batch_size) == ("200", 0.5, 1e-3, 500)
    model = MultVAE(vae, 30, 50, STARS)
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    # I -> 600 -> (mean, log-variance) of a 200-d code; 200 -> 600 -> I.
    assert shapes == {"input_weight": (50, 600), "input_bias": (600,), "encoder.0.weight": (400, 600),
                      "encoder.0.bias": (400,), "decoder.0.weight": (600, 200), "decoder.0.bias": (600,),
                      "output_weight": (50, 600), "output_bias": (50,)}
    dae_shapes = {k: tuple(v.shape) for k, v in MultDAE(dae, 30, 50, STARS).state_dict().items()}
    assert dae_shapes == {"input_weight": (50, 200), "input_bias": (200,), "output_weight": (50, 200),
                          "output_bias": (50,)}


def dense_rows(model, data: Ratings, users: torch.Tensor) -> torch.Tensor:
    """The users' 0/1 rows of picked movies, (B, I), built without the model's sparse path."""
    x = torch.zeros(users.shape[0], data.n_items)
    for row, u in enumerate(users.tolist()):
        mine = (data.users == u) & (data.ratings >= model.config.min_stars)
        x[row, torch.from_numpy(data.items[mine].astype(np.int64))] = 1.0
    return x


def dense_forward(model, x: torch.Tensor, eps: torch.Tensor | None = None):
    """The network as the paper writes it, on dense rows: logits (B, I) and the per-user mean KL."""
    h = torch.nn.functional.normalize(x, dim=1) @ model.input_weight + model.input_bias
    for layer in model.encoder:
        h = layer(torch.tanh(h))
    kl = torch.zeros(())
    if model.variational:
        mu, logvar = h[:, :model.code_size], h[:, model.code_size:]
        kl = (0.5 * (-logvar + logvar.exp() + mu**2 - 1)).sum(1).mean()
        z = mu if eps is None else mu + eps * torch.exp(0.5 * logvar)
    else:
        z = torch.tanh(h)
    for layer in model.decoder:
        z = torch.tanh(layer(z))
    return z @ model.output_weight.T + model.output_bias, kl


@pytest.mark.parametrize("cls", [MultVAE, MultDAE])
def test_batch_loss_is_the_multinomial_likelihood_and_kl_of_dense_rows(cls):
    model = small(cls, dropout=0.0)
    data = low_rank_ratings()
    users = torch.tensor([0, 3, 7, 11])
    gen = make_generator(torch.device("cpu"), 5)
    copy = torch.Generator().set_state(gen.get_state())
    nll, kl = model.batch_loss(data.matrix(), users, gen)
    x = dense_rows(model, data, users)
    eps = torch.randn((4, model.code_size), generator=copy) if model.variational else None
    logits, kl_by_hand = dense_forward(model, x, eps)
    nll_by_hand = -(torch.log_softmax(logits, 1) * x).sum(1).mean()
    assert torch.allclose(nll, nll_by_hand, rtol=1e-5) and torch.allclose(kl, kl_by_hand, rtol=1e-5)
    assert (float(kl.detach()) > 0) == model.variational
    # Scoring is the same network without noise: the softmax of the mean code's logits.
    assert torch.allclose(model.score(users, data.matrix()), torch.softmax(dense_forward(model, x)[0], 1), atol=1e-7)


def test_input_dropout_hides_picked_movies_and_rescales_the_rest():
    model = small(MultDAE, dropout=0.5, layers="16")
    data = low_rank_ratings()
    pos, cols = model.picked(data.matrix(), torch.arange(4))
    seen = set()
    for seed in range(5):
        gen = make_generator(torch.device("cpu"), seed)
        a, _ = model._encode(pos, cols, 4, gen)
        seen.add(tuple(a[0, :3].tolist()))
    assert len(seen) == 5  # each draw hides other movies
    plain, _ = model._encode(pos, cols, 4)
    x = dense_rows(model, data, torch.arange(4))
    assert torch.allclose(plain, torch.tanh(torch.nn.functional.normalize(x, dim=1) @ model.input_weight
                                            + model.input_bias), atol=1e-6)


def test_ratings_below_min_stars_are_not_picks():
    model = small(MultDAE)
    items, stars = torch.tensor([0, 1, 2]), torch.tensor([5.0, 4.0, 2.0])
    assert torch.equal(model.fold_in(items, stars), model.fold_in(items[:2], stars[:2]))
    every = small(MultDAE, min_stars=0.0)
    assert not torch.equal(every.fold_in(items, stars), every.fold_in(items[:2], stars[:2]))


def test_the_kl_weight_rises_per_update_to_its_cap_after_anneal_epochs():
    model, data, result = trained(MultVAE, epochs=6, anneal_epochs=4, beta=0.3)
    per_epoch = math.ceil(data.n_users / SMALL["batch_size"])  # every user of the toy picked something: 6
    # The last update of epoch e is update e * per_epoch - 1 (from 0), weighted (e * per_epoch - 1) / (4 * per_epoch).
    expected = [min(0.3, 0.3 * (e * per_epoch - 1) / (4 * per_epoch)) for e in range(1, 7)]
    assert [r.train["beta"] for r in result.history] == pytest.approx(expected)
    _, _, fixed = trained(MultVAE, epochs=2, anneal_epochs=0, beta=0.3)
    assert [r.train["beta"] for r in fixed.history] == [0.3, 0.3]
    _, _, dae = trained(MultDAE, epochs=2)
    assert "beta" not in dae.history[0].train and "kl" not in dae.history[0].train


def test_users_without_a_pick_are_not_trained_on():
    data = low_rank_ratings()
    model = small(MultVAE)
    trainer = model.trainer(data.matrix(), make_generator(torch.device("cpu"), 0))
    picked = np.unique(data.users[data.ratings >= 3.5])
    assert isinstance(trainer, MultTrainer) and trainer.users.tolist() == picked.tolist()


@pytest.mark.parametrize("cls", [MultVAE, MultDAE])
def test_fold_in_of_a_known_users_ratings_is_their_score(cls):
    model, data, _ = trained(cls, epochs=5)
    matrix = data.matrix()
    for user in (0, 17, 42):
        mine = data.users == user
        items = torch.from_numpy(data.items[mine].astype(np.int64))
        folded = model.fold_in(items, torch.from_numpy(data.ratings[mine]))
        assert torch.equal(folded, model.score(torch.tensor([user]), matrix)[0])
    # A new user with nothing picked gets the network's answer for an empty row: a distribution all the same.
    empty = model.fold_in(torch.tensor([], dtype=torch.int64), torch.tensor([]))
    assert empty.shape == (data.n_items,) and torch.isclose(empty.sum(), torch.tensor(1.0))


@pytest.mark.parametrize("cls", [MultVAE, MultDAE])
def test_same_seed_same_numbers(cls):
    first, _, a = trained(cls, seed=4, epochs=4)
    again, _, b = trained(cls, seed=4, epochs=4)
    other, _, _ = trained(cls, seed=5, epochs=4)
    assert [r.train for r in a.history] == [r.train for r in b.history]
    for key, value in first.state_dict().items():
        assert torch.equal(value, again.state_dict()[key]), key
    assert not torch.equal(first.output_weight, other.output_weight)


@pytest.mark.parametrize("cls", [MultVAE, MultDAE])
def test_ranks_held_out_favourites_better_than_popularity(cls):
    from movierec.evaluate import PopularityBaseline, evaluate

    train, test = holdout(low_rank_ratings())
    model = small(cls, epochs=60)
    fit(model, train, None, seed=0)
    ours = evaluate(model, train.matrix(), test, k=10)["ndcg@10"]
    popular = evaluate(PopularityBaseline(train.matrix()), train.matrix(), test, k=10)["ndcg@10"]
    assert ours > 1.1 * popular, (ours, popular)


@pytest.mark.parametrize(("change", "message"), [
    ({"dropout": -0.1}, "--dropout must be at least 0 and below 1, not -0.1."),
    ({"dropout": 1.0}, "--dropout must be at least 0 and below 1, not 1."),
    ({"layers": "600,200"}, "--layers must be an odd number of positive integers"),
    ({"layers": "600,x,600"}, "--layers must be an odd number of positive integers"),
    ({"lr": 0.0}, "--lr must be positive, not 0."),
    ({"weight_decay": -1.0}, "--weight-decay must not be negative"),
    ({"batch_size": 0}, "--batch-size must be at least 1"),
    ({"min_stars": -1.0}, "--min-stars must not be negative"),
    ({"beta": -0.2}, "--beta and --anneal-epochs must not be negative."),
    ({"anneal_epochs": -1}, "--beta and --anneal-epochs must not be negative."),
    ({"beta": math.nan}, "--beta must be a finite number, not nan."),
])
def test_bad_options_are_one_clear_sentence(change, message):
    with pytest.raises(MovierecError) as err:
        MultVAEConfig(**change)
    assert str(err.value).startswith(message) and str(err.value).count(". ") == 0


def test_bad_options_from_the_cli_are_one_line(home, ml100k_zip, runner):
    from movierec.cli import app

    fetched = runner.invoke(app, ["fetch", "ml-100k", "--from-file", str(ml100k_zip), "--no-verify"])
    assert fetched.exit_code == 0, fetched.stderr
    result = runner.invoke(app, ["train", "autoencoder", "--mode", "vae", "--dropout", "-0.5", "--device", "cpu"])
    assert_one_line_error(result, "--dropout must be at least 0 and below 1, not -0.5.")
    wrong = runner.invoke(app, ["train", "autoencoder", "--mode", "dae", "--beta", "0.1", "--device", "cpu"])
    assert_one_line_error(wrong, "--beta is not an option of autoencoder --mode dae; it applies to --mode vae.")


def test_the_largest_releases_train_fewer_epochs_and_anneal_within_them():
    assert scaled_defaults("autoencoder", "vae", {}, 943, 1682, 90_000) == {}
    assert scaled_defaults("autoencoder", "dae", {}, 6040, 3706, 900_188) == {}
    large = scaled_defaults("autoencoder", "vae", {}, 162_541, 59_047, 22_500_085)
    default = MultVAEConfig()
    assert 1 <= large["epochs"] < default.epochs and 1 <= large["anneal_epochs"] <= large["epochs"]
    MultVAEConfig(**large)
    assert set(scaled_defaults("autoencoder", "dae", {}, 162_541, 59_047, 22_500_085)) == {"epochs"}
    given = scaled_defaults("autoencoder", "vae", {"epochs": 50}, 162_541, 59_047, 22_500_085)
    assert given.keys() == {"anneal_epochs"}


@pytest.mark.parametrize("mode", ["vae", "dae"])
def test_a_saved_model_serves_the_trained_models_lists(mode, home, ml100k_zip, runner):
    from recording import Recorder
    from torch_lists import user_list as recommend

    from movierec.cli import app
    from movierec.loading import open_model
    from movierec.options import TrainOptions
    from movierec.training import train_and_save

    fetched = runner.invoke(app, ["fetch", "ml-100k", "--from-file", str(ml100k_zip), "--no-verify"])
    assert fetched.exit_code == 0, fetched.stderr
    heard = Recorder()
    config = {"epochs": 3, "layers": "16,8,16" if mode == "vae" else "16"}
    options = TrainOptions("autoencoder", mode=mode, config=config, device="cpu")
    outcome = train_and_save(options, heard)
    seen = dict(zip(("model", "plan"), heard.of("start")[0]))
    assert outcome.path.stem == f"autoencoder-{mode}" and outcome.meta.mode == mode
    assert outcome.meta.metrics["ndcg@10"] > 0
    model, plan = seen["model"], seen["plan"]
    matrix = plan.split.train.matrix()
    served = open_model(outcome.path.stem)
    assert served.score_name == "score"
    for user_id in (1, 200, 943):
        index = served.user_index(user_id)
        expected = [r.item for r in recommend(model, matrix, index, n=10)]
        assert [served.catalogue.item_index(r["movie_id"]) for r in served.recommend(user_id, n=10)] == expected
    # A new user's list comes from the same forward pass of their ratings.
    picks = served.recommend_new({50: 5, 181: 5, 1: 4}, n=5)
    assert len(picks) == 5 and {50, 181, 1}.isdisjoint(r["movie_id"] for r in picks)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("cls", [MultVAE, MultDAE])
def test_cuda_runs_the_same_code(cls):
    data = low_rank_ratings()
    torch.manual_seed(0)
    model = cls(cls.config_class(**SMALL), data.n_users, data.n_items, STARS).to("cuda")
    result = fit(model, data, None, seed=0)
    assert model.device.type == "cuda"
    losses = [r.train["loss"] for r in result.history]
    assert losses[-1] < losses[0]
    # Same seed, same numbers on the GPU too.
    torch.manual_seed(0)
    again = cls(cls.config_class(**SMALL), data.n_users, data.n_items, STARS).to("cuda")
    assert [r.train for r in fit(again, data, None, seed=0).history] == [r.train for r in result.history]
    # The weights score the same on the CPU.
    cpu = cls(cls.config_class(**SMALL), data.n_users, data.n_items, STARS)
    cpu.load_state_dict({k: v.cpu() for k, v in model.state_dict().items()})
    users = torch.arange(20)
    assert torch.allclose(model.score(users, data.matrix("cuda")).cpu(), cpu.score(users, data.matrix()), atol=1e-6)
    items = torch.tensor([0, 4, 9])
    folded = model.fold_in(items.cuda(), torch.tensor([5.0, 4.0, 1.0], device="cuda")).cpu()
    assert torch.allclose(folded, cpu.fold_in(items, torch.tensor([5.0, 4.0, 1.0])), atol=1e-6)
