"""The command tree, put together in one place: every command of `movierec` and the module it lives in.

Each command is a plain function in a module of its own (its options are its parameters, its docstring its
help); nothing registers itself on import. Those modules import nothing heavy at the top, so building the
tree -- and `movierec --help` -- imports neither torch nor pandas.
"""

from __future__ import annotations

import typer

from movierec.cli import (
    clusters,
    cv,
    datasets,
    evaluate,
    export,
    fetch,
    importing,
    models,
    plot,
    recommend,
    serve,
    similar,
    train,
    tune,
)
from movierec.cli.core import RootGroup, root

app = typer.Typer(
    name="movierec",
    cls=RootGroup,
    help="Movie recommendations on the MovieLens data sets: fetch data, train models, evaluate, recommend.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    # Plain help: rich's option tables split the width into four columns, so at 80 columns the help of an
    # option ran down a 20-character strip and long flags were cut; plain text wraps every help in full.
    rich_markup_mode=None,
)
app.callback()(root)

# In the order of a session (the root group lists them so): get data, train, inspect, use.
app.command("fetch")(fetch.fetch)
app.command("import")(importing.import_command)
app.command("datasets")(datasets.datasets)
app.add_typer(train.train_app, name="train")
app.add_typer(cv.cv_app, name="cv")
app.add_typer(tune.tune_app, name="tune")
app.command("models")(models.models_command)
app.command("evaluate")(evaluate.evaluate_command)
app.command("recommend")(recommend.recommend_command)
app.command("similar")(similar.similar_command)
app.command("clusters")(clusters.clusters_command)
app.command("export")(export.export_command)
app.add_typer(plot.plot_app, name="plot")
app.command("serve")(serve.serve_command)
RootGroup.order = ("fetch", "import", "datasets", "train", "cv", "tune", "models", "evaluate", "recommend", "similar",
                   "clusters", "export", "plot", "serve")
