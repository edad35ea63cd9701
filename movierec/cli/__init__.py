"""The ``movierec`` command line. One module per command; heavy imports happen inside commands."""

from movierec.cli import datasets, evaluate, fetch, models, recommend, train  # noqa: F401  (registers commands)
from movierec.cli.app import app


def main() -> None:
    app()


__all__ = ["app", "main"]
