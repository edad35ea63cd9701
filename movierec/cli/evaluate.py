"""`movierec evaluate`: saved models side by side with the reference baselines."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from movierec.cli.app import app

# (key template, header, lower is better); {k} is filled with --k.
_COLUMNS = [
    ("rmse", "RMSE", True), ("mae", "MAE", True), ("loss", "loss", True), ("accuracy", "acc", False),
    ("auc", "AUC", False), ("precision@{k}", "P@{k}", False), ("recall@{k}", "R@{k}", False),
    ("ndcg@{k}", "NDCG@{k}", False), ("hit@{k}", "Hit@{k}", False), ("map@{k}", "MAP@{k}", False),
    ("coverage@{k}", "Cov@{k}", False),
]


@app.command("evaluate")
def evaluate_command(
    checkpoints: Annotated[
        list[str] | None, typer.Argument(help="Saved models (names or paths) (default: see below).", show_default=False)
    ] = None,
    model: Annotated[
        list[str] | None,
        typer.Option("--model", help="A saved model's name, or a model (rbm, autoencoder, mf, als) for its newest "
                                     "checkpoint; repeat for several."),
    ] = None,
    k: Annotated[int, typer.Option("--k", min=1, help="Length of the ranked lists (the K of P@K, NDCG@K...).")] = 10,
    relevance: Annotated[
        float, typer.Option(help="Held-out ratings with at least this many stars are relevant.")
    ] = 4.0,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = "cpu",
    json_output: Annotated[bool, typer.Option("--json", help="Print the rows as JSON.")] = False,
    csv_output: Annotated[bool, typer.Option("--csv", help="Print the rows as CSV.")] = False,
) -> None:
    """Metrics of saved models on their test split, next to popularity and global-mean baselines.

    By default every model tested on the same split as the newest one (same dataset, split, seed and test
    fraction); name others to include them. Rating metrics cover
    every held-out rating; ranking metrics rank all movies a user has not rated in training, with held-out
    ratings of at least --relevance stars as the relevant ones.
    """
    from movierec.device import resolve_device
    from movierec.evaluate import evaluate_checkpoints, select_checkpoints

    selection = select_checkpoints([*(checkpoints or []), *(model or [])] or None)
    if selection.left_out:
        from movierec.cli.console import err_console

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
        _print_table(rows, k)


def _print_table(rows: list[dict[str, Any]], k: int) -> None:
    from rich.table import Table
    from rich.text import Text

    from movierec.cli.console import clean, console, plain

    columns = [(key.format(k=k), head.format(k=k), low) for key, head, low in _COLUMNS]
    columns = [c for c in columns if any(r.get(c[0]) is not None for r in rows)]
    first = rows[0]
    labels = list(dict.fromkeys(r["split_label"] for r in rows))
    if len(labels) == 1:
        title = (f"Evaluation on {labels[0]}: {first['users']:,} ranked users, {first['ratings']:,} test ratings "
                 "(best per column in bold green)")
    else:
        title = (f"Evaluation on {len(labels)} different test splits, each model beside its own split's "
                 "baselines (best per column in bold green)")
    table = Table(title=plain(title), title_justify="left", padding=(0, 1), caption_justify="left")
    table.add_column("model", no_wrap=True)
    for _, head, _ in columns:
        table.add_column(head, justify="right", no_wrap=True)
    table.add_column("fit", justify="right", no_wrap=True)
    best = {}
    for key, _, low in columns:
        values = [r[key] for r in rows if r.get(key) is not None and r.get("checkpoint") is not None]
        values = values or [r[key] for r in rows if r.get(key) is not None]
        best[key] = (min if low else max)(values)
    on_split = []
    for r in rows:
        if r["checkpoint"] is None:
            name = Text.assemble((clean(r["model"]), "italic"), "*")
        else:
            # The saved name itself, what --model takes; its model when the name does not say it.
            shown = "" if r["checkpoint"].startswith(r["model"]) else f" {r['model']}"
            name = Text.assemble(clean(r["checkpoint"]), (clean(shown), "dim"))
            on_split.append(f"{r['checkpoint']} on {r['split_label']}")
        cells = [name]
        for key, _, _ in columns:
            v = r.get(key)
            text = "-" if v is None else f"{v:.3f}"
            cells.append(Text(text, style="bold green" if v is not None and v == best[key] else ""))
        fit = r.get("fit_seconds")
        cells.append("-" if fit is None else f"{fit:.1f}s")
        table.add_row(*cells)
    table.caption = plain("\n".join(on_split) + "\n* baseline" if len(labels) > 1 else "* baseline")
    console.print(table)
