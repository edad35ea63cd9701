"""Answering from a saved model alone: what `recommend`, `similar` and `clusters` read, saved with it.

A checkpoint carries, beside the model's arrays (:mod:`movierec.checkpoint`), everything answering needs
that used to be re-derived from the dataset on every call (re-drawing the split, rebuilding the training
matrix): each user's training ratings as a CSR (``seen.*``), each movie's number of training ratings,
titles, years and genres (``movies.*``), and in the header how to answer (:class:`ServingInfo`: what the
scores mean, the neutral score of new users' shrinkage, how the model scores).

Factor models (``mf``, ``als`` explicit and implicit: score = mean + p_u . q_i + b_u + b_i) are answered
in numpy from their saved arrays (:mod:`movierec.scorers`), reading one user's row, never the whole file, and
without importing torch or pandas: :class:`FactorScorer`, whose new-user fold-in solves the same ridge problem as
``FactorModel.fold_in_factors`` with the penalties the model itself reported when it was saved. The RBMs,
autoencoders and Mult-VAE/DAE are answered in numpy too, by their passes in :mod:`movierec.models.forward`
(:class:`NumpyScorer`, chosen by the model's class: their checkpoints say ``{"kind": "torch"}``). They are rebuilt in
torch (:class:`movierec.recommend.TorchScorer`) with the saved training matrix only for a GPU asked for by name,
for a config saved before an option the numpy pass reads existed, for an item-based model fitted on fewer ratings
than those saved with it, and for the item-based rating RBM's new users when saved without their fit's prior.
Either way the lists
come from the one implementation in :mod:`movierec.recommend`.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from movierec import checkpoint
from movierec.data.ids import lookup_id
from movierec.errors import MovierecError, NotFound
from movierec.kinds import ScoreKind
from movierec.models import build_model
from movierec.recommend import ListScorer
from movierec.scorers import FactorScorer, NumpyScorer, ridge_penalties
from movierec.serving_info import ServingInfo

if TYPE_CHECKING:
    from pathlib import Path

    from movierec.cold import SideInformation
    from movierec.data.dataset import Dataset
    from movierec.data.ratings import Ratings
    from movierec.data.titles import TitleIndex
    from movierec.models.base import Recommender
    from movierec.recommend import Recommendation, Scorer

SEEN = ("seen.indptr", "seen.items", "seen.stars")
MOVIES = ("movies.counts", "movies.title_utf8", "movies.title_offsets", "movies.year", "movies.genre_offsets",
          "movies.genre_ids")
FACTOR_STATE = ("state.user_factors", "state.item_factors", "state.user_bias", "state.item_bias", "state.mean")
USER_NAMES = "users.name_"
"""The prefix of the user ids of an imported dataset whose user ids are strings (``users.name_utf8``, ...)."""
PICKS = "picks."
"""The prefix of the picks model's arrays (:mod:`movierec.models.picks`), saved beside a rating model's."""


# -- what is saved ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ServingData:
    """The arrays and the JSON-able ``info`` saved beside a model's weights (see the module docstring)."""

    arrays: dict[str, np.ndarray]
    info: ServingInfo

    @classmethod
    def build(
        cls, model: Recommender, train: Ratings, data: Dataset, picks: Recommender | None = None
    ) -> ServingData:
        """From the model, its training ratings (all of them, validation slice included), its dataset and the
        picks model its lists rank through (:mod:`movierec.models.picks`; None: lists rank by its own scores)."""
        from movierec.recommend import neutral_value

        users = np.asarray(train.users, dtype=np.int64)
        items = np.asarray(train.items, dtype=np.int64)
        # Rows by user, movies ascending within a row: the order of RatingMatrix.from_coo.
        order = np.argsort(users * np.int64(data.n_items) + items, kind="stable")
        indptr = np.zeros(data.n_users + 1, dtype=np.int64)
        np.cumsum(np.bincount(users, minlength=data.n_users), out=indptr[1:])
        stars = np.asarray(train.ratings, dtype=np.float32)
        arrays = {
            "seen.indptr": indptr,
            "seen.items": items[order].astype(np.int32),
            "seen.stars": stars[order],
            "movies.counts": np.bincount(items, minlength=data.n_items).astype(np.int64),
            **_movie_arrays(data),
            **_name_arrays(USER_NAMES, data.user_names),
        }
        genres = sorted({g for gs in data.movies["genres"].reindex(data.item_ids).dropna() for g in gs})
        lists = None
        if picks is not None:
            from movierec.models import picks as picking

            picks_scorer = scorer_recipe(picks)
            if picks_scorer["kind"] != "factors":
                raise ValueError("a picks model must be a factor model answered in numpy")
            lists = {**picking.recipe(model), "picks": picks_scorer["fold_in"]}
            arrays.update({f"picks.{k}": v.detach().cpu().contiguous().numpy() for k, v in picks.state_dict().items()})
        genre_index = {g: i for i, g in enumerate(genres)}
        arrays["movies.genre_ids"] = np.array([genre_index[g] for g in arrays.pop("_genre_names")], dtype=np.int32)
        info = ServingInfo(kind=str(model.kind), genres=genres,
                           neutral=neutral_value(model.kind, model.like_threshold, stars),
                           scorer=scorer_recipe(model), new_user_shrink=float(model.new_user_shrink), lists=lists,
                           features=model.feature_names if model.uses_side_information else None)
        return cls(arrays, info)


