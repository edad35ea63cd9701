"""The one training loop: early stopping keeps the best epoch, divergence is one clear error, seeds repeat."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from recording import Recorder
from synthetic import holdout, low_rank_ratings

from movierec.data.ratings import RatingMatrix, Ratings
from movierec.errors import MovierecError
from movierec.evaluate import PopularityBaseline, evaluate, heldout_metrics
from movierec.models import build_model
from movierec.models.base import ModelConfig, Recommender, Trainer
from movierec.options import TrainOptions
from movierec.training import EpochReport, fit, monitored_metric, train_and_save

STARS = (1.0, 2.0, 3.0, 4.0, 5.0)


class Scripted(Recommender):
    """Predicts one number for every (user, movie); epoch ``e`` sets it to ``values[e - 1]``.

    Against held-out ratings that are all 3 stars, the validation RMSE after epoch ``e`` is
    ``|values[e - 1] - 3|``, so the best epoch is known in advance.
    """

    name = "scripted"
    config_class = ModelConfig

    def __init__(self, values: list[float], losses: list[float] | None = None, n_users: int = 4, n_items: int = 3,
                 kind: str = "rating"):
        super().__init__(ModelConfig(epochs=len(values)), n_users, n_items, STARS)
        self.value = torch.nn.Parameter(torch.tensor(0.0), requires_grad=False)
        self.values, self.losses, self.epoch, self._kind = values, losses, 0, kind

    @property
    def kind(self) -> str:
        return self._kind

    @property
    def like_threshold(self) -> float | None:
        return 4.0 if self._kind == "like" else None

    def trainer(self, train: RatingMatrix, generator: torch.Generator) -> Trainer:
        return ScriptedTrainer(self, train, generator)

    def score(self, users: torch.Tensor, train: RatingMatrix) -> torch.Tensor:
        return self.value.detach().expand(users.shape[0], self.n_items).clone()  # (B, I)

    def item_vectors(self) -> torch.Tensor:
        return torch.ones(self.n_items, 1)

    def fold_in(self, items: torch.Tensor, ratings: torch.Tensor) -> torch.Tensor:
        return self.value.detach().expand(self.n_items).clone()


class ScriptedTrainer(Trainer):
    """Plays the script: epoch ``e`` sets the model's number to ``values[e - 1]`` (``model.epoch`` counts them)."""

    model: Scripted

    def train_epoch(self) -> dict[str, float]:
        model = self.model
        v = model.values[model.epoch]
        model.value.fill_(v)
        loss = model.losses[model.epoch] if model.losses is not None else abs(v - 3.0)
        model.epoch += 1
        return {"loss": loss}


def three_stars(n_users: int = 4, n_items: int = 3) -> Ratings:
    users, items = np.meshgrid(np.arange(n_users), np.arange(n_items), indexing="ij")
    n = users.size
    return Ratings(users.ravel().astype(np.int32), items.ravel().astype(np.int32), np.full(n, 3.0, np.float32),
                   np.arange(n, dtype=np.int64), n_users, n_items)


SCRIPT = [1.0, 2.5, 2.9, 4.0, 5.0, 4.5]  # validation RMSE 2.0, 0.5, 0.1, 1.0, 2.0, 1.5: epoch 3 is best


def test_patience_stops_and_keeps_the_best_epoch():
    model = Scripted(SCRIPT)
    heard = Recorder()
    result = fit(model, three_stars(), three_stars(), patience=2, events=heard)
    seen: list[EpochReport] = heard.of("epoch")
    assert result.stopped_early
    assert len(result.history) == 5 and model.epoch == 5  # epochs 4 and 5 were not better: stop after 5
    assert (result.best_epoch, result.kept_epoch) == (3, 3)
    assert model.value.item() == pytest.approx(2.9)  # the best epoch's weights, not the last epoch's 5.0
    assert result.final_valid["rmse"] == pytest.approx(0.1)
    assert result.final_train == {"loss": pytest.approx(0.1)}
    assert [r.improved for r in seen] == [True, True, True, False, False]
    assert [r.epoch for r in seen] == [1, 2, 3, 4, 5] and all(r.epochs == 6 for r in seen)
    assert result.monitor == "rmse"


