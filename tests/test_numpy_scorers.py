"""RBMs, autoencoders and Mult-VAE/DAE answer from their saved arrays in numpy (:mod:`movierec.models.forward`):
the same scores, new-user fold-ins, movie vectors and lists as the torch models, and no torch imported."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import ml100k_home, run_cli_in_subprocess
from torch_lists import new_user_list, similar_list, user_list

from movierec import loading
from movierec import recommend as rec
from movierec.loading import open_model
from movierec.scorers import NumpyScorer

MODELS = {
    "rbm-like": ["rbm", "--epochs", "1", "--hidden", "8"],
    "rbm-item": ["rbm", "--mode", "rating", "--epochs", "1", "--hidden", "8"],
    "rbm-user": ["rbm", "--mode", "rating", "--orientation", "user", "--epochs", "1", "--hidden", "8"],
    "ae-user": ["autoencoder", "--mode", "user", "--epochs", "1", "--layers", "16,8"],
    "ae-item": ["autoencoder", "--mode", "item", "--epochs", "1", "--layers", "16"],
    "ae-sigmoid": ["autoencoder", "--mode", "user", "--epochs", "1", "--layers", "16", "--activation", "selu",
                   "--output-activation", "sigmoid"],
    "vae": ["autoencoder", "--mode", "vae", "--epochs", "1", "--layers", "32,8,32"],
    "dae": ["autoencoder", "--mode", "dae", "--epochs", "1", "--layers", "32,8,32"],
}
VALIDATED = {"ae-item-valid": ["autoencoder", "--mode", "item", "--epochs", "1", "--layers", "16",
                               "--valid-fraction", "0.1"]}
USERS = [0, 41, 500, 942]
NEW_USER = (np.array([0, 49, 180, 126, 99]), np.array([5.0, 4.0, 1.0, 3.5, 2.0], dtype=np.float32))


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    trains = [["train", *args, "--device", "cpu", "--name", name, "--json"]
              for name, args in {**MODELS, **VALIDATED}.items()]
    with ml100k_home(tmp_path_factory.mktemp("numpy-scorers") / "home", *trains) as h:
        yield h


def same_lists(a: list[rec.Recommendation], b: list[rec.Recommendation]) -> None:
    assert [r.item for r in a] == [r.item for r in b]
    assert [r.because for r in a] == [r.because for r in b]
    np.testing.assert_allclose([r.score for r in a], [r.score for r in b], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", list(MODELS))
def test_numpy_scores_and_lists_are_the_torch_models(home, name):
    served = open_model(name, "cpu")
    trained = loading.load_trained(name)
    model, train, picks = trained.model, trained.train, trained.picks
    own = served.scorer.own if isinstance(served.scorer, rec.ListScorer) else served.scorer
    assert isinstance(own, NumpyScorer), type(own)
    for user in USERS:
        want = model.score(torch.tensor([user]), train)[0].detach().numpy()
        np.testing.assert_allclose(own.scores(user), want, rtol=1e-5, atol=1e-5)
        items, stars = served.seen(user)
        same_lists(rec.for_user(served.scorer, user, items, stars, 30, counts=served.counts),
                   user_list(model, train, user, 30, picks=picks))
    np.testing.assert_allclose(own.scores_many(np.array(USERS)),
                               model.score(torch.tensor(USERS), train).detach().numpy(), rtol=1e-5, atol=1e-5)
    items, stars = NEW_USER
    for n in (5, 1, 0):
        got = own.fold_in(items[:n], stars[:n])
        want = model.fold_in(torch.from_numpy(items[:n]), torch.from_numpy(stars[:n])).detach().numpy()
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    for shrink in (None, 0.0):
        same_lists(rec.for_new_user(served.scorer, items, stars, 30, counts=served.counts, neutral=served.neutral,
                                    shrink=shrink),
                   new_user_list(model, train, torch.from_numpy(items), torch.from_numpy(stars), 30, shrink=shrink,
                                 picks=picks))
    np.testing.assert_allclose(own.item_vectors(), model.item_vectors().detach().numpy(), rtol=1e-6, atol=1e-6)
    counts = served.counts
    sims = rec.similar_to(served.scorer, 49, 15, counts=counts, allowed=counts >= 20)
    want_items, want_sims = similar_list(model, 49, 15, counts=counts, allowed=counts >= 20)
    assert sims[0] == want_items and np.allclose(sims[1], want_sims, atol=1e-5)
    served.close()


def test_a_gpu_asked_for_answers_in_torch(home, monkeypatch):
    from movierec import serving

    assert serving._on_cpu("cpu") and serving._on_cpu("auto") and serving._on_cpu(torch.device("cpu"))
    assert not serving._on_cpu("cuda") and not serving._on_cpu(torch.device("cuda", 0))
    monkeypatch.setattr(serving, "_on_cpu", lambda device: False)
    served = open_model("vae", "cpu")
    assert isinstance(served.scorer, rec.TorchScorer)
    served.close()


@pytest.mark.parametrize("name", list(MODELS))
def test_answering_imports_no_torch(home, name):
    asks = [["recommend", "--user", "42", "--json"], ["similar", "star wars", "--json"],
            ["recommend", "--rate", "Toy Story=5", "--rate", "50=4", "--json"]]
    for args in asks:
        proc = run_cli_in_subprocess(home, *args, "--model", name)
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.rstrip().endswith("IMPORTED False False"), args
        assert json.loads(proc.stdout.rsplit("\n", 2)[0])


class _Cut:
    """A saved model whose array ``name`` lost its last row."""

    def __init__(self, saved, name):
        self._saved, self._name = saved, name

    def __getattr__(self, attr):
        return getattr(self._saved, attr)

    def __contains__(self, key):
        return key in self._saved

    def get(self, key):
        array = self._saved.get(key)
        return array[:-1] if key == self._name else array


@pytest.mark.parametrize("name", ["rbm-like", "rbm-user", "ae-user", "ae-item", "vae"])
def test_arrays_that_do_not_fit_are_one_sentence(home, name):
    from movierec import checkpoint
    from movierec.errors import MovierecError
    from movierec.serving import Served

    with checkpoint.open_file(checkpoint.resolve(name)) as saved:
        cut = [k for k in saved.names() if k.startswith("state.") and saved.shape(k) != ()]
        assert cut
        for key in cut:
            with pytest.raises(MovierecError, match="is damaged: its tensors do not match"):
                Served(_Cut(saved, key), "cpu")


def test_an_item_model_fitted_on_fewer_ratings_answers_in_torch(home):
    """Its saved movie codes are of the ratings it was fitted on, not of all the training ratings saved with it:
    the torch model recomputes them."""
    served = open_model("ae-item-valid", "cpu")
    own = served.scorer.own if isinstance(served.scorer, rec.ListScorer) else served.scorer
    assert isinstance(own, rec.TorchScorer)
    served.close()
