"""`movierec train MODEL`: train one model and save it, showing the run as it goes and a summary after.

The sub-commands and their options are generated from the models (:mod:`movierec.cli.model_commands`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from movierec.cli.model_commands import RUN_DEFAULTS, RUN_OPTIONS, model_group, show_value
from movierec.options import TrainingEvents

if TYPE_CHECKING:
    from movierec.cli.progress import Steps
    from movierec.models.base import Recommender
    from movierec.training import EpochReport, TrainPlan



class TrainingLines(TrainingEvents):
    """A training run on screen: its steps and their progress as they go, then what it trains on, and a line of
    the training curve per epoch (an epoch and its validation leave that line, nothing else)."""

    def __init__(self, steps: Steps, model: str, *, quiet: bool):
        self.steps, self.model, self.quiet = steps, model, quiet

    def step(self, description: str) -> None:
        self.steps.step(description)

    def progress(self, done: int, total: int) -> None:
        self.steps.progress(done, total)

    def start(self, model: Recommender, plan: TrainPlan) -> None:
        self.steps.step("")  # the data is ready: its steps' lines come before what is made of it
        if self.quiet:
            return
        why = f" ({plan.dataset_why})" if plan.dataset_why else ""
        valid = f", {len(plan.valid):,} of them set aside to validate," if plan.valid is not None else ""
        ratings = (f"{len(plan.split.train):,} training{valid} and {len(plan.split.test):,} test ratings"
                   if plan.split.has_test else
                   f"every one of its {len(plan.split.train):,} ratings{valid.rstrip(',')} (no test split)")
        self.steps.line(
            f"Training [bold]{self.model}[/] on {plan.dataset}{why} split {plan.split.name}: {ratings}, "
            f"{model.n_users:,} users x {model.n_items:,} movies, device {model.device}.", markup=True,
        )
        if plan.scaled:
            self.steps.line(scaled_line(model, plan))
        if plan.valid_users:
            self.steps.line(f"Each epoch is validated on a fixed sample of {plan.valid_users:,} of the validation "
                            "users; the test split is ranked in full at the end.")

    def epoch(self, report: EpochReport) -> None:
        self.steps.step("")  # ends the validation step
        if not self.quiet:
            self.steps.record(_epoch_line(report), indent=len("epoch 999/9  "))


def _run(model: str, mode: str, config: dict[str, Any], *, dataset: str | None, split: str | None,
         test_fraction: float, seed: int, device: str, patience: int | None, valid_fraction: float | None,
         name: str | None, json_output: bool) -> None:
    from movierec.cli.console import print_json
    from movierec.cli.progress import Steps
    from movierec.options import TrainOptions
    from movierec.training import train_and_save

    options = TrainOptions(model, mode=mode, config=config, dataset=dataset, split=split,
                           test_fraction=test_fraction, seed=seed, device=device, patience=patience,
                           valid_fraction=valid_fraction, name=name)
    steps = Steps(quiet=json_output, unlined=("Epoch ", "Validating "))
    # Ctrl-C or an error ends the display first, so the one-line message is all that is left on screen.
    with steps:
        outcome = train_and_save(options, TrainingLines(steps, model, quiet=json_output))
    if json_output:
        print_json(outcome.to_json())
        return
    print_summary(outcome)


train_app = model_group(
    RUN_OPTIONS, RUN_DEFAULTS, _run,
    help="Train a model on a fetched dataset and save it. `movierec train MODEL --help` lists its options.",
)


def scaled_line(m: Any, plan: Any) -> str:
    """"Defaults for 22,500,085 training ratings: --epochs 4 (not 35). Pass --epochs to change." """
    from movierec.models.base import flag_name

    defaults = type(m.config)()
    chosen = ", ".join(f"{flag_name(k)} {show_value(v)} (not {show_value(getattr(defaults, k))})"
                       for k, v in plan.scaled.items())
    flags = ", ".join(flag_name(k) for k in plan.scaled)
    return f"Defaults for {len(plan.train):,} training ratings: {chosen}. Pass {flags} to change."


def _fmt(metrics: dict[str, float]) -> str:
    return "  ".join(f"{k} {v:.4f}" for k, v in metrics.items())


def _epoch_line(r: Any) -> list[list[str]]:
    """One epoch of the training curve, in groups that a narrow terminal shows on lines of their own:
    ``epoch   3/20  train: loss 0.41  rmse 0.89  |  valid: rmse 0.93  (0.05s) *`` on one line otherwise."""
    mark = " *" if r.improved and r.valid else ""
    train = [f"{k} {v:.4f}" for k, v in r.train.items()]
    groups = [[f"epoch {r.epoch:>3}/{r.epochs}", f"train: {train[0]}" if train else "train:", *train[1:]]]
    if r.valid:
        valid = [f"{k} {v:.4f}" for k, v in r.valid.items()]
        groups.append([f"|  valid: {valid[0]}", *valid[1:]])
    groups.append([f"({r.seconds:.2f}s){mark}"])
    return groups


def _verdict(metrics: dict[str, float], baseline: dict[str, float], monitor: str) -> str:
    from movierec.metrics import higher_is_better

    if monitor not in metrics or monitor not in baseline:
        return ""
    higher = higher_is_better(monitor)
    beats = metrics[monitor] > baseline[monitor] if higher else metrics[monitor] < baseline[monitor]
    return f"[green]beaten on {monitor}[/]" if beats else f"[red]not beaten on {monitor}[/]"


def print_summary(outcome: Any) -> None:
    from rich.table import Table

    from movierec.cli.console import console, pack, plain, table_room

    meta, result = outcome.meta, outcome.result
    # The "most popular" lists beside a model whose own baseline is not them (a rank model's baseline is).
    popular = meta.popularity if meta.popularity and meta.baseline.get("name") != "popularity" else {}
    keys = ["model", "dataset", "epochs", "fit time", "train", "validation", "test", "checkpoint"]
    if meta.baseline:
        keys.append(f"test baseline ({meta.baseline['name']})")
    if popular:
        keys.append("test baseline (popularity)")
    # Metrics go on as many lines as the terminal needs, never with a name cut from its number.
    room = max(20, table_room(2) - max(map(len, keys)))

    def fmt(metrics: dict[str, float], *more: str) -> str:
        return pack([f"{k} {v:.4f}" for k, v in metrics.items()] + [m for m in more if m], room)

    table = Table(title="Training summary", show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column(overflow="fold")  # a long path folds rather than losing its end
    table.add_row("model", f"{meta.model} ({meta.mode})" if meta.mode else meta.model)
    table.add_row("dataset", f"{meta.dataset} (split {meta.split})")
    stop = f", stopped early; kept epoch {result.kept_epoch}" if result.stopped_early else ""
    table.add_row("epochs", f"{meta.epochs}{stop}")
    table.add_row("fit time", f"{meta.fit_seconds:.2f} s on {meta.device}")
    table.add_row("train", fmt(meta.train_metrics))
    if meta.valid_metrics:
        best = f"(epoch {result.kept_epoch}, {meta.valid_fraction:.0%} of the training ratings)"
        table.add_row("validation", fmt(meta.valid_metrics, best))
    if not meta.has_test_split:
        table.add_row("test", "none: trained on every rating (--split none)")
    else:
        table.add_row("test", fmt(meta.metrics))
    if meta.baseline:
        base = {k: v for k, v in meta.baseline.items() if k != "name"}
        verdict = _verdict(meta.metrics, base, result.monitor)
        table.add_row(f"test baseline ({meta.baseline['name']})", fmt(base, verdict))
    if popular:
        verdicts = (_verdict(meta.metrics, popular, k) for k in popular)
        table.add_row("test baseline (popularity)", fmt(popular, *verdicts))
    table.add_row("checkpoint", plain(f"{meta.name}  ({outcome.path})"))  # a path may hold [brackets]
    console.print(table)
