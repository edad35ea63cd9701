"""The ``movierec`` command line. One module per command, the tree put together in :mod:`movierec.cli.app`;
heavy imports happen inside commands."""

from movierec.cli.app import app
from movierec.cli.core import handle_sigterm


def main() -> None:
    handle_sigterm()
    try:
        app()
    except SystemExit as exc:
        if exc.code in (130, 143):  # interrupted: every cleanup has run and the one line is out
            import contextlib
            import os
            import sys

            # Tearing the interpreter down after torch takes about a second; a stopped command stops now.
            for stream in (sys.stdout, sys.stderr):
                with contextlib.suppress(OSError, ValueError):
                    stream.flush()
            os._exit(exc.code)
        raise


__all__ = ["app", "main"]
