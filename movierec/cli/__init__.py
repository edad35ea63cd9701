"""The ``movierec`` command line. One module per command; heavy imports happen inside commands."""

import importlib

from movierec.cli.app import app

# TEMPORARY during parallel development: register whichever command modules exist.
for _mod in ("fetch", "datasets", "train", "models", "evaluate", "recommend"):
    try:
        importlib.import_module(f"movierec.cli.{_mod}")
    except ModuleNotFoundError as _exc:
        if _exc.name != f"movierec.cli.{_mod}":
            raise


def main() -> None:
    app()


__all__ = ["app", "main"]