def _movie_arrays(data: Dataset) -> dict[str, np.ndarray]:
    import pandas as pd

    movies = data.movies.reindex(data.item_ids)
    titles = [str(t).encode() for t in movies["title"].fillna("")]
    lengths = np.array([len(t) for t in titles], dtype=np.int64)
    years = np.array([0 if pd.isna(y) else int(y) for y in movies["year"]], dtype=np.int32)
    genre_lists = [list(gs) if isinstance(gs, (list, tuple, np.ndarray)) else [] for gs in movies["genres"]]
    return {
        "movies.title_utf8": np.frombuffer(b"".join(titles), dtype=np.uint8).copy(),
        "movies.title_offsets": np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64),
        "movies.year": years,
        "movies.genre_offsets": np.concatenate([[0], np.cumsum([len(g) for g in genre_lists])]).astype(np.int64),
        "_genre_names": [g for gs in genre_lists for g in gs],  # turned into movies.genre_ids by the caller
    }


def _name_arrays(prefix: str, names: Sequence[str] | None) -> dict[str, np.ndarray]:
    """An imported dataset's string ids (by index) as UTF-8 bytes and offsets, as titles are saved; none for
    numeric ids."""
    if names is None:
        return {}
    encoded = [n.encode() for n in names]
    return {f"{prefix}utf8": np.frombuffer(b"".join(encoded), dtype=np.uint8).copy(),
            f"{prefix}offsets": np.concatenate([[0], np.cumsum([len(b) for b in encoded])]).astype(np.int64)}


def _read_names(saved: Any, prefix: str, count: int) -> list[str] | None:
    if f"{prefix}utf8" not in saved:
        return None
    data, at = saved.get(f"{prefix}utf8").tobytes(), saved.get(f"{prefix}offsets")
    if at.shape != (count + 1,) or int(at[0]) != 0 or int(at[-1]) != len(data) or bool((np.diff(at) < 0).any()):
        raise MovierecError(f"{saved.path} is damaged (its {prefix.rstrip('.')} do not fit together).")
    return [data[a:b].decode("utf-8", "replace") for a, b in zip(at[:-1].tolist(), at[1:].tolist())]


def scorer_recipe(model: Recommender) -> dict[str, Any]:
    """How the saved model scores: ``{"kind": "factors", "fold_in": ...}`` where :class:`FactorScorer` computes
    exactly what the torch model does, else ``{"kind": "torch"}``."""
    from movierec.models.als import ImplicitALS
    from movierec.models.factors import FactorModel

    cls = type(model)
    if not isinstance(model, FactorModel) or any(
        getattr(cls, m) is not getattr(FactorModel, m) for m in ("score", "fold_in", "item_vectors")
    ):
        return {"kind": "torch"}
    if isinstance(model, ImplicitALS) and cls.fold_in_factors is ImplicitALS.fold_in_factors:
        c = model.config
        return {"kind": "factors", "fold_in": {"method": "implicit", "lam": c.lam, "tau": c.tau, "alpha": c.alpha,
                                              "confidence": c.confidence}}
    if cls.fold_in_factors is not FactorModel.fold_in_factors:
        return {"kind": "torch"}
    # The penalties of an n-rating user, as the model reports them: a + b * n (checked on a few n).
    lam, tau0, gamma0 = model.fold_in_penalties(0)
    _, tau1, gamma1 = model.fold_in_penalties(1)
    recipe = {"method": "ridge", "lam": lam, "tau": [tau0, tau1 - tau0], "gamma": [gamma0, gamma1 - gamma0]}
    for n in (2, 7, 1000):
        if not np.allclose(model.fold_in_penalties(n), ridge_penalties(recipe, n), rtol=1e-9, atol=0):
            return {"kind": "torch"}
    return {"kind": "factors", "fold_in": recipe}


