"""The evaluation protocol on tiny hand-built splits, with fake models whose scores are fixed tables.

The tiny example (3 users x 5 movies), used throughout:

    train   u0: m0=5 m1=3        u1: m0=4 m2=2        u2: m1=1          (mean 3.0)
    test    u0: m2=4 m3=2        u1: m1=5 m4=4        u2: m3=3

With relevance 4, u0's relevant movies are {m2}, u1's are {m1, m4}; u2 has none and is skipped.
"""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
import torch

from movierec import metrics
from movierec.data.ratings import RatingMatrix, Ratings
from movierec.errors import MovierecError
from movierec.evaluate import GlobalMeanBaseline, PopularityBaseline, evaluate, heldout_metrics
from movierec.models.base import ModelConfig, Recommender, Trainer

L2_3 = math.log2(3)


def ratings(rows: list[tuple[int, int, float]], n_users: int = 3, n_items: int = 5) -> Ratings:
    users, items, stars = zip(*rows, strict=True) if rows else ((), (), ())
    return Ratings(
        np.array(users, dtype=np.int32), np.array(items, dtype=np.int32), np.array(stars, dtype=np.float32),
        np.zeros(len(rows), dtype=np.int64), n_users, n_items,
    )


TRAIN = ratings([(0, 0, 5), (0, 1, 3), (1, 0, 4), (1, 2, 2), (2, 1, 1)])
TEST = ratings([(0, 2, 4), (0, 3, 2), (1, 1, 5), (1, 4, 4), (2, 3, 3)])

# Training movies get the highest scores (9) so that any leak of seen movies into a list would cost hits.
STARS = [
    [9, 9, 4.0, 3.0, 1.0],  # u0 ranks m2, m3 (m4): list [2, 3], hit at rank 1
    [9, 2.0, 9, 5.0, 3.0],  # u1 ranks m3, m4 (m1): list [3, 4], hit at rank 2
    [0, 9, 0, 3.5, 0],
]
PROBS = [
    [0.9, 0.9, 0.7, 0.6, 0.1],
    [0.9, 0.2, 0.9, 0.8, 0.55],
    [0.1, 0.9, 0.3, 0.4, 0.2],
]


class NothingToLearn(Trainer):
    """The trainer of a model that answers from a fixed table: an epoch changes nothing."""

    def train_epoch(self) -> dict[str, float]:
        return {"loss": 0.0}


class TableModel(Recommender):
    """A fake model: ``score`` reads a fixed (users x movies) table; records every batch it is asked for."""

    name = "table"
    config_class = ModelConfig

    def __init__(self, table, kind: str = "rating", like_threshold: float | None = None):
        table = torch.as_tensor(table, dtype=torch.float32)
        super().__init__(ModelConfig(), table.shape[0], table.shape[1], (1.0, 2.0, 3.0, 4.0, 5.0))
        self.register_buffer("table", table)
        self._kind, self._like_threshold = kind, like_threshold
        self.batches: list[int] = []
        self.modes: list[bool] = []

    @property
    def kind(self) -> str:
        return self._kind

    @property
    def like_threshold(self) -> float | None:
        return self._like_threshold

    def score(self, users: torch.Tensor, train: RatingMatrix) -> torch.Tensor:
        self.batches.append(int(users.shape[0]))
        self.modes.append(self.training)
        return self.table[users]

    def trainer(self, train: RatingMatrix, generator: torch.Generator) -> Trainer:
        return NothingToLearn(self, train, generator)

    def item_vectors(self):
        return self.table.T

    def fold_in(self, items, ratings):
        return self.table.mean(0)


def run(model, train=TRAIN, test=TEST, **kw):
    return evaluate(model, train.matrix(), test, **kw)


RANKING_KEYS = ("precision@2", "recall@2", "ndcg@2", "hit@2", "map@2", "coverage@2")
EXPECTED_RANKING = {  # u0: [m2, m3] relevant {m2}; u1: [m3, m4] relevant {m1, m4}
    "precision@2": (1 / 2 + 1 / 2) / 2,
    "recall@2": (1 + 1 / 2) / 2,
    "ndcg@2": (1 + (1 / L2_3) / (1 + 1 / L2_3)) / 2,
    "hit@2": 1.0,
    "map@2": (1 + (1 / 2) / 2) / 2,
    "coverage@2": 3 / 5,  # m2, m3, m4
}


