"""Hyperparameter search: `movierec tune MODEL` and ``mr.tune``, on Optuna (the optional ``tune`` extra).

Where to search is data, declared once next to each config field (``option(..., search=between(...))``, see
:class:`movierec.models.base.Search`); fields without a search, and the settings given (``fixed``), stay as they
are. Each trial trains through the one training loop (:func:`movierec.training.fit_split`) on the split's training
ratings less a seeded validation slice, and is judged on that slice: the test split is never read here, so
choosing by it cannot flatter the numbers `evaluate` reports later. The metric is the headline of the model's kind
(:func:`movierec.metrics.headline`: RMSE for rating models, NDCG@10 for top-N models) unless another is asked for;
its direction is :func:`movierec.metrics.higher_is_better`'s.

Trials are drawn by Optuna's TPE sampler, seeded (same seed, same trials, in one process), and cut short by its
median pruner from the validation metric of every epoch (through the training loop's ``epoch`` event), once five
trials have ended and never in a trial's first :data:`WARMUP` of its epochs (a slow start, a small learning rate's,
is not a bad end: pruning from the first epoch cut 36 of 50 mf trials on ml-100k u1). A trial
whose training diverges is pruned, its reason kept as the trial's ``diverged`` attribute.

A study is stored, so that running again continues it: by default in a SQLite file of the home's ``studies``
folder named by the model, mode, dataset and split; any Optuna storage URL (``sqlite:///...``,
``postgresql://...``) or ``journal:PATH`` (a journal file) instead, which lets several processes or machines
work on one study at once. The study remembers what it tunes (model, mode, dataset, split, metric and the fixed
settings) and refuses to go on for anything else.
"""

from __future__ import annotations

import dataclasses
import math
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from movierec.errors import Diverged, MovierecError
from movierec.options import QUIET, Prefixed, TrainingEvents, TrainOptions

if TYPE_CHECKING:
    from movierec.models.base import ModelConfig, Search
    from movierec.training import EpochReport, TrainOutcome

MISSING_EXTRA = "tune needs the tune extra: pip install 'movierec[tune]'."
DEFAULT_TRIALS = 20
"""Trials per run when neither a number of trials nor a timeout is given."""
VALID_FRACTION = 0.1
"""The share of the training ratings each trial is judged on, unless another is given: twice training's
default, since a trial is chosen by it, not only stopped."""
WARMUP = 1 / 3
"""The share of a trial's epochs it always trains before the pruner may stop it."""
JOURNAL = "journal:"
_SCHEMA_TRIES = 5
"""A storage written ``journal:PATH`` is Optuna's journal file at PATH."""
_STUDY_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,119}")
_IDENTITY = ("model", "mode", "dataset", "split", "metric", "fixed")
"""What a study remembers of what it tunes, as its user attributes."""


def require_optuna() -> Any:
    """The optuna module, or the one-line hint to install the extra."""
    try:
        import optuna
    except ImportError:
        raise MovierecError(MISSING_EXTRA) from None
    return optuna


def search_space(config_class: type[ModelConfig]) -> dict[str, Search]:
    """The config fields that tuning searches, by name, with where it searches them."""
    return {f.name: f.metadata["search"] for f in dataclasses.fields(config_class) if f.metadata.get("search")}


def suggest(trial: Any, space: Mapping[str, Search], config_class: type[ModelConfig]) -> dict[str, Any]:
    """One value per field of ``space``, drawn by ``trial`` (whole numbers for an ``int`` field)."""
    defaults = {f.name: f.default for f in dataclasses.fields(config_class)}
    values: dict[str, Any] = {}
    for name, where in space.items():
        if where.choices:
            values[name] = trial.suggest_categorical(name, list(where.choices))
        elif isinstance(defaults[name], int) and not isinstance(defaults[name], bool):
            values[name] = trial.suggest_int(name, int(where.low or 0), int(where.high or 0), log=where.log)
        else:
            values[name] = trial.suggest_float(name, float(where.low or 0.0), float(where.high or 0.0), log=where.log)
    return values


