"""The Typer application object, the global options and the one place errors become exit codes."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from typer.core import TyperGroup

from movierec import __version__
from movierec.errors import MovierecError


class _App(TyperGroup):
    """Root group: a :class:`MovierecError` anywhere below becomes one sentence on stderr, exit 1."""

    _ORDER = ("fetch", "datasets", "train", "models", "evaluate", "recommend", "similar", "clusters")

    def list_commands(self, ctx: typer.Context) -> list[str]:
        # The order of a session: get data, train, inspect, use.
        names = super().list_commands(ctx)
        return sorted(names, key=lambda n: self._ORDER.index(n) if n in self._ORDER else len(self._ORDER))

    def invoke(self, ctx: typer.Context):
        try:
            return super().invoke(ctx)
        except MovierecError as exc:
            from movierec.cli.console import print_error

            print_error(str(exc))
            ctx.exit(1)
        except KeyboardInterrupt:
            from movierec.cli.console import print_error

            print_error("Interrupted.")
            ctx.exit(130)


app = typer.Typer(
    name="movierec",
    cls=_App,
    help="Movie recommendations on the MovieLens data sets: fetch data, train models, evaluate, recommend.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"movierec {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    home: Annotated[
        Path | None,
        typer.Option(
            "--home",
            help="Folder for datasets and models (default: $MOVIEREC_HOME, else the user data folder).",
            file_okay=False,
        ),
    ] = None,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """Movie recommendations on the MovieLens data sets."""
    from movierec.paths import set_home

    set_home(home)