def test_rating_model_every_metric_by_hand():
    out = run(TableModel(STARS), k=2)
    # Test pairs predicted 4, 3, 2, 3, 3.5 against 4, 2, 5, 4, 3: errors 0, 1, -3, -1, 0.5.
    assert out["rmse"] == pytest.approx(math.sqrt(11.25 / 5))
    assert out["mae"] == pytest.approx(5.5 / 5)
    # Liked (>= 3 stars): T F T T T; predicted liked (>= 3): T T F T T -> 3 of 5 right.
    assert out["accuracy"] == pytest.approx(0.6)
    assert out["like_error"] == pytest.approx(0.4)
    # The one disliked pair scores 3; positives 4 (above), 2 (below), 3 (tie, half), 3.5 (above).
    assert out["auc"] == pytest.approx(2.5 / 4)
    for key, value in EXPECTED_RANKING.items():
        assert out[key] == pytest.approx(value), key
    assert out["users"] == 2 and out["ratings"] == 5
    assert set(out) == {"rmse", "mae", "like_error", "accuracy", "auc", *RANKING_KEYS, "users", "ratings"}


def test_like_model_uses_its_own_threshold_and_has_no_rating_metrics():
    out = run(TableModel(PROBS, kind="like", like_threshold=4.0), k=2, like_threshold=3.0)
    assert out["rmse"] is None and out["mae"] is None
    # Liked by the model's threshold (>= 4): T F T T F; P(liked) at the pairs .7 .6 .2 .55 .4.
    assert out["accuracy"] == pytest.approx(0.6)
    assert out["like_error"] == pytest.approx(0.4)
    assert out["auc"] == pytest.approx(3 / 6)  # positives .7 .2 .55 vs negatives .6 .4
    for key, value in EXPECTED_RANKING.items():
        assert out[key] == pytest.approx(value), key


def test_rating_model_threshold_argument_applies_when_model_has_none():
    out = run(TableModel(STARS), k=2, like_threshold=4.0)
    # Liked (>= 4): T F T T F; predicted liked (>= 4): T F F F F -> 3 of 5 right.
    assert out["accuracy"] == pytest.approx(0.6)


def test_popularity_baseline_by_hand():
    model = PopularityBaseline(TRAIN.matrix())
    assert model.counts.tolist() == [2, 2, 1, 0, 0]
    out = run(model, k=2)
    assert out["rmse"] is None and out["mae"] is None and out["like_error"] is None and out["accuracy"] is None
    # u0 unseen m2 (1), m3 (0), m4 (0): list [2, 3] -- m3 before m4 by the tie-break; hit at rank 1.
    # u1 unseen m1 (2), m3 (0), m4 (0): list [1, 3]; relevant {m1, m4}: hit at rank 1.
    assert out["precision@2"] == pytest.approx(0.5)
    assert out["recall@2"] == pytest.approx((1 + 0.5) / 2)
    assert out["ndcg@2"] == pytest.approx((1 + 1 / (1 + 1 / L2_3)) / 2)
    assert out["hit@2"] == 1.0
    assert out["map@2"] == pytest.approx((1 + 0.5) / 2)
    assert out["coverage@2"] == pytest.approx(3 / 5)
    # AUC from popularity at the pairs (1, 0, 2, 0, 0), the one disliked pair scoring 0: (1 + 1 + .5 + .5) / 4.
    assert out["auc"] == pytest.approx(0.75)


def test_global_mean_baseline_by_hand():
    model = GlobalMeanBaseline(TRAIN.matrix())
    assert model.mean == pytest.approx(3.0)
    out = run(model, k=2)
    # Errors 1, -1, 2, 1, 0.
    assert out["rmse"] == pytest.approx(math.sqrt(7 / 5))
    assert out["mae"] == pytest.approx(1.0)
    for key in ("like_error", "accuracy", "auc", *RANKING_KEYS):
        assert out[key] is None, key
    assert out["users"] == 2 and out["ratings"] == 5


def test_baselines_predict_like_they_score():
    train = TRAIN.matrix()
    users, items = torch.tensor([0, 2, 1]), torch.tensor([3, 1, 0])
    assert PopularityBaseline(train).predict(users, items, train).tolist() == [0, 2, 2]
    assert GlobalMeanBaseline(train).predict(users, items, train).tolist() == [3.0, 3.0, 3.0]
    assert PopularityBaseline(train).score(torch.tensor([0, 1]), train).shape == (2, 5)


