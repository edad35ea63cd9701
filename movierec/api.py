"""The Python API: everything the command line does, for scripts and notebooks.

Raw MovieLens ids and titles go in and come out; tables are pandas DataFrames. The conventions are the
field's: implicit's ``recommend(user, n, filter_already_liked_items=True)`` and ``similar_items``,
Surprise's ``predict(user, movie)`` and :func:`cross_validate`. The command line is a thin layer over the same
functions, so a model answers the same from both (and from ``movierec serve``).

    >>> import movierec as mr
    >>> model = mr.train("als", dataset="ml-100k", factors=32)
    >>> model.recommend(42, n=10)
    >>> model.recommend_new({"Star Wars (1977)": 5, "Toy Story (1995)": 4})
    >>> mr.evaluate_models()

Errors are :class:`movierec.errors.MovierecError` (unknown user or movie: its subclass
:class:`~movierec.errors.NotFound`), each one sentence saying what went wrong.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeGuard

from movierec.device import DEFAULT_DEVICE
from movierec.errors import MovierecError
from movierec.options import DEFAULT_TEST_FRACTION, TrainingEvents, TrainOptions

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

    from movierec.data.dataset import Dataset
    from movierec.data.split import Split
    from movierec.models.base import ModelConfig
    from movierec.serving import Served
    from movierec.training import EpochReport, Fitted
    from movierec.tuning import TuneResult

# `evaluate_models` and `saved_models`, not `evaluate` and `models`: those are movierec's own modules.
__all__ = ["Model", "MovieLens", "cross_validate", "datasets", "evaluate_models", "fetch", "fit", "import_ratings",
           "load", "load_dataset", "model_config", "remove", "saved_models", "set_default", "train", "tune"]

_ROW_COLUMNS = ["rank", "movie_id", "title", "year", "genres", "score", "predicted", "because_you_liked"]
_SIMILAR_COLUMNS = ["rank", "movie_id", "title", "year", "genres", "score"]


# -- data ------------------------------------------------------------------------------------------------------
def fetch(name: str, *, from_file: str | Path | None = None, mirror: str | None = None, verify: bool = True,
          force: bool = False) -> dict[str, Any]:
    """Download (or import ``from_file``), verify, unpack and parse MovieLens release ``name``, as
    `movierec fetch` does; what is on disk, as a dict (name, path, verified, users, items, ratings, ...)."""
    from movierec.data import download

    return download.fetch(name, mirror=mirror, from_file=from_file, verify=verify, force=force).to_json()


def datasets() -> pd.DataFrame:
    """Every MovieLens release movierec knows, whether it is fetched, and its size (`movierec datasets`)."""
    import pandas as pd

    from movierec.data import download

    return pd.DataFrame([s.to_json() for s in download.list_datasets()])


class MovieLens:
    """A fetched MovieLens release: its ratings, movies and users as DataFrames, and its train/test splits."""

    def __init__(self, data: Dataset):
        self._data = data
        self.name: str = data.name

    def __repr__(self) -> str:
        d = self._data
        return f"<MovieLens {self.name}: {d.n_users:,} users, {d.n_items:,} movies, {len(d.ratings):,} ratings>"

    @property
    def ratings(self) -> pd.DataFrame:
        """Every rating: ``user_id``, ``movie_id`` (MovieLens ids), ``rating`` (stars), ``timestamp`` (seconds)."""
        return self._frame(self._data.ratings)

    @property
    def movies(self) -> pd.DataFrame:
        """The movies, indexed by ``movie_id``: ``title``, ``year`` and ``genres`` (a list)."""
        return self._data.movies.copy()

    @property
    def users(self) -> pd.DataFrame | None:
        """The users' demographics, indexed by ``user_id`` (ml-100k and ml-1m only; None elsewhere)."""
        return None if self._data.users is None else self._data.users.copy()

    @property
    def splits(self) -> tuple[str, ...]:
        """The names :meth:`split` takes: the release's official splits, then ``random`` and ``temporal``."""
        from movierec.data.split import valid_splits

        return valid_splits(self.name)

    def split(self, name: str | None = None, *, seed: int = 0, test_fraction: float = 0.1
              ) -> tuple[pd.DataFrame, pd.DataFrame]:
        """The training and test ratings of split ``name`` (default: ``u1`` on ml-100k, else ``random``),
        the same ones `movierec train --split` draws with the same seed."""
        from movierec.data.split import default_split, make_split

        chosen = make_split(self._data, name or default_split(self.name), seed=seed, test_fraction=test_fraction)
        return self._frame(chosen.train), self._frame(chosen.test)

    def _frame(self, ratings: Any) -> pd.DataFrame:
        import numpy as np
        import pandas as pd

        d = self._data

        def ids(names: tuple[str, ...] | None, numbers: Any, index: Any) -> Any:
            # An imported dataset's own string ids where it has them, else the (MovieLens) numbers.
            return numbers[index] if names is None else np.asarray(names, dtype=object)[index]

        return pd.DataFrame({"user_id": ids(d.user_names, d.user_ids, ratings.users),
                             "movie_id": ids(d.item_names, d.item_ids, ratings.items),
                             "rating": ratings.ratings, "timestamp": ratings.timestamps})


