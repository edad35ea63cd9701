"""``movierec fetch NAME``: download (or import), verify, unpack and parse one MovieLens release."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from movierec.cli.console import console, err_console, print_json, print_warning

if TYPE_CHECKING:
    from rich.progress import Progress, TaskID

    from movierec.cli.progress import Steps


class _Reporter:
    """Turns the library's progress and status callbacks into a rich progress bar and status lines.

    Status lines go to stdout (none with ``--json``, which keeps stdout machine-readable); the bar
    goes to stderr and only to a terminal. stderr otherwise carries just retry lines, warnings and the error.
    """

    def __init__(self, quiet: bool) -> None:
        self._quiet = quiet
        self._progress: Progress | None = None
        self._task: TaskID | None = None
        self._label = "Downloading"
        self._steps: Steps | None = None  # a spinner with the time spent, for the steps that count nothing

    def status(self, message: str) -> None:
        self.close()
        if message.startswith(("Downloading", "Copying")):
            self._label = message.split(" ", 1)[0]
        if not self._quiet:
            console.print(f"{message}…", style="dim", markup=False, highlight=False)
        if not message.startswith(("Downloading", "Copying")):
            from movierec.cli.progress import Steps

            self._steps = Steps(quiet=True)  # the status line above already says what it is
            self._steps.step(message)

    def retry(self, delay: float, attempt: int, attempts: int, reason: str) -> None:
        # On stderr even with --json: a wait the user did not ask for must never be silent.
        seconds = f"{delay:.0f}" if delay >= 1 else f"{delay:.1g}"
        err_console.print(
            f"Retrying in {seconds} s (attempt {attempt} of {attempts}): {reason}…",
            style="dim", markup=False, highlight=False, soft_wrap=True,
        )

    def progress(self, done: int, total: int | None) -> None:
        if not err_console.is_terminal:
            return  # a bar redrawn into a log file or pipe is noise
        if self._progress is None:
            from rich.progress import (
                BarColumn,
                DownloadColumn,
                Progress,
                TextColumn,
                TimeRemainingColumn,
                TransferSpeedColumn,
            )

            self._progress = Progress(
                TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                TimeRemainingColumn(), console=err_console,
            )
            self._progress.start()
            self._task = self._progress.add_task(self._label, total=total)
        assert self._task is not None
        self._progress.update(self._task, completed=done, total=total)

    def close(self) -> None:
        if self._steps is not None:
            self._steps.close()
            self._steps = None
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
            self._task = None


def fetch(
    name: Annotated[str, typer.Argument(help="Release to fetch, e.g. ml-100k (see `movierec datasets`).")],
    from_file: Annotated[
        Path | None,
        typer.Option(
            "--from-file", metavar="PATH",
            help="Import a zip you already have instead of downloading (it is copied, never changed).",
        ),
    ] = None,
    mirror: Annotated[
        str | None,
        typer.Option(
            "--mirror", metavar="URL",
            help="Base URL serving NAME.zip (and NAME.zip.md5); default $MOVIEREC_MIRROR, else GroupLens.",
        ),
    ] = None,
    no_verify: Annotated[
        bool, typer.Option("--no-verify", help="Accept an archive whose checksum does not match or is unknown.")
    ] = False,
    force: Annotated[
        bool, typer.Option("--force", help="Fetch again even if cached; the old copy stays until the new one works.")
    ] = False,
    json_output: Annotated[bool, typer.Option("--json", help="Print the result as a JSON object.")] = False,
) -> None:
    """Download a MovieLens release, verify its checksum, unpack it and parse it for training.

    Interrupted downloads resume where they stopped; a release already cached is left alone, and one
    whose files were damaged or partly deleted is unpacked again from its kept archive.
    """
    from movierec.data import download

    reporter = _Reporter(quiet=json_output)
    try:
        result = download.fetch(
            name, mirror=mirror, from_file=from_file, verify=not no_verify, force=force,
            progress=reporter.progress, status=reporter.status, on_retry=reporter.retry,
        )
    finally:
        reporter.close()

    for warning in result.warnings:
        print_warning(warning)
    if json_output:
        print_json(result.to_json())
        return
    s = result.summary
    counts = f"{s.users:,} users, {s.items:,} movies, {s.ratings:,} ratings"
    if result.already_cached:
        console.print(f"{result.name} is already cached in {result.path} ({counts}).", markup=False)
    else:
        state = "verified" if result.verified else "NOT verified"
        console.print(f"Fetched {result.name} ({state}): {counts} in {result.path}.", markup=False)
