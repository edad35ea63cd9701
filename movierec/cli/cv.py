"""`movierec cv MODEL`: k-fold cross-validation, with the model options of `movierec train MODEL`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import typer

from movierec.cli.model_commands import RUN_DEFAULTS, RUN_OPTIONS, model_group
from movierec.cli.train import scaled_line
from movierec.options import TrainingEvents

if TYPE_CHECKING:
    from movierec.cli.progress import Steps
    from movierec.crossval import FoldResult

_SHARED = ("dataset", "seed", "device", "patience", "valid_fraction")
_OPTIONS: dict[str, tuple[Any, Any]] = {
    **{k: RUN_OPTIONS[k] for k in _SHARED},
    "folds": (
        int | None,
        typer.Option(help="Number of folds (default: 5). For 5, ml-100k uses its official folds u1..u5; other "
                          "datasets and numbers draw seeded random folds of the ratings."),
    ),
    "json_output": RUN_OPTIONS["json_output"],
    # Not an option: `train`'s, refused with a reason when a train command line is reused here.
    "split": (str | None, typer.Option(hidden=True)),
}
_DEFAULTS = {**{k: RUN_DEFAULTS[k] for k in _SHARED}, "folds": None, "json_output": False, "split": None}


def _run(model: str, mode: str, config: dict[str, Any], *, dataset: str | None, seed: int, device: str,
         patience: int | None, valid_fraction: float | None, folds: int | None, json_output: bool,
         split: str | None) -> None:
    from movierec.cli.progress import Steps
    from movierec.crossval import cross_validate
    from movierec.data.registry import NO_TEST_SPLIT
    from movierec.errors import MovierecError
    from movierec.options import TrainOptions

    if split is not None and split.strip().lower() == NO_TEST_SPLIT:
        raise MovierecError(f"cv cannot use --split {NO_TEST_SPLIT}: each fold is tested on the ratings it holds "
                            f"out; train the final model on every rating with `movierec train {model} --split "
                            f"{NO_TEST_SPLIT}`.")
    if split is not None:
        raise MovierecError("cv takes no --split: it tests every fold in turn (u1..u5 on ml-100k, else --folds "
                            "seeded random folds).")

    options = TrainOptions(model, mode=mode, config=config, dataset=dataset, seed=seed, device=device,
                           patience=patience, valid_fraction=valid_fraction)
    # The finished folds' lines say what happened; the steps within a fold leave none.
    steps = Steps(quiet=True)
    with steps:
        result = cross_validate(options, folds, FoldLines(steps, quiet=json_output))
    if json_output:
        from movierec.cli.console import print_json

        print_json(result.to_json())
        return
    _print_table(result)


class FoldLines(TrainingEvents):
    """Cross-validation on screen: each step as it goes, the defaults chosen for the data, a line per fold."""

    def __init__(self, steps: Steps, *, quiet: bool):
        self.steps, self.quiet = steps, quiet

    def step(self, description: str) -> None:
        self.steps.step(description)

    def progress(self, done: int, total: int) -> None:
        self.steps.progress(done, total)

    def start(self, model: Any, plan: Any) -> None:
        if plan.scaled and not self.quiet:
            self.steps.line(scaled_line(model, plan))

    def fold(self, result: FoldResult) -> None:
        self.steps.step("")
        if not self.quiet:
            epochs = f"{result.epochs} epoch{'s' * (result.epochs != 1)}"
            self.steps.line(f"{result.name}: trained on {result.train_ratings:,} ratings ({epochs}, "
                            f"{result.fit_seconds:.2f} s), tested on {result.test_ratings:,}.")


cv_app = model_group(
    _OPTIONS, _DEFAULTS, _run,
    help="Cross-validate a model over k folds: each metric's mean and standard deviation; nothing is saved. "
         "`movierec cv MODEL --help` lists its options.",
)


def _print_table(result: Any) -> None:
    from rich.table import Table
    from rich.text import Text

    from movierec.cli.console import console, pack, plain
    from movierec.cli.evaluate import METRIC_PRIORITY, metric_columns

    k = 10
    every = [(key, head) for key, head, _ in metric_columns(k)]
    measured = [(key, head) for key, head in every if key in result.mean]
    heads = dict(measured)

    def num(value: float) -> str:
        return "-" if value != value else f"{value:.3f}"  # NaN: undefined on that fold

    cells = {key: [num(m[key]) for m in result.metrics] for key, _ in measured}
    summary = {key: f"{num(result.mean[key])}\n±{num(result.std[key])}" for key, _ in measured}
    fits = [f"{f.fit_seconds:.1f}s" for f in result.fold_results]
    mean_fit = f"{result.fit_seconds / len(fits):.1f}s"
    width = {key: max(len(head), 6, *map(len, cells[key])) for key, head in measured}
    name_width = max(len("mean ±"), *map(len, result.folds))
    fit_width = max(len("fit"), *map(len, fits), len(mean_fit))

    def room(keys: list[str]) -> int:  # the width of a table of the fold column, these metrics and fit
        return name_width + fit_width + sum(width[key] for key in keys) + 3 * (len(keys) + 2) + 1

    shown: list[str] = []
    for key in (key.format(k=k) for key in METRIC_PRIORITY):
        if key in heads and room([*shown, key]) <= console.width:
            shown.append(key)
    shown = [key for key, _ in measured if key in shown] or [measured[0][0]]
    hidden = [head for key, head in measured if key not in shown]

    mode = f" ({result.mode})" if result.mode else ""
    title = f"Cross-validation of {result.model}{mode} on {result.dataset}: {len(result.folds)} folds"
    # The caption is as wide as the table; a metric's name never ends a line without its number.
    base = [f"{key} {value:.3f}" for key, value in result.baseline_mean.items()]
    base[0] = f"Baseline ({result.baseline_name}), mean over the folds: {base[0]}"
    lines = [pack(base, max(room(shown), 40))]
    if hidden:
        lines.append(f"Not shown at this width: {', '.join(hidden)} (--json has all).")
    table = Table(title=plain(title), title_justify="left", caption=Text("\n".join(lines)),
                  caption_justify="left")
    table.add_column("fold", no_wrap=True, min_width=name_width)
    for key in shown:
        table.add_column(heads[key], justify="right", no_wrap=True, min_width=width[key])
    table.add_column("fit", justify="right", no_wrap=True, min_width=fit_width)
    for i, name in enumerate(result.folds):
        table.add_row(plain(name), *(cells[key][i] for key in shown), fits[i],
                      end_section=i == len(result.folds) - 1)
    table.add_row(Text("mean\n± std", style="bold"), *(Text(summary[key], style="bold") for key in shown),
                  mean_fit)
    console.print(table)
