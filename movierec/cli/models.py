"""`movierec models`: the saved checkpoints."""

from __future__ import annotations

from typing import Annotated

import typer

_HEADS = ("name", "model", "dataset", "split", "created", "epochs", "test")


def models_command(
    json_output: Annotated[bool, typer.Option("--json", help="Print the list as JSON.")] = False,
    remove: Annotated[
        str | None,
        typer.Option("--remove", metavar="NAME", help="Delete the saved model with this name (a name, not a path)."),
    ] = None,
    default: Annotated[
        str | None,
        typer.Option("--default", metavar="NAME",
                     help="Pin this saved model as the one every command uses when none is named; 'none' "
                          "removes the pin (the newest again)."),
    ] = None,
) -> None:
    """List the saved models, newest last, the default marked: the one pinned with --default, else the newest;
    it is what `evaluate`, `recommend`, `serve` and `plot` use when no model is named."""
    from movierec import checkpoint, paths
    from movierec.cli.console import clean, console, pack, plain, print_json, print_warning, table_room

    if remove is not None:
        path = checkpoint.remove(remove)
        console.print(clean(f"Removed {remove} ({path})."), markup=False)
        return
    if default is not None:
        pinned = checkpoint.set_default(None if default.lower() == "none" else default)
        console.print(clean(f"{pinned} is now the default model." if pinned else
                            "No default pinned; the newest model is the default."), markup=False)
        return
    found, skipped = checkpoint.scan_checkpoints()
    if skipped:
        names = ", ".join(p.name for p in skipped[:5]) + (", ..." if len(skipped) > 5 else "")
        print_warning(f"Skipped {len(skipped)} damaged or unreadable file{'s' * (len(skipped) > 1)} in the models "
                      f"folder ({names}); `movierec models --remove NAME` deletes one.")
    if json_output:
        print_json(checkpoint.describe_all(found))
        return
    if not found:
        console.print("No saved models yet; train one with `movierec train MODEL`.")
        return
    from rich.table import Table
    from rich.text import Text

    from movierec.errors import MovierecError

    table = Table(title=plain(f"Saved models ({paths.models_dir()})"), title_justify="left")
    # The text cells of each row, and apart from them its test metrics, the last column.
    rows = [[clean(m.name), clean(m.model), clean(m.dataset), clean(m.split), m.created.replace("T", " ")[:16],
             str(m.epochs)] for _, m in found]
    tests = [[f"{k} {v:.4f}" for k, v in m.metrics.items() if isinstance(v, (int, float))] or ["-"]
             for _, m in found]  # "-": no test metrics (split none: trained on every rating)
    heads = list(_HEADS)
    longest_metric = max((len(x) for t in tests for x in t), default=4)

    def widths() -> list[int]:
        return [max(len(head), *(max(map(len, str(r[i]).split("\n"))) for r in rows))
                for i, head in enumerate(heads[:-1])]

    if sum(widths()) + longest_metric + 3 * len(heads) + 1 > console.width:
        # Narrow: the date over the time, and the model over the data it was trained on.
        for r in rows:
            r[1:5] = [f"{r[1]}\n{r[2]} {r[3]}", r[4].replace(" ", "\n")]
        heads[1:5] = ["model, data", "created"]
    if sum(widths()) + longest_metric + 3 * len(heads) + 1 > console.width and "epochs" in heads:
        # Narrower still: the epochs under the date.
        for r in rows:
            r[2:4] = [f"{r[2]}\n{r[3]} epoch{'' if r[3] == '1' else 's'}"]
        heads[2:4] = ["created"]
    # Names and numbers stay whole: the metrics take the room the other columns leave, a line per pair if need be.
    room = max(table_room(len(heads)) - sum(widths()), longest_metric)
    # "(default)" marks a pinned model; without a pin the newest is the default, marked "(newest)".
    try:
        pin = checkpoint.pinned()
    except MovierecError:
        pin = None
    marks = [{(True, True): " (default, newest)", (True, False): " (default)", (False, True): " (newest)"}.get(
        (d["default"] and pin is not None, d["newest"]), "") for d in checkpoint.describe_all(found)]
    # The name is what --model takes: at least as wide as the longest name, so only the marks may wrap.
    for i, head in enumerate(heads):
        table.add_column(head, no_wrap=head != "name", justify="right" if head == "epochs" else "left",
                         min_width=widths()[0] if i == 0 else None)
    for i, r in enumerate(rows):
        # Cells were cleaned above; Text keeps the line breaks of the narrow layout.
        table.add_row(*map(Text, (r[0] + marks[i], *r[1:], pack(tests[i], room))),
                      style="bold" if "default" in marks[i] else None)
    console.print(table)
