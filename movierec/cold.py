"""Cold starts when answering: people described by their age, gender and occupation, with or without ratings.

A model that knows people by their features (``hybrid``, :mod:`movierec.models.hybrid`) saves, beside its
vectors, each feature's vector and bias and, for its picks model, where each feature places a person in the
picks model's space. A new person's starting point is then their features' sum, in both models:

- the model's own fold-in (stars) solves for the person's *own* vector and bias on top of their features' ones,
  exactly as training treats a user's id vector: with no ratings the person is their features' vector;
- the picks model's fold-in (P(picked)) reads the movies the person did not rate as picked at a small share
  (:data:`PICKS_PRIOR`) of the rate their features' vector ``x0`` predicts, instead of as "not picked": the
  implicit system ``A(R) x = b(R) + A(0) w x0``, which gives ``w x0`` with no ratings (the same list as ``x0``).

So with no ratings a list is what people of that age band, gender and occupation pick and like; each rating moves
it towards the person's own. Answered in numpy, as every factor model is (:class:`movierec.scorers.FactorScorer`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from movierec.data.features import PERSON_FIELDS, person_features
from movierec.errors import MovierecError

if TYPE_CHECKING:
    from movierec.recommend import Scorer

PICKS_PRIOR = 0.05
"""How strongly the movies a new person has not rated count as their features' picks in the picks model (1: as
strongly as the ones they rated count as theirs). Chosen on held-out ml-100k users (benchmarks/cold_start.py, seed
1; reported on seed 0): at 1 the features drown a few ratings (NDCG@10 from 3 ratings 0.445, below mf's 0.492),
at 0.05 they combine (0.504), below 0.02 the list from one rating loses what the features said (0.453 at 0.01)."""
_PEOPLE = ("state.user_feature_factors", "state.user_feature_bias", "state.picks_user_feature_factors",
           "state.picks_user_intercept")


class SideInformation:
    """What a saved model knows of movies and people besides the ratings: its features' names, and the vectors a
    new person's features give them."""

    def __init__(self, saved: Any, names: Mapping[str, Any], model_name: str):
        self.model_name = model_name
        self.movies: list[str] = list(names.get("movies", []))
        self.people: list[str] = list(names.get("people", []))
        path = saved.path
        if not all(k in saved for k in _PEOPLE):
            raise MovierecError(f"{path} is damaged: its tensors do not match its model description.")
        factors, bias, picks, intercept = (saved.get(k).astype(np.float32, copy=False) for k in _PEOPLE)
        n = len(self.people) + 1
        if (factors.ndim != 2 or factors.shape[0] != n or bias.shape != (n,) or picks.ndim != 2
                or picks.shape[0] != n or intercept.shape != (picks.shape[1],)
                or not all(bool(np.isfinite(a).all()) for a in (factors, bias, picks, intercept))):
            raise MovierecError(f"{path} is damaged (its people's features do not fit together).")
        self._factors, self._bias, self._picks, self._intercept = factors, bias, picks, intercept

    @property
    def knows_movies(self) -> bool:
        """Whether movies without training ratings have vectors of their own features."""
        return bool(self.movies)

    def choices(self) -> dict[str, list[str]]:
        """What a person can say about themselves to this model, by field: the age bands (an age in years is
        what is typed), genders and occupations its release has; empty when it knows nobody's."""
        from movierec.data.features import band_order

        found: dict[str, list[str]] = {}
        for name in self.people:
            field, _, value = name.partition(":")
            found.setdefault(field, []).append(value)
        if "age" in found:
            found["age"].sort(key=band_order)
        return {field: found[field] for field in PERSON_FIELDS if field in found}

    def describe(self, person: Mapping[str, Any]) -> tuple[np.ndarray, np.ndarray]:
        """A person's feature indices and weights from ``{"age", "gender", "occupation"}`` (any may be missing)."""
        unknown = sorted(set(person) - set(PERSON_FIELDS))
        if unknown:
            raise MovierecError(f"A person is described by {', '.join(PERSON_FIELDS)}, not {unknown[0]!r}.")
        return person_features(self.people, **dict(person))

    def scorer_for(self, scorer: Scorer, person: Mapping[str, Any]) -> Scorer:
        """``scorer`` (a :class:`~movierec.recommend.ListScorer` of factor models) for new users described by
        ``person``: their fold-ins start from the features' vectors."""
        from movierec.recommend import ListScorer

        if not isinstance(scorer, ListScorer):
            raise MovierecError(f"{self.model_name} has no picks model to rank new people's lists; retrain it.")
        index, weight = self.describe(person)
        own = (weight @ self._factors[index], np.float32(weight @ self._bias[index]))  # (d,), ()
        picks = PICKS_PRIOR * (self._intercept + weight @ self._picks[index])  # (d_picks,)
        return ListScorer(_WithPrior(scorer.own, own), _WithPrior(scorer.picks, (picks, np.float32(0.0))),
                          scorer.midpoint)


class _WithPrior:
    """A factor scorer whose new users start from ``prior`` (vector, bias) instead of nothing."""

    def __init__(self, scorer: Any, prior: tuple[np.ndarray, np.float32]):
        self._scorer, self._prior = scorer, prior
        self.kind, self.rating_range = scorer.kind, scorer.rating_range
        self.new_user_shrink = scorer.new_user_shrink

    def fold_in(self, items: np.ndarray, ratings: np.ndarray) -> np.ndarray:
        return self._scorer.fold_in(items, ratings, prior=self._prior)

    def __getattr__(self, name: str) -> Any:  # scores, scores_many, item_vectors: the scorer's own
        return getattr(self._scorer, name)
