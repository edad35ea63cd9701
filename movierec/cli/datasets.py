"""``movierec datasets``: which MovieLens releases are known, which are cached, and freeing their space."""

from __future__ import annotations

from typing import Annotated

import typer

from movierec.cli.console import console, human_bytes, print_json


def datasets(
    json_output: Annotated[
        bool, typer.Option("--json", help="Print the list as JSON (one object per dataset) instead of a table.")
    ] = False,
    remove: Annotated[
        str | None,
        typer.Option("--remove", metavar="NAME",
                     help="Delete a cached or imported dataset (archive, files, parsed cache)."),
    ] = None,
) -> None:
    """List every MovieLens release: cached or not, size on disk, users / movies / ratings, location; then the
    datasets you imported (`movierec import`)."""
    from movierec.data import download

    if remove is not None:
        freed = download.remove(remove)
        name = remove.strip().lower()
        if json_output:
            print_json({"removed": name, "freed_bytes": freed})
        else:
            console.print(f"Removed {name} ({human_bytes(freed)} freed).", markup=False)
        return

    rows = download.list_datasets()
    if json_output:
        print_json([row.to_json() for row in rows])
        return

    from rich.table import Table

    from movierec import paths
    from movierec.cli.console import plain

    caption = plain(f"Datasets folder: {paths.datasets_dir()}")
    table = Table(title="MovieLens datasets", caption=caption)
    table.add_column("Name", style="bold", no_wrap=True)
    table.add_column("Cached", no_wrap=True)
    table.add_column("Size", justify="right", no_wrap=True)
    table.add_column("Users", justify="right")
    table.add_column("Movies", justify="right")
    table.add_column("Ratings", justify="right")
    table.add_column("Path", overflow="fold")

    def count(n: int | None) -> str:
        return "-" if n is None else f"{n:,}"

    unverified = False
    for row in rows:
        if row.imported:
            cached = "[cyan]imported[/]" if row.cached else "[red]damaged[/]"
        elif row.cached:
            cached = "[green]yes[/]" if row.verified else "[yellow]yes*[/]"
            unverified = unverified or not row.verified
        else:
            # A folder without a finished fetch holds a partial download waiting to be resumed.
            cached = "partial" if row.size_bytes else "[dim]no[/]"
        table.add_row(
            row.name, cached, human_bytes(row.size_bytes), count(row.users), count(row.items),
            count(row.ratings), plain(row.path) if row.size_bytes is not None else "-",
        )
    if unverified:
        table.caption = caption + "   * accepted with --no-verify: checksum not verified"
    console.print(table)
