"""One live display for a command's long steps: the library names each step and reports its counts, this draws them.

Transient progress goes to stderr, and only to a terminal (a bar redrawn into a log is noise). A step that took
a while leaves one line on stdout when it ends ("Loading ml-25m: 12.3 s"), unless the output is machine-readable;
lines the command prints meanwhile (the training curve) go to stdout, above the bar.
"""

from __future__ import annotations

import time
from typing import Any

from movierec.cli.console import clean, console, err_console

SHOW_DONE_AFTER = 1.0
"""A finished step leaves its line when it took at least this many seconds."""


class Steps:
    """``step(description)`` begins a step (ending the previous one), ``progress(done, total)`` moves its bar,
    ``line(text)`` prints a line above it, ``close()`` ends the last step; use it as a context manager."""

    def __init__(self, quiet: bool = False, unlined: tuple[str, ...] = ()) -> None:
        self._quiet = quiet  # no finished-step lines: stdout is machine-readable
        self._unlined = unlined  # steps starting so leave no line: the command prints its own
        self._progress: Any = None
        self._task: Any = None
        self._description = ""
        self._started = 0.0

    def __enter__(self) -> Steps:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close(finished=exc[0] is None)

    def _live(self) -> Any:
        if self._progress is None and err_console.is_terminal:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                ProgressColumn,
                SpinnerColumn,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )
            from rich.text import Text

            class Rate(ProgressColumn):
                def render(self, task: Any) -> Text:
                    return Text(f"{task.speed:,.0f}/s" if task.speed and task.total else "", style="dim")

            self._progress = Progress(
                SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), Rate(),
                TimeElapsedColumn(), TimeRemainingColumn(), console=err_console, transient=True,
                redirect_stdout=False, redirect_stderr=False,
            )
            self._progress.start()
        return self._progress

    def step(self, description: str) -> None:
        self._end()
        if not description:
            return
        self._description = clean(description)
        self._started = time.perf_counter()
        live = self._live()
        if live is not None:
            self._task = live.add_task(self._description, total=None)

    def progress(self, done: int, total: int) -> None:
        if self._task is not None:
            self._progress.update(self._task, completed=done, total=total)

    def line(self, text: str, markup: bool = False) -> None:
        """A line for stdout, printed above the live display when both share the terminal (anything else
        written to the terminal meanwhile would land inside the display)."""
        if self._progress is not None and console.is_terminal:
            self._progress.console.print(text, markup=markup, highlight=False)
        else:
            console.print(text, markup=markup, highlight=False)

    def _end(self, finished: bool = True) -> None:
        if self._task is not None:
            self._progress.remove_task(self._task)
            self._task = None
        if self._description and finished and not self._quiet and not self._description.startswith(self._unlined):
            seconds = time.perf_counter() - self._started
            if seconds >= SHOW_DONE_AFTER:
                self.line(f"{self._description}: {seconds:.1f} s")
        self._description = ""

    def close(self, finished: bool = True) -> None:
        """End the last step (its line only when ``finished``) and take the display off the screen."""
        self._end(finished)
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
