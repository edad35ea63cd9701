"""`movierec plot curves` and `movierec plot map`: a saved model drawn as a PNG file (movierec.plot)."""

from __future__ import annotations

import enum
from pathlib import Path
from typing import Annotated, Any

import typer

from movierec.cli.core import HelpGroup
from movierec.cli.options import OldK, renamed

plot_app = typer.Typer(
    cls=HelpGroup,
    no_args_is_help=True,
    add_completion=False,
    help="Draw a saved model as a PNG picture (its training curves, or a map of its movie vectors), or a tuning "
         "study's search history.",
)

ModelOpt = Annotated[
    str | None, typer.Option("--model", help="Saved model to draw (name or its beginning; default: the default model).")
]


def _output(default: str) -> Any:
    """The ``--output`` option, naming ``default`` in its help."""
    return typer.Option(
        "--output", "-o", metavar="FILE.png", dir_okay=False,
        help=f"Where to write the picture (default: {default} in the current folder, NAME the model's name).",
    )


JsonOpt = Annotated[bool, typer.Option("--json", help="Print the file and what was drawn as JSON.")]


class ColorBy(str, enum.Enum):
    cluster = "cluster"
    genre = "genre"


@plot_app.command("curves")
def curves_command(model: ModelOpt = None, output: Annotated[Path | None, _output("NAME-curves.png")] = None,
                   json_output: JsonOpt = False) -> None:
    """Training curves: train loss and each validation metric per epoch, from the checkpoint's history."""
    from movierec import checkpoint, plot

    plot.require_matplotlib()
    meta = checkpoint.read_meta(checkpoint.resolve(model))
    drawn = plot.plot_history(meta, output or Path(f"{meta.name}-curves.png"))
    _report(drawn, json_output)


@plot_app.command("map")
def map_command(
    model: ModelOpt = None,
    color_by: Annotated[
        ColorBy, typer.Option("--color-by", help="Colour each movie by its k-means cluster (as `movierec clusters`) "
                                                 "or by its genre (the rarest of its genres).")
    ] = ColorBy.cluster,
    clusters: Annotated[int, typer.Option("--clusters", min=1, help="Number of clusters (--color-by cluster).")] = 10,
    seed: Annotated[int, typer.Option(help="Random seed of the clustering.")] = 0,
    labels: Annotated[int, typer.Option(min=0, help="Label this many of the most-rated movies with their title.")] = 15,
    min_ratings: Annotated[
        int, typer.Option(min=0, help="Only movies with at least this many training ratings (the vectors of rarely "
                                      "rated movies are mostly noise).")
    ] = 20,
    output: Annotated[Path | None, _output("NAME-map.png")] = None,
    json_output: JsonOpt = False,
    k: OldK = None,
) -> None:
    """A 2-D map of the model's learned movie vectors (their first two principal components)."""
    from movierec import plot
    from movierec.loading import open_model

    plot.require_matplotlib()
    clusters = renamed(clusters, k, "--k", "--clusters")
    served = open_model(model)
    try:
        drawn = plot.plot_movie_map(served, output or Path(f"{served.meta.name}-map.png"), color_by=color_by.value,
                                    k=clusters, labels=labels, seed=seed, min_ratings=min_ratings)
    finally:
        served.close()
    _report(drawn, json_output)


@plot_app.command("tune")
def tune_command(
    study: Annotated[str | None, typer.Option(help="The study to draw (default: the only one in --storage, else "
                                                   "the most recently changed one in the home).")] = None,
    storage: Annotated[str | None, typer.Option(help="Where the study is kept, as `movierec tune --storage` "
                                                     "(default: the home's studies folder).")] = None,
    output: Annotated[Path | None, _output("STUDY-tune.png")] = None,
    json_output: JsonOpt = False,
) -> None:
    """A tuning study's search history: each trial's validation value and the best so far."""
    from movierec import plot
    from movierec.tuning import load_study

    plot.require_matplotlib()
    result = load_study(study, storage)
    _report(plot.plot_tuning(result, output or Path(f"{result.study}-tune.png")), json_output)


def _report(drawn: Any, json_output: bool) -> None:
    from movierec.cli.console import clean, console, print_json

    if json_output:
        print_json(drawn.to_json())
        return
    console.print(clean(f"Wrote {drawn.path}."), markup=False, highlight=False, soft_wrap=True)
