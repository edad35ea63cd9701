"""`movierec clusters`: the movies grouped by the model's movie vectors (k-means), each group described."""

from __future__ import annotations

from typing import Annotated

import typer

from movierec.cli.options import DeviceOpt, JsonOpt, ModelOpt, OldK, renamed
from movierec.device import DEFAULT_DEVICE


def clusters_command(
    clusters: Annotated[int, typer.Option("--clusters", min=1, help="Number of clusters.")] = 10,
    top: Annotated[int, typer.Option(min=1, help="Best-known movies shown per cluster.")] = 5,
    seed: Annotated[int, typer.Option(help="Random seed of the clustering.")] = 0,
    model: ModelOpt = None,
    device: DeviceOpt = DEFAULT_DEVICE,
    json_output: JsonOpt = False,
    k: OldK = None,
) -> None:
    """Group the movies by the model's learned movie vectors (k-means) and describe each group."""
    from movierec.loading import open_model

    count = renamed(clusters, k, "--k", "--clusters")
    served = open_model(model, device)
    try:
        groups = served.clusters(count, top=top, seed=seed)
    finally:
        served.close()  # everything below is in memory
    if json_output:
        from movierec.cli.console import print_json

        print_json(groups)
        return
    from rich.table import Table
    from rich.text import Text

    from movierec.cli.console import clean, console, plain

    table = Table(title=plain(f"{len(groups)} movie clusters — {served.meta.name}"), title_justify="left",
                  show_lines=True)
    # Numbers stay whole; genres and titles wrap between words when the terminal is narrow.
    table.add_column("#", justify="right", no_wrap=True)
    table.add_column("size", justify="right", no_wrap=True)
    for col in ("dominant genres", "best-known movies"):
        table.add_column(col, overflow="fold")
    for c in groups:
        table.add_row(str(c["cluster"]), str(c["size"]), plain(", ".join(c["genres"])),
                      Text("\n".join(clean(t) for t in c["movies"])))
    console.print(table)