def test_patience_that_never_runs_out_still_keeps_the_best_epoch():
    model = Scripted(SCRIPT)
    result = fit(model, three_stars(), three_stars(), patience=10)
    assert not result.stopped_early and len(result.history) == 6
    assert result.kept_epoch == 3 and model.value.item() == pytest.approx(2.9)


def test_without_patience_the_last_epoch_is_kept():
    model = Scripted(SCRIPT)
    result = fit(model, three_stars(), three_stars())
    assert not result.stopped_early and len(result.history) == 6
    assert (result.best_epoch, result.kept_epoch) == (3, 6)
    assert model.value.item() == pytest.approx(4.5)
    assert result.final_valid["rmse"] == pytest.approx(1.5)


def test_epochs_argument_overrides_the_config():
    model = Scripted(SCRIPT)
    result = fit(model, three_stars(), three_stars(), epochs=2)
    assert len(result.history) == 2 and model.epoch == 2
    assert result.fit_seconds >= 0 and result.fit_seconds == pytest.approx(sum(r.seconds for r in result.history))


def test_without_validation_the_training_loss_is_watched():
    model = Scripted(SCRIPT, losses=[5.0, 4.0, 4.5, 4.2, 3.0])
    result = fit(model, three_stars(), None, patience=2)
    assert [r.valid for r in result.history] == [{}] * 4
    assert result.stopped_early and result.kept_epoch == 2 and model.value.item() == pytest.approx(2.5)


def test_like_models_are_watched_on_validation_loss():
    model = Scripted([0.2, 0.9], kind="like")
    assert monitored_metric(model) == ("like_error", False)
    result = fit(model, three_stars(), three_stars())
    assert set(result.history[0].valid) == {"like_error", "accuracy", "auc"}
    assert math.isnan(result.history[0].valid["auc"])  # every held-out rating is disliked: AUC undefined


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_loss_is_one_clear_error(bad):
    model = Scripted([2.0, 2.5, 2.7], losses=[1.0, bad, 0.5])
    with pytest.raises(MovierecError) as exc:
        fit(model, three_stars(), three_stars())
    text = str(exc.value)
    assert text.startswith("Training diverged at epoch 2 (loss is not a finite number)")
    assert "\n" not in text and text.endswith(".") and "learning rate" in text
    assert model.epoch == 2  # stopped right there


def test_non_finite_weights_are_one_clear_error():
    model = Scripted([2.0, math.nan], losses=[1.0, 1.0])  # the loss looks fine, the weights are not
    with pytest.raises(MovierecError, match=r"^Training diverged at epoch 2 \(value is not a finite number\)"):
        fit(model, three_stars(), three_stars())


def test_bad_loop_settings():
    with pytest.raises(MovierecError) as exc:
        fit(Scripted(SCRIPT), three_stars(), three_stars(), epochs=0)
    assert str(exc.value) == "--epochs must be at least 1."


@pytest.mark.parametrize(("options", "message"), [
    ({"patience": 0}, "--patience must be at least 1."),
    ({"valid_fraction": 1.0}, "--valid-fraction must be at least 0 and below 1, not 1."),
    ({"valid_fraction": float("nan")}, "--valid-fraction must be at least 0 and below 1, not nan."),
    ({"test_fraction": 0.0}, "--test-fraction must be between 0 and 1, not 0.0; to train on every rating, use "
                             "--split none."),
    ({"model": "svd"}, "Unknown model 'svd'; choose one of: rbm, autoencoder, mf, als, hybrid."),
    ({"mode": "stars"}, "Unknown mf mode 'stars'; choose one of: explicit."),
])
def test_impossible_options_are_refused_when_made(options, message):
    """Every choice of a run is checked once, where the options are made, before any data loads."""
    with pytest.raises(MovierecError) as exc:
        TrainOptions(**{"model": "mf", **options})
    assert str(exc.value) == message


