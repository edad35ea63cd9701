"""A training listener that remembers what it heard, in order, for tests of what a run reports."""

from __future__ import annotations

from typing import Any

from movierec.options import TrainingEvents


class Recorder(TrainingEvents):
    """Every event as a tuple: ("step", description), ("progress", done, total), ("start", model, plan),
    ("epoch", report), ("fold", result)."""

    def __init__(self) -> None:
        self.heard: list[tuple[Any, ...]] = []

    def step(self, description: str) -> None:
        self.heard.append(("step", description))

    def progress(self, done: int, total: int) -> None:
        self.heard.append(("progress", done, total))

    def start(self, model: Any, plan: Any) -> None:
        self.heard.append(("start", model, plan))

    def epoch(self, report: Any) -> None:
        self.heard.append(("epoch", report))

    def fold(self, result: Any) -> None:
        self.heard.append(("fold", result))

    def of(self, kind: str) -> list[Any]:
        """What came with every event of ``kind``: the value alone where there is one, else the tuple."""
        return [e[1] if len(e) == 2 else e[1:] for e in self.heard if e[0] == kind]