def test_users_without_a_relevant_test_movie_are_skipped():
    model = TableModel(STARS)
    assert run(model, k=2)["users"] == 2  # u2's only test rating (3) is below relevance 4
    # With relevance 3, u2 (list [m3, m0], relevant {m3}) is ranked too.
    out = run(model, k=2, relevance=3.0)
    assert out["users"] == 3
    assert out["hit@2"] == 1.0
    assert out["precision@2"] == pytest.approx((1 / 2 + 1 / 2 + 1 / 2) / 3)
    # Nobody has a relevant movie: no ranking metric, but the pointwise ones still apply.
    out = run(model, k=2, relevance=6.0)
    assert out["users"] == 0
    assert all(out[key] is None for key in RANKING_KEYS)
    assert out["rmse"] == pytest.approx(1.5)


def test_skipped_users_and_relevance_are_not_scored_for_ranking():
    # Only u0 has a relevant test movie, so its list alone decides the ranking metrics.
    test = ratings([(0, 2, 4), (1, 1, 2), (2, 3, 1)])
    out = run(TableModel(STARS), test=test, k=1)
    assert out["users"] == 1 and out["precision@1"] == 1.0 and out["coverage@1"] == pytest.approx(1 / 5)


def test_seen_movies_never_listed_and_short_lists_padded():
    # K = 4 but u0 has only 3 unrated movies: the empty slot counts as a miss, never as a training movie.
    out = run(TableModel(STARS), k=4)
    # u0 list [2, 3, 4, -]: 1 hit; u1 list [3, 4, 1, -]: 2 hits.
    assert out["precision@4"] == pytest.approx((1 / 4 + 2 / 4) / 2)
    assert out["recall@4"] == pytest.approx(1.0)
    # m1..m4 are listed; m0 (a training movie of both ranked users, score 9) never is.
    assert out["coverage@4"] == pytest.approx(4 / 5)


def test_constant_scores_rank_by_movie_index():
    out = run(TableModel(torch.full((3, 5), 3.0)), k=1)
    # Lists: u0 -> m2 (relevant), u1 -> m1 (relevant).
    assert out["precision@1"] == 1.0 and out["coverage@1"] == pytest.approx(2 / 5)
    assert out["auc"] == 0.5


@pytest.mark.parametrize("batch_users", [1, 2, 3, 512])
def test_batch_size_changes_nothing_and_bounds_every_score_call(batch_users):
    model = TableModel(STARS)
    out = run(model, k=2, batch_users=batch_users)
    assert out == run(TableModel(STARS), k=2, batch_users=512)
    assert max(model.batches) <= batch_users
    assert sum(model.batches) == 3  # each test user scored once


def test_random_split_matches_a_plain_python_reference():
    """Ranking metrics of a random model against a loop-by-loop reimplementation of the protocol."""
    rng = random.Random(7)
    n_users, n_items, k = 40, 30, 5
    pairs = rng.sample([(u, i) for u in range(n_users) for i in range(n_items)], 500)
    rows = [(u, i, float(rng.randint(1, 5))) for u, i in pairs]
    train, test = ratings(rows[:350], n_users, n_items), ratings(rows[350:], n_users, n_items)
    table = torch.randint(0, 4, (n_users, n_items), generator=torch.Generator().manual_seed(3)).float()

    seen = {(u, i) for u, i, _ in rows[:350]}
    relevant: dict[int, set[int]] = {}
    for u, i, r in rows[350:]:
        if r >= 4:
            relevant.setdefault(u, set()).add(i)
    totals = {"precision": 0.0, "recall": 0.0, "hit": 0.0}
    listed: set[int] = set()
    for u, rel in relevant.items():
        unseen = [i for i in range(n_items) if (u, i) not in seen]
        ranked = sorted(unseen, key=lambda i: (-float(table[u, i]), i))[:k]
        listed.update(ranked)
        hits = sum(i in rel for i in ranked)
        totals["precision"] += hits / k
        totals["recall"] += hits / len(rel)
        totals["hit"] += float(hits > 0)

    for batch_users in (7, 512):
        out = run(TableModel(table), train=train, test=test, k=k, batch_users=batch_users)
        assert out["users"] == len(relevant)
        for name, total in totals.items():
            assert out[f"{name}@{k}"] == pytest.approx(total / len(relevant)), name
        assert out[f"coverage@{k}"] == pytest.approx(len(listed) / n_items)


def test_empty_test_split_gives_none_everywhere():
    out = run(TableModel(STARS), test=ratings([]), k=3)
    assert out["users"] == 0 and out["ratings"] == 0
    assert all(v is None for key, v in out.items() if key not in ("users", "ratings"))


def test_bad_inputs_are_one_clear_error():
    with pytest.raises(MovierecError, match="K must be"):
        run(TableModel(STARS), k=0)
    with pytest.raises(MovierecError, match="batch size"):
        run(TableModel(STARS), batch_users=0)
    with pytest.raises(MovierecError, match="does not match"):
        run(TableModel(STARS), test=ratings([(0, 1, 4)], n_users=3, n_items=6))
    nan_model = TableModel([[math.nan] * 5] * 3)
    with pytest.raises(MovierecError, match="NaN"):
        run(nan_model)