def test_options_resolve_their_defaults_once():
    options = TrainOptions(" MF ", patience=3)
    assert (options.model, options.mode, options.valid_fraction, options.device) == ("mf", "explicit", 0.05, "auto")
    assert TrainOptions("mf").valid_fraction == 0.0  # no slice without early stopping
    assert options.replace(patience=None, valid_fraction=0.2).valid_fraction == 0.2


def test_empty_training_split():
    empty = three_stars().take(np.zeros(12, dtype=bool))
    with pytest.raises(MovierecError, match="no ratings"):
        fit(Scripted(SCRIPT), empty, three_stars())


# -- real models on a small synthetic matrix -----------------------------------------------------------
@pytest.fixture(scope="module")
def data() -> tuple[Ratings, Ratings]:
    return holdout(low_rank_ratings())


def mf(data, **config):
    train, _ = data
    return build_model("mf", None, {"factors": 8, "epochs": 3, **config}, train.n_users, train.n_items, STARS)


def test_absurd_learning_rate_diverges(data):
    train, test = data
    with pytest.raises(MovierecError) as exc:
        fit(mf(data, lr=1e6, init_range=1e3, epochs=6), train, test)  # mf caps each step; huge factors still blow up
    text = str(exc.value)
    assert text.startswith("Training diverged at epoch ") and "not a finite number" in text
    assert "\n" not in text and text.endswith(".")


def test_early_stopping_restores_the_weights_of_the_kept_epoch(data):
    train, test = data
    # No regularisation, many factors and a big Adam step: overfits this small matrix within a few epochs.
    torch.manual_seed(0)
    model = mf(data, factors=32, reg=0.0, optimizer="adam", lr=0.1, batch_size=2048, epochs=40)
    result = fit(model, train, test, seed=0, patience=2)
    assert result.stopped_early and len(result.history) < 40
    assert result.kept_epoch == result.best_epoch < len(result.history)
    rmses = [r.valid["rmse"] for r in result.history]
    assert rmses[result.kept_epoch - 1] == min(rmses)
    # The model now predicts exactly what the kept epoch reported.
    assert heldout_metrics(model, train.matrix(), test) == result.final_valid


@pytest.mark.parametrize("patience", [None, 2])
def test_same_seed_same_history(data, patience):
    train, test = data

    def run(seed: int):
        torch.manual_seed(1234)  # fit must re-seed: stray global RNG state cannot matter
        model = mf(data, epochs=4)
        result = fit(model, train, test, seed=seed, patience=patience)
        history = [(r.train, r.valid) for r in result.history]
        return history, {k: v.clone() for k, v in model.state_dict().items()}

    first, state = run(3)
    again, state_again = run(3)
    assert first == again
    assert all(torch.equal(state[k], state_again[k]) for k in state)
    other, _ = run(4)
    assert other != first


def test_train_and_save_checks_the_name_before_any_work(home):
    # The dataset is not fetched, but the bad name is what is reported: it is checked first.
    with pytest.raises(MovierecError, match="Invalid model name"):
        train_and_save(TrainOptions("mf", config={"epochs": 1}, name="../escape"))
    with pytest.raises(MovierecError) as exc:
        train_and_save(TrainOptions("mf", config={"epochs": 1}, name="ok", dataset="ml-100k"))
    assert str(exc.value) == "Dataset ml-100k is not fetched yet; run `movierec fetch ml-100k`."
    with pytest.raises(MovierecError) as exc:
        # No dataset named: the fetched one, and there is none.
        train_and_save(TrainOptions("mf", config={"epochs": 1}, name="ok"))
    assert str(exc.value) == "No dataset is fetched yet; run `movierec fetch ml-100k` first."


# -- train_and_save: validation is carved from training, the test split is read once --------------------
@pytest.fixture(scope="module")
def fetched(trained_home):
    """A home with a small synthetic release in ml-latest-small's layout, fetched."""
    from conftest import isolated_home

    with isolated_home(trained_home(dataset="ml-latest-small")) as h:
        yield h