def load_dataset(source: str | Path | pd.DataFrame | None = None, *, name: str = "dataframe", **options: Any
                 ) -> MovieLens:
    """A fetched or imported dataset by name (default: the fetched one; with several, the most recently
    fetched), or your own ratings read in memory from a DataFrame or a file path (CSV, TSV, Parquet) with
    ``user``/``movieId``/``rating``/``timestamp``-like columns, called ``name``. ``options`` are
    :func:`import_ratings`' (``movies``, ``sep``, ``user_col``, ``item_col``, ``rating_col``, ``time_col``,
    ``scale``). Nothing is saved: pass the result (or the DataFrame) to :func:`train` as ``data=``."""
    from movierec.data.default import default_dataset
    from movierec.data.movielens import load_dataset as load

    if source is None or isinstance(source, str):
        if options:
            raise MovierecError(f"{', '.join(options)} apply to a DataFrame or a file, not to a dataset's name.")
        return MovieLens(load(source or default_dataset().name))
    from movierec.data.catalog import check_name
    from movierec.data.importing import read_dataset

    return MovieLens(read_dataset(source, name=check_name(name), **_read_options(**options)).dataset)


def import_ratings(name: str, source: str | Path | pd.DataFrame, *, force: bool = False, **options: Any
                   ) -> dict[str, Any]:
    """Save your own ratings (a CSV, TSV or Parquet file, or a DataFrame) as dataset ``name``, as
    `movierec import NAME FILE` does; every command and :func:`train` (``dataset=name``) can use it.
    ``options``: ``movies`` (titles and genres), ``sep``, ``user_col``, ``item_col``, ``rating_col``,
    ``time_col``, ``scale`` ("MIN,MAX[,STEP]"). Returns what was saved (users, items, ratings, scale...)."""
    from movierec.data.importing import import_ratings as run

    return run(name, source, force=force, **_read_options(**options)).to_json()


def _read_options(*, movies: Any = None, sep: str | None = None, user_col: str | None = None,
                  item_col: str | None = None, rating_col: str | None = None, time_col: str | None = None,
                  scale: Any = None, **unknown: Any) -> dict[str, Any]:
    from movierec.data.userfiles import Columns

    if unknown:
        raise MovierecError(f"Unknown option{'s' if len(unknown) > 1 else ''} for reading ratings: "
                            f"{', '.join(unknown)}; the options are movies, sep, user_col, item_col, rating_col, "
                            "time_col and scale.")
    return {"movies": movies, "sep": sep, "columns": Columns(user_col, item_col, rating_col, time_col), "scale": scale}


