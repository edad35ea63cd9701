"""`movierec models`: the saved checkpoints."""

from __future__ import annotations

from typing import Annotated

import typer

from movierec.cli.app import app


@app.command("models")
def models_command(
    json_output: Annotated[bool, typer.Option("--json", help="Print the list as JSON.")] = False,
    remove: Annotated[
        str | None,
        typer.Option("--remove", metavar="NAME", help="Delete the saved model with this name (a name, not a path)."),
    ] = None,
) -> None:
    """List the saved models, newest last; the newest is what `evaluate` and `recommend` use by default."""
    from movierec import checkpoint
    from movierec.cli.console import clean, console, plain, print_json, print_warning

    if remove is not None:
        path = checkpoint.remove(remove)
        console.print(clean(f"Removed {remove} ({path})."), markup=False)
        return
    found, skipped = checkpoint.scan_checkpoints()
    if skipped:
        names = ", ".join(p.name for p in skipped[:5]) + (", ..." if len(skipped) > 5 else "")
        print_warning(f"Skipped {len(skipped)} damaged or unreadable file{'s' * (len(skipped) > 1)} in the models "
                      f"folder ({names}); `movierec models --remove NAME` deletes one.")
    if json_output:
        print_json([
            {"name": m.name, "model": m.model, "dataset": m.dataset, "split": m.split, "path": str(p),
             "created": m.created, "epochs": m.epochs, "fit_seconds": m.fit_seconds, "metrics": m.metrics,
             "config": m.config, "newest": i == len(found) - 1}
            for i, (p, m) in enumerate(found)
        ])
        return
    if not found:
        console.print("No saved models yet; train one with `movierec train MODEL`.")
        return
    from rich.table import Table

    table = Table(title=plain(f"Saved models ({checkpoint.paths.models_dir()})"), title_justify="left")
    # The name is what --model takes: never cut, whatever the terminal; the other columns wrap instead.
    longest = max(len(m.name) + len(" (newest)") * (i == len(found) - 1) for i, (_, m) in enumerate(found))
    table.add_column("name", no_wrap=True, overflow="fold", min_width=longest)
    for col in ("model", "dataset", "split", "created", "epochs", "test"):
        table.add_column(col)
    for i, (_, m) in enumerate(found):
        valid = "  ".join(f"{k} {v:.4f}" for k, v in m.metrics.items() if isinstance(v, (int, float)))
        style = "bold" if i == len(found) - 1 else None
        table.add_row(*map(plain, (m.name + (" (newest)" if style else ""), m.model, m.dataset, m.split,
                                   m.created.replace("T", " ")[:19], m.epochs, valid)), style=style)
    console.print(table)