@dataclass(frozen=True)
class TrialRecord:
    """One trial of a study, as tables and JSON show it."""

    number: int
    state: str
    """``complete``, ``pruned``, ``fail``, ``running`` or ``waiting``."""
    value: float | None
    """The metric on the validation slice; of a pruned trial, its last validated epoch's (None: none)."""
    params: dict[str, Any]
    seconds: float | None
    epochs: int
    """Epochs validated before it ended (pruned trials end early)."""
    note: str = ""
    """Why a trial was pruned for divergence, else empty."""

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class TuneResult:
    """A study after :func:`tune` (every trial, whoever ran it) and its best configuration."""

    study: str
    storage: str
    model: str
    mode: str
    dataset: str
    split: str
    metric: str
    higher_is_better: bool
    fixed: dict[str, Any]
    """The settings given, the same in every trial."""
    records: list[TrialRecord]
    best_trial: int | None
    """The best complete trial's number (None when none completed)."""
    best_value: float | None
    best: dict[str, Any] = field(default_factory=dict)
    """The best configuration: the fixed settings and the best trial's parameters (the model's defaults fill the
    rest), what ``train(model, **best)`` takes."""
    ran: int = 0
    """Trials this call ran (other processes may have added theirs to the study meanwhile)."""

    @property
    def trials(self) -> Any:
        """Every trial as a pandas DataFrame: ``number``, ``state``, ``value``, one column per parameter,
        ``seconds``, ``epochs``, ``note``."""
        import pandas as pd

        names = list(dict.fromkeys(k for r in self.records for k in r.params))
        return pd.DataFrame([{"number": r.number, "state": r.state, "value": r.value,
                              **{k: r.params.get(k) for k in names}, "seconds": r.seconds, "epochs": r.epochs,
                              "note": r.note} for r in self.records],
                            columns=["number", "state", "value", *names, "seconds", "epochs", "note"])

    def to_json(self) -> dict[str, Any]:
        """What `movierec tune --json` prints."""
        return {"study": self.study, "storage": self.storage, "model": self.model, "mode": self.mode,
                "dataset": self.dataset, "split": self.split, "metric": self.metric,
                "higher_is_better": self.higher_is_better, "fixed": self.fixed, "ran": self.ran,
                "best": {"trial": self.best_trial, "value": self.best_value, "config": self.best},
                "trials": [r.to_json() for r in self.records]}


def study_name(model: str, mode: str, dataset: str, split: str) -> str:
    """The default study of a model in a mode on a dataset's split: ``als-implicit-ml-100k-u1``."""
    return f"{model}-{mode}-{dataset}-{split}"


def default_storage(name: str) -> str:
    """The SQLite file of study ``name`` in the home's studies folder (created), as a storage URL."""
    from movierec.paths import studies_dir

    folder = studies_dir()
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise MovierecError(f"Cannot create the studies folder {folder}: {exc.strerror or exc}.") from None
    return f"sqlite:///{folder / f'{name}.db'}"


def open_storage(url: str) -> Any:
    """The Optuna storage ``url`` names: ``journal:PATH`` a journal file, anything else an RDB URL. SQLite waits
    up to a minute for a lock, so that several processes can share one file."""
    optuna = require_optuna()
    try:
        if url.startswith(JOURNAL):
            from optuna.storages.journal import JournalFileBackend

            path = Path(url[len(JOURNAL):]).expanduser()
            if not path.parent.is_dir():
                raise MovierecError(f"Cannot open the study journal {path}: the folder {path.parent} does not exist.")
            return optuna.storages.JournalStorage(JournalFileBackend(str(path)))
        kwargs = {"connect_args": {"timeout": 60}} if url.startswith("sqlite:") else {}
        for attempt in range(_SCHEMA_TRIES):
            try:
                return optuna.storages.RDBStorage(url, engine_kwargs=kwargs)
            except Exception as exc:
                # Two processes opening a new database at once both create its tables: the one that loses the
                # race finds them made when it tries again.
                if type(exc).__name__ not in ("IntegrityError", "OperationalError") or attempt == _SCHEMA_TRIES - 1:
                    raise
                time.sleep(0.2 * (attempt + 1))
        raise AssertionError("unreachable")
    except MovierecError:
        raise
    except Exception as exc:  # sqlalchemy's and the drivers' errors: a bad URL, a missing driver, no server
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0].rstrip(".")
        raise MovierecError(f"Cannot open the study storage {url!r}: {reason}.") from None


def objective_metric(model: str, mode: str | None, metric: str | None) -> tuple[str, bool]:
    """What tuning ``model`` in ``mode`` optimises: ``metric`` (None: the headline of the model's kind) and
    whether higher is better."""
    from movierec.metrics import METRICS, headline, higher_is_better
    from movierec.models import model_class

    key = headline(str(model_class(model, mode).kind)) if metric is None else metric.strip().lower()
    _, at, k = key.partition("@")
    try:
        if at and not (k.isdigit() and int(k) >= 1):
            raise ValueError(key)
        return key, higher_is_better(key)
    except ValueError:
        names = ", ".join(info.key.format(k=10) for info in METRICS)
        raise MovierecError(f"Unknown metric {metric!r}; choose one of {names} (any list length after @).") from None


