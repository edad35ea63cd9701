"""What a saved model's serving data says about how to answer (:class:`ServingInfo`): its schema, written once,
checked field by field when read (:mod:`movierec.checkpoint.schema`), so nothing downstream checks it by hand.

The arrays saved beside it (each user's training ratings, the movies' titles, years and genres) are described in
:mod:`movierec.serving`. Importing this module imports neither torch nor pandas.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from movierec.checkpoint.schema import typed_fields
from movierec.errors import MovierecError
from movierec.kinds import ScoreKind

NEW_USER_SHRINK = 8.0
"""How strongly new users' lists shrink rarely rated movies towards the neutral score (times the mean number of
ratings per movie), for models saved before each model said its own."""


@dataclass(frozen=True)
class ServingInfo:
    """How a saved model answers: JSON-able, saved as the checkpoint's ``serving`` metadata."""

    kind: str
    """What its scores mean (a :class:`~movierec.kinds.ScoreKind`)."""
    genres: list[str]
    """The genre names its movies' genre ids index."""
    neutral: float
    """The score a movie with no ratings is shrunk towards in a new user's list."""
    scorer: dict[str, Any]
    """``{"kind": "factors", "fold_in": {...}}``: answered in numpy from the saved factors, folding new users in
    by that recipe; ``{"kind": "torch"}``: by the torch model rebuilt from its weights."""
    new_user_shrink: float = NEW_USER_SHRINK
    lists: dict[str, Any] | None = None
    """Present when its lists rank by P(picked and liked) (:mod:`movierec.models.picks`): how, and the picks
    model's fold-in (its factors are saved as ``picks.*`` arrays)."""
    features: dict[str, list[str]] | None = None
    """Present for models that know movies and people by their features (:mod:`movierec.cold`): the features'
    names (``field:value``) by side, ``{"movies": [...], "people": [...]}``."""

    @property
    def in_numpy(self) -> bool:
        """Whether the model answers from its saved factors, without torch."""
        return self.scorer["kind"] == "factors"

    def to_json(self) -> str:
        return json.dumps({k: v for k, v in dataclasses.asdict(self).items() if v is not None}, allow_nan=False)

    @classmethod
    def from_json(cls, text: Any, path: Path) -> ServingInfo:
        """The serving data in ``text``, checked: anything wrong is one sentence, "PATH is damaged (...)."."""
        try:
            data = json.loads(text)
        except (TypeError, ValueError):
            raise MovierecError(f"{path} is damaged (its serving data is not valid JSON).") from None
        try:
            info = cls(**typed_fields(cls, data, "serving data"))
            problem = info._implausible()
        except ValueError as exc:
            problem = str(exc)
        if problem:
            raise MovierecError(f"{path} is damaged ({problem}).")
        return info

    def _implausible(self) -> str | None:
        from movierec.models.picks import check_recipe

        if self.kind not in frozenset(ScoreKind):
            return "its serving data does not say what the model predicts"
        if not math.isfinite(self.neutral):
            return "its serving data has no neutral score"
        if self.scorer.get("kind") not in ("factors", "torch"):
            return "its serving data does not say how the model scores"
        if self.in_numpy and not fold_in_ok(self.scorer.get("fold_in")):
            return "its serving data has a new-user fold-in it cannot follow"
        if not math.isfinite(self.new_user_shrink) or self.new_user_shrink < 0:
            return "its serving data has no usable shrinkage for new users"
        lists = self.lists
        if lists is not None and (not check_recipe(lists) or lists["kind"] != self.kind
                                  or not fold_in_ok(lists.get("picks"))):
            return "its serving data has lists it cannot follow"
        if self.features is not None and set(self.features) != {"movies", "people"}:
            return "its serving data has features it cannot read"
        return None


def fold_in_ok(recipe: Any) -> bool:
    """Whether ``recipe`` is a factor model's new-user fold-in this version can follow."""
    ok = isinstance(recipe, dict) and _number(recipe.get("lam")) and recipe["lam"] > 0
    if ok and recipe.get("method") == "implicit":
        return (_number(recipe.get("tau")) and _number(recipe.get("alpha"))
                and recipe.get("confidence") in ("stars", "binary"))
    if ok and recipe.get("method") == "ridge":
        return all(isinstance(recipe.get(k), list) and len(recipe[k]) == 2 and all(map(_number, recipe[k]))
                   for k in ("tau", "gamma"))
    return False


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
