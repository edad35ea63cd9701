"""Splits: the official ml-100k ones, seeded random holdout, per-user temporal holdout."""

from __future__ import annotations

import zipfile

import numpy as np
import pytest
from synthetic import synthetic_dataset

from movierec import paths
from movierec.data import movielens as ml
from movierec.data.dataset import Dataset
from movierec.data.ratings import Ratings
from movierec.data.split import SPLIT_NAMES, Split, default_split, make_split, valid_splits, validation_slice
from movierec.errors import MovierecError


def rows(r: Ratings) -> np.ndarray:
    """Each rating as one row (user, item, stars*2, timestamp), for set comparisons."""
    return np.stack(
        [r.users.astype(np.int64), r.items, (r.ratings * 2).astype(np.int64), r.timestamps], axis=1
    )


def assert_partition(split: Split, full: Ratings) -> None:
    """train and test are disjoint and together are exactly the full ratings (as multisets of rows)."""
    assert split.train.n_users == split.test.n_users == full.n_users
    assert split.train.n_items == split.test.n_items == full.n_items
    both = np.concatenate([rows(split.train), rows(split.test)])
    assert len(both) == len(full)
    a = both[np.lexsort(both.T[::-1])]
    b = rows(full)[np.lexsort(rows(full).T[::-1])]
    np.testing.assert_array_equal(a, b)
    pairs = lambda r: set(zip(r.users.tolist(), r.items.tolist(), strict=True))  # noqa: E731
    assert not pairs(split.train) & pairs(split.test)


def test_names_and_defaults():
    assert default_split("ml-100k") == "u1"
    assert default_split("ml-1m") == default_split("ml-25m") == "random"
    assert valid_splits("ml-100k") == ("u1", "u2", "u3", "u4", "u5", "ua", "ub", "random", "temporal", "none")
    assert valid_splits("ml-1m") == ("random", "temporal", "none")
    assert set(valid_splits("ml-100k")) == set(SPLIT_NAMES)


@pytest.mark.parametrize("fraction", [0.1, 0.0])  # --test-fraction does not apply: nothing is held out
def test_split_none_trains_on_every_rating(fraction):
    d = synthetic_dataset()
    s = make_split(d, "None", seed=3, test_fraction=fraction)
    assert s.name == "none" and s.seed == 3 and not s.has_test
    assert len(s.test) == 0 and (s.test.n_users, s.test.n_items) == (d.n_users, d.n_items)
    np.testing.assert_array_equal(rows(s.train), rows(d.ratings))
    assert make_split(d, "random", seed=3).has_test


def test_random_holdout():
    d = synthetic_dataset()
    s = make_split(d, "random", seed=7, test_fraction=0.25)
    assert s.name == "random" and s.seed == 7
    assert len(s.test) == round(0.25 * len(d.ratings))
    assert_partition(s, d.ratings)
    again = make_split(d, "Random", seed=7, test_fraction=0.25)
    np.testing.assert_array_equal(rows(again.test), rows(s.test))
    np.testing.assert_array_equal(rows(again.train), rows(s.train))
    other = make_split(d, "random", seed=8, test_fraction=0.25)
    assert not np.array_equal(rows(other.test), rows(s.test))


def test_temporal_holdout():
    d = synthetic_dataset()
    r = d.ratings
    s = make_split(d, "temporal", seed=0, test_fraction=0.2)
    assert_partition(s, r)
    counts = np.bincount(r.users, minlength=d.n_users)
    n_train = np.bincount(s.train.users, minlength=d.n_users)
    n_test = np.bincount(s.test.users, minlength=d.n_users)
    assert n_test[0] == 0 and n_train[0] == 1  # a single rating stays in train
    assert n_test[1] == 1 and n_train[1] == 1  # two ratings: one each
    many = counts >= 2
    assert (n_test[many] >= 1).all() and (n_train[many] >= 1).all()
    np.testing.assert_array_equal(
        n_test[many], np.clip(np.floor(0.2 * counts[many] + 0.5), 1, counts[many] - 1)
    )
    for u in np.flatnonzero(n_test):
        assert s.test.timestamps[s.test.users == u].min() >= s.train.timestamps[s.train.users == u].max()
    # Ties on the boundary go by file position: a later line counts as newer.
    position = {tuple(row): i for i, row in enumerate(rows(r).tolist())}
    boundary_ties = 0
    for u in np.flatnonzero(n_test):
        boundary = s.test.timestamps[s.test.users == u].min()
        tied_train = [
            position[tuple(x)]
            for x in rows(s.train.take((s.train.users == u) & (s.train.timestamps == boundary))).tolist()
        ]
        tied_test = [
            position[tuple(x)]
            for x in rows(s.test.take((s.test.users == u) & (s.test.timestamps == boundary))).tolist()
        ]
        if tied_train and tied_test:
            boundary_ties += 1
            assert max(tied_train) < min(tied_test)
    assert boundary_ties > 0  # the data does exercise the tie-break
    again = make_split(d, "temporal", seed=5, test_fraction=0.2)
    np.testing.assert_array_equal(rows(again.test), rows(s.test))


