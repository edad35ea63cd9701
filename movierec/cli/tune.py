"""`movierec tune MODEL`: search a model's settings on a validation slice (movierec.tuning), a line per trial as
it ends, then the trials' table and the best configuration; ``--save`` trains that one and saves it."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import typer

from movierec.cli.model_commands import RUN_DEFAULTS, RUN_OPTIONS, model_group, show_value
from movierec.options import TrainingEvents

if TYPE_CHECKING:
    from movierec.cli.progress import Steps
    from movierec.tuning import TrialRecord, TuneResult

_SHARED = ("dataset", "split", "test_fraction", "seed", "device", "patience")
_OPTIONS: dict[str, tuple[Any, Any]] = {
    **{k: RUN_OPTIONS[k] for k in _SHARED},
    "valid_fraction": (
        float | None,
        typer.Option(help="Share of the split's training ratings each trial is judged on; never the test split "
                          "(default: 0.1)."),
    ),
    "trials": (int | None, typer.Option(help="Trials to run this time (default: 20, unless --timeout is given).")),
    "timeout": (float | None, typer.Option(help="Start no trial after this many seconds.")),
    "metric": (
        str | None,
        typer.Option(help="What to optimise on the validation slice, e.g. rmse or ndcg@10 (default: rmse for rating "
                          "models, ndcg@10 for top-N models, like_error for like models)."),
    ),
    "study": (
        str | None,
        typer.Option(help="The study's name (default: MODEL-MODE-DATASET-SPLIT); running again continues it."),
    ),
    "storage": (
        str | None,
        typer.Option(help="Where the study is kept: an Optuna storage URL (sqlite:///FILE, postgresql://...) or "
                          "journal:FILE; several processes may share one (default: a SQLite file per study in the "
                          "home's studies folder)."),
    ),
    "save": (
        str | None,
        typer.Option(help="Then train the best configuration on the split as `movierec train` does and save it "
                          "under this name."),
    ),
    "json_output": RUN_OPTIONS["json_output"],
}
_DEFAULTS = {**{k: RUN_DEFAULTS[k] for k in _SHARED}, "valid_fraction": None, "trials": None, "timeout": None,
             "metric": None, "study": None, "storage": None, "save": None, "json_output": False}


def _run(model: str, mode: str, config: dict[str, Any], *, dataset: str | None, split: str | None,
         test_fraction: float, seed: int, device: str, patience: int | None, valid_fraction: float | None,
         trials: int | None, timeout: float | None, metric: str | None, study: str | None, storage: str | None,
         save: str | None, json_output: bool) -> None:
    from movierec.cli.console import print_json
    from movierec.cli.progress import Steps
    from movierec.options import TrainOptions
    from movierec.tuning import objective_metric, require_optuna, save_best, tune

    require_optuna()
    options = TrainOptions(model, mode=mode, config=config, dataset=dataset, split=split,
                           test_fraction=test_fraction, seed=seed, device=device, patience=patience, name=save)
    if save is not None:
        from movierec.checkpoint import path_for

        path_for(save)  # a bad name is told before the search, not after it
    _, higher = objective_metric(options.model, options.mode, metric)
    steps = Steps(quiet=json_output, unlined=("Trial ",))
    with steps:
        result = tune(options, trials=trials, timeout=timeout, metric=metric, storage=storage, study=study,
                      valid_fraction=valid_fraction, events=TrialLines(steps, higher=higher, quiet=json_output))
    outcome = None
    if save is not None:
        from movierec.cli.train import TrainingLines

        saving = Steps(quiet=json_output, unlined=("Epoch ", "Validating "))
        with saving:
            outcome = save_best(result, options, save, TrainingLines(saving, model, quiet=True))
    if json_output:
        print_json({**result.to_json(), "saved": None if outcome is None else outcome.to_json()})
        return
    print_trials(result)
    if outcome is not None:
        from movierec.cli.train import print_summary

        print_summary(outcome)


class TrialLines(TrainingEvents):
    """A search on screen: each trial's steps as they go, then a line per trial as it ends (``*``: best so far)."""

    def __init__(self, steps: Steps, *, higher: bool, quiet: bool):
        self.steps, self.higher, self.quiet = steps, higher, quiet
        self.best: float | None = None

    def step(self, description: str) -> None:
        self.steps.step(description)

    def progress(self, done: int, total: int) -> None:
        self.steps.progress(done, total)

    def trial(self, record: TrialRecord) -> None:
        self.steps.step("")
        if self.quiet:
            return
        improved = record.state == "complete" and record.value is not None and (
            self.best is None or (record.value > self.best if self.higher else record.value < self.best))
        if improved:
            self.best = record.value
        value = "-" if record.value is None else f"{record.value:.4f}"
        seconds = "" if record.seconds is None else f"({record.seconds:.1f}s)"
        params = [f"{k} {_shown(v)}" for k, v in record.params.items()]
        self.steps.record([[f"trial {record.number:>3}", f"{record.state:<8}", value], params,
                           [seconds + (" *" if improved else "")]], indent=len("trial 999  "))