def _check_settings(model: str, mode: str, config_class: type[ModelConfig], fixed: Mapping[str, Any]) -> None:
    names = {f.name for f in dataclasses.fields(config_class)}
    unknown = [k for k in fixed if k not in names]
    if unknown:
        raise MovierecError(f"{model} --mode {mode} has no setting {unknown[0]!r}; "
                            f"its settings are {', '.join(sorted(names))}.")
    try:
        config_class(**fixed)  # a bad value is one sentence before any data loads
    except TypeError as exc:
        raise MovierecError(f"Invalid {model} settings: {exc}.") from None


def _describe(identity: Mapping[str, Any]) -> str:
    fixed = identity.get("fixed") or {}
    given = f" with {', '.join(f'{k}={v}' for k, v in fixed.items())}" if fixed else ""
    return (f"{identity.get('model')} ({identity.get('mode')}) on {identity.get('dataset')} split "
            f"{identity.get('split')} by {identity.get('metric')}{given}")


def _claim(study: Any, identity: dict[str, Any]) -> None:
    """Mark a new study with what it tunes, or check that an existing one tunes the same."""
    attrs = study.user_attrs
    if not all(k in attrs for k in _IDENTITY):
        for key in _IDENTITY:  # a new study (or one a concurrent run has only begun to mark): the same values
            study.set_user_attr(key, identity[key])
        attrs = study.user_attrs
    theirs = {k: attrs.get(k) for k in _IDENTITY}
    if theirs != identity:
        raise MovierecError(f"Study {study.study_name} tunes {_describe(theirs)}, not {_describe(identity)}; "
                            "name another with --study.")


class _TrialEvents(Prefixed):
    """A trial's training, told with its number ("Trial 3: Epoch 2/20"), reporting ``metric`` of every epoch's
    validation to the trial and stopping it when the pruner says so."""

    def __init__(self, events: TrainingEvents, trial: Any, metric: str):
        super().__init__(events, f"Trial {trial.number}: ", first=trial.number == 0)
        self.running, self.metric = trial, metric
        self.epochs = 0

    def epoch(self, report: EpochReport) -> None:
        import optuna

        self.epochs = report.epoch
        value = report.valid.get(self.metric)
        if value is None or not math.isfinite(value):
            return
        self.running.report(float(value), report.epoch)
        if self.running.should_prune():
            raise optuna.TrialPruned(f"pruned at epoch {report.epoch}")


def _record(trial: Any) -> TrialRecord:
    seconds = None
    if trial.datetime_start is not None and trial.datetime_complete is not None:
        seconds = (trial.datetime_complete - trial.datetime_start).total_seconds()
    return TrialRecord(int(trial.number), trial.state.name.lower(),
                       None if trial.value is None else float(trial.value), dict(trial.params), seconds,
                       len(trial.intermediate_values), str(trial.user_attrs.get("diverged", "")))