def build_from_state(meta: checkpoint.CheckpointMeta, state: Mapping[str, np.ndarray], path: Path) -> Recommender:
    """The torch model described by ``meta`` with the weights ``state`` (``state.*`` arrays), on the CPU.

    The model is built on the meta device, so no initial weights are drawn only to be overwritten (at ML-25M an
    RBM's are 30 million random numbers), and then takes the saved arrays as its tensors."""
    import torch

    try:
        with torch.device("meta"):
            model = build_model(meta.model, meta.mode, meta.config, meta.n_users, meta.n_items,
                                tuple(meta.rating_values))
        model.load_state_dict({k.removeprefix("state."): torch.from_numpy(v) for k, v in state.items()}, assign=True)
        if any(t.is_meta for t in (*model.parameters(), *model.buffers())):
            raise RuntimeError("a tensor the checkpoint does not hold")
    except MovierecError:
        raise
    except (KeyError, TypeError, ValueError, RuntimeError):
        raise MovierecError(f"{path} is damaged: its tensors do not match its model description.") from None
    model.eval()
    return model



# -- reading it back ----------------------------------------------------------------------------------------
class Catalogue:
    """The dataset's movies by index, as saved: ids, titles, years (0: unknown) and genres."""

    def __init__(self, name: str, saved: Any, genre_names: list[str]):
        self.name = name
        self.item_ids = saved.get("item_ids")
        self.n_items = int(self.item_ids.shape[0])
        self._utf8 = saved.get("movies.title_utf8").tobytes()
        self._title_at = saved.get("movies.title_offsets")
        self._years = saved.get("movies.year")
        self._genre_at = saved.get("movies.genre_offsets")
        self._genre_ids = saved.get("movies.genre_ids")
        self.genre_names = genre_names
        n = self.n_items
        if (self._title_at.shape != (n + 1,) or self._genre_at.shape != (n + 1,) or self._years.shape != (n,)
                or int(self._title_at[-1]) != len(self._utf8) or int(self._genre_at[-1]) != len(self._genre_ids)
                or bool((np.diff(self._title_at) < 0).any()) or bool((np.diff(self._genre_at) < 0).any())
                or bool(((self._genre_ids < 0) | (self._genre_ids >= len(genre_names))).any())):
            raise MovierecError(f"{saved.path} is damaged (its movie titles and genres do not fit together).")

    def title(self, item: int) -> str:
        if not 0 <= int(item) < self.n_items:
            raise MovierecError(
                f"Movie index {item} is out of range: {self.name} has movie indices 0 to {self.n_items - 1}."
            )
        start, stop = self._title_at[item], self._title_at[item + 1]
        return self._utf8[start:stop].decode("utf-8", "replace")

    def titles(self) -> list[str]:
        return [self.title(i) for i in range(self.n_items)]

    def genres(self, item: int) -> list[str]:
        return [self.genre_names[g] for g in self._genre_ids[self._genre_at[item]:self._genre_at[item + 1]]]

    def movie(self, item: int) -> dict[str, Any]:
        """``{"title", "year" (None if unknown), "genres"}`` of movie index ``item``."""
        year = int(self._years[item])
        return {"title": self.title(item), "year": year or None, "genres": self.genres(item)}

    def item_index(self, movie_id: int) -> int:
        """The index of MovieLens movie ``movie_id``."""
        return lookup_id(self.item_ids, movie_id, "Movie", self.name)

    def allowed(self, genres: list[str] | None, min_year: int | None, max_year: int | None) -> np.ndarray | None:
        """Which movies pass the filters, (I,) bool; None without filters. Genres: any of them, any case."""
        if not genres and min_year is None and max_year is None:
            return None
        keep = np.ones(self.n_items, dtype=bool)
        if genres:
            wanted = {g.strip().lower() for g in genres}
            known = {g.lower() for g in self.genre_names}
            unknown = wanted - known
            if unknown:
                raise MovierecError(
                    f"Unknown genre {sorted(unknown)[0]!r}; {self.name} has: {', '.join(sorted(known))}."
                )
            hit = np.array([g.lower() in wanted for g in self.genre_names] + [False], dtype=bool)
            ids = self._genre_ids if self._genre_ids.size else np.zeros(0, dtype=np.int64)
            per_genre = hit[ids]  # (G_total,)
            keep &= np.add.reduceat(np.append(per_genre, False).astype(np.int64), self._genre_at[:-1]) > 0
            keep &= np.diff(self._genre_at) > 0
        known_year = self._years != 0
        if min_year is not None:
            keep &= known_year & (self._years >= min_year)
        if max_year is not None:
            keep &= known_year & (self._years <= max_year)
        if not keep.any():
            raise MovierecError("No movie passes the genre and year filters.")
        return keep


