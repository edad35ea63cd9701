"""Known-answer tests for movierec.metrics: every expected number below is computed by hand."""

from __future__ import annotations

import math

import pytest
import torch

from movierec import metrics

DEVICES = ["cpu", pytest.param("cuda", marks=[pytest.mark.cuda, pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs a CUDA GPU")])]


def t(values, dtype=torch.float32, device="cpu") -> torch.Tensor:
    return torch.tensor(values, dtype=dtype, device=device)


# -- pointwise -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("device", DEVICES)
def test_rmse_and_mae_known_answer(device):
    pred, true = t([1, 2, 3], device=device), t([1, 2, 5], device=device)
    assert metrics.rmse(pred, true) == pytest.approx(math.sqrt(4 / 3))
    assert metrics.mae(pred, true) == pytest.approx(2 / 3)
    assert metrics.rmse(t([2.5, 2.5]), t([2.5, 2.5])) == 0.0


def test_pointwise_empty_is_nan_and_shape_mismatch_raises():
    empty = t([])
    assert math.isnan(metrics.rmse(empty, empty))
    assert math.isnan(metrics.mae(empty, empty))
    assert math.isnan(metrics.like_error(empty, empty.bool()))
    assert math.isnan(metrics.accuracy(empty, empty.bool()))
    with pytest.raises(ValueError):
        metrics.rmse(t([1, 2]), t([1, 2, 3]))
    with pytest.raises(ValueError):
        metrics.like_error(t([0.1]), t([1, 0]))


@pytest.mark.parametrize("device", DEVICES)
def test_like_error_and_accuracy_from_probabilities(device):
    prob = t([0.9, 0.4, 0.5, 0.1], device=device)  # calls: liked, not, liked (0.5 counts), not
    liked = t([1, 1, 0, 0], device=device)  # wrong at positions 1 and 2
    assert metrics.like_error(prob, liked) == pytest.approx(0.5)
    assert metrics.accuracy(prob, liked) == pytest.approx(0.5)
    assert metrics.like_error(prob, liked.bool()) == pytest.approx(0.5)
    assert metrics.accuracy(t([0.6, 0.2, 0.7]), t([1, 0, 0])) == pytest.approx(2 / 3)


def test_like_metrics_take_bool_predictions_as_decided():
    pred = torch.tensor([True, False, False])  # bool: no 0.5 threshold applied
    liked = torch.tensor([True, True, False])
    assert metrics.accuracy(pred, liked) == pytest.approx(2 / 3)
    assert metrics.like_error(pred, liked) == pytest.approx(1 / 3)


@pytest.mark.parametrize("device", DEVICES)
def test_roc_auc_known_answers(device):
    # The textbook example: 3 of the 4 positive/negative pairs are ordered right.
    assert metrics.roc_auc(t([0.1, 0.4, 0.35, 0.8], device=device), t([0, 0, 1, 1], device=device)) == 0.75
    # A tie between a positive and a negative counts half: (0.5 + 1 + 1 + 1) / 4.
    assert metrics.roc_auc(t([0.5, 0.5, 0.2, 0.9]), t([1, 0, 0, 1])) == pytest.approx(0.875)
    assert metrics.roc_auc(t([1, 2, 3, 4]), t([0, 0, 1, 1])) == 1.0
    assert metrics.roc_auc(t([4, 3, 2, 1]), t([0, 0, 1, 1])) == 0.0
    assert metrics.roc_auc(t([7, 7, 7, 7]), t([0, 1, 0, 1])) == 0.5


def test_roc_auc_undefined_for_one_class_and_rejects_nan():
    assert metrics.roc_auc(t([0.1, 0.9]), t([1, 1])) is None
    assert metrics.roc_auc(t([0.1, 0.9]), t([0, 0]).bool()) is None
    assert metrics.roc_auc(t([]), t([])) is None
    with pytest.raises(ValueError):
        metrics.roc_auc(t([0.1, math.nan]), t([0, 1]))


def test_roc_auc_matches_pairwise_definition_on_random_ties():
    gen = torch.Generator().manual_seed(0)
    scores = torch.randint(0, 6, (300,), generator=gen).float()  # many ties
    labels = torch.rand(300, generator=gen) < 0.3
    pos, neg = scores[labels], scores[~labels]
    diff = pos[:, None] - neg[None, :]
    expected = float(((diff > 0).double() + 0.5 * (diff == 0).double()).mean())
    assert metrics.roc_auc(scores, labels) == pytest.approx(expected, abs=1e-12)


# -- ranking ---------------------------------------------------------------------------------------------
def _relevant(sets: list[set[int]], n_items: int, device="cpu") -> torch.Tensor:
    mask = torch.zeros((len(sets), n_items), dtype=torch.bool, device=device)
    for row, items in enumerate(sets):
        mask[row, list(items)] = True
    return mask


@pytest.mark.parametrize("device", DEVICES)
def test_ranking_metrics_known_answers(device):
    topk = torch.tensor([
        [3, 0, 7, 1, 5],  # relevant {0, 5, 9}: hits at ranks 2 and 5
        [3, 4, 6, 7, 8],  # relevant {0}: no hit
        [2, -1, -1, -1, -1],  # only one movie to recommend; relevant {2, 0}: -1 must not hit movie 0
        [1, 2, 3, 4, 6],  # no relevant movie at all
    ], device=device)
    relevant = _relevant([{0, 5, 9}, {0}, {2, 0}, set()], 10, device)
    l2 = math.log2

    precision = metrics.precision_at_k(topk, relevant).cpu()
    assert precision.tolist() == pytest.approx([2 / 5, 0, 1 / 5, 0])

    recall = metrics.recall_at_k(topk, relevant).cpu()
    assert recall[:3].tolist() == pytest.approx([2 / 3, 0, 1 / 2])
    assert math.isnan(recall[3])

    ndcg = metrics.ndcg_at_k(topk, relevant).cpu()
    dcg = 1 / l2(3) + 1 / l2(6)
    ideal = 1 + 1 / l2(3) + 1 / l2(4)  # min(K=5, R=3) = 3 ideal hits
    assert ndcg[:3].tolist() == pytest.approx([dcg / ideal, 0, 1 / (1 + 1 / l2(3))])
    assert math.isnan(ndcg[3])

    hit = metrics.hit_rate_at_k(topk, relevant).cpu()
    assert hit.tolist() == [1, 0, 1, 0]

    ap = metrics.average_precision_at_k(topk, relevant).cpu()
    assert ap[:3].tolist() == pytest.approx([(1 / 2 + 2 / 5) / 3, 0, 1 / 2])
    assert math.isnan(ap[3])


def test_ranking_metrics_when_more_relevant_than_k():
    topk = torch.tensor([[0, 1], [5, 0]])
    relevant = _relevant([{0, 1, 2, 3}, {0, 1, 2, 3}], 6)
    assert metrics.precision_at_k(topk, relevant).tolist() == [1.0, 0.5]
    assert metrics.recall_at_k(topk, relevant).tolist() == [0.5, 0.25]  # #hits / #relevant
    # Ideal DCG and AP's denominator use min(K, R) = 2, so a perfect list scores 1.
    ndcg = metrics.ndcg_at_k(topk, relevant).tolist()
    assert ndcg == pytest.approx([1.0, (1 / math.log2(3)) / (1 + 1 / math.log2(3))])
    assert metrics.average_precision_at_k(topk, relevant).tolist() == pytest.approx([1.0, 0.5 / 2])


def test_ranking_metrics_reject_mismatched_batches():
    with pytest.raises(ValueError):
        metrics.precision_at_k(torch.tensor([[0, 1]]), torch.zeros((2, 4), dtype=torch.bool))


def test_coverage_counts_distinct_listed_movies():
    topk = torch.tensor([[0, 1], [1, 2], [-1, -1]])
    assert metrics.coverage(topk, 5) == pytest.approx(3 / 5)
    assert metrics.coverage(torch.tensor([[4, 3, 2, 1, 0]]), 5) == 1.0
    with pytest.raises(ValueError):
        metrics.coverage(topk, 0)


# -- top_k -------------------------------------------------------------------------------------------------
def test_top_k_breaks_ties_by_lower_index():
    scores = t([[1, 3, 3, 2, 3]])
    assert metrics.top_k(scores, 2).tolist() == [[1, 2]]
    assert metrics.top_k(scores, 4).tolist() == [[1, 2, 4, 3]]
    assert metrics.top_k(t([[0, 0, 0, 0]]), 3).tolist() == [[0, 1, 2]]


def test_top_k_excludes_and_pads():
    scores = t([[5, 9, 1, 2, 8], [1, 1, 1, 1, 1]])
    exclude = torch.tensor([[False, True, False, False, True], [True, True, True, False, True]])
    assert metrics.top_k(scores, 2, exclude).tolist() == [[0, 3], [3, -1]]
    assert metrics.top_k(scores, 7, exclude).tolist() == [[0, 3, 2, -1, -1, -1, -1], [3] + [-1] * 6]
    assert metrics.top_k(scores, 7).tolist()[0] == [1, 4, 0, 3, 2, -1, -1]  # k > movies: padded


def test_top_k_model_infinities_still_rank_above_excluded_movies():
    scores = t([[-math.inf, math.inf, 0.0]])
    exclude = torch.tensor([[False, False, True]])
    assert metrics.top_k(scores, 3, exclude).tolist() == [[1, 0, -1]]
    with pytest.raises(ValueError):
        metrics.top_k(scores, 0)
    with pytest.raises(ValueError, match="NaN"):
        metrics.top_k(t([[1.0, 2.0, 3.0], [0.0, math.nan, 1.0]]), 1)


def test_top_k_matches_a_stable_full_sort():
    gen = torch.Generator().manual_seed(1)
    scores = torch.randint(0, 4, (64, 50), generator=gen).float()  # heavy ties
    exclude = torch.rand(64, 50, generator=gen) < 0.3
    masked = scores.masked_fill(exclude, -math.inf)
    expected = torch.sort(masked, dim=1, descending=True, stable=True).indices[:, :10]
    assert torch.equal(metrics.top_k(scores, 10, exclude), expected)


# -- which metrics judge which models ----------------------------------------------------------------------
def test_every_kind_is_judged_by_what_it_is_for():
    assert metrics.judged_by("rating") == ["rmse", "ndcg@10"]
    assert metrics.judged_by("like") == ["like_error", "accuracy", "auc"]
    assert metrics.judged_by("rank", k=5) == ["precision@5", "recall@5", "ndcg@5"]
    assert [metrics.headline(kind) for kind in ("rating", "like", "rank")] == ["rmse", "like_error", "ndcg@10"]
    for kind in ("rating", "like", "rank"):  # the headline metric is one of those that judge the kind
        assert metrics.headline(kind) in metrics.judged_by(kind)
    with pytest.raises(ValueError):
        metrics.headline("stars")


def test_direction_of_every_metric():
    lower = {"rmse", "mae", "like_error"}
    for info in metrics.METRICS:
        assert info.higher_is_better == (info.key not in lower), info.key
    assert metrics.higher_is_better("ndcg@20") and not metrics.higher_is_better("rmse")
    assert metrics.metric_info("recall@10").label.format(k=10) == "R@10"
    for bad in ("ndcg", "rmse@10", "nope"):  # a ranking metric needs its K, a pointwise one has none
        with pytest.raises(ValueError):
            metrics.metric_info(bad)
