"""Tuning (movierec.tuning): trials on a validation slice of the training ratings, stored studies that go on where
they stopped, the best configuration, pruning and divergence, and the search spaces declared on the configs."""

from __future__ import annotations

import dataclasses

import pytest

pytest.importorskip("optuna")

from movierec.errors import Diverged, MovierecError  # noqa: E402
from movierec.models import MODELS, model_classes  # noqa: E402
from movierec.options import TrainingEvents, TrainOptions  # noqa: E402
from movierec.tuning import search_space, study_name, tune  # noqa: E402

TINY = {"epochs": 2, "batch_size": 256}
"""mf settings that train the synthetic release in a blink."""


@pytest.fixture(scope="module")
def fetched(trained_home):
    """A home with a small synthetic release in ml-latest-small's layout, fetched."""
    from conftest import isolated_home

    with isolated_home(trained_home(dataset="ml-latest-small")) as h:
        yield h


class Heard(TrainingEvents):
    def __init__(self):
        self.trials = []

    def trial(self, record):
        self.trials.append(record)


def test_every_model_searches_fields_it_has_with_sound_bounds():
    for name in MODELS:
        for mode, cls in model_classes(name).items():
            space = search_space(cls.config_class)
            assert space, f"{name} --mode {mode} declares nothing to tune"
            defaults = {f.name: f.default for f in dataclasses.fields(cls.config_class)}
            for field, where in space.items():
                if where.choices:
                    assert defaults[field] in where.choices, (name, mode, field)
                else:
                    assert where.low < where.high and (not where.log or where.low > 0), (name, mode, field)
            assert "epochs" not in space  # pruning, not the search, decides how long a trial trains


def test_every_model_builds_from_any_point_of_its_search_space():
    import optuna

    from movierec.tuning import suggest

    for name in MODELS:
        for mode, cls in model_classes(name).items():
            study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
            space = search_space(cls.config_class)
            for _ in range(20):
                trial = study.ask()
                values = suggest(trial, space, cls.config_class)
                cls.config_class(**values)  # a value no config takes would be one sentence here, every trial
                for field, value in values.items():
                    default = cls.config_class.__dataclass_fields__[field].default
                    assert type(value) is type(default), (name, mode, field, value)
                study.tell(trial, 0.0)


def test_trials_run_on_the_validation_slice_and_the_best_is_one_of_them(fetched):
    heard = Heard()
    result = tune(TrainOptions("mf", config=TINY), trials=4, study="best", events=heard)
    assert result.ran == 4 and [r.number for r in result.records] == [0, 1, 2, 3]
    assert [r.number for r in heard.trials] == [0, 1, 2, 3]
    assert result.metric == "rmse" and not result.higher_is_better
    complete = [r for r in result.records if r.state == "complete"]
    best = min(complete, key=lambda r: r.value)
    assert result.best_trial == best.number and result.best_value == best.value
    assert result.best == {**TINY, **best.params}
    assert set(best.params) == {"factors", "lr", "reg"}  # the searched fields less the given ones
    frame = result.trials
    assert list(frame["number"]) == [0, 1, 2, 3] and {"factors", "lr", "reg", "value", "state"} <= set(frame)
    assert (fetched / "studies" / "best.db").is_file()


def test_the_default_study_is_named_by_model_mode_dataset_and_split(fetched):
    result = tune(TrainOptions("mf", config=TINY), trials=1)
    assert result.study == study_name("mf", "explicit", "ml-latest-small", "random")
    assert result.study == "mf-explicit-ml-latest-small-random"
    assert (fetched / "studies" / f"{result.study}.db").is_file()


def test_running_again_continues_the_study_with_new_trials(fetched):
    first = tune(TrainOptions("mf", config=TINY), trials=2, study="again")
    second = tune(TrainOptions("mf", config=TINY), trials=3, study="again")
    assert second.ran == 3 and len(second.records) == 5
    assert second.records[:2] == first.records
    # Not the first run's trials once more: continuing draws on from where the study is.
    assert second.records[2].params != first.records[0].params


def test_same_seed_same_trials(fetched, tmp_path):
    runs = [tune(TrainOptions("mf", config=TINY, seed=3), trials=3, storage=f"sqlite:///{tmp_path / f'{i}.db'}",
                 study="seeded") for i in range(2)]
    assert [(r.params, r.value) for r in runs[0].records] == [(r.params, r.value) for r in runs[1].records]
    other = tune(TrainOptions("mf", config=TINY, seed=4), trials=1, storage=f"sqlite:///{tmp_path / 'o.db'}",
                 study="seeded")
    assert other.records[0].params != runs[0].records[0].params


