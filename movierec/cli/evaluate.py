"""`movierec evaluate`: saved models side by side with the reference baselines."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

import typer

from movierec.cli.options import OldK, renamed
from movierec.device import DEFAULT_DEVICE, DEVICE_HELP

# What a narrow table keeps after the metrics its models are judged by: the headline rating and ranking
# metrics, then the rest.
METRIC_PRIORITY = ["rmse", "mae", "auc", "ndcg@{k}", "recall@{k}", "precision@{k}", "hit@{k}", "map@{k}", "accuracy",
                   "like_error", "coverage@{k}"]


def metric_columns(k: int) -> list[tuple[str, str, bool]]:
    """(key, header, higher is better) of every metric, in table order, for lists of length ``k``: the table
    :data:`movierec.metrics.METRICS` (imported here, not at the top: it imports torch)."""
    from movierec.metrics import METRICS

    return [(m.key.format(k=k), m.label.format(k=k), m.higher_is_better) for m in METRICS]


def evaluate_command(
    checkpoints: Annotated[
        list[str] | None, typer.Argument(help="Saved models (names or paths) (default: see below).", show_default=False)
    ] = None,
    model: Annotated[
        list[str] | None,
        typer.Option("--model", help="A saved model's name, or a model (rbm, autoencoder, mf, als, hybrid) for its "
                                     "newest checkpoint; repeat for several."),
    ] = None,
    cutoff: Annotated[
        int, typer.Option("--cutoff", min=1, help="Length of the ranked lists (the K of P@K, NDCG@K...).")
    ] = 10,
    relevance: Annotated[
        float | None,
        typer.Option(help="Held-out ratings with at least this many stars are relevant (default 4, or the top "
                          "of the scale where it is lower: on data without stars every held-out movie is)."),
    ] = None,
    device: Annotated[str, typer.Option(help=DEVICE_HELP)] = DEFAULT_DEVICE,
    json_output: Annotated[bool, typer.Option("--json", help="Print the rows as JSON.")] = False,
    csv_output: Annotated[bool, typer.Option("--csv", help="Print the rows as CSV.")] = False,
    metrics: Annotated[
        str | None,
        typer.Option("--metrics", metavar="LIST",
                     help="Columns of the table, e.g. rmse,ndcg@10,recall (default: those that fit the terminal; "
                          "--json and --csv always have all)."),
    ] = None,
    old_k: OldK = None,
) -> None:
    """Metrics of saved models on their test split, next to popularity and global-mean baselines.

    By default every model tested on the same split as the default one (`movierec models --default`, else the
    newest: same dataset, split, seed and test fraction); name others to include them. Rating metrics cover
    every held-out rating; ranking metrics rank all movies a user has not rated in training, with held-out
    ratings of at least --relevance stars as the relevant ones.
    """
    from movierec.device import resolve_device
    from movierec.evaluate import evaluate_checkpoints, select_checkpoints

    k = renamed(cutoff, old_k, "--k", "--cutoff")
    chosen = _parse_metrics(metrics, k) if metrics is not None else None

    selection = select_checkpoints([*(checkpoints or []), *(model or [])] or None)
    from movierec.cli.console import err_console

    if selection.untested:
        n, names = len(selection.untested), ", ".join(selection.untested)
        err_console.print(
            f"Note: {names} {'was' if n == 1 else 'were'} trained on every rating (--split none), so "
            f"{'it has' if n == 1 else 'they have'} no test split and {'is' if n == 1 else 'are'} left out.",
            markup=False, soft_wrap=True,
        )
    if selection.left_out:
        n = len(selection.left_out)
        err_console.print(
            f"Note: {n} saved model{'s' if n > 1 else ''} tested on other data or splits left out; name "
            f"{'them' if n > 1 else 'it'} to include {'them' if n > 1 else 'it'}, e.g. `movierec evaluate "
            f"{selection.left_out[-1]}`.", markup=False, soft_wrap=True,
        )
    from movierec.cli.progress import Steps

    with Steps(quiet=json_output or csv_output) as steps:
        rows = evaluate_checkpoints(selection=selection, k=k, relevance=relevance, device=resolve_device(device),
                                    on_step=steps.step, progress=steps.progress)
    if json_output:
        from movierec.cli.console import print_json

        print_json(rows)
    elif csv_output:
        import csv
        import sys

        writer = csv.DictWriter(sys.stdout, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows({key: "" if v is None else v for key, v in r.items()} for r in rows)
    else:
        _print_table(rows, k, chosen)


def _parse_metrics(text: str, k: int) -> list[str]:
    """The metric keys named in --metrics ("rmse,ndcg@10,r@10,recall"), in the order given."""
    from movierec.errors import MovierecError

    names = {}
    columns = metric_columns(k)
    for full, head, _ in columns:
        short = head.lower()
        names.update({full: full, short: full, full.split("@")[0]: full, short.split("@")[0]: full})
    chosen = []
    for name in (n.strip().lower() for n in text.split(",")):
        if name not in names:
            known = ", ".join(key for key, _, _ in columns)
            raise MovierecError(f"--metrics: {name!r} is not one of {known}.")
        if names[name] not in chosen:
            chosen.append(names[name])
    return chosen


def _print_table(rows: list[dict[str, Any]], k: int, chosen: list[str] | None = None) -> None:
    from rich.table import Table
    from rich.text import Text

    from movierec.cli.console import clean, console, plain

    every = metric_columns(k)
    # The metrics that apply to the models shown (a like/dislike model has no RMSE, even if a baseline has).
    models = [r for r in rows if r["checkpoint"] is not None] or rows
    labels = list(dict.fromkeys(r["split_label"] for r in rows))
    names, on_split = _model_names(rows)
    cells = {c[0]: ["-" if r.get(c[0]) is None else f"{r[c[0]]:.3f}" for r in rows] for c in every}
    fits = ["-" if r.get("fit_seconds") is None else f"{r['fit_seconds']:.1f}s" for r in rows]
    width = {c[0]: max(len(c[1]), *map(len, cells[c[0]])) for c in every}
    name_width = max(len("model"), *(t.cell_len for t in names))
    fit_width = max(len("fit"), *map(len, fits))

    def fits_screen(keys: list[str]) -> bool:  # whether a table of the model column, these metrics and fit fits
        return name_width + fit_width + sum(width[key] for key in keys) + 3 * (len(keys) + 2) + 1 <= console.width

    shown, hidden = _shown_metrics(every, models, k, fits_screen) if chosen is None else (chosen, [])
    # What does not fit one table goes on in the next, each led by the model column.
    blocks: list[list[str]] = [[]]
    for key in shown:
        if blocks[-1] and not fits_screen([*blocks[-1], key]):
            blocks.append([])
        blocks[-1].append(key)
    best = {}
    for key, _, higher in every:
        values = [r[key] for r in models if r.get(key) is not None] or [r[key] for r in rows if r.get(key) is not None]
        best[key] = (max if higher else min)(values) if values else None
    heads = {c[0]: c[1] for c in every}
    if len(labels) == 1:
        title = (f"Evaluation on {labels[0]}: {rows[0]['users']:,} ranked users, {rows[0]['ratings']:,} test "
                 "ratings (best per column in bold green)")
    else:
        title = (f"Evaluation on {len(labels)} different test splits, each model beside its own split's "
                 "baselines (best per column in bold green)")
    # Several splits: which split each model was tested on, a line each.
    lines = [*(clean(x) for x in on_split), "* baseline"] if len(labels) > 1 else ["* baseline"]
    if hidden:
        lines.append(f"Not shown at this width: {', '.join(hidden)} (--metrics chooses, --json has all).")
    caption = Text("\n".join(lines))
    for n, block in enumerate(blocks):
        last = n == len(blocks) - 1
        table = Table(title=plain(title) if n == 0 else None, title_justify="left", padding=(0, 1),
                      caption=caption if last else None, caption_justify="left")
        table.add_column("model", no_wrap=True, min_width=name_width)
        for key in block:
            table.add_column(heads[key], justify="right", no_wrap=True, min_width=width[key])
        if last:
            table.add_column("fit", justify="right", no_wrap=True, min_width=fit_width)
        for i, r in enumerate(rows):
            row = [names[i]]
            for key in block:
                v = r.get(key)
                row.append(Text(cells[key][i], style="bold green" if v is not None and v == best[key] else ""))
            table.add_row(*row, *([fits[i]] if last else []))
        console.print(table)


def _model_names(rows: list[dict[str, Any]]) -> tuple[list[Any], list[str]]:
    """The model column's cells, and for each saved model "NAME on SPLIT"."""
    from rich.text import Text

    from movierec.cli.console import clean

    names, on_split = [], []
    for r in rows:
        if r["checkpoint"] is None:
            names.append(Text.assemble((clean(r["model"]), "italic"), "*"))
        else:
            # The saved name itself, what --model takes; its model when the name does not say it.
            shown = "" if r["checkpoint"].startswith(r["model"]) else f" {r['model']}"
            names.append(Text.assemble(clean(r["checkpoint"]), (clean(shown), "dim")))
            on_split.append(f"{r['checkpoint']} on {r['split_label']}")
    return names, on_split


def _shown_metrics(
    every: list[tuple[str, str, bool]], models: list[dict[str, Any]], k: int, fits: Callable[[list[str]], bool]
) -> tuple[list[str], list[str]]:
    """The metric keys shown, in table order, and the headers of those left out for width.

    Every model keeps the metrics it is judged by, whatever the width (in more tables if need be); the others
    fill what room is left.
    """
    from movierec.metrics import judged_by

    measured = [c for c in every if any(r.get(c[0]) is not None for r in models)]
    order = [key.format(k=k) for key in METRIC_PRIORITY]
    present = {c[0] for c in measured}
    judged = {key for r in models if r.get("kind") for key in judged_by(r["kind"], k)} & present
    shown = [key for key in order if key in judged]
    for key in (key for key in order if key in present and key not in judged):
        if fits([*shown, key]):
            shown.append(key)
    shown = [c[0] for c in measured if c[0] in shown] or [order[0]]
    return shown, [c[1] for c in measured if c[0] not in shown]
