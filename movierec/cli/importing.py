"""``movierec import NAME FILE``: your own ratings (CSV, TSV or Parquet) as a dataset every command can use."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from movierec.cli.console import console, plain, print_json


def import_command(
    name: Annotated[str, typer.Argument(help="Name to give the dataset (letters, digits, '.', '_', '-'; not a "
                                             "release's name).")],
    file: Annotated[Path, typer.Argument(help="Ratings: CSV, TSV or Parquet, with a header naming the columns.",
                                         dir_okay=False)],
    movies: Annotated[
        Path | None,
        typer.Option("--movies", metavar="FILE", dir_okay=False,
                     help="Titles and genres: movieId,title,genres with '|'-separated genres, like MovieLens' "
                          "movies.csv (columns found by name)."),
    ] = None,
    sep: Annotated[
        str | None, typer.Option("--sep", help="Field separator of a text file, one character or 'tab' "
                                               "(default: found from its first lines).")
    ] = None,
    user_col: Annotated[str | None, typer.Option("--user-col", metavar="COLUMN",
                                                 help="Column of user ids (default: user, userId or user_id).")] = None,
    item_col: Annotated[str | None, typer.Option(
        "--item-col", metavar="COLUMN", help="Column of movie ids (default: item, movieId, movie_id or item_id).")
    ] = None,
    rating_col: Annotated[str | None, typer.Option(
        "--rating-col", metavar="COLUMN",
        help="Column of stars (default: rating or stars; with neither, the data is implicit: every rating is 1).")
    ] = None,
    time_col: Annotated[str | None, typer.Option(
        "--time-col", metavar="COLUMN",
        help="Column of times, seconds since 1970 or dates (default: timestamp or time; without one every "
             "rating has time 0).")
    ] = None,
    scale: Annotated[
        str | None,
        typer.Option("--scale", metavar="MIN,MAX[,STEP]",
                     help="The star scale, e.g. 1,5 or 0.5,5 (step 1 for whole numbers, else 0.5); default: "
                          "inferred from the data, and said."),
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace a dataset already imported under NAME.")] = False,
    json_output: Annotated[bool, typer.Option("--json", help="Print the result as a JSON object.")] = False,
) -> None:
    """Import your own ratings file as dataset NAME, for train, evaluate, recommend, cv, export and serve.

    String ids are numbered 1..n in their sorted order and kept: `recommend --user alice` finds alice, and a
    movie without a title in --movies is titled by its id. Random and temporal splits apply. Nothing is
    written unless the whole file reads.
    """
    from movierec.cli.progress import Steps
    from movierec.data.importing import import_ratings
    from movierec.data.userfiles import Columns

    with Steps(quiet=json_output) as steps:
        summary = import_ratings(
            name, file, force=force, sep=sep, columns=Columns(user_col, item_col, rating_col, time_col),
            scale=scale, movies=movies, progress=steps.progress, on_step=steps.step,
        )
    if json_output:
        print_json(summary.to_json())
        return
    s = summary
    console.print(f"Imported {s.name} from {file.name}: {s.users:,} users, {s.items:,} movies, {s.ratings:,} "
                  f"ratings.", markup=False)
    note = s.scale_note if s.implicit else f"{s.scale_note}{'' if scale else ' (set it with --scale)'}"
    console.print(f"Scale: {note}.", markup=False)
    if s.implicit:
        console.print(f"Only models that rank train on it: `movierec train als --mode implicit --dataset {s.name}`.",
                      markup=False)
    columns = ", ".join(f"{k}={v}" for k, v in s.columns.items() if v is not None)
    console.print(f"Columns: {columns}.", markup=False)
    if s.string_ids:
        console.print(f"String {' and '.join(s.string_ids)} ids are kept (numbered 1..n in sorted order).",
                      markup=False)
    if s.duplicates_dropped:
        console.print(f"Dropped {s.duplicates_dropped:,} repeated ratings of a movie by the same user (the latest "
                      "is kept).", markup=False)
    console.print(plain(f"Saved in {s.path}."), markup=False)