def recording(monkeypatch):
    """Record which held-out ratings train_and_save scores, and let it score them."""
    import movierec.training as training

    seen: list[Ratings] = []
    real = training.heldout_metrics

    def spy(model, train, held_out, progress=None):
        seen.append(held_out)
        return real(model, train, held_out, progress)

    monkeypatch.setattr(training, "heldout_metrics", spy)
    return seen


def test_patience_reads_a_validation_slice_and_the_test_split_once(fetched, monkeypatch):

    seen = recording(monkeypatch)
    heard = Recorder()
    out = train_and_save(TrainOptions("mf", config={"epochs": 4, "factors": 4}, patience=2, name="early"), heard)
    plan = heard.of("start")[0][1]
    assert plan.dataset == "ml-latest-small" and plan.dataset_why == "the only fetched dataset"
    assert plan.valid_fraction == 0.05 and len(plan.valid) == round(0.05 * len(plan.split.train))
    assert len(plan.train) + len(plan.valid) == len(plan.split.train)
    # Every epoch validated on the slice; the test split scored exactly once, after training.
    assert [r is plan.valid for r in seen] == [True] * len(out.result.history) + [False]
    assert seen[-1] is plan.split.test
    meta = out.meta
    assert meta.valid_fraction == 0.05 and meta.valid_metrics == out.result.final_valid
    assert set(meta.metrics) == {"rmse", "mae", "ndcg@10"} and meta.metrics != meta.valid_metrics
    # The saved test metrics are what the saved model scores on the test split, from all training ratings.
    from movierec import loading

    trained = loading.load_trained("early")
    rescored = heldout_metrics(trained.model, trained.train, trained.split.test)
    assert rescored == pytest.approx({k: meta.metrics[k] for k in ("rmse", "mae")}, rel=1e-6)  # a GPU may sum
    # in another order; its lists and the most popular movies' are ranked by the protocol of `evaluate`.
    test = trained.split.test
    assert meta.metrics["ndcg@10"] == pytest.approx(evaluate(trained.ranked, trained.train, test)["ndcg@10"])
    popular = evaluate(PopularityBaseline(trained.train), trained.train, test)["ndcg@10"]
    assert meta.popularity == pytest.approx({"ndcg@10": popular}) and 0 < popular < 1
    assert meta.baseline["name"] == "global mean"
    mean = plan.split.train.ratings.astype(np.float64).mean()
    assert meta.baseline["rmse"] == pytest.approx(np.sqrt(np.mean((plan.split.test.ratings - mean) ** 2)), 1e-5)


def test_split_none_trains_on_every_rating_and_tests_nothing(fetched, monkeypatch):
    from movierec import checkpoint, loading
    from movierec.data.movielens import load_dataset
    from movierec.loading import open_model

    seen = recording(monkeypatch)
    out = train_and_save(TrainOptions("mf", config={"epochs": 2, "factors": 4}, split="none", patience=1, name="final"))
    data = load_dataset("ml-latest-small")
    assert len(out.plan.split.train) == len(data.ratings) and not out.plan.split.has_test
    assert all(r is out.plan.valid for r in seen)  # the validation slice only: there is no test split
    meta = checkpoint.read_meta(out.path)
    assert meta.split == "none" and not meta.has_test_split
    assert meta.metrics == meta.baseline == meta.popularity == {}
    assert meta.valid_metrics and meta.train_metrics
    # What answering reads as the user's own ratings is every rating, so no rated movie is ever recommended.
    served = open_model("final")
    try:
        user = int(data.ratings.users[0])
        items, _ = served.seen(user)
        assert set(items.tolist()) == set(data.ratings.items[data.ratings.users == user].tolist())
        listed = {r["movie_id"] for r in served.recommend(int(data.user_ids[user]), 50)}
        assert not listed & set(data.item_ids[items].tolist())
    finally:
        served.close()
    assert loading.load_trained("final").train.nnz == len(data.ratings)


