"""One live display for a command's long steps: the library names each step and reports its counts, this draws them.

Transient progress goes to stderr, and only to a terminal (a bar redrawn into a log is noise). A step that took
a while leaves one line on stdout when it ends ("Loading ml-25m: 12.3 s"), unless the output is machine-readable;
lines the command prints meanwhile (the training curve) go to stdout, above the bar.

The bar is one line whatever the terminal's width: a long description is shortened (its finished line has it
whole) and the bar itself narrows, so nothing is squeezed out or wrapped into a second line that would be left
behind. A step that counts nothing shows a spinner and the time spent; one that counts shows its count, rate and
time left.
"""

from __future__ import annotations

import time
from typing import Any

from movierec.cli.console import clean, console, err_console

SHOW_DONE_AFTER = 1.0
"""A finished step leaves its line when it took at least this many seconds."""
BAR_WIDTH = (10, 40)
"""The narrowest and widest bar, in columns."""


def fold(groups: list[list[str]], width: int, indent: int) -> str:
    """``groups`` of items joined by two spaces, folded to ``width`` columns between groups where it can, else
    between items, never inside one; continuation lines indented by ``indent``."""
    from rich.cells import cell_len

    sep, pad = "  ", " " * indent
    lines: list[str] = []

    def add(text: str) -> None:
        if lines and cell_len(lines[-1] + sep + text) <= width:
            lines[-1] += sep + text
        else:
            lines.append((pad if lines else "") + text)

    for group in groups:
        whole = sep.join(group)
        if cell_len((pad if lines else "") + whole) <= width:
            add(whole)  # on this line, else on the next: a group is split only when no line can hold it
        else:
            for item in group:
                add(item)
    return "\n".join(lines)


class Steps:
    """``step(description)`` begins a step (ending the previous one), ``progress(done, total)`` moves its bar,
    ``line(text)`` prints a line above it, ``close()`` ends the last step; use it as a context manager."""

    def __init__(self, quiet: bool = False, unlined: tuple[str, ...] = ()) -> None:
        self._quiet = quiet  # no finished-step lines: stdout is machine-readable
        self._unlined = unlined  # steps starting so leave no line: the command prints its own
        self._progress: Any = None
        self._bar: Any = None
        self._task: Any = None
        self._total: int | None = None
        self._description = ""
        self._started = 0.0

    def __enter__(self) -> Steps:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close(finished=exc[0] is None)

    def _live(self) -> Any:
        if self._progress is None and err_console.is_terminal:
            from rich.progress import BarColumn, Progress, ProgressColumn, SpinnerColumn, TextColumn
            from rich.text import Text

            class Count(ProgressColumn):
                def render(self, task: Any) -> Text:
                    # A step that counts nothing shows no "0/?".
                    count = f"{task.completed:.0f}/{task.total:.0f}" if task.total else ""
                    return Text(count, style="progress.download")

            class Rate(ProgressColumn):
                def render(self, task: Any) -> Text:
                    return Text(f"{task.speed:,.0f}/s" if task.speed and task.total else "", style="dim")

            class Time(ProgressColumn):
                """Time left once it can be estimated, else the time spent (so a long step still shows it moves)."""

                max_refresh = 0.5

                def render(self, task: Any) -> Text:
                    left = task.time_remaining if task.total else None
                    if left is None:
                        seconds, style, suffix = task.elapsed or 0, "progress.elapsed", ""
                    else:
                        seconds, style, suffix = left, "progress.remaining", " left"
                    minutes, secs = divmod(int(seconds), 60)
                    return Text(f"{minutes // 60}:{minutes % 60:02d}:{secs:02d}{suffix}", style=style)

            self._bar = BarColumn(bar_width=BAR_WIDTH[1])
            self._progress = Progress(
                SpinnerColumn(), TextColumn("{task.description}"), self._bar, Count(), Rate(), Time(),
                console=err_console, transient=True, redirect_stdout=False, redirect_stderr=False,
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
            self._total = None
            self._task = live.add_task(self._fit(self._description, None), total=None)

    def _fit(self, description: str, total: int | None) -> str:
        """``description`` as the bar's line shows it, with the bar narrowed to keep that line within the width."""
        from rich.cells import cell_len, set_cell_size

        # Beside the description and the bar: the spinner, the count, the rate (up to 9,999,999/s), the time
        # ("0:12:34 left") and a space after each column.
        count, rate = (2 * len(str(total)) + 1, 11) if total else (0, 0)
        room = err_console.width - (2 + 1 + count + 1 + rate + 1 + 12 + 1)
        shown = description
        if cell_len(description) > room - BAR_WIDTH[0]:
            shown = set_cell_size(description, max(1, room - BAR_WIDTH[0] - 1)) + "…"
        self._bar.bar_width = max(BAR_WIDTH[0], min(BAR_WIDTH[1], room - cell_len(shown)))
        return shown

    def progress(self, done: int, total: int) -> None:
        if self._task is not None:
            if total != self._total:  # the count's width changes the room for the rest
                self._total = total
                self._progress.update(self._task, description=self._fit(self._description, total))
            self._progress.update(self._task, completed=done, total=total)

    def line(self, text: str, markup: bool = False) -> None:
        """A line for stdout, printed above the live display when both share the terminal (anything else
        written to the terminal meanwhile would land inside the display)."""
        if self._progress is not None and console.is_terminal:
            self._progress.console.print(text, markup=markup, highlight=False)
        else:
            console.print(text, markup=markup, highlight=False)

    def record(self, groups: list[list[str]], indent: int = 0) -> None:
        """A line of data (an epoch of the training curve): ``groups`` of items joined by two spaces.

        In a file or a pipe it stays one line however long, so a log holds one record per line; in a terminal
        too narrow for it, it folds between groups, else between items, never inside one (not "rmse" on one
        line and its number on the next), continuation lines indented by ``indent``."""
        text = "  ".join(item for group in groups for item in group)
        if console.is_terminal:
            self.line(fold(groups, console.width, indent))
        else:
            console.print(text, markup=False, highlight=False, soft_wrap=True)

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
