"""User-facing lists: ordered by raw scores, ties to the better-known movie, stars shown clipped."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch_lists import new_user_list as recommend_new_user
from torch_lists import similar_list as similar
from torch_lists import user_list as recommend

from movierec.data.ratings import RatingMatrix, Ratings
from movierec.errors import MovierecError
from movierec.models.base import ModelConfig, Recommender, Trainer
from movierec.recommend import explain, item_counts, neutral_score, rank_items, shrink_rare

STARS = (1.0, 2.0, 3.0, 4.0, 5.0)


class NothingToLearn(Trainer):
    """The trainer of a model that answers from a fixed table: an epoch changes nothing."""

    def train_epoch(self) -> dict[str, float]:
        return {"loss": 0.0}


class Fixed(Recommender):
    """Every user gets the same raw scores ``row``; movie vectors are ``vectors``."""

    name = "fixed"
    config_class = ModelConfig

    def __init__(self, row, kind: str = "rating", vectors=None):
        row = torch.as_tensor(row, dtype=torch.float32)
        super().__init__(ModelConfig(), 4, row.shape[0], STARS)
        self.register_buffer("row", row)
        self._kind = kind
        self.vectors = torch.eye(row.shape[0]) if vectors is None else torch.as_tensor(vectors, dtype=torch.float32)

    @property
    def kind(self) -> str:
        return self._kind

    def trainer(self, train: RatingMatrix, generator: torch.Generator) -> Trainer:
        return NothingToLearn(self, train, generator)

    def score(self, users: torch.Tensor, train: RatingMatrix) -> torch.Tensor:
        return self.row.expand(users.shape[0], -1).clone()

    def item_vectors(self):
        return self.vectors

    def fold_in(self, items, ratings):
        return self.row.clone()


def train_with_counts(counts: list[int], n_users: int = 8) -> RatingMatrix:
    """Users 0..counts[i]-1 rate movie i, so movie i has counts[i] training ratings; the last user rates
    nothing (keep every count below ``n_users``)."""
    users, items = [], []
    for item, c in enumerate(counts):
        users += list(range(c))
        items += [item] * c
    n = len(users)
    return Ratings(np.array(users, np.int32), np.array(items, np.int32), np.full(n, 3.0, np.float32),
                   np.zeros(n, np.int64), n_users, len(counts)).matrix()


COUNTS = [1, 1, 3, 6, 0, 3]
RAW = [6.0, 7.0, 5.0, 5.0, 2.0, 5.0]  # m1 > m0 > {m2, m3, m5 tied} > m4


def test_known_user_lists_rank_raw_scores_and_break_ties_by_training_ratings():
    train = train_with_counts(COUNTS)
    assert item_counts(train).tolist() == COUNTS
    recs = recommend(Fixed(RAW), train, user=7, n=6)  # user 7 rated nothing
    # 7 and 6 stars both predict 5.0 on the scale, but keep their order; among the 5s: m3 (6 ratings), then m2
    # and m5 (3 each) by index; m4 last. The score shown is the one ranked by, the stars beside it.
    assert [r.item for r in recs] == [1, 0, 3, 2, 5, 4]
    assert [r.score for r in recs] == [7.0, 6.0, 5.0, 5.0, 5.0, 2.0]
    assert [r.predicted for r in recs] == [5.0, 5.0, 5.0, 5.0, 5.0, 2.0]


def test_new_user_lists_follow_the_same_rule():
    recs = recommend_new_user(Fixed(RAW), train_with_counts(COUNTS), torch.tensor([1]), torch.tensor([5.0]), n=3,
                              shrink=0)
    assert [r.item for r in recs] == [0, 3, 2]  # m1 is theirs already


def test_new_user_lists_shrink_rarely_rated_movies():
    counts = torch.tensor([1, 50, 2, 40])
    # K = 10: prior 3 + lead * n / (n + 10): m0 3 + 2 * 1/11, m1 3 + 1 * 50/60, m2 3 + 1.5 * 2/12, m3 3 - 1 * 40/50
    shrunk = shrink_rare(torch.tensor([5.0, 4.0, 4.5, 2.0]), counts, 10.0, 3.0)
    assert shrunk.tolist() == pytest.approx([3 + 2 / 11, 3 + 50 / 60, 3 + 0.25, 3 - 0.8])
    assert shrink_rare(torch.tensor([5.0, 1.0]), counts[:2], 0.0, 3.0).tolist() == [5.0, 1.0]

    # Movie 4 is predicted best but only one person rated it: shrunk, the well-known movie 3 comes first.
    raw = [1.0, 1.0, 1.0, 4.5, 4.9, 1.0]
    train = train_with_counts([6, 6, 6, 6, 1, 6])  # mean 3 stars, 31/6 ratings per movie
    model = Fixed(raw)
    assert neutral_score(model, train) == pytest.approx(3.0)
    unshrunk = recommend_new_user(model, train, torch.tensor([0]), torch.tensor([5.0]), n=2, shrink=0)
    assert [r.item for r in unshrunk] == [4, 3]
    default = recommend_new_user(model, train, torch.tensor([0]), torch.tensor([5.0]), n=2)  # K = 8 x 31/6
    assert [r.item for r in default] == [3, 4]
    k = 8 * 31 / 6
    assert 3 + 1.5 * 6 / (6 + k) > 3 + 1.9 / (1 + k)  # why: 4.5 stars from 6 ratings beat 4.9 from one
    # The number shown is the one ranked by (in order); the model's prediction is beside it.
    assert [r.score for r in default] == pytest.approx([3 + 1.5 * 6 / (6 + k), 3 + 1.9 / (1 + k)])
    assert [r.predicted for r in default] == [4.5, pytest.approx(4.9)]
    with pytest.raises(MovierecError, match="--shrink must be 0 or more"):
        recommend_new_user(model, train, torch.tensor([0]), torch.tensor([5.0]), shrink=-1)


def test_like_and_rank_models_show_their_own_numbers():
    probs = [0.2, 0.9, 0.5, 0.5, 0.1, 0.7]
    recs = recommend(Fixed(probs, kind="like"), train_with_counts(COUNTS), user=7, n=3)
    assert [(r.item, r.score) for r in recs] == [(1, pytest.approx(0.9)), (5, pytest.approx(0.7)),
                                                 (3, pytest.approx(0.5))]
    recs = recommend(Fixed([12.0, -3.0, 8.0, 0.0, 0.0, 0.0], kind="rank"), train_with_counts(COUNTS), user=7, n=2)
    assert [(r.item, r.score) for r in recs] == [(0, 12.0), (2, 8.0)]  # a rank score is not clipped


def test_similar_movies_break_ties_by_training_ratings():
    vectors = [[1, 0], [1, 0], [1, 0], [0, 1], [1, 0], [1, 0]]  # m1, m2, m4, m5 equally close to m0
    items, sims = similar(Fixed(RAW, vectors=vectors), 0, n=4, counts=torch.tensor(COUNTS))
    assert items == [2, 5, 1, 4] and sims == pytest.approx([1.0, 1.0, 1.0, 1.0])


def test_rank_items_respects_exclusions_and_refuses_nan():
    scores = torch.tensor([1.0, 3.0, 3.0, 2.0])
    exclude = torch.tensor([False, True, False, False])
    assert rank_items(scores, 10, exclude, torch.tensor([0, 0, 0, 0])).tolist() == [2, 3, 0]
    with pytest.raises(MovierecError, match="NaN"):
        rank_items(torch.tensor([1.0, float("nan")]), 1, torch.zeros(2, dtype=torch.bool), torch.zeros(2))


# -- explanations ------------------------------------------------------------------------------------------
VECTORS = np.array([[1, 0], [0.9, 0.1], [0, 1], [0.1, 0.9], [1, 1]], np.float32)


def test_explanations_come_from_four_stars_or_more_and_never_from_the_movie_itself():
    rated, stars = np.array([0, 2, 3]), np.array([4.0, 3.5, 5.0], np.float32)  # half stars: 3.5 is not liked
    # m1 is nearest m0 (4 stars); m2 nearest itself, rated 3.5 -> the liked m3; m0 and m3 (seen, listed with
    # --include-seen) are explained by the other liked movie, not by themselves; m4 leans to m3 (cos .78 > .71).
    assert explain(VECTORS, np.array([1, 2, 0, 3, 4]), rated, stars) == [0, 3, 3, 0, 3]
    # Nothing of 4 stars or more: no reason, rather than the best of the rest.
    assert explain(VECTORS, np.array([1, 2]), rated, np.array([3.5, 3.0, 1.0], np.float32)) == [None, None]
    # The only liked movie is the one recommended: nothing else explains it.
    assert explain(VECTORS, np.array([3, 1]), np.array([3]), np.array([4.5], np.float32)) == [None, 3]
    assert explain(VECTORS, np.array([1]), np.array([], np.int64), np.array([], np.float32)) == [None]


def test_lists_explain_with_liked_movies_only():
    model = Fixed(RAW, vectors=np.eye(6) + 0.1)
    train = Ratings(np.array([7, 7], np.int32), np.array([1, 3], np.int32), np.array([4.0, 3.0], np.float32),
                    np.zeros(2, np.int64), 8, 6).matrix()
    recs = recommend(model, train, user=7, n=6, include_seen=True)
    because = {r.item: r.because for r in recs}
    assert because[1] is None  # its only liked movie is itself
    assert all(b == 1 for i, b in because.items() if i != 1)  # the 3-star movie explains nothing
