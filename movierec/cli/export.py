"""`movierec export`: every user's recommendations (or some users') to a CSV or Parquet file."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from movierec.device import DEFAULT_DEVICE, DEVICE_HELP
from movierec.errors import MovierecError


def export_command(
    output: Annotated[
        Path, typer.Option("--output", "-o", help="File to write (.csv or .parquet); replaced when complete.",
                           dir_okay=False, show_default=False)
    ],
    model: Annotated[
        str | None, typer.Option("--model", help="Saved model to use (name or path) (default: the default model).")
    ] = None,
    top: Annotated[int, typer.Option(min=1, help="How many movies per user.")] = 10,
    user: Annotated[
        list[int] | None, typer.Option("--user", help="A MovieLens user id; repeat for several (default: every user).")
    ] = None,
    users: Annotated[
        Path | None,
        typer.Option("--users", help="File of MovieLens user ids, one per line (an optional header line; a CSV's "
                                     "first column).", dir_okay=False),
    ] = None,
    format: Annotated[
        str | None, typer.Option("--format", help="csv or parquet (default: from the output file's suffix).")
    ] = None,
    include_seen: Annotated[bool, typer.Option(help="Keep movies the user already rated.")] = False,
    device: Annotated[str, typer.Option(help=DEVICE_HELP)] = DEFAULT_DEVICE,
    json_output: Annotated[bool, typer.Option("--json", help="Print a JSON summary instead of the last line.")] = False,
) -> None:
    """Write the top-N movies of every user (or of --user / --users) to a CSV or Parquet file.

    One row per user_id, rank, movie_id, title, score: the lists `movierec recommend --user` shows.
    """
    from movierec.cli.console import clean, console
    from movierec.cli.progress import Steps
    from movierec.export import export_format, export_recommendations, export_users
    from movierec.loading import open_model

    kind = export_format(output, format)  # a name that says no format fails before the model is opened
    wanted = None
    if user or users is not None:
        wanted = [*(_read_users(users) if users is not None else []), *(user or [])]
    with Steps(quiet=json_output) as steps:
        steps.step("Opening the model")
        served = open_model(model, device)
        try:
            n_users = len(export_users(served, wanted))
            steps.step(f"Ranking movies for {n_users:,} user{'s' if n_users != 1 else ''}")
            rows = export_recommendations(served, output, users=wanted, n=top, format=kind,
                                          include_seen=include_seen, progress=steps.progress)
        finally:
            served.close()
    if json_output:
        from movierec.cli.console import print_json

        print_json({"path": str(output), "format": kind, "model": served.meta.name, "users": n_users,
                    "rows": rows, "top": top, "include_seen": include_seen})
        return
    console.print(f"Wrote {rows:,} rows for {n_users:,} user{'s' if n_users != 1 else ''} to {clean(output)}.",
                  markup=False, highlight=False, soft_wrap=True)


def _read_users(path: Path) -> list[int]:
    """The user ids in ``path``: one per line (a CSV's first field), blank lines skipped, a header line allowed."""
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()
    except OSError as exc:
        raise MovierecError(f"Cannot read {path}: {exc.strerror or exc}.") from None
    except UnicodeDecodeError:
        raise MovierecError(f"{path} is not a text file of user ids.") from None
    ids = []
    for number, line in enumerate(lines, 1):
        field = line.split(",", 1)[0].strip().strip('"')
        if not field:
            continue
        try:
            ids.append(int(field))
        except ValueError:
            if not ids and number == 1:  # a header such as "user_id"
                continue
            raise MovierecError(f"{path}, line {number}: {field[:40]!r} is not a user id.") from None
    if not ids:
        raise MovierecError(f"{path} has no user ids.")
    return ids
