"""What a model's scores mean: the one vocabulary every layer switches on.

A model class holds its :class:`ScoreKind`; training, evaluation, the lists, the CLI and the server ask it what
follows (whether its scores are on the star scale, whether it predicts something of its own beside its lists),
instead of comparing strings. A ``ScoreKind`` is a ``str``: it is saved, printed and compared as its value.
"""

from __future__ import annotations

import enum
from typing import Any, TypeVar

T = TypeVar("T")


class ScoreKind(str, enum.Enum):  # enum.StrEnum from Python 3.11 on
    RATING = "rating"
    """Scores are predicted stars on the release's scale."""
    LIKE = "like"
    """Scores are P(liked): the chance the user gives the movie at least the like threshold's stars."""
    RANK = "rank"
    """Scores only order movies; they predict neither stars nor likes."""

    def __str__(self) -> str:
        return self.value

    @property
    def predicts(self) -> bool:
        """Whether the scores predict something of their own (stars or P(like)) to show beside a list, and to
        rank through a picks model (:mod:`movierec.models.picks`)."""
        return self is not ScoreKind.RANK

    @property
    def label(self) -> str:
        """What a table calls the model's own prediction: "stars", "P(like)" or "score"."""
        return {ScoreKind.RATING: "stars", ScoreKind.LIKE: "P(like)"}.get(self, "score")

    def on_scale(self, values: T, low: float, high: float) -> T:
        """``values`` (a numpy array or torch tensor) as predictions: a rating model's stars clipped to the
        scale ``[low, high]``; other kinds' as they are. Raw scores rank lists unclipped (5.4 and 5.1 predicted
        stars are not a tie); predictions shown or judged go through here."""
        return values.clip(low, high) if self is ScoreKind.RATING else values  # type: ignore[attr-defined]


def score_kind(value: Any) -> ScoreKind:
    """``value`` (a kind's name, as saved) as a :class:`ScoreKind`; an unknown one is a ValueError."""
    return ScoreKind(str(value))