def _shown(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def _flags(config: dict[str, Any]) -> str:
    from movierec.models.base import flag_name

    parts = []
    for key, value in config.items():
        flag = flag_name(key)
        if isinstance(value, bool):
            parts.append(flag if value else f"--no-{flag[2:]}")
        else:
            parts.append(f"{flag} {f'{value:.6g}' if isinstance(value, float) else show_value(value)}")
    return " ".join(parts)


def print_trials(result: TuneResult) -> None:
    """The trials' table, at most 80 columns wide at that width (the parameters share one column when they do
    not fit one each), and the best configuration as `movierec train` options."""
    from rich.table import Table

    from movierec.cli.console import console, pack, plain

    names = list(dict.fromkeys(k for r in result.records for k in r.params))
    rows = [[str(r.number), r.state, "-" if r.value is None else f"{r.value:.4f}",
             *(_shown(r.params[k]) if k in r.params else "" for k in names),
             "-" if r.seconds is None else f"{r.seconds:.1f}"] for r in result.records]
    heads = ["#", "state", result.metric, *names, "s"]
    widths = [max(len(h), *(len(row[i]) for row in rows)) if rows else len(h) for i, h in enumerate(heads)]
    apart = sum(widths) + 3 * len(heads) + 1 <= console.width
    title = f"Tuning {result.model} ({result.mode}) on {result.dataset} split {result.split}: study {result.study}"
    table = Table(title=plain(title), title_justify="left")
    table.add_column("#", justify="right", no_wrap=True)
    table.add_column("state", no_wrap=True)
    table.add_column(result.metric, justify="right", no_wrap=True)
    if apart:
        for name in names:
            table.add_column(name, justify="right", no_wrap=True)
    else:
        fixed = sum(widths[:3]) + widths[-1] + 3 * 5 + 1
        room = max(20, console.width - fixed)
        table.add_column("parameters", overflow="fold", max_width=room)
    table.add_column("s", justify="right", no_wrap=True)
    for r, row in zip(result.records, rows):
        style = "bold" if r.number == result.best_trial else None
        if apart:
            table.add_row(*row, style=style)
        else:
            params = pack([f"{k} {_shown(r.params[k])}" for k in names if k in r.params], room)
            table.add_row(*row[:3], params, row[-1], style=style)
    console.print(table)
    if result.best_trial is None:
        console.print("No trial has completed yet.", highlight=False)
        return
    from movierec.models import model_classes

    mode = f" --mode {result.mode}" if len(model_classes(result.model)) > 1 else ""
    console.print(f"Best: trial {result.best_trial}, {result.metric} {result.best_value:.4f} on the validation "
                  f"slice ({len(result.records)} trials in all).", highlight=False, markup=False)
    console.print(plain(f"Train it: movierec train {result.model}{mode} --split {result.split} "
                        f"{_flags(result.best)}"), soft_wrap=True)


tune_app = model_group(
    _OPTIONS, _DEFAULTS, _run,
    help="Search a model's settings for the best validation metric (Optuna; the test split is never read). "
         "Model options given stay fixed in every trial. `movierec tune MODEL --help` lists its options.",
)
