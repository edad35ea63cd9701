"""`movierec cv MODEL`: k-fold cross-validation, with the model options of `movierec train MODEL`."""

from __future__ import annotations

from typing import Any

import typer

from movierec.cli.app import app
from movierec.cli.train import _COMMON, _COMMON_DEFAULTS, model_group, scaled_line

_SHARED = ("dataset", "seed", "device", "patience", "valid_fraction")
_OPTIONS: dict[str, tuple[Any, Any]] = {
    **{k: _COMMON[k] for k in _SHARED},
    "folds": (
        int | None,
        typer.Option(help="Number of folds (default: 5). For 5, ml-100k uses its official folds u1..u5; other "
                          "datasets and numbers draw seeded random folds of the ratings."),
    ),
    "json_output": _COMMON["json_output"],
    # Not an option: `train`'s, refused with a reason when a train command line is reused here.
    "split": (str | None, typer.Option(hidden=True)),
}
_DEFAULTS = {**{k: _COMMON_DEFAULTS[k] for k in _SHARED}, "folds": None, "json_output": False, "split": None}


def _run(model: str, mode: str, config: dict[str, Any], *, dataset: str | None, seed: int, device: str,
         patience: int | None, valid_fraction: float | None, folds: int | None, json_output: bool,
         split: str | None) -> None:
    from movierec.cli.progress import Steps
    from movierec.crossval import cross_validate
    from movierec.data.registry import NO_TEST_SPLIT
    from movierec.errors import MovierecError

    if split is not None and split.strip().lower() == NO_TEST_SPLIT:
        raise MovierecError(f"cv cannot use --split {NO_TEST_SPLIT}: each fold is tested on the ratings it holds "
                            f"out; train the final model on every rating with `movierec train {model} --split "
                            f"{NO_TEST_SPLIT}`.")
    if split is not None:
        raise MovierecError("cv takes no --split: it tests every fold in turn (u1..u5 on ml-100k, else --folds "
                            "seeded random folds).")

    # The finished folds' lines say what happened; the steps within a fold leave none.
    steps = Steps(quiet=True)

    def on_fold(f: Any) -> None:
        steps.step("")
        if not json_output:
            epochs = f"{f.epochs} epoch{'s' * (f.epochs != 1)}"
            steps.line(f"{f.name}: trained on {f.train_ratings:,} ratings ({epochs}, {f.fit_seconds:.2f} s), "
                       f"tested on {f.test_ratings:,}.")

    def on_start(m: Any, plan: Any) -> None:
        if plan.scaled and not json_output:
            steps.line(scaled_line(m, plan))

    with steps:
        result = cross_validate(model, dataset, mode=mode, folds=folds, seed=seed, device=device,
                                progress=steps.progress, patience=patience, valid_fraction=valid_fraction,
                                on_step=steps.step, on_fold=on_fold, on_start=on_start, **config)
    if json_output:
        from movierec.cli.console import print_json

        print_json({
            "model": result.model, "mode": result.mode, "dataset": result.dataset, "seed": result.seed,
            "folds": [{"fold": f.name, "train_ratings": f.train_ratings, "test_ratings": f.test_ratings,
                       "epochs": f.epochs, "fit_seconds": f.fit_seconds, "metrics": f.metrics,
                       "baseline": f.baseline} for f in result.fold_results],
            "mean": result.mean, "std": result.std,
            "baseline": {"name": result.baseline_name, "mean": result.baseline_mean},
            "config": result.config,
        })
        return
    _print_table(result)


cv_app = model_group(
    _OPTIONS, _DEFAULTS, _run,
    help="Cross-validate a model over k folds: each metric's mean and standard deviation; nothing is saved. "
         "`movierec cv MODEL --help` lists its options.",
)
app.add_typer(cv_app, name="cv")


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