def tune(  # noqa: PLR0913 -- the options of `movierec tune`, one keyword each
    options: TrainOptions,
    *,
    trials: int | None = None,
    timeout: float | None = None,
    metric: str | None = None,
    storage: str | None = None,
    study: str | None = None,
    valid_fraction: float | None = None,
    events: TrainingEvents = QUIET,
) -> TuneResult:
    """Search the settings of the model ``options`` name for the best ``metric`` on a validation slice of its split's
    training ratings (see the module docstring): ``trials`` more trials and/or for ``timeout`` seconds (neither:
    :data:`DEFAULT_TRIALS`), added to the study ``study`` in ``storage``. ``options.config`` holds the fixed
    settings; ``options.seed`` seeds the sampler and every trial's training. ``events`` hears of each step, prefixed
    by its trial, and of each trial as it ends (``trial``)."""
    from movierec.data.default import default_dataset
    from movierec.data.split import default_split
    from movierec.models import model_class

    optuna = require_optuna()
    if trials is None and timeout is None:
        trials = DEFAULT_TRIALS
    if trials is not None and int(trials) < 1:
        raise MovierecError(f"--trials must be at least 1, not {trials}.")
    if timeout is not None and not (math.isfinite(timeout) and timeout > 0):
        raise MovierecError(f"--timeout must be a positive number of seconds, not {timeout:g}.")
    fraction = VALID_FRACTION if valid_fraction is None else float(valid_fraction)
    if not (math.isfinite(fraction) and 0.0 < fraction < 1.0):
        raise MovierecError(f"--valid-fraction must be between 0 and 1 for tuning, not {fraction:g}: each trial "
                            "is judged on that slice of the training ratings.")
    model, mode, fixed = options.model, str(options.mode), options.settings()
    config_class = model_class(model, mode).config_class
    _check_settings(model, mode, config_class, fixed)
    epochs = int(fixed.get("epochs", config_class.__dataclass_fields__["epochs"].default))
    space = {k: v for k, v in search_space(config_class).items() if k not in fixed}
    if not space:
        raise MovierecError(f"Nothing is left to tune in {model} --mode {mode}: every setting it searches is given.")
    key, higher = objective_metric(model, mode, metric)
    dataset = options.dataset if options.dataset is not None else default_dataset().name
    split = (options.split or default_split(dataset)).strip().lower()
    name = study or study_name(model, mode, dataset, split)
    if not _STUDY_NAME.fullmatch(name):
        raise MovierecError(f"{name!r} cannot name a study: use letters, digits, '.', '_', '+' and '-'.")
    url = storage or default_storage(name)

    events.step("Opening the study")
    opened = open_storage(url)
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # each trial is told by events.trial instead
    direction = "maximize" if higher else "minimize"
    try:
        the_study = optuna.create_study(study_name=name, storage=opened, direction=direction, load_if_exists=True,
                                        pruner=optuna.pruners.MedianPruner(n_startup_trials=5,
                                                                           n_warmup_steps=int(epochs * WARMUP)))
    except Exception as exc:  # the database exists but is not Optuna's, say
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0].rstrip(".")
        raise MovierecError(f"Cannot open study {name} in {url!r}: {reason}.") from None
    identity = {"model": model, "mode": mode, "dataset": dataset, "split": split, "metric": key,
                "fixed": _jsonable(fixed)}
    _claim(the_study, identity)

    objective = _Objective(options.replace(dataset=dataset, split=split, valid_fraction=fraction), config_class,
                           space, key, events)
    ran: list[int] = []  # this process's trials (others may be adding theirs to the study meanwhile)

    def ended(_: Any, trial: Any) -> None:
        ran.append(trial.number)
        events.trial(_record(trial))

    the_study.optimize(objective, n_trials=trials, timeout=timeout, gc_after_trial=False, callbacks=[ended])
    return study_result(the_study, url, ran=len(ran))


class _Objective:
    """One trial: the data loaded once, then a model trained and judged per call."""

    def __init__(self, options: TrainOptions, config_class: type[ModelConfig], space: dict[str, Search],
                 metric: str, events: TrainingEvents):
        self.options, self.config_class, self.space, self.metric, self.events = (
            options, config_class, space, metric, events)
        self.data: Any = None
        self.split: Any = None

    def _load(self) -> None:
        from movierec.data.movielens import load_dataset
        from movierec.data.split import make_split

        if self.data is None:
            self.events.step(f"Loading {self.options.dataset}")
            self.data = load_dataset(str(self.options.dataset))
            self.events.step("Splitting the ratings")
            self.split = make_split(self.data, str(self.options.split), seed=self.options.seed,
                                    test_fraction=self.options.test_fraction)

    def __call__(self, trial: Any) -> float:
        import optuna

        from movierec.device import resolve_device
        from movierec.training import fit_split

        self._load()
        # Each trial draws from the seed and its own number: the same trials again for the same seed, yet not the
        # first trials once more when a study is continued, nor the same draw in two processes sharing a study.
        # (TPE samples each parameter independently, when it is suggested: the sampler is read from here on.)
        trial.study.sampler = optuna.samplers.TPESampler(seed=self.options.seed + trial.number)
        fixed = self.options.settings()
        options = self.options.replace(config={**fixed, **suggest(trial, self.space, self.config_class)})
        listener = _TrialEvents(self.events, trial, self.metric)
        # A rating model's lists rank through its picks model: trained only when the lists are the metric.
        lists = "@" in self.metric
        try:
            fitted = fit_split(options, self.data, self.split, device=resolve_device(options.device),
                               events=listener, picks=lists)
        except Diverged as exc:
            trial.set_user_attr("diverged", str(exc))
            raise optuna.TrialPruned(str(exc)) from None
        valid = fitted.result.final_valid
        value: float | None
        if self.metric in valid:
            value = valid[self.metric]
        else:
            value = self._measure(fitted, listener)
        if value is None or not math.isfinite(value):
            raise MovierecError(f"{self.metric} cannot judge {options.model} --mode {options.mode} on this "
                                "validation slice; choose another --metric.")
        return float(value)

    def _measure(self, fitted: Any, events: TrainingEvents) -> float | None:
        """The metric of a trained trial that its epochs' validation does not report, on the same slice."""
        from movierec.evaluate import evaluate
        from movierec.training import validation_sample

        plan, model = fitted.plan, fitted.model
        _, at, k = self.metric.partition("@")
        events.step(f"Measuring {self.metric} on the validation slice")
        valid = validation_sample(plan.valid, model.kind, self.options.seed)
        scores = evaluate(fitted.ranked, plan.train.matrix(model.device), valid, k=int(k) if at else 10,
                          progress=events.progress)
        value = scores.get(self.metric)
        return None if value is None else float(value)