def test_model_is_scored_in_eval_mode_and_its_mode_restored():
    model = TableModel(STARS)
    model.train()
    run(model, k=2)
    heldout_metrics(model, TRAIN.matrix(), TEST)
    assert model.modes and not any(model.modes)
    assert model.training


def test_heldout_metrics_for_rating_and_like_models():
    out = heldout_metrics(TableModel(STARS), TRAIN.matrix(), TEST)
    assert out == pytest.approx({"rmse": math.sqrt(11.25 / 5), "mae": 1.1})
    out = heldout_metrics(TableModel(PROBS, kind="like", like_threshold=4.0), TRAIN.matrix(), TEST)
    assert out == pytest.approx({"like_error": 0.4, "accuracy": 0.6, "auc": 0.5})
    # All test ratings liked: AUC is undefined and reported as NaN so the dict stays all floats.
    out = heldout_metrics(TableModel(PROBS, kind="like", like_threshold=1.0), TRAIN.matrix(), TEST)
    assert math.isnan(out["auc"]) and out["accuracy"] == pytest.approx(3 / 5)
    # Ranking-only models are validated by the ranking protocol, the same numbers evaluate() gives.
    pop = PopularityBaseline(TRAIN.matrix())
    full = evaluate(pop, TRAIN.matrix(), TEST, k=10)
    out = heldout_metrics(pop, TRAIN.matrix(), TEST)
    assert set(out) == {"ndcg@10", "recall@10"}
    assert out["ndcg@10"] == pytest.approx(full["ndcg@10"]) and out["recall@10"] == pytest.approx(full["recall@10"])


def test_heldout_and_evaluate_agree_on_pointwise_metrics():
    model = TableModel(STARS)
    quick, full = heldout_metrics(model, TRAIN.matrix(), TEST), run(model)
    assert quick["rmse"] == pytest.approx(full["rmse"]) and quick["mae"] == pytest.approx(full["mae"])


def test_metric_functions_are_what_evaluate_averages():
    # One user, list [m2, m3]: evaluate's per-user average equals the metric functions' value.
    topk = torch.tensor([[2, 3]])
    rel = torch.zeros((1, 5), dtype=torch.bool)
    rel[0, 2] = True
    out = run(TableModel(STARS), test=ratings([(0, 2, 4)]), k=2)
    assert out["ndcg@2"] == pytest.approx(float(metrics.ndcg_at_k(topk, rel)[0]))
    assert out["map@2"] == pytest.approx(float(metrics.average_precision_at_k(topk, rel)[0]))


# Raw scores outside the 1..5 scale, as a rating model's ``score`` returns them (unclipped by contract).
RAW = [
    [9, 9, 7.0, 6.0, 1.0],  # u0: m2 above m3, both above the scale
    [9, 0.0, 9, 5.5, 6.5],  # u1: m4 above m3 -- clipped, both would be 5 and m3 (lower index) would come first
    [0, 9, 0, 3.0, 0],
]


def test_stars_are_clamped_to_the_scale_but_movies_are_ranked_by_raw_scores():
    out = run(TableModel(RAW), k=1)
    # Clamped predictions 5, 5, 1, 5, 3 against 4, 2, 5, 4, 3: errors 1, 3, -4, 1, 0.
    assert out["rmse"] == pytest.approx(math.sqrt(27 / 5))
    assert out["mae"] == pytest.approx(9 / 5)
    assert out["accuracy"] == pytest.approx(0.6)  # liked calls from the clamped stars (>= 3): T T F T T
    # AUC orders raw scores: the disliked pair scores 6; positives 7 (above), 0, 6.5 (above), 3 -> 2 of 4.
    assert out["auc"] == pytest.approx(0.5)
    # Top-1: u0 -> m2 (relevant), u1 -> m4 (relevant, 6.5 > 5.5); clipping would have listed m3 for u1.
    assert out["hit@1"] == pytest.approx(1.0)
    held = heldout_metrics(TableModel(RAW), TRAIN.matrix(), TEST)
    assert held == {"rmse": pytest.approx(out["rmse"]), "mae": pytest.approx(out["mae"])}