def _on_cpu(device: Any) -> bool:
    """Whether ``device`` ("auto", "cpu", "cuda", a torch.device) lets a model answer in numpy: anything but
    an accelerator named outright ("auto" answers one user faster in numpy than a GPU starts)."""
    return str(device).split(":")[0] in ("auto", "cpu")


class Served:
    """A saved model ready to answer: its scorer, users, movies, and each user's training ratings."""

    def __init__(self, saved: Any, device: Any = "cpu"):
        self.path: Path = saved.path
        self.meta = checkpoint.current_meta(saved.meta)
        self._saved = saved
        info = ServingInfo.from_json(saved.metadata.get("serving"), saved.path)
        meta = self.meta
        shapes = {"seen.indptr": (meta.n_users + 1,), "movies.counts": (meta.n_items,),
                  "user_ids": (meta.n_users,), "item_ids": (meta.n_items,)}
        for name, shape in shapes.items():
            if saved.shape(name) != shape:
                raise MovierecError(f"{self.path} is damaged (its {name!r} has the wrong shape).")
        if saved.shape("seen.items") != saved.shape("seen.stars"):
            raise MovierecError(f"{self.path} is damaged (its 'seen.items' and 'seen.stars' differ in length).")
        self.neutral: float = info.neutral
        self.user_ids = saved.get("user_ids")
        self.user_names = _read_names(saved, USER_NAMES, meta.n_users)
        """The users' own string ids by index (imported datasets whose user ids are strings), else None."""
        self.counts = saved.get("movies.counts")
        self.catalogue = Catalogue(meta.dataset, saved, info.genres)
        for what, ids in (("user", self.user_ids), ("movie", self.catalogue.item_ids)):
            if ids.dtype.kind not in "iu" or bool((np.diff(ids) <= 0).any()):
                raise MovierecError(f"{self.path} is damaged (its {what} ids are not a list of distinct ids in order).")
        self._title_index: TitleIndex | None = None
        self._unit: np.ndarray | None = None  # the unit-length movie vectors, once `similar` needs them
        self.scorer: Scorer
        self._device = device
        self._torch: Scorer | None = None
        if info.in_numpy:
            self.scorer = FactorScorer(saved, meta, info.scorer["fold_in"], info.kind,
                                       new_user_shrink=info.new_user_shrink)
        else:
            self.scorer = self._numpy_scorer(info, device) or self._torch_model()
        if info.lists is not None:  # lists rank by P(picked and liked): the picks model answers in numpy
            picks = FactorScorer(saved, meta, info.lists["picks"], ScoreKind.RANK, prefix=PICKS)
            self.scorer = ListScorer(self.scorer, picks, info.lists["midpoint"])
        self.side: SideInformation | None = None
        """What the model knows of movies and people besides the ratings (models trained with features)."""
        if info.features is not None:
            from movierec.cold import SideInformation

            self.side = SideInformation(saved, info.features, meta.name)

    def _numpy_scorer(self, info: ServingInfo, device: Any) -> NumpyScorer | None:
        """The model answered in numpy by its pass in :mod:`movierec.models.forward`, decided by its class
        (checkpoints record ``{"kind": "torch"}`` for these models); None where torch answers: a device other
        than the CPU asked for, a config saved before an option the pass reads existed, or an item-based model
        fitted on fewer ratings than those saved with it (its saved movie codes are not of these ratings)."""
        from movierec.models.forward import FORWARDS

        meta = self.meta
        forward_class = FORWARDS.get((meta.model, meta.mode))
        if forward_class is None or not _on_cpu(device):
            return None
        state = {k: self._saved.get(k) for k in self._saved.names() if k.startswith("state.")}
        checkpoint.check_arrays(state, self.user_ids, self.catalogue.item_ids, meta, self.path)
        try:
            forward = forward_class({k.removeprefix("state."): v for k, v in state.items()}, meta.config,
                                    tuple(meta.rating_values))
        except KeyError:
            return None
        if forward.needs_fit_state and not meta.fitted_on_training_ratings:
            return None
        try:  # arrays that do not fit together fail here, once, rather than in an answer
            fits = forward.fits(meta.n_users, meta.n_items)
        except (KeyError, IndexError, ValueError):
            fits = False
        if not fits:
            raise MovierecError(f"{self.path} is damaged: its tensors do not match its model description.")
        return NumpyScorer(forward, info, meta, self.seen, self._torch_model)

    def _torch_model(self) -> Scorer:
        """The torch model rebuilt from its weights, made once, on the device asked for."""
        if self._torch is None:
            self._torch = self._torch_scorer(self._device)
        return self._torch

    def _torch_scorer(self, device: Any) -> Scorer:
        import torch

        from movierec.data.ratings import RatingMatrix
        from movierec.device import resolve_device
        from movierec.recommend import TorchScorer

        device = resolve_device(device) if isinstance(device, str) else device
        saved, meta = self._saved, self.meta
        state = {k: saved.get(k) for k in saved.names() if k.startswith("state.")}
        checkpoint.check_arrays(state, self.user_ids, self.catalogue.item_ids, meta, self.path)
        model = build_from_state(meta, state, self.path).to(device)
        indptr, items, stars = (saved.get(k) for k in SEEN)
        self._check_seen(indptr, items)
        train = RatingMatrix(torch.from_numpy(indptr), torch.from_numpy(items.astype(np.int64)),
                             torch.from_numpy(stars), meta.n_items).to(model.device)
        if meta.fitted_on_training_ratings:
            model.reuse_fit_state(train)
        return TorchScorer(model, train)

    def _check_seen(self, indptr: np.ndarray, items: np.ndarray) -> None:
        if (indptr.size and (int(indptr[0]) < 0 or int(indptr[-1]) > self._saved.shape("seen.items")[0]
                             or bool((np.diff(indptr) < 0).any()))) or bool(
                ((items < 0) | (items >= self.meta.n_items)).any()):
            raise MovierecError(f"{self.path} is damaged (its users' training ratings are out of range).")

    def close(self) -> None:
        self._saved.close()

    def factors(self) -> dict[str, np.ndarray]:
        """A factor model's arrays (:meth:`FactorScorer.factors`); a model of another family is one sentence."""
        own = self.scorer.own if isinstance(self.scorer, ListScorer) else self.scorer
        if not isinstance(own, FactorScorer):
            raise MovierecError(f"{self.meta.name} is a {self.meta.model} model, which has no user and movie "
                                "factors; mf, als and hybrid have them.")
        return own.factors()

    def user_index(self, user_id: int | str) -> int:
        """The index of MovieLens user ``user_id``: a number, or the string an imported dataset names them by
        (whose users also answer to the numbers 1..n that stand for those strings in the saved ids)."""
        if self.user_names is not None and isinstance(user_id, str):
            # Sorted: the strings were numbered 1..n in their sorted order (the numbers that stand for them).
            pos = bisect.bisect_left(self.user_names, user_id)
            if pos < len(self.user_names) and self.user_names[pos] == user_id:
                return pos
            if not user_id.strip().isdigit():
                raise NotFound(f"User {user_id!r} is not in {self.meta.dataset}.")
        if isinstance(user_id, str):
            try:
                user_id = int(user_id.strip())
            except ValueError:
                raise NotFound(f"User {user_id!r} is not in {self.meta.dataset}: its user ids are numbers.") from None
        return lookup_id(self.user_ids, user_id, "User", self.meta.dataset)

    def seen(self, user: int) -> tuple[np.ndarray, np.ndarray]:
        """The movies (int64) user index ``user`` rated in training and their stars (float32), reading that
        user's row alone."""
        start, stop = (int(v) for v in self._saved.rows("seen.indptr", user, user + 2))
        items = self._saved.rows("seen.items", start, stop).astype(np.int64)
        stars = self._saved.rows("seen.stars", start, stop)
        self._check_seen(np.array([start, stop]), items)
        return items, stars

    def seen_many(self, users: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The movies user indices ``users`` (B,) rated in training: (row in ``users``, movie) pairs, two (N,)
        int64 arrays; a run of consecutive users is read at once."""
        users = np.asarray(users, dtype=np.int64)
        if users.size < 2 or not bool((np.diff(users) == 1).all()):
            per_user = [self.seen(u)[0] for u in users.tolist()]
            rows = np.repeat(np.arange(users.size), [len(x) for x in per_user])
            return rows, np.concatenate(per_user) if per_user else np.zeros(0, dtype=np.int64)
        indptr = self._saved.rows("seen.indptr", int(users[0]), int(users[-1]) + 2)  # (B+1,)
        items = self._saved.rows("seen.items", int(indptr[0]), int(indptr[-1])).astype(np.int64)
        self._check_seen(indptr, items)
        return np.repeat(np.arange(users.size), np.diff(indptr)), items

    # -- answers: the one implementation behind the CLI, the Python API and the HTTP server -----------------
    def recommend(
        self, user: int | str, n: int = 10, *, genres: Sequence[str] | None = None, min_year: int | None = None,
        max_year: int | None = None, include_seen: bool = False, include_unrated: bool = False,
    ) -> list[dict[str, Any]]:
        """Top-``n`` movies for MovieLens user ``user`` (a user of the training data), as :meth:`rows`. Movies
        without training ratings are listed only with ``include_unrated`` (models that know movies by their
        features)."""
        from movierec import recommend as rec

        index = self.user_index(user)
        allowed = self.allowed_movies(genres, min_year, max_year, include_unrated)
        seen, stars = self.seen(index)
        picks = rec.for_user(self.scorer, index, seen, stars, _count(n), counts=self.counts,
                             include_seen=include_seen, allowed=allowed)
        return self.rows(picks)

    def recommend_new(
        self, ratings: Mapping[str | int, Any] | Iterable[tuple[str | int, Any]], n: int = 10, *,
        shrink: float | None = None, genres: Sequence[str] | None = None, min_year: int | None = None,
        max_year: int | None = None, person: Mapping[str, Any] | None = None, include_unrated: bool = False,
    ) -> list[dict[str, Any]]:
        """Top-``n`` movies for someone not in the training data, from ``ratings``: movie -> stars, a movie
        being a title (matched forgivingly, as :meth:`find` does) or a MovieLens id. No retraining: the model
        folds the ratings in (:func:`movierec.recommend.for_new_user`, which also says what ``shrink`` does).
        ``person``: their ``age``, ``gender`` and ``occupation`` (any of them), for models that know people by
        them (:mod:`movierec.cold`); then ``ratings`` may be empty."""
        from movierec import recommend as rec

        described = {k: v for k, v in (person or {}).items() if v is not None and str(v).strip() != ""}
        items, stars = self.resolve_ratings(ratings, allow_none=bool(described))
        allowed = self.allowed_movies(genres, min_year, max_year, include_unrated)
        scorer = self.scorer
        if described:
            if self.side is None:
                raise MovierecError(f"{self.meta.name} does not know people by their age, gender or occupation; "
                                    "a model trained with features does (`movierec train hybrid`).")
            scorer = self.side.scorer_for(scorer, described)
        picks = rec.for_new_user(scorer, items, stars, _count(n), counts=self.counts, neutral=self.neutral,
                                 shrink=shrink, allowed=allowed)
        return self.rows(picks)

    def allowed_movies(self, genres: Sequence[str] | None, min_year: int | None, max_year: int | None,
                 include_unrated: bool) -> np.ndarray | None:
        """The filters' movies (None: all), less those without training ratings unless ``include_unrated``."""
        allowed = self.catalogue.allowed(_listed(genres), min_year, max_year)
        if include_unrated:
            if not self.lists_unrated:
                raise MovierecError(f"{self.meta.name} has learned nothing about movies without training ratings; "
                                    "a model that knows movies by their features can list them "
                                    "(`movierec train hybrid`).")
            return allowed
        rated = self.counts > 0
        if bool(rated.all()):
            return allowed
        return rated if allowed is None else allowed & rated

    def similar(self, movie: str | int, n: int = 10, *, min_ratings: int = 20) -> dict[str, Any]:
        """The ``n`` movies nearest to ``movie`` (title or MovieLens id) by the learned movie vectors, among
        those with at least ``min_ratings`` training ratings (the vectors of rarely rated movies are mostly
        noise): ``{"movie_id", "title", "similar": rows}``, rows' ``score`` being the cosine similarity."""
        from movierec import recommend as rec

        if min_ratings < 0:
            raise MovierecError(f"The minimum number of ratings must be 0 or more, not {min_ratings}.")
        item = self.find(movie)
        if self.counts[item] == 0 and not self.lists_unrated:
            raise MovierecError(f"{self.catalogue.title(item)} has no training ratings, so {self.meta.name} has "
                                "learned nothing about it; a model that knows movies by their features can tell "
                                "(`movierec train hybrid`).")
        if self._unit is None:  # kept: a server answers many questions from one model
            self._unit = rec.unit_rows(self.scorer.item_vectors())
        items, sims = rec.similar_to(self.scorer, item, _count(n), counts=self.counts,
                                     allowed=self.counts >= min_ratings, unit=self._unit)
        rows = [{"rank": r, "movie_id": int(self.catalogue.item_ids[i]), **self.catalogue.movie(i),
                 "score": round(float(s), 4)} for r, (i, s) in enumerate(zip(items, sims), 1)]
        return {"movie_id": int(self.catalogue.item_ids[item]), "title": self.catalogue.title(item), "similar": rows}

    def search(self, query: str, n: int = 10) -> list[dict[str, Any]]:
        """Movies whose titles match ``query`` as people type it (see :meth:`TitleIndex.search`), each with its
        number of training ratings: ``[{"movie_id", "title", "year", "genres", "ratings"}]``."""
        hits = self._titles().search(query, _count(n), self.counts)
        return [{"movie_id": int(self.catalogue.item_ids[i]), **self.catalogue.movie(i),
                 "ratings": int(self.counts[i])} for i in hits]

    def find(self, movie: str | int) -> int:
        """The movie index of ``movie``: a MovieLens id (int) or what a person types (see TitleIndex.find)."""
        if isinstance(movie, str) and movie.strip().isdigit():  # an id: no need to read every title
            movie = int(movie.strip())
        if isinstance(movie, (int, np.integer)) and not isinstance(movie, bool):
            return self.catalogue.item_index(int(movie))
        if not isinstance(movie, str):
            raise MovierecError(f"A movie is a title or a MovieLens id, not {movie!r}.")
        return self._titles().find(movie)

    def resolve_ratings(
        self, ratings: Mapping[str | int, Any] | Iterable[tuple[str | int, Any]], *, allow_none: bool = False
    ) -> tuple[list[int], list[float]]:
        """Movie indices and stars of a new user's ``ratings`` (see :meth:`recommend_new`); the last rating of a
        movie named twice wins. Stars must be numbers on the model's scale. None at all is an error unless
        ``allow_none``."""
        pairs = list(ratings.items() if isinstance(ratings, Mapping) else ratings)
        if not pairs and not allow_none:
            raise MovierecError("No ratings were given; rate at least one movie.")
        lo, hi = min(self.meta.rating_values), max(self.meta.rating_values)
        chosen: dict[int, float] = {}
        for pair in pairs:
            if not isinstance(pair, (tuple, list)) or len(pair) != 2:
                raise MovierecError(f"A rating is a (movie, stars) pair, not {pair!r}.")
            movie, stars = pair
            value = _stars(stars)
            if value is None or not lo <= value <= hi:
                name = movie.strip() if isinstance(movie, str) else movie
                raise MovierecError(f"Rating {stars!r} for {name!r} is not a number of stars from {lo:g} to {hi:g}.")
            chosen[self.find(movie)] = value
        return list(chosen), list(chosen.values())

    def clusters(self, k: int = 10, *, top: int = 5, seed: int = 0) -> list[dict[str, Any]]:
        """The movies grouped by their learned vectors (k-means on unit vectors, seeded), largest group first:
        ``[{"cluster", "size", "genres" (the over-represented ones), "movies" (the ``top`` best-known titles)}]``."""
        from collections import Counter

        data = self.catalogue
        labels = self.cluster_labels(k, seed=seed)
        all_genres = Counter(g for i in range(data.n_items) for g in data.genres(i))
        clusters = []
        for c in range(int(labels.max()) + 1):
            members = np.flatnonzero(labels == c)
            # Best-known first; equal counts keep the lower index (a stable sort on the negated counts).
            order = members[np.argsort(-self.counts[members], kind="stable")]
            genres = Counter(g for i in members.tolist() for g in data.genres(i))
            # "Dominant" = over-represented here compared with the whole catalogue (lift), among genres
            # common enough in the cluster to matter; raw counts would name Drama and Comedy everywhere.
            size = int(members.size)
            lift = {g: (m / size) / (all_genres[g] / data.n_items) for g, m in genres.items() if m >= 0.1 * size}
            clusters.append({"size": size, "genres": sorted(lift, key=lambda g: -lift[g])[:3],
                             "movies": [data.title(i) for i in order[:top].tolist()]})
        return [{"cluster": m, **c} for m, c in enumerate(clusters, 1)]

    def cluster_labels(self, k: int = 10, *, seed: int = 0) -> np.ndarray:
        """Each movie's cluster (I,), numbered as :meth:`clusters` lists them: 0 the largest (equal sizes in
        k-means' order). k-means on the unit-length movie vectors, seeded."""
        import torch

        from movierec.recommend import kmeans

        vectors = torch.nn.functional.normalize(torch.from_numpy(self.scorer.item_vectors()).float(), dim=1)
        labels = kmeans(vectors, k, seed=seed)[0].numpy()
        sizes = np.bincount(labels, minlength=k)
        order = sorted((c for c in range(k) if sizes[c]), key=lambda c: -sizes[c])  # stable
        number = np.zeros(k, dtype=np.int64)
        number[order] = np.arange(len(order))
        return number[labels]

    def rows(self, picks: Sequence[Recommendation]) -> list[dict[str, Any]]:
        """Recommendations as JSON-able rows: ``rank`` (from 1), ``movie_id``, ``title``, ``year`` (None if
        unknown), ``genres``, ``score`` (what the model means, see :attr:`score_name`), ``because_you_liked``
        (the title of the movie the user rated 4 stars or more that is nearest to it, never itself; None when
        there is none)."""
        movies = self.catalogue
        return [{"rank": r, "movie_id": int(movies.item_ids[x.item]), **movies.movie(x.item),
                 "score": round(x.score, 4),
                 "predicted": None if x.predicted is None else round(x.predicted, 4),
                 "because_you_liked": movies.title(x.because) if x.because is not None else None}
                for r, x in enumerate(picks, 1)]

    @property
    def score_name(self) -> str:
        """What a row's score is, the number its list is ordered by: "match" (P(picked and liked), rating and
        like models), "predicted rating" / "like probability" (their checkpoints saved without a picks model)
        or "score" (top-N models)."""
        if self.scorer.ranks_by_picks:
            return "match"
        return self.predicted_name or "score"

    @property
    def predicted_name(self) -> str | None:
        """What a row's ``predicted`` is: "predicted rating", "like probability", or None (top-N models)."""
        return {ScoreKind.RATING: "predicted rating", ScoreKind.LIKE: "like probability"}.get(self.scorer.kind)

    @property
    def about_people(self) -> dict[str, list[str]]:
        """What a new user may say of themselves besides ratings (``recommend_new``'s ``person``), by field: the
        age bands, genders and occupations the model knows; empty for models that know nobody's."""
        return {} if self.side is None else self.side.choices()

    @property
    def lists_unrated(self) -> bool:
        """Whether lists may hold movies without training ratings (``include_unrated``)."""
        return self.side is not None and self.side.knows_movies

    def _titles(self) -> TitleIndex:
        if self._title_index is None:
            from movierec.data.titles import TitleIndex

            self._title_index = TitleIndex(self.catalogue, self.catalogue.titles())
        return self._title_index


def _count(n: int) -> int:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise MovierecError(f"The number of movies to list must be a whole number of 1 or more, not {n!r}.")
    return int(n)


def _listed(genres: Sequence[str] | str | None) -> list[str] | None:
    return [genres] if isinstance(genres, str) else (list(genres) if genres else None)


def _stars(value: Any) -> float | None:
    """``value`` as a finite number of stars (numbers and numeric text), else None."""
    if isinstance(value, bool):
        return None
    try:
        stars = float(value)
    except (TypeError, ValueError):
        return None
    return stars if math.isfinite(stars) else None