def _jsonable(values: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v.value if hasattr(v, "value") else v for k, v in values.items()}


def study_result(study: Any, storage: str, *, ran: int = 0) -> TuneResult:
    """What a stored study holds, as a :class:`TuneResult`."""
    attrs = study.user_attrs
    if not all(k in attrs for k in _IDENTITY):
        raise MovierecError(f"Study {study.study_name} was not made by movierec tune.")
    records = [_record(t) for t in study.trials]
    complete = [r for r in records if r.state == "complete" and r.value is not None]
    from movierec.metrics import higher_is_better

    higher = higher_is_better(attrs["metric"])
    best = None
    if complete:
        best = (max if higher else min)(complete, key=lambda r: (r.value, -r.number))
    fixed = dict(attrs.get("fixed") or {})
    return TuneResult(study=study.study_name, storage=storage, model=attrs["model"], mode=attrs["mode"],
                      dataset=attrs["dataset"], split=attrs["split"], metric=attrs["metric"], higher_is_better=higher,
                      fixed=fixed, records=records, best_trial=None if best is None else best.number,
                      best_value=None if best is None else best.value,
                      best={} if best is None else {**fixed, **best.params}, ran=ran)


def load_study(study: str | None = None, storage: str | None = None) -> TuneResult:
    """A stored study: ``study`` in ``storage`` (default: the home's studies folder). Without ``study``, the only
    study of ``storage``, or the most recently changed study file of the home."""
    optuna = require_optuna()
    if storage is None:
        if study is None:
            from movierec.paths import studies_dir

            files = sorted(studies_dir().glob("*.db"), key=lambda p: p.stat().st_mtime) if studies_dir().is_dir() \
                else []
            if not files:
                raise MovierecError("No study is stored yet; run `movierec tune MODEL` first.")
            study = files[-1].stem
        elif not _STUDY_NAME.fullmatch(study):
            raise MovierecError(f"{study!r} cannot name a study: use letters, digits, '.', '_', '+' and '-'.")
        from movierec.paths import studies_dir

        if not (studies_dir() / f"{study}.db").is_file():
            raise MovierecError(f"No study {study} is stored in {studies_dir()}; run `movierec tune MODEL` first.")
        storage = default_storage(study)
    opened = open_storage(storage)
    names = [s.study_name for s in optuna.get_all_study_summaries(opened, include_best_trial=False)]
    if study is None:
        if len(names) != 1:
            raise MovierecError(f"{storage} holds {len(names)} studies; name one with --study"
                                f"{' (' + ', '.join(names) + ')' if names else ''}.")
        study = names[0]
    if study not in names:
        raise MovierecError(f"{storage} holds no study {study}.")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return study_result(optuna.load_study(study_name=study, storage=opened), storage)


def save_best(result: TuneResult, options: TrainOptions, name: str | None,
              events: TrainingEvents = QUIET) -> TrainOutcome:
    """Train the best configuration of ``result`` through the normal training path (`movierec train`: the same
    split, the test split scored once at the end) and save it as ``name``."""
    from movierec.training import train_and_save

    if result.best_trial is None:
        raise MovierecError(f"Study {result.study} has no complete trial yet, so there is nothing to save.")
    best = options.replace(model=result.model, mode=result.mode, config=result.best, dataset=result.dataset,
                           split=result.split, name=name)
    return train_and_save(best, events)
