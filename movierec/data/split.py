"""Train/test splits of a parsed release: the official ml-100k splits, seeded random and temporal holdout.

Both halves of a :class:`Split` live in the dataset's index space (same ``n_users`` / ``n_items``), so a
model trained on ``train`` scores ``test`` without any id translation.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from movierec.data.catalog import get_dataset_info
from movierec.data.dataset import Dataset
from movierec.data.movielens import read_ratings_file
from movierec.data.ratings import Ratings
from movierec.data.registry import NO_TEST_SPLIT, OFFICIAL_SPLITS
from movierec.errors import MovierecError

SPLIT_NAMES: dict[str, str] = {
    "u1": "ml-100k's official 80/20 split u1.base/u1.test (five disjoint test folds u1..u5)",
    "u2": "ml-100k's official 80/20 split u2.base/u2.test",
    "u3": "ml-100k's official 80/20 split u3.base/u3.test",
    "u4": "ml-100k's official 80/20 split u4.base/u4.test",
    "u5": "ml-100k's official 80/20 split u5.base/u5.test",
    "ua": "ml-100k's official split ua.base/ua.test: exactly 10 ratings of every user in test",
    "ub": "ml-100k's official split ub.base/ub.test: another 10 ratings of every user in test",
    "random": "a seeded random holdout of --test-fraction of all ratings",
    "temporal": "each user's latest --test-fraction of ratings in test (at least one when they have two)",
    NO_TEST_SPLIT: "nothing held out: every rating trains the model (a final model, with no test metrics)",
}
"""Every split name and what it holds; :func:`valid_splits` says which apply to a dataset."""

GENERATED_SPLITS = ("random", "temporal")

OFFICIAL_FOLDS: dict[str, tuple[str, ...]] = {"ml-100k": ("u1", "u2", "u3", "u4", "u5")}
"""Releases that come with official cross-validation folds: disjoint test sets covering every rating once."""


@dataclass(frozen=True, eq=False)
class Split:
    """Training and test ratings of one dataset, in its index space. The split :data:`NO_TEST_SPLIT` has an
    empty ``test``: whatever tests a model asks ``has_test`` (nothing else needs to know the split's name)."""

    name: str
    train: Ratings
    test: Ratings
    seed: int
    """The seed that drew the split (recorded but unused by the official splits)."""

    @property
    def has_test(self) -> bool:
        """Whether any rating was held out to test on (not for :data:`NO_TEST_SPLIT`)."""
        return len(self.test) > 0


OWN_SPLIT = "own"
"""The name a split of the user's own is saved under (``mr.train(..., train=df, test=df)``): it cannot be drawn
again, so what needs the split again (evaluate, cross-validation) says so."""


def own_split(dataset: Dataset, train: tuple[np.ndarray, np.ndarray], test: tuple[np.ndarray, np.ndarray],
              seed: int = 0) -> Split:
    """The split the user made: ``dataset``'s ratings of the (user index, movie index) pairs ``train`` and
    ``test`` (two (N,) arrays each). A pair on both sides, a pair that is not one of the dataset's ratings, or
    an empty side is one sentence; ratings on neither side are left out."""
    ratings, n_items = dataset.ratings, dataset.n_items
    keys = ratings.users.astype(np.int64) * n_items + ratings.items.astype(np.int64)  # (R,) distinct
    sides = [np.unique(u.astype(np.int64) * n_items + i.astype(np.int64)) for u, i in (train, test)]
    both = np.intersect1d(sides[0], sides[1], assume_unique=True)
    if both.size:
        raise MovierecError(f"{both.size:,} (user, movie) pairs are in both the training and the test ratings; "
                            "a split puts each rating on one side.")
    for side, what in zip(sides, ("training", "test")):
        if side.size == 0:
            raise MovierecError(f"The {what} ratings are empty; a split needs ratings on both sides.")
        unknown = np.setdiff1d(side, keys, assume_unique=True)
        if unknown.size:
            user, item = divmod(int(unknown[0]), n_items)
            raise MovierecError(
                f"{unknown.size:,} of the {what} (user, movie) pairs are not ratings of {dataset.name}, "
                f"such as user {dataset.user_ids[user]} and movie {dataset.item_ids[item]}."
            )
    in_train, in_test = np.isin(keys, sides[0]), np.isin(keys, sides[1])
    return Split(OWN_SPLIT, ratings.take(in_train), ratings.take(in_test), int(seed))


def valid_splits(dataset_name: str) -> tuple[str, ...]:
    """The split names that apply to ``dataset_name``: its official ones, then random and temporal, then
    :data:`NO_TEST_SPLIT`."""
    return OFFICIAL_SPLITS.get(_key(dataset_name), ()) + GENERATED_SPLITS + (NO_TEST_SPLIT,)


def default_split(dataset_name: str) -> str:
    """The split results are reported on: ``u1`` for ml-100k (as in the literature), else ``random``."""
    return "u1" if _key(dataset_name) == "ml-100k" else "random"


def _key(dataset_name: str) -> str:
    # Only releases have official splits; any other name (imported, or ratings held in memory) has none, and
    # need not be on disk to be split.
    return dataset_name.strip().lower()


def make_split(dataset: Dataset, name: str, seed: int = 0, test_fraction: float = 0.1) -> Split:
    """Split ``dataset``'s ratings into train and test by the split called ``name``.

    ``seed`` and ``test_fraction`` apply to ``random`` and ``temporal``; the same seed gives the same split.
    A split with no test or no training ratings is refused with one sentence (nothing could be measured),
    except :data:`NO_TEST_SPLIT`, whose training ratings are all of them and whose test is empty by design.
    """
    key = name.strip().lower()
    valid = valid_splits(dataset.name)
    if key == OWN_SPLIT:
        raise MovierecError(
            f"The split of {dataset.name} is one you gave (train= and test=), which movierec cannot draw again; "
            "score its test ratings with model.predict_frame(test), or train on a named split."
        )
    if key not in valid:
        if key in SPLIT_NAMES:
            raise MovierecError(
                f"Split {name!r} is an official split of another dataset; for {dataset.name} choose one of: "
                f"{', '.join(valid)}."
            )
        raise MovierecError(f"Unknown split {name!r}; for {dataset.name} choose one of: {', '.join(valid)}.")
    if key in GENERATED_SPLITS and not 0.0 < test_fraction < 1.0:
        raise MovierecError(f"The test fraction must be between 0 and 1 (exclusive), not {test_fraction}.")
    if key == "random":
        train, test = _random_holdout(dataset.ratings, seed, test_fraction)
    elif key == "temporal":
        train, test = _temporal_holdout(dataset.ratings, test_fraction)
    elif key == NO_TEST_SPLIT:
        every = dataset.ratings
        return Split(key, every, every.take(np.zeros(len(every), dtype=bool)), int(seed))
    else:
        train, test = _official(dataset, key)
    for part, what, fix in ((test, "test", "larger"), (train, "training", "smaller")):
        if len(part) == 0:
            how = f" with --test-fraction {test_fraction:g}" if key in GENERATED_SPLITS else ""
            hint = f"; use a {fix} --test-fraction" if key in GENERATED_SPLITS else ""
            raise MovierecError(
                f"The {key} split of {dataset.name} ({len(dataset.ratings):,} ratings){how} has no {what} "
                f"ratings{hint}."
            )
    return Split(key, train, test, int(seed))


def official_folds(dataset_name: str) -> tuple[str, ...]:
    """The official cross-validation folds of ``dataset_name`` (u1..u5 for ml-100k), else ()."""
    return OFFICIAL_FOLDS.get(_key(dataset_name), ())


def fold_of_ratings(n: int, folds: int, seed: int = 0) -> np.ndarray:
    """The fold (0..folds-1) of each of ``n`` ratings: (n,) int64, a seeded random assignment in which the
    folds' sizes differ by at most one. The same seed gives the same folds; every rating is in exactly one."""
    if folds < 2:
        raise MovierecError(f"Cross-validation needs at least 2 folds, not {folds}.")
    if folds > n:
        raise MovierecError(f"{folds:,} folds is more than the {n:,} ratings there are to split into them.")
    rng = np.random.default_rng([int(seed), 2])  # its own stream: not the random holdout's nor the validation's
    fold = np.empty(n, dtype=np.int64)
    fold[rng.permutation(n)] = np.arange(n, dtype=np.int64) % folds
    return fold


def fold_split(
    dataset: Dataset, fold: int, folds: int, seed: int = 0, assignment: np.ndarray | None = None
) -> Split:
    """Fold ``fold`` (1-based) of ``folds`` seeded random folds of ``dataset``'s ratings: that fold's ratings
    are the test split, the others the training split. Named ``"fold 2/5"``. ``assignment`` is
    :func:`fold_of_ratings` of the dataset, when the caller drew it already (it does not change the result)."""
    if not 1 <= fold <= folds:
        raise MovierecError(f"Fold {fold} does not exist: the folds are numbered 1 to {folds}.")
    if assignment is None:
        assignment = fold_of_ratings(len(dataset.ratings), folds, seed)
    in_test = assignment == fold - 1
    return Split(f"fold {fold}/{folds}", dataset.ratings.take(~in_test), dataset.ratings.take(in_test), int(seed))


def validation_slice(train: Ratings, fraction: float, seed: int = 0) -> tuple[Ratings, Ratings]:
    """Carve a seeded random ``fraction`` of the training ratings out as a validation slice.

    Returns (the rest, the slice). Anything that chooses by a metric (early stopping, the epoch to keep)
    reads the slice, so the test split stays untouched until the one report at the end. The draw is
    seeded by ``seed`` but independent of the random test holdout drawn with the same seed.
    """
    if not 0.0 < fraction < 1.0:
        raise MovierecError(f"The validation fraction must be between 0 and 1 (exclusive), not {fraction}.")
    n = len(train)
    n_valid = int(round(fraction * n))
    if n_valid == 0 or n_valid == n:
        raise MovierecError(
            f"A validation fraction of {fraction:g} of {n:,} training ratings leaves "
            f"{'no validation' if n_valid == 0 else 'no training'} ratings; choose another --valid-fraction."
        )
    rng = np.random.default_rng([int(seed), 1])  # its own stream: not the test holdout's permutation
    in_valid = np.zeros(n, dtype=bool)
    in_valid[rng.permutation(n)[:n_valid]] = True
    return train.take(~in_valid), train.take(in_valid)


def _random_holdout(ratings: Ratings, seed: int, fraction: float) -> tuple[Ratings, Ratings]:
    n = len(ratings)
    n_test = int(round(fraction * n))
    rng = np.random.default_rng(seed)
    in_test = np.zeros(n, dtype=bool)
    in_test[rng.permutation(n)[:n_test]] = True
    # Boolean masks keep both halves in the original order of the ratings file.
    return ratings.take(~in_test), ratings.take(in_test)


def _temporal_holdout(ratings: Ratings, fraction: float) -> tuple[Ratings, Ratings]:
    n = len(ratings)
    users = ratings.users.astype(np.int64)
    order = _by_user_then_time(users, ratings.timestamps)  # (N,) positions, each user's ratings oldest first
    counts = np.bincount(users, minlength=ratings.n_users)  # (U,)
    # Round half up so 15 ratings at 10% give 2 test ratings, not banker's-rounded ones; keep >= 1 in train.
    n_test = np.floor(fraction * counts + 0.5).astype(np.int64)
    n_test = np.where(counts >= 2, np.clip(n_test, 1, counts - 1), 0)  # (U,)
    starts = np.concatenate(([0], np.cumsum(counts)[:-1]))  # (U,) first slot of each user in ``order``
    sorted_users = users[order]
    rank_from_end = counts[sorted_users] - (np.arange(n) - starts[sorted_users])  # 1 = user's latest rating
    in_test = np.zeros(n, dtype=bool)
    in_test[order[rank_from_end <= n_test[sorted_users]]] = True
    return ratings.take(~in_test), ratings.take(in_test)


def _by_user_then_time(users: np.ndarray, timestamps: np.ndarray) -> np.ndarray:
    """Positions sorted by (user, timestamp), equal timestamps in file order (a stable sort)."""
    t = timestamps.astype(np.int64)
    t_min, t_span = (int(t.min()), int(t.max()) - int(t.min()) + 1) if len(t) else (0, 1)
    if (int(users.max()) + 1 if len(users) else 1) <= np.iinfo(np.int64).max // t_span:
        # One stable sort of a combined int64 key is several times faster than lexsort on two keys.
        return np.argsort(users * t_span + (t - t_min), kind="stable")
    return np.lexsort((t, users))


def _official(dataset: Dataset, key: str) -> tuple[Ratings, Ratings]:
    info = get_dataset_info(dataset.name)
    folder = dataset.path / info.folder
    return _read_official(dataset, folder / f"{key}.base"), _read_official(dataset, folder / f"{key}.test")


def _read_official(dataset: Dataset, path: Path) -> Ratings:
    if not path.is_file():
        raise MovierecError(
            f"{path} is missing: the official split files come with the extracted {dataset.name} release; "
            f"run `movierec fetch {dataset.name}` again."
        )
    users, items, stars, times = read_ratings_file(path, "\t", header=False, scale=dataset.rating_values)
    user_index = _ids_to_index(dataset.user_ids, users)
    item_index = _ids_to_index(dataset.item_ids, items)
    unknown = (user_index < 0) | (item_index < 0)
    if unknown.any():
        first = int(np.argmax(unknown))
        raise MovierecError(
            f"{path} has a rating by user {users[first]} of movie {items[first]}, which {dataset.name}'s "
            "ratings do not have: the split files do not belong to this release."
        )
    return Ratings(
        user_index.astype(np.int32),
        item_index.astype(np.int32),
        stars,
        times,
        dataset.n_users,
        dataset.n_items,
    )


def _ids_to_index(sorted_ids: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """Index of each id in ``sorted_ids``, -1 where it is absent."""
    pos = np.searchsorted(sorted_ids, ids)  # (N,)
    clipped = np.minimum(pos, len(sorted_ids) - 1)
    return np.where(sorted_ids[clipped] == ids, clipped, -1)
