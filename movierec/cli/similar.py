"""`movierec similar MOVIE`: the movies nearest to one, by the model's movie vectors."""

from __future__ import annotations

from typing import Annotated

import typer

from movierec.cli.options import DeviceOpt, JsonOpt, ModelOpt
from movierec.device import DEFAULT_DEVICE


def similar_command(
    movie: Annotated[
        str, typer.Argument(help="A title (forgiving: case, punctuation, year optional) or MovieLens id.")
    ],
    top: Annotated[int, typer.Option(min=1, help="How many movies to list.")] = 10,
    min_ratings: Annotated[
        int,
        typer.Option(min=0, help="Only list movies with at least this many training ratings: the vectors of "
                                 "rarely rated movies are mostly noise."),
    ] = 20,
    model: ModelOpt = None,
    device: DeviceOpt = DEFAULT_DEVICE,
    json_output: JsonOpt = False,
) -> None:
    """Movies nearest to MOVIE by the model's learned movie vectors (cosine similarity)."""
    from movierec.loading import open_model

    served = open_model(model, device)
    try:
        found = served.similar(movie, top, min_ratings=min_ratings)
    finally:
        served.close()  # everything below is in memory
    if json_output:
        from movierec.cli.console import print_json, print_note

        if model is None:
            print_note(f"Answered by the default model, {served.meta.name}.")
        print_json(found)
        return
    from movierec.cli.recommend import list_table

    list_table(f"Movies like {found['title']} — {served.meta.name}", found["similar"], "cosine", with_because=False)