# -- models ----------------------------------------------------------------------------------------------------
class Model:
    """A saved model, loaded once and ready to answer (see :func:`load` and :func:`train`).

    Factor models (``mf``, ``als``) answer in numpy from their saved arrays; the others through torch.
    Movies are titles (forgiving about case, punctuation and the year: "star wars") or MovieLens ids.
    """

    def __init__(self, served: Served, fitted: Fitted | None = None):
        self._served = served
        self._fitted = fitted  # a model trained by :func:`fit`, not saved yet

    def __repr__(self) -> str:
        m = self._served.meta
        return f"<Model {m.name}: {m.model} {m.mode} on {m.dataset} ({m.split})>"

    def __enter__(self) -> Model:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Let go of the saved file (answers already returned stay valid)."""
        self._served.close()

    @property
    def name(self) -> str:
        return self._served.meta.name

    @property
    def saved(self) -> bool:
        """Whether the model is saved (:func:`load`, :func:`train`, :meth:`save`), not only in memory (:func:`fit`)."""
        return self._fitted is None

    def save(self, name: str | None = None) -> Model:
        """Save a model trained by :func:`fit` as ``name`` (default: the model's, ``als``, ``als-2``...), as
        :func:`train` would have, and return it loaded from there; the in-memory model keeps answering."""
        from movierec import checkpoint

        if self._fitted is None:
            raise MovierecError(f"{self.name} is already saved; a model from mr.fit() is the one to save.")
        meta = self._fitted.meta
        fresh = name is None
        if fresh:
            from movierec.models import model_entry

            name = checkpoint.default_name(meta.model, meta.mode, model_entry(meta.model).default_mode)
        with checkpoint.reserve(str(name), fresh=fresh) as path:
            self._fitted.save(path)
        return load(str(path))

    @property
    def info(self) -> dict[str, Any]:
        """Everything saved about the model: model, mode, config, dataset, split, seed, metrics, history..."""
        import dataclasses

        return dataclasses.asdict(self._served.meta)

    @property
    def metrics(self) -> dict[str, Any]:
        """The test split's metrics, measured once after training."""
        return dict(self._served.meta.metrics)

    @property
    def history(self) -> pd.DataFrame:
        """The training curve: one row per epoch, ``train_*`` and ``valid_*`` metrics and seconds."""
        import pandas as pd

        return pd.DataFrame([{"epoch": h["epoch"], **{f"train_{k}": v for k, v in h["train"].items()},
                              **{f"valid_{k}": v for k, v in (h.get("valid") or {}).items()},
                              "seconds": h["seconds"]} for h in self._served.meta.history])

    def recommend(  # noqa: PLR0913 -- the Python face of `recommend --user`: its options as keywords
            self, user: int | str | Iterable[int | str], n: int = 10, *, filter_already_liked_items: bool = True,
            genres: Sequence[str] | str | None = None, min_year: int | None = None, max_year: int | None = None,
            include_unrated: bool = False, as_arrays: bool = False) -> Any:
        """Top-``n`` movies for MovieLens user ``user`` (one of the training data), leaving out the movies they
        rated unless ``filter_already_liked_items=False``: ``rank``, ``movie_id``, ``title``, ``year``,
        ``genres``, ``score`` (what the list is ordered by: P(picked and liked) for rating and like models),
        ``predicted`` (the model's own stars or P(liked); None for top-N models), ``because_you_liked``.
        Filters: any of ``genres``, released within the years. Movies without training ratings are listed
        only with ``include_unrated`` (models that know movies by their features: ``hybrid``).

        ``user`` may be many users (a list, an array or a Series of ids): one frame of every list, a
        ``user_id`` column first and no ``because_you_liked``, scored a batch of users at a time. With
        ``as_arrays``: numpy arrays ``(movie_ids, scores)``, (n,) for one user or (users, n) for many, padded
        with -1 and NaN where fewer than ``n`` movies may be listed (implicit's ``recommend``)."""
        served = self._served
        if not as_arrays and (isinstance(user, (str, int)) or _is_integer(user)):
            one = user if isinstance(user, (str, int)) else int(user)  # a numpy integer
            return _rows(served.recommend(one, n, genres=genres, min_year=min_year, max_year=max_year,
                                          include_seen=not filter_already_liked_items,
                                          include_unrated=include_unrated))
        import numpy as np

        from movierec import batch

        index = batch.user_indices(served, user)
        allowed = served.allowed_movies(genres, min_year, max_year, include_unrated)
        parts = list(batch.lists(served, index, n, include_seen=not filter_already_liked_items, allowed=allowed))
        items = np.concatenate([b.items for b in parts]) if parts else np.zeros((0, n), dtype=np.int64)
        scores = np.concatenate([b.scores for b in parts]) if parts else np.zeros((0, n), dtype=np.float32)
        if as_arrays:
            ids = np.where(items >= 0, np.asarray(served.catalogue.item_ids)[items.clip(0)], -1)
            single = np.ndim(user) == 0  # type: ignore[arg-type]  # np.ndim takes any object; its stubs want arrays
            return (ids[0], scores[0]) if single else (ids, scores)
        predicted = (None if not parts or parts[0].predicted is None
                     else np.concatenate([b.predicted for b in parts if b.predicted is not None]))
        return _batch_rows(served, index, items, scores, predicted)

    def recommend_new(  # noqa: PLR0913 -- the Python face of `recommend --rate`: its options as keywords
            self, ratings: Mapping[str | int, float] | Iterable[tuple[str | int, float]] = (),
                      n: int = 10, *, shrink: float | None = None, genres: Sequence[str] | str | None = None,
                      min_year: int | None = None, max_year: int | None = None, age: int | None = None,
                      gender: str | None = None, occupation: str | None = None,
                      include_unrated: bool = False) -> pd.DataFrame:
        """Top-``n`` movies for someone new, from their ``ratings`` ({movie: stars}), without retraining.
        Rarely rated movies are ranked by scores shrunk towards neutral (``shrink``: the number of training
        ratings at which a movie keeps half its lead; default 8x the mean, 0 for vae and dae; 0 = off).
        Models that know people by them (``hybrid``, see :attr:`about_people`) also take the person's ``age``,
        ``gender`` and ``occupation``; then ``ratings`` may be empty, and the two combine."""
        person = {"age": age, "gender": gender, "occupation": occupation}
        return _rows(self._served.recommend_new(ratings, n, shrink=shrink, genres=genres, min_year=min_year,
                                                max_year=max_year, person=person, include_unrated=include_unrated))

    @property
    def about_people(self) -> dict[str, list[str]]:
        """What :meth:`recommend_new` may be told of a person, by field (``age`` bands, ``gender``,
        ``occupation``), as the model's release has them; empty for models that know nobody's."""
        return self._served.about_people

    def similar_items(self, movie: str | int, n: int = 10, *, min_ratings: int = 20) -> pd.DataFrame:
        """The ``n`` movies nearest to ``movie`` by the learned movie vectors (``score``: cosine similarity),
        among those with at least ``min_ratings`` training ratings."""
        return _rows(self._served.similar(movie, n, min_ratings=min_ratings)["similar"], _SIMILAR_COLUMNS)

    def predict(self, user: Any, movie: Any) -> Any:
        """What the model says of MovieLens user ``user`` and ``movie``: stars (clipped to the scale) for rating
        models, P(liked) for like/dislike models, a score that only orders movies for top-N models. A float for
        one pair; for lists (or arrays) of users and movies, pair by pair, a numpy array (one user or one movie
        goes with every one of the other)."""
        import numpy as np

        from movierec import batch

        served = self._served
        users, movies = batch.user_indices(served, user), batch.movie_indices(served, movie)
        one = np.ndim(user) == 0 and np.ndim(movie) == 0 and not isinstance(movie, (list, tuple))
        if users.size == 1 and movies.size != 1:
            users = np.repeat(users, movies.size)
        elif movies.size == 1 and users.size != 1:
            movies = np.repeat(movies, users.size)
        values = batch.predict(served, users, movies)
        return float(values[0]) if one else values

    def predict_frame(self, ratings: pd.DataFrame, *, user_col: str = "user_id", movie_col: str = "movie_id",
                      column: str = "prediction") -> pd.DataFrame:
        """``ratings`` (a DataFrame with a user and a movie column, such as :meth:`MovieLens.split`'s test
        frame) with the model's :meth:`predict` of each row added as ``column``."""
        import pandas as pd

        if not isinstance(ratings, pd.DataFrame):
            raise MovierecError(f"predict_frame takes a pandas DataFrame, not a {type(ratings).__name__}.")
        missing = [c for c in (user_col, movie_col) if c not in ratings.columns]
        if missing:
            raise MovierecError(f"The frame has no {missing[0]!r} column; its columns are "
                                f"{', '.join(map(str, ratings.columns))}.")
        out = ratings.copy()
        out[column] = self.predict(ratings[user_col].to_numpy(), ratings[movie_col].to_numpy()) if len(out) else []
        return out

    def factors(self) -> dict[str, Any]:
        """A factor model's (mf, als, hybrid) learned arrays in numpy: ``user_ids`` and ``item_ids`` (the MovieLens
        id of each row), ``user_factors`` (users, d), ``item_factors`` (movies, d), ``user_bias``, ``item_bias``
        and ``mean``; a rating model's score is ``user_factors[u] @ item_factors[i] + user_bias[u] +
        item_bias[i] + mean``."""
        import numpy as np

        return {"user_ids": np.asarray(self._served.user_ids), "item_ids": np.asarray(self._served.catalogue.item_ids),
                **self._served.factors()}

    @property
    def user_factors(self) -> np.ndarray:
        """Every user's learned vector, (users, d), row ``i`` for MovieLens user ``user_ids[i]``."""
        return self._served.factors()["user_factors"]

    @property
    def item_factors(self) -> np.ndarray:
        """Every movie's learned vector, (movies, d), row ``i`` for MovieLens movie ``item_ids[i]``."""
        return self._served.factors()["item_factors"]

    @property
    def user_ids(self) -> np.ndarray:
        """The MovieLens ids of the model's users, in the order of its rows (ascending)."""
        import numpy as np

        return np.asarray(self._served.user_ids)

    @property
    def item_ids(self) -> np.ndarray:
        """The MovieLens ids of the model's movies, in the order of its rows (ascending)."""
        import numpy as np

        return np.asarray(self._served.catalogue.item_ids)

    def search(self, query: str, n: int = 10) -> pd.DataFrame:
        """Movies whose titles match ``query`` as it is typed ("star wa"), best-known first, with ``ratings``
        (their number of training ratings)."""
        import pandas as pd

        return pd.DataFrame(self._served.search(query, n),
                            columns=["movie_id", "title", "year", "genres", "ratings"])

    def export(self, path: str | Path, *, users: Iterable[int] | None = None, n: int = 10,
               include_seen: bool = False, format: str | None = None) -> int:
        """Write the top-``n`` lists of every user (or of MovieLens ``users``) to a CSV or Parquet file
        (`movierec export`), scored in batches so memory stays bounded; the number of rows written."""
        from movierec.export import export_recommendations

        return export_recommendations(self._served, path, users=users, n=n, format=format,
                                      include_seen=include_seen)

    def plot_curves(self, path: str | Path) -> Path:
        """Draw the training curves to a PNG file (`movierec plot curves`; needs ``movierec[plot]``)."""
        from movierec.plot import plot_history

        return plot_history(self._served.meta, path).path

    def plot_map(self, path: str | Path, *, color_by: str = "cluster", k: int = 10, labels: int = 15,
                 seed: int = 0) -> Path:
        """Draw a 2-D map of the learned movie vectors to a PNG file, coloured by cluster or genre, the
        best-known movies labelled (`movierec plot map`; needs ``movierec[plot]``)."""
        from movierec.plot import plot_movie_map

        return plot_movie_map(self._served, path, color_by=color_by, k=k, labels=labels, seed=seed).path

    def clusters(self, k: int = 10, *, top: int = 5, seed: int = 0) -> pd.DataFrame:
        """The movies in ``k`` groups by their learned vectors (k-means, seeded), largest first, each with its
        over-represented genres and ``top`` best-known titles."""
        import pandas as pd

        return pd.DataFrame(self._served.clusters(k, top=top, seed=seed),
                            columns=["cluster", "size", "genres", "movies"])


def _rows(rows: list[dict[str, Any]], columns: list[str] = _ROW_COLUMNS) -> pd.DataFrame:
    import pandas as pd

    frame = pd.DataFrame(rows, columns=columns)
    return frame.astype({"year": "Int64"})


def _is_integer(value: object) -> TypeGuard[np.integer[Any]]:
    import numpy as np

    return isinstance(value, np.integer)


def _batch_rows(served: Served, index: np.ndarray, items: np.ndarray, scores: np.ndarray,
                predicted: np.ndarray | None) -> pd.DataFrame:
    """Many users' lists (:func:`movierec.batch.lists`, padded) as one frame, a row per listed movie."""
    import numpy as np
    import pandas as pd

    listed = items >= 0
    rows, ranks = np.nonzero(listed)
    picked = items[listed]
    catalogue = served.catalogue
    names = served.user_names
    ids = np.asarray(served.user_ids) if names is None else np.asarray(names, dtype=object)
    user_ids = ids[index[rows]]
    movies = [catalogue.movie(int(i)) for i in picked.tolist()]
    frame = pd.DataFrame({
        "user_id": user_ids, "rank": ranks + 1, "movie_id": np.asarray(catalogue.item_ids)[picked],
        "title": [m["title"] for m in movies], "year": [m["year"] for m in movies],
        "genres": [m["genres"] for m in movies], "score": scores[listed].astype(np.float64),
        "predicted": None if predicted is None else predicted[listed].astype(np.float64),
    })
    return frame.astype({"year": "Int64"})


def load(name: str | None = None, *, device: str = DEFAULT_DEVICE) -> Model:
    """The saved model ``name`` (a name, any unique beginning of one, or a path; default: the one
    pinned with :func:`set_default`, else the newest)."""
    from movierec.loading import open_model

    return Model(open_model(name, device))


def model_config(model: str, mode: str | None = None, **settings: Any) -> ModelConfig:
    """The settings of ``model`` in ``mode`` (default: its default mode): its defaults, with ``settings``
    changed, checked; a frozen dataclass that prints every option. Train with it: ``train(model, config=...)``."""
    from movierec.models import model_class

    cls = model_class(model, mode).config_class
    try:
        return cls.from_dict(settings)
    except (TypeError, ValueError) as exc:
        raise MovierecError(f"Invalid {model} settings: {exc}.") from None


def train(  # noqa: PLR0913 -- the Python face of `movierec train`: TrainOptions' fields as keywords
    model: str,
    dataset: str | None = None,
    *,
    data: pd.DataFrame | MovieLens | None = None,
    config: ModelConfig | Mapping[str, Any] | None = None,
    mode: str | None = None,
    split: str | None = None,
    test_fraction: float = DEFAULT_TEST_FRACTION,
    seed: int = 0,
    device: str = DEFAULT_DEVICE,
    patience: int | None = None,
    valid_fraction: float | None = None,
    name: str | None = None,
    train: pd.DataFrame | None = None,
    test: pd.DataFrame | None = None,
    progress: Callable[[EpochReport], None] | None = None,
    **settings: Any,
) -> Model:
    """Train ``model`` (``rbm``, ``autoencoder``, ``mf`` or ``als``) on a fetched dataset, save it and return it
    loaded: `movierec train MODEL`, the same options by the same names (``factors=32``, ``epochs=10``...).

    The test split is scored once, after training; early stopping (``patience``) reads a validation slice of
    the training ratings. ``progress`` is called after every epoch with its report (epoch, train and
    validation metrics, seconds). Without ``name`` the model is saved as ``als``, ``als-2``, ...
    ``config``: a :func:`model_config` (its class says the mode) or a dict; ``settings`` override it.
    ``data``: your own ratings instead of a dataset's name, a DataFrame (read as :func:`load_dataset` reads
    one) or a :func:`load_dataset` result; the model saved from them answers `recommend` and `serve`, and
    `evaluate` once the same ratings are imported under the same name (:func:`import_ratings`).
    ``train`` and ``test``: a split of your own, two DataFrames with user and movie columns (such as
    :meth:`MovieLens.split`'s, changed as you like): of ``dataset``'s ratings, or, without one, the ratings
    themselves; saved as split ``own``, which `evaluate` cannot draw again (:meth:`Model.predict_frame` scores it).
    """
    from movierec.training import train_and_save

    options, in_memory, own = _training(model, dataset, data, (train, test), config=config, mode=mode, split=split,
                                        test_fraction=test_fraction, seed=seed, device=device, patience=patience,
                                        valid_fraction=valid_fraction, name=name, **settings)
    outcome = train_and_save(options, _EpochListener(progress), data=in_memory, split=own)
    return load(str(outcome.path))


def fit(  # noqa: PLR0913 -- :func:`train`'s options as keywords
    model: str,
    dataset: str | pd.DataFrame | MovieLens | None = None,
    *,
    data: pd.DataFrame | MovieLens | None = None,
    config: ModelConfig | Mapping[str, Any] | None = None,
    mode: str | None = None,
    split: str | None = None,
    test_fraction: float = DEFAULT_TEST_FRACTION,
    seed: int = 0,
    device: str = DEFAULT_DEVICE,
    patience: int | None = None,
    valid_fraction: float | None = None,
    train: pd.DataFrame | None = None,
    test: pd.DataFrame | None = None,
    progress: Callable[[EpochReport], None] | None = None,
    **settings: Any,
) -> Model:
    """Train ``model`` as :func:`train` does, with the same options, and return it in memory, saving nothing:
    it answers at once, and :meth:`Model.save` saves it (as :func:`train` would have)."""
    from movierec.loading import serve_fitted
    from movierec.training import train_unsaved

    options, in_memory, own = _training(model, dataset, data, (train, test), config=config, mode=mode, split=split,
                                        test_fraction=test_fraction, seed=seed, device=device, patience=patience,
                                        valid_fraction=valid_fraction, name=None, **settings)
    fitted = train_unsaved(options, _EpochListener(progress), data=in_memory, split=own)
    return Model(serve_fitted(fitted, options.device), fitted)


def _training(model: str, dataset: Any, data: Any, own: tuple[Any, Any], **options: Any
              ) -> tuple[TrainOptions, Dataset | None, Split | None]:
    """:func:`train`'s and :func:`fit`'s options checked, the ratings given in memory (``data``, or a frame or
    dataset given where a dataset's name goes) read, and the split of one's own (``own``: the train and test
    frames, or two Nones) made."""
    if dataset is not None and not isinstance(dataset, str):
        if data is not None:
            raise MovierecError("Give the ratings once: a dataset's name as dataset=, or your own as data=.")
        dataset, data = None, dataset  # a DataFrame or a loaded dataset, given where a name goes
    in_memory = None
    if data is not None:
        import pandas as pd

        if dataset is not None:
            raise MovierecError("Give the ratings once: a dataset's name as dataset=, or your own as data=.")
        if isinstance(data, pd.DataFrame):
            data = load_dataset(data)
        if not isinstance(data, MovieLens):
            raise MovierecError(f"data= takes a pandas DataFrame of ratings or a load_dataset() result, not a "
                                f"{type(data).__name__}.")
        in_memory = data._data
    train_frame, test_frame = own
    if train_frame is None and test_frame is None:
        return train_options(model, dataset, **options), in_memory, None
    if train_frame is None or test_frame is None:
        raise MovierecError("A split of your own is two DataFrames: give both train= and test=.")
    if options.get("split") is not None:
        raise MovierecError("Give a split by its name (split=) or as your own ratings (train= and test=), not both.")
    from movierec.data.importing import pairs_of
    from movierec.data.split import own_split

    if in_memory is None and dataset is None:  # the two frames are the ratings
        import pandas as pd

        in_memory = load_dataset(pd.concat([train_frame, test_frame], ignore_index=True))._data
    elif in_memory is None:
        in_memory = load_dataset(dataset)._data
    options = {**options, "seed": options.get("seed", 0)}
    chosen = own_split(in_memory, pairs_of(in_memory, train_frame, "training"), pairs_of(in_memory, test_frame, "test"),
                       seed=options["seed"])
    return train_options(model, None, **options), in_memory, chosen


def train_options(model: str, dataset: str | None = None, *, config: ModelConfig | Mapping[str, Any] | None = None,
                  **options: Any) -> TrainOptions:
    """The :class:`~movierec.options.TrainOptions` of a run: ``options`` are its fields (mode, split, seed,
    device, patience, ...); any other keyword is a model setting, overriding ``config``'s."""
    fields = {f.name for f in dataclasses.fields(TrainOptions)}
    settings = {k: options.pop(k) for k in list(options) if k not in fields}
    # A config's class gives its mode; TrainOptions turns a ModelConfig into its settings on creation.
    chosen = TrainOptions(model, config=config or {}, dataset=dataset, **options)  # type: ignore[arg-type]
    return chosen.replace(config={**chosen.config, **settings}) if settings else chosen


class _EpochListener(TrainingEvents):
    """Tells ``progress`` of every epoch's report, nothing else."""

    def __init__(self, progress: Callable[[EpochReport], None] | None):
        self.progress_epoch = progress

    def epoch(self, report: EpochReport) -> None:
        if self.progress_epoch is not None:
            self.progress_epoch(report)


def cross_validate(model: str, dataset: str | None = None, *, folds: int | None = None, mode: str | None = None,
                   seed: int = 0, device: str = DEFAULT_DEVICE, patience: int | None = None,
                   valid_fraction: float | None = None, **settings: Any) -> pd.DataFrame:
    """k-fold cross-validation (`movierec cv`): ml-100k's official u1..u5 by default, else ``folds`` seeded
    random folds (5); nothing is saved. One row per fold (``fold``, its test metrics, ``fit_seconds``), then
    ``mean`` and ``std`` rows (population standard deviation, as Surprise reports it)."""
    from movierec.crossval import cross_validate as run

    options = train_options(model, dataset, mode=mode, seed=seed, device=device, patience=patience,
                            valid_fraction=valid_fraction, **settings)
    return run(options, folds).to_frame()


def tune(  # noqa: PLR0913 -- the Python face of `movierec tune`: its options as keywords
    model: str,
    dataset: str | None = None,
    *,
    trials: int | None = None,
    timeout: float | None = None,
    metric: str | None = None,
    storage: str | None = None,
    study: str | None = None,
    seed: int = 0,
    mode: str | None = None,
    split: str | None = None,
    device: str = DEFAULT_DEVICE,
    patience: int | None = None,
    valid_fraction: float | None = None,
    save: str | None = None,
    **fixed_settings: Any,
) -> TuneResult:
    """Search ``model``'s settings for the best ``metric`` on a validation slice of the split's training ratings
    (`movierec tune MODEL`; needs ``movierec[tune]``): ``trials`` more trials and/or for ``timeout`` seconds
    (neither: 20), added to the stored study (default: one per model, mode, dataset and split in the home; any
    Optuna ``storage`` URL or ``journal:PATH`` lets several processes share it). ``fixed_settings`` stay as given
    (``epochs=5``). The result's ``trials`` is a DataFrame of every trial, ``best`` the best configuration (a dict
    for :func:`train`) and ``best_value`` its value; ``save`` trains that configuration and saves it under this
    name, as :func:`train` does. The test split is never read."""
    from movierec.tuning import save_best
    from movierec.tuning import tune as run

    options = train_options(model, dataset, mode=mode, split=split, seed=seed, device=device, patience=patience,
                            **fixed_settings)
    result = run(options, trials=trials, timeout=timeout, metric=metric, storage=storage, study=study,
                 valid_fraction=valid_fraction)
    if save is not None:
        save_best(result, options, save)
    return result


def saved_models() -> pd.DataFrame:
    """The saved models, oldest first (`movierec models`): name, model, mode, dataset, split, created, epochs,
    metrics, config, path, which is the newest and which the default everywhere (:func:`set_default`, else the
    newest)."""
    import pandas as pd

    from movierec import checkpoint

    return pd.DataFrame(checkpoint.describe_all(checkpoint.list_checkpoints()),
                        columns=["name", "model", "mode", "dataset", "split", "path", "created", "epochs",
                                 "fit_seconds", "metrics", "config", "newest", "default"])


def set_default(name: str | None) -> str | None:
    """Pin the saved model ``name`` (or its unique beginning) as the default of every command and of
    :func:`load` when no model is named (`movierec models --default NAME`); ``None`` removes the pin, so the
    newest is the default again. Returns the full name pinned (None when unpinned)."""
    from movierec import checkpoint

    return checkpoint.set_default(name)


def remove(name: str) -> None:
    """Delete the saved model called ``name`` (an exact name)."""
    from movierec import checkpoint

    checkpoint.remove(name)


def evaluate_models(names: Sequence[str] | str | None = None, *, k: int = 10, relevance: float | None = None,
             device: str = DEFAULT_DEVICE, baselines: bool = True) -> pd.DataFrame:
    """Rating and ranking metrics of saved models on their test splits, next to the baselines of each split
    (`movierec evaluate`): one row per model. ``names``: saved names or model names (the newest of that
    model); default every model tested on the same split as the newest one."""
    import pandas as pd

    from movierec.device import resolve_device
    from movierec.evaluate import evaluate_checkpoints

    if isinstance(names, str):
        names = [names]
    if k < 1:
        raise MovierecError(f"K must be at least 1, not {k}.")
    return pd.DataFrame(evaluate_checkpoints(list(names) if names else None, k=k, relevance=relevance,
                                             device=resolve_device(device), baselines=baselines))