def test_tuning_never_reads_the_test_split(fetched, monkeypatch):
    """The split handed to the trials has a test split that fails on any use: len, matrix, anything."""
    import movierec.data.split as split_module
    import movierec.training as training

    class Untouchable:
        def __getattr__(self, name):
            raise AssertionError(f"tuning read the test split ({name})")

        def __len__(self):
            raise AssertionError("tuning read the test split (len)")

    real_split, made = split_module.make_split, []

    def poisoned(*args, **kwargs):
        split = real_split(*args, **kwargs)
        made.append(split)
        return dataclasses.replace(split, test=Untouchable())

    seen = []
    real_metrics = training.heldout_metrics

    def spy(model, train, held_out, progress=None):
        seen.append(len(held_out))
        return real_metrics(model, train, held_out, progress)

    monkeypatch.setattr(split_module, "make_split", poisoned)
    monkeypatch.setattr(training, "heldout_metrics", spy)
    # ndcg@10 of a rating model is measured after training too, through its lists: on the slice as well.
    result = tune(TrainOptions("mf", config=TINY), trials=2, study="untouched", valid_fraction=0.2,
                  metric="ndcg@10")
    assert [r.state for r in result.records] == ["complete", "complete"]
    assert len(made) == 1
    train = made[0].train
    assert seen and set(seen) == {round(0.2 * len(train))}  # every epoch validated on the slice
    assert result.metric == "ndcg@10" and result.higher_is_better
    assert result.best_value == max(r.value for r in result.records)


def test_bad_trials_are_pruned_and_a_diverged_one_does_not_stop_the_study(fetched, monkeypatch):
    import movierec.training as training

    real_fit, calls = training.fit, []

    def sometimes_diverging(model, *args, **kwargs):
        calls.append(1)
        if len(calls) == 2:  # the second trial's model (the first has no picks model: none is trained)
            raise Diverged("Training diverged at epoch 1 (loss is not a finite number); try a lower learning rate.")
        return real_fit(model, *args, **kwargs)

    monkeypatch.setattr(training, "fit", sometimes_diverging)
    result = tune(TrainOptions("mf", config={**TINY, "epochs": 4}), trials=8, study="pruning")
    states = [r.state for r in result.records]
    assert len(states) == 8 and states[1] == "pruned" and "diverged" in result.records[1].note
    assert "complete" in states and result.best_trial != 1
    # The median pruner stops some trials after their first epochs, once it has 5 trials to compare.
    assert any(r.state == "pruned" and r.epochs < 4 for r in result.records[2:])


def test_a_study_tunes_one_thing(fetched):
    tune(TrainOptions("mf", config=TINY), trials=1, study="mine")
    with pytest.raises(MovierecError) as exc:
        tune(TrainOptions("als", config={"epochs": 1}), trials=1, study="mine")
    assert str(exc.value).startswith("Study mine tunes mf (explicit) on ml-latest-small split random by rmse")
    assert "not als (explicit)" in str(exc.value) and str(exc.value).endswith("name another with --study.")
    with pytest.raises(MovierecError, match="by ndcg@10"):
        tune(TrainOptions("mf", config=TINY), trials=1, study="mine", metric="ndcg@10")


@pytest.mark.parametrize(("options", "kwargs", "message"), [
    ({"config": {"nonsense": 1}}, {}, "mf --mode explicit has no setting 'nonsense'; its settings are"),
    ({}, {"trials": 0}, "--trials must be at least 1, not 0."),
    ({}, {"timeout": -1.0}, "--timeout must be a positive number of seconds, not -1."),
    ({}, {"metric": "speed"}, "Unknown metric 'speed'; choose one of rmse, mae"),
    ({}, {"metric": "ndcg@ten"}, "Unknown metric 'ndcg@ten'; choose one of rmse, mae"),
    ({}, {"valid_fraction": 0.0}, "--valid-fraction must be between 0 and 1 for tuning, not 0"),
    ({}, {"study": "../up"}, "'../up' cannot name a study"),
    ({}, {"storage": "nosuchdb://x"}, "Cannot open the study storage 'nosuchdb://x': "),
    ({}, {"storage": "journal:/no/such/folder/j.log"}, "Cannot open the study journal /no/such/folder/j.log"),
    ({"config": {"factors": 4, "lr": 0.01, "reg": 0.1}}, {}, "Nothing is left to tune in mf --mode explicit"),
])
def test_bad_input_is_one_sentence(fetched, options, kwargs, message):
    with pytest.raises(MovierecError) as exc:
        tune(TrainOptions("mf", **options), **{"trials": 1, **kwargs})
    assert str(exc.value).startswith(message) and str(exc.value).count("\n") == 0
    assert str(exc.value).endswith(".")


def test_the_python_face_tunes_and_saves(fetched):
    import movierec as mr

    result = mr.tune("mf", trials=2, study="api", save="tuned-mf", **TINY)
    assert len(result.trials) == 2 and result.best_value is not None
    model = mr.load("tuned-mf")
    try:
        saved = model.info["config"]
        assert {k: saved[k] for k in result.best} == result.best
        assert model.info["split"] == result.split and model.metrics  # tested once, as `train` does
    finally:
        model.close()