def test_bad_names_and_fractions():
    d = synthetic_dataset("ml-1m")
    with pytest.raises(
        MovierecError, match="Unknown split 'kfold'; for ml-1m choose one of: random, temporal"
    ):
        make_split(d, "kfold")
    with pytest.raises(
        MovierecError, match="official split of another dataset; for ml-1m choose one of: random"
    ):
        make_split(d, "u1")
    for fraction in (0.0, 1.0, -0.1, 1.5):
        with pytest.raises(MovierecError, match="between 0 and 1"):
            make_split(d, "random", test_fraction=fraction)


@pytest.mark.parametrize(
    ("split", "fraction", "missing"),
    [("random", 1e-9, "no test ratings; use a larger --test-fraction"),
     ("random", 0.9999999, "no training ratings; use a smaller --test-fraction")],
)
def test_an_empty_half_is_refused(split, fraction, missing):
    d = synthetic_dataset("ml-1m")
    with pytest.raises(MovierecError) as exc:
        make_split(d, split, test_fraction=fraction)
    text = str(exc.value)
    assert text.startswith(f"The {split} split of ml-1m ({len(d.ratings):,} ratings) with --test-fraction ")
    assert missing in text and "\n" not in text


def test_a_three_rating_dataset_has_no_test_split():
    d = synthetic_dataset("ml-1m")
    tiny = Dataset(d.name, d.ratings.take(np.arange(len(d.ratings)) < 3), d.user_ids, d.item_ids, d.movies,
                      None, d.fingerprint, d.rating_values, d.path)
    with pytest.raises(MovierecError, match=r"^The random split of ml-1m \(3 ratings\) .* has no test ratings"):
        make_split(tiny, "random")
    # Each user's latest rating goes to test only when they have two: one rating each leaves test empty.
    one_each = Dataset(d.name, d.ratings.take(np.unique(d.ratings.users, return_index=True)[1]), d.user_ids,
                          d.item_ids, d.movies, None, d.fingerprint, d.rating_values, d.path)
    with pytest.raises(MovierecError, match="temporal split .* has no test ratings"):
        make_split(one_each, "temporal")


def test_validation_slice_is_seeded_and_comes_from_training_only():
    d = synthetic_dataset()
    split = make_split(d, "random", seed=0, test_fraction=0.2)
    rest, valid = validation_slice(split.train, 0.1, seed=0)
    assert len(valid) == round(0.1 * len(split.train)) and len(rest) + len(valid) == len(split.train)
    assert_partition(Split("v", rest, valid, 0), split.train)  # a partition of the training ratings
    test_pairs = set(zip(split.test.users.tolist(), split.test.items.tolist()))
    assert not test_pairs & set(zip(valid.users.tolist(), valid.items.tolist()))
    again = validation_slice(split.train, 0.1, seed=0)[1]
    np.testing.assert_array_equal(rows(again), rows(valid))
    other = validation_slice(split.train, 0.1, seed=1)[1]
    assert not np.array_equal(rows(other), rows(valid))


@pytest.mark.parametrize(("fraction", "fragment"), [(0.0, "between 0 and 1"), (1.0, "between 0 and 1"),
                                                      (1e-9, "leaves no validation ratings")])
def test_validation_slice_refuses_useless_fractions(fraction, fragment):
    with pytest.raises(MovierecError, match=fragment):
        validation_slice(synthetic_dataset().ratings, fraction)


@pytest.fixture
def ml100k(home, ml100k_zip) -> Dataset:
    target = paths.dataset_dir("ml-100k")
    target.mkdir(parents=True)
    with zipfile.ZipFile(ml100k_zip) as z:
        z.extractall(target)
    return ml.load_dataset("ml-100k")


def test_official_ml100k_splits(ml100k):
    d = ml100k
    u1 = make_split(d, "u1")
    assert (len(u1.train), len(u1.test)) == (80000, 20000)
    assert_partition(u1, d.ratings)
    # u1..u5 test folds are disjoint and cover all 100,000 ratings.
    folds = [make_split(d, f"u{k}").test for k in range(1, 6)]
    all_tests = np.concatenate([rows(f) for f in folds])
    assert len(np.unique(all_tests[:, :2], axis=0)) == 100000
    ua = make_split(d, "ua")
    assert len(ua.test) == 9430
    assert (np.bincount(ua.test.users, minlength=d.n_users) == 10).all()
    assert_partition(ua, d.ratings)
    # Indices are the dataset's: the first line of u1.base is user 1 rating movie 1 five stars.
    assert (d.user_ids[u1.train.users[0]], d.item_ids[u1.train.items[0]], u1.train.ratings[0]) == (1, 1, 5)


def test_official_split_file_missing_or_foreign(ml100k):
    folder = ml.extracted_dir("ml-100k")
    (folder / "u3.test").unlink()
    with pytest.raises(MovierecError, match="u3.test is missing"):
        make_split(ml100k, "u3")
    (folder / "u4.base").write_text("1\t1\t5\t874965758\n99999\t1\t5\t874965758\n")
    with pytest.raises(MovierecError, match="user 99999 of movie 1"):
        make_split(ml100k, "u4")
    (folder / "u5.base").write_text("1\t1\t5\t874965758\n1\t1\t5\n")
    with pytest.raises(MovierecError, match="u5.base line 2 is malformed"):
        make_split(ml100k, "u5")
