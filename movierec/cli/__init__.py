"""The ``movierec`` command line. One module per command; heavy imports happen inside commands."""

from movierec.cli import datasets, evaluate, fetch, models, recommend, train  # noqa: F401  (registers commands)
from movierec.cli.app import app, handle_sigterm


def main() -> None:
    handle_sigterm()
    app()


__all__ = ["app", "main"]
