"""The ``movierec`` command line. One module per command; heavy imports happen inside commands."""

from movierec.cli import datasets, evaluate, fetch, models, recommend, train  # noqa: F401  (registers commands)
from movierec.cli.app import app


def main() -> None:
    import os

    # OpenMP's busy-waiting threads make torch 10-20x slower on a machine whose cores are busy with other
    # work (measured on 2 cores); passive waiting costs nothing measurable when the machine is idle.
    # It must be set before torch is imported; a user's own setting wins.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    app()


__all__ = ["app", "main"]
