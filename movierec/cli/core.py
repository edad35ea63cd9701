"""What every command runs inside: the root group (the one place errors become exit codes), signals, the global
options, and the help's layout. The command tree itself is put together in :mod:`movierec.cli.app`."""

from __future__ import annotations

import logging
import re
import signal
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from typer.core import TyperGroup

from movierec.errors import MovierecError
from movierec.version import __version__

if TYPE_CHECKING:
    # The Context that Typer's group methods are declared with (typer.Context is a subclass of it).
    from typer._click import Context as ClickContext


class Terminated(KeyboardInterrupt):
    """SIGTERM (a service stop, ``kill``, a batch system's time limit), raised wherever the program is.

    A kind of KeyboardInterrupt, so the same cleanup runs as for Ctrl-C: ``finally`` blocks remove temp
    files and release locks, and a partial download is kept for the next fetch to resume.
    """


def _on_sigterm(signum: int, frame: object) -> None:
    # Once: a second SIGTERM must not cut the cleanup the first one started short.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise Terminated()


def handle_sigterm() -> None:
    """Make SIGTERM end the command like Ctrl-C does (cleanup, one line on stderr), with exit status 143."""
    signal.signal(signal.SIGTERM, _on_sigterm)


def first_sentence(text: str) -> str:
    """The first sentence of a help text or docstring, on one line ("et al. 2015" does not end it)."""
    paragraph = " ".join(text.strip().split("\n\n")[0].split())
    return re.split(r"(?<=\.)\s+(?=[A-Z`])", paragraph)[0]


class HelpGroup(TyperGroup):
    """A command group whose help lists each command with its first sentence whole, wrapped (the default cuts it
    at the terminal's width with "...")."""

    def format_commands(self, ctx: ClickContext, formatter: Any) -> None:
        rows = []
        for name in self.list_commands(ctx):
            command = self.get_command(ctx, name)
            if command is not None and not command.hidden:
                rows.append((name, first_sentence(command.help or "")))
        with formatter.section("Commands"):
            formatter.write_dl(rows)


class RootGroup(HelpGroup):
    """Root group: a :class:`MovierecError` anywhere below becomes one sentence on stderr, exit 1."""

    order: tuple[str, ...] = ()
    """The commands in the order help lists them (Typer lists single commands before groups); set by the app."""

    def list_commands(self, ctx: ClickContext) -> list[str]:
        names = super().list_commands(ctx)
        return sorted(names, key=lambda n: self.order.index(n) if n in self.order else len(self.order))

    def main(self, *args: Any, **kwargs: Any) -> Any:
        """Typer's own handling, except that a usage error (unknown option, bad value) is one sentence on stderr
        with a pointer to --help, like every other error, rather than a usage box."""
        import sys

        if not kwargs.get("standalone_mode", True):  # a caller that handles the outcome itself
            return super().main(*args, **kwargs)
        kwargs["standalone_mode"] = False
        try:
            # Without standalone mode an exit (ctx.exit(1) below included) comes back as its status.
            status = super().main(*args, **kwargs)
        except typer.Exit as exc:
            sys.exit(exc.exit_code)
        except typer.Abort:
            from movierec.cli.console import print_error

            print_error("Aborted.")
            sys.exit(1)
        except typer.TyperException as exc:  # Typer's usage errors and bad parameters
            ctx = getattr(exc, "ctx", None)
            if type(exc).__name__ == "NoArgsIsHelpError":  # `movierec` alone: the help, as always
                exc.show()  # type: ignore[attr-defined]  # NoArgsIsHelpError, a usage error, has show()
                sys.exit(getattr(exc, "exit_code", 2))
            from movierec.cli.console import print_error

            message = exc.format_message().strip().rstrip(".")
            hint = f"; see `{ctx.command_path} --help`" if ctx is not None else ""
            print_error(f"{message}{hint}.")
            sys.exit(getattr(exc, "exit_code", 2))
        sys.exit(status if isinstance(status, int) else 0)

    def invoke(self, ctx: ClickContext) -> Any:
        try:
            return super().invoke(ctx)
        except MovierecError as exc:
            from movierec.cli.console import print_error

            print_error(str(exc))
            ctx.exit(1)
        except KeyboardInterrupt as exc:
            from movierec.cli.console import print_error

            # The shell's convention: 128 + the signal's number.
            if isinstance(exc, Terminated):
                print_error("Terminated.")
                ctx.exit(128 + signal.SIGTERM)
            print_error("Interrupted.")
            ctx.exit(128 + signal.SIGINT)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"movierec {__version__}")
        raise typer.Exit()


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
    _show_library_warnings()


class _WarningLines(logging.Handler):
    """The library logs what users should know (a damaged cache re-parsed, placeholder titles); the CLI shows
    each such record as one "Warning: ..." line on stderr."""

    def emit(self, record: logging.LogRecord) -> None:
        from movierec.cli.console import print_warning

        try:
            message = record.getMessage()
        except Exception:  # a malformed log call must not end the command
            return
        print_warning(sentence(message))


def sentence(message: str) -> str:
    """``message`` as a sentence: a first word capitalised unless it is a name (``ml-100k``, ``als-2``), a full
    stop at the end."""
    first = message.split(" ", 1)[0]
    start = message[:1].upper() if first.isalpha() else message[:1]
    return start + message[1:] + ("" if message.endswith(".") else ".")


def _show_library_warnings() -> None:
    logger = logging.getLogger("movierec")
    if not any(isinstance(h, _WarningLines) for h in logger.handlers):
        handler = _WarningLines(level=logging.WARNING)
        logger.addHandler(handler)