def _random_case(seed: int, n_users: int = 60, n_items: int = 40, ties: bool = True):
    """A random train/test split and a score table with many exact ties (the hardest case for a top-k)."""
    rng = random.Random(seed)
    pairs = rng.sample([(u, i) for u in range(n_users) for i in range(n_items)], 900)
    rows = [(u, i, float(rng.randint(1, 5))) for u, i in pairs]
    train, test = ratings(rows[:600], n_users, n_items), ratings(rows[600:], n_users, n_items)
    gen = torch.Generator().manual_seed(seed)
    table = torch.randint(0, 3, (n_users, n_items), generator=gen).float() if ties else torch.rand(
        n_users, n_items, generator=gen)
    return train, test, table


def _recorder():
    calls: list[tuple[int, int]] = []
    return calls, lambda done, total: calls.append((done, total))


@pytest.mark.parametrize("kind", ["rating", "rank"])
def test_results_identical_with_and_without_progress_and_across_batch_sizes(kind):
    train, test, table = _random_case(11)
    reference = run(TableModel(table, kind=kind), train=train, test=test, k=5, batch_users=1)
    for batch_users in (None, 2, 7, 33, 4096):
        calls, record = _recorder()
        out = run(TableModel(table, kind=kind), train=train, test=test, k=5, batch_users=batch_users,
                  progress=record)
        assert out == reference, batch_users
        assert calls, batch_users
    assert reference["ndcg@5"] is not None and reference["users"] > 0


def test_progress_counts_every_test_user_monotonically_with_the_total():
    train, test, table = _random_case(5)
    n_users = len(set(test.users.tolist()))
    calls: list[tuple[int, int]] = []
    run(TableModel(table), train=train, test=test, k=3, batch_users=7,
        progress=lambda done, total: calls.append((done, total)))
    dones = [d for d, _ in calls]
    assert {t for _, t in calls} == {n_users}
    assert dones == sorted(dones) and len(set(dones)) == len(dones)  # strictly growing
    assert dones[-1] == n_users and len(calls) == -(-n_users // 7)


def test_heldout_metrics_report_progress_and_do_not_depend_on_it():
    train, test, table = _random_case(3)
    for kind in ("rating", "rank"):
        calls, record = _recorder()
        quiet = heldout_metrics(TableModel(table, kind=kind), train.matrix(), test)
        told = heldout_metrics(TableModel(table, kind=kind), train.matrix(), test, progress=record)
        assert quiet == pytest.approx(told, nan_ok=True)
        assert calls[-1][0] == calls[-1][1] == len(set(test.users.tolist()))


def test_default_batches_are_bounded_by_a_score_block():
    from movierec.batch import SCORE_BLOCK, batch_size_for

    assert batch_size_for(59_047) * 59_047 <= SCORE_BLOCK and batch_size_for(59_047) >= 32
    assert batch_size_for(10**9) == 1 and batch_size_for(5) >= 512
    train, test, table = _random_case(2)
    model = TableModel(table)
    run(model, train=train, test=test, k=3)
    assert max(model.batches) <= batch_size_for(table.shape[1])


def test_ranking_metrics_from_hits_are_the_metric_functions():
    gen = torch.Generator().manual_seed(0)
    scores = torch.randint(0, 4, (30, 25), generator=gen).float()
    relevant = torch.rand(30, 25, generator=gen) < 0.2
    relevant[0] = False  # a user with nothing relevant: NaN where the definitions say so
    topk = metrics.top_k(scores, 6, exclude=torch.rand(30, 25, generator=gen) < 0.7)  # some lists padded
    hits = relevant.gather(1, topk.clamp(min=0)) & (topk >= 0)
    together = metrics.ranking_metrics(hits, relevant.sum(1))
    for name, fn in (("precision", metrics.precision_at_k), ("recall", metrics.recall_at_k),
                     ("ndcg", metrics.ndcg_at_k), ("hit", metrics.hit_rate_at_k),
                     ("map", metrics.average_precision_at_k)):
        torch.testing.assert_close(together[name], fn(topk, relevant), equal_nan=True, msg=name)


@pytest.mark.parametrize("seed", range(5))
def test_top_k_takes_the_lowest_index_among_ties_at_the_cut(seed):
    gen = torch.Generator().manual_seed(seed)
    scores = torch.randint(0, 3, (20, 17), generator=gen).float()
    exclude = torch.rand(20, 17, generator=gen) < 0.3
    for k in (1, 4, 16, 17, 20):
        got = metrics.top_k(scores, k, exclude=exclude)
        for row in range(20):
            eligible = [c for c in range(17) if not exclude[row, c]]
            want = sorted(eligible, key=lambda c: (-float(scores[row, c]), c))[:k]
            assert got[row].tolist() == want + [-1] * (k - len(want)), (k, row)