def test_without_patience_nothing_is_validated_between_epochs(fetched, monkeypatch):
    seen = recording(monkeypatch)
    out = train_and_save(TrainOptions("mf", config={"epochs": 3, "factors": 4}, name="plain"))
    assert [r.valid for r in out.result.history] == [{}] * 3
    assert len(seen) == 1 and len(seen[0]) == len(out.plan.split.test)
    assert out.meta.valid_metrics == {} and out.meta.valid_fraction == 0.0
    assert out.plan.train is out.plan.split.train


def test_a_validation_slice_can_be_asked_for_without_patience(fetched):
    out = train_and_save(TrainOptions("mf", config={"epochs": 2, "factors": 4}, valid_fraction=0.2, name="watched"))
    assert all(set(r.valid) == {"rmse", "mae"} for r in out.result.history)
    assert len(out.plan.valid) == round(0.2 * len(out.plan.split.train))
    assert out.result.kept_epoch == 2 and out.meta.valid_metrics == out.result.history[-1].valid


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"valid_fraction": 1.0}, "--valid-fraction must be at least 0 and below 1, not 1."),
    ({"valid_fraction": -0.1}, "--valid-fraction must be at least 0 and below 1, not -0.1."),
    ({"split": "random", "test_fraction": 1e-9},
     "The random split of ml-latest-small (6,000 ratings) with --test-fraction 1e-09 has no test ratings; "
     "use a larger --test-fraction."),
])
def test_useless_splits_are_refused_before_training(fetched, kwargs, message):
    from movierec import paths

    with pytest.raises(MovierecError) as exc:
        train_and_save(TrainOptions("mf", config={"epochs": 1}, name="never", **kwargs))
    assert str(exc.value) == message
    assert not (paths.models_dir() / "never.pt").exists()


# -- progress ------------------------------------------------------------------------------------------
def _every_model_and_mode():
    from movierec.models import MODELS

    return [(name, mode) for name, entry in MODELS.items() for mode in entry.modes]


@pytest.mark.parametrize(("name", "mode"), _every_model_and_mode())
def test_every_model_reports_each_epochs_batches_monotonically(data, name, mode):
    train, valid = data
    model = build_model(name, mode, {"epochs": 2}, train.n_users, train.n_items, STARS)
    if "batch_size" in model.config.to_dict():  # several batches per epoch whatever the default
        model = build_model(name, mode, {"epochs": 2, "batch_size": 16}, train.n_users, train.n_items, STARS)
    heard = Recorder()
    fit(model, train, valid, events=heard)
    events = [e for e in heard.heard if e[0] in ("step", "progress")]
    steps = [e[1] for e in events if e[0] == "step"]
    assert steps == ["Preparing the model", "Epoch 1/2", "Validating epoch 1", "Epoch 2/2", "Validating epoch 2"]
    for epoch in ("Epoch 1/2", "Epoch 2/2"):
        first = events.index(("step", epoch)) + 1
        counts = []
        for e in events[first:]:
            if e[0] == "step":
                break
            counts.append(e[1:])
        assert len(counts) >= 2, (epoch, counts)  # more than one batch reported
        dones, totals = [d for d, _ in counts], {t for _, t in counts}
        assert len(totals) == 1 and dones == sorted(dones) and dones[-1] <= totals.pop()


def test_ranking_models_validate_on_a_fixed_sample_of_users():
    from movierec.training import VALID_RANK_USERS, validation_sample

    n = VALID_RANK_USERS + 500
    users = np.repeat(np.arange(n, dtype=np.int32), 2)
    valid = Ratings(users, np.zeros_like(users), np.full(users.shape, 4.0, np.float32),
                    np.zeros(users.shape, np.int64), n, 1)
    sample = validation_sample(valid, "rank", seed=3)
    assert np.unique(sample.users).shape[0] == VALID_RANK_USERS and len(sample) == 2 * VALID_RANK_USERS
    assert np.array_equal(sample.users, validation_sample(valid, "rank", seed=3).users)  # same seed, same users
    assert validation_sample(valid, "rating", seed=3) is valid  # a rating costs one prediction: all of them
    small = valid.take(valid.users < 10)
    assert validation_sample(small, "rank", seed=3) is small
