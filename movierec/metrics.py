"""Evaluation metrics: pure functions on torch tensors, on whatever device the tensors live.

Two families:

- pointwise metrics over (prediction, truth) pairs -- :func:`rmse`, :func:`mae`, :func:`like_error`,
  :func:`accuracy`, :func:`roc_auc` -- return one Python number;
- ranking metrics over a batch of users return one value per user, a ``(B,)`` float tensor, so a caller
  can sum them batch by batch and average over users at the end. They all read the same two inputs:

  ``topk``     (B, K) int64: each user's recommendation list, best first. ``-1`` marks an empty slot
               (a user who has fewer than K movies left to recommend); it is never a hit.
  ``relevant`` (B, I) bool: ``relevant[b, i]`` is True when movie ``i`` is one of user ``b``'s held-out
               relevant movies.

  Definitions, with ``R`` = number of relevant movies of the user and ``rel_i`` = 1 if the movie at rank
  ``i`` is relevant:

  - precision@K = hits / K (empty slots count as misses);
  - recall@K    = hits / R (the common definition: it cannot reach 1 when R > K);
  - nDCG@K      = sum_i rel_i / log2(i + 1)  /  sum_{i <= min(K, R)} 1 / log2(i + 1);
  - hit@K       = 1 if any of the K movies is relevant;
  - AP@K        = sum_i precision@i * rel_i / min(K, R)  (its mean over users is MAP@K).

  For a user with no relevant movie, recall, nDCG and AP are undefined and come back as NaN; precision
  and hit are 0. :func:`movierec.evaluate.evaluate` never asks about such users.

And one table, :data:`METRICS`: every metric's key, label, direction and the kinds of model it judges, which
the training loop, the train summary and the evaluation table all read.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

__all__ = [
    "METRICS",
    "MetricInfo",
    "accuracy",
    "average_precision_at_k",
    "coverage",
    "headline",
    "higher_is_better",
    "hit_rate_at_k",
    "judged_by",
    "like_error",
    "mae",
    "metric_info",
    "ndcg_at_k",
    "precision_at_k",
    "recall_at_k",
    "ranking_metrics",
    "rmse",
    "roc_auc",
    "top_k",
]


# -- pointwise -----------------------------------------------------------------------------------
def _pair(pred: torch.Tensor, true: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    if pred.shape != true.shape:
        raise ValueError(f"shape mismatch: predictions {tuple(pred.shape)} vs truth {tuple(true.shape)}")
    # float64 so that a million squared errors sum without float32 round-off.
    return pred.detach().reshape(-1).to(torch.float64), true.detach().reshape(-1).to(torch.float64)


def rmse(pred: torch.Tensor, true: torch.Tensor) -> float:
    """Root mean squared error; NaN for no pairs."""
    p, t = _pair(pred, true)
    if p.numel() == 0:
        return math.nan
    return float(torch.sqrt(torch.mean((p - t) ** 2)))


def mae(pred: torch.Tensor, true: torch.Tensor) -> float:
    """Mean absolute error; NaN for no pairs."""
    p, t = _pair(pred, true)
    if p.numel() == 0:
        return math.nan
    return float(torch.mean(torch.abs(p - t)))


def _as_liked(x: torch.Tensor) -> torch.Tensor:
    """Bool "liked" from either bool predictions or probabilities of liking (liked when >= 0.5)."""
    return x if x.dtype == torch.bool else x >= 0.5


def like_error(prob: torch.Tensor, liked: torch.Tensor) -> float:
    """Mean |1[prob >= 0.5] - liked|: the fraction of like/dislike calls that are wrong (the like error; checkpoints
    saved before 0.2 call it ``loss``).

    ``prob`` is P(liked) or already-decided bool predictions; ``liked`` is bool or 0/1. NaN for no pairs.
    """
    if prob.shape != liked.shape:
        raise ValueError(f"shape mismatch: predictions {tuple(prob.shape)} vs truth {tuple(liked.shape)}")
    if prob.numel() == 0:
        return math.nan
    wrong = _as_liked(prob.detach()) != liked.detach().bool()
    return float(wrong.double().mean())


def accuracy(prob_or_pred_liked: torch.Tensor, liked: torch.Tensor) -> float:
    """Fraction of like/dislike calls that are right: ``1 - like_error``. NaN for no pairs."""
    loss = like_error(prob_or_pred_liked, liked)
    return math.nan if math.isnan(loss) else 1.0 - loss


def roc_auc(scores: torch.Tensor, labels: torch.Tensor) -> float | None:
    """Area under the ROC curve: P(a random positive scores above a random negative), ties counting half.

    Computed from ranks (Mann-Whitney U) with tied scores given their average rank, so it is exact and
    O(N log N). ``None`` when ``labels`` holds only one class (AUC is undefined then).
    """
    if scores.shape != labels.shape:
        raise ValueError(f"shape mismatch: scores {tuple(scores.shape)} vs labels {tuple(labels.shape)}")
    s = scores.detach().reshape(-1).to(torch.float64)
    y = labels.detach().reshape(-1).bool()
    n_pos = int(y.sum())
    n_neg = int(y.numel()) - n_pos
    if n_pos == 0 or n_neg == 0:
        return None
    if torch.isnan(s).any():
        raise ValueError("roc_auc: scores contain NaN")
    sorted_s, order = torch.sort(s)
    _, counts = torch.unique_consecutive(sorted_s, return_counts=True)
    ends = torch.cumsum(counts, 0).to(torch.float64)  # 1-based rank of the last member of each tie group
    average = ends - (counts.to(torch.float64) - 1) / 2  # mean of the ranks end-count+1 .. end
    ranks = torch.repeat_interleave(average, counts)  # (N,) in sorted order
    pos_rank_sum = float(ranks[y[order]].sum())
    return (pos_rank_sum - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)


# -- ranking ---------------------------------------------------------------------------------------
def top_k(scores: torch.Tensor, k: int, exclude: torch.Tensor | None = None) -> torch.Tensor:
    """The ``k`` best columns of each row, best first: (B, I) -> (B, k) int64.

    Deterministic: equal scores are ordered by column, lower first (``torch.topk`` alone does not promise
    any order among ties). Columns where ``exclude`` (B, I) bool is True are never returned; rows with
    fewer than ``k`` eligible columns are padded with ``-1``. ``scores`` must not contain NaN.
    """
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    n_rows, n_cols = scores.shape
    k_eff = min(k, n_cols)
    if n_rows == 0 or k_eff == 0:
        return torch.full((n_rows, k), -1, dtype=torch.int64, device=scores.device)
    # Model scores of +-inf become the extreme finite values, so -inf can only mean "excluded". One new
    # (B, I) tensor, filled in place: on CPU each fresh block of this size costs as much as the top-k.
    big = torch.finfo(torch.float32).max
    s = scores.detach().float().clamp(-big, big)
    if exclude is not None:
        s.masked_fill_(exclude, -math.inf)
    # One score past the list: a movie left out ties the k-th best exactly when the (k+1)-th best equals it,
    # which spares a pass over the whole (B, I) block to count the ties.
    vals, cols = torch.topk(s, min(k_eff + 1, n_cols), dim=1)  # (B, k_eff[+1]); ties kept in arbitrary order
    if bool(torch.isnan(vals).any()):  # topk ranks NaN above everything, so any NaN shows up here
        raise ValueError("top_k: scores contain NaN")
    kth = vals[:, k_eff - 1:k_eff]  # (B, 1) the k-th best score
    crossing = vals[:, k_eff] == kth[:, 0] if k_eff < n_cols else torch.zeros_like(kth[:, 0], dtype=torch.bool)
    vals, cols = vals[:, :k_eff], cols[:, :k_eff]
    # Only rows whose k-th score is shared with a movie left out of the list need the exact (slower) pick.
    if bool(crossing.any()):
        rows = crossing.nonzero().flatten()
        cols[rows] = _lowest_index_top_k(s[rows], kth[rows], k_eff)
    cols = cols.sort(1).values  # ascending columns, so the stable sort below puts lower columns first
    order = torch.sort(s.gather(1, cols), dim=1, descending=True, stable=True).indices
    cols = cols.gather(1, order)
    if exclude is not None:
        cols = cols.masked_fill(exclude.gather(1, cols), -1)  # excluded columns sort last: padding
    if k_eff < k:
        pad = torch.full((n_rows, k - k_eff), -1, dtype=torch.int64, device=cols.device)
        cols = torch.cat([cols, pad], 1)
    return cols


def _lowest_index_top_k(s: torch.Tensor, kth: torch.Tensor, k: int) -> torch.Tensor:
    """The k best columns of each row of ``s`` (R, I) whose k-th best score is ``kth`` (R, 1), taking the
    lowest-indexed columns among those tied at ``kth``: (R, k) in ascending column order."""
    above = s > kth  # (R, I) all of these are in the list
    tied = s == kth  # (R, I) the list takes the lowest-indexed of these
    need = k - torch.count_nonzero(above, 1).unsqueeze(1)  # (R, 1)
    chosen = above | (tied & (torch.cumsum(tied.to(torch.int32), 1) <= need))  # exactly k per row
    return chosen.nonzero()[:, 1].view(s.shape[0], k)


def _hits(topk: torch.Tensor, relevant: torch.Tensor) -> torch.Tensor:
    """(B, K) bool: is the movie at each rank relevant? Empty slots (-1) are not."""
    if topk.dim() != 2 or relevant.dim() != 2 or topk.shape[0] != relevant.shape[0]:
        raise ValueError(f"expected topk (B, K) and relevant (B, I), got {tuple(topk.shape)} and "
                         f"{tuple(relevant.shape)}")
    filled = topk >= 0
    return relevant.gather(1, topk.clamp(min=0)) & filled


def _n_relevant(relevant: torch.Tensor) -> torch.Tensor:
    return torch.count_nonzero(relevant, 1).float()  # (B,) without a (B, I) integer copy, unlike sum


def _discounts(k: int, device: torch.device) -> torch.Tensor:
    return 1.0 / torch.log2(torch.arange(2, k + 2, device=device, dtype=torch.float32))  # (K,) 1/log2(i+1)


def precision_at_k(topk: torch.Tensor, relevant: torch.Tensor) -> torch.Tensor:
    """Per user: relevant movies in the list / K. (B,)"""
    return _precision(_hits(topk, relevant))


def recall_at_k(topk: torch.Tensor, relevant: torch.Tensor) -> torch.Tensor:
    """Per user: relevant movies in the list / all the user's relevant movies (NaN if none). (B,)"""
    return _recall(_hits(topk, relevant), _n_relevant(relevant))


def hit_rate_at_k(topk: torch.Tensor, relevant: torch.Tensor) -> torch.Tensor:
    """Per user: 1 if the list holds at least one relevant movie, else 0. (B,)"""
    return _hit(_hits(topk, relevant))


def ndcg_at_k(topk: torch.Tensor, relevant: torch.Tensor) -> torch.Tensor:
    """Per user: binary-gain DCG with a log2 discount over the ideal DCG of min(K, R) hits (NaN if R = 0)."""
    return _ndcg(_hits(topk, relevant), _n_relevant(relevant))


def average_precision_at_k(topk: torch.Tensor, relevant: torch.Tensor) -> torch.Tensor:
    """Per user: sum of precision@i at the ranks i that are hits, over min(K, R) (NaN if R = 0). (B,)"""
    return _average_precision(_hits(topk, relevant), _n_relevant(relevant))


def ranking_metrics(hits: torch.Tensor, n_relevant: torch.Tensor) -> dict[str, torch.Tensor]:
    """All five per-user ranking metrics at once, from what they are made of: ``hits`` (B, K) bool (is the
    movie at each rank relevant; empty slots are not) and ``n_relevant`` (B,) (each user's relevant movies).

    Keys ``precision``, ``recall``, ``ndcg``, ``hit``, ``map`` (AP@K; its mean over users is MAP@K), each
    (B,) and equal to the function of the same meaning above. For evaluating many users: no (B, I) pass.
    """
    n = n_relevant.to(torch.float32)
    return {"precision": _precision(hits), "recall": _recall(hits, n), "ndcg": _ndcg(hits, n),
            "hit": _hit(hits), "map": _average_precision(hits, n)}


def _precision(hits: torch.Tensor) -> torch.Tensor:
    return hits.float().sum(1) / hits.shape[1]


def _recall(hits: torch.Tensor, n_relevant: torch.Tensor) -> torch.Tensor:
    return hits.float().sum(1) / n_relevant


def _hit(hits: torch.Tensor) -> torch.Tensor:
    return hits.any(1).float()


def _ndcg(hits: torch.Tensor, n_relevant: torch.Tensor) -> torch.Tensor:
    k = hits.shape[1]
    disc = _discounts(k, hits.device)  # (K,)
    dcg = (hits.float() * disc).sum(1)  # (B,)
    ideal_hits = torch.clamp(n_relevant, max=k).long()  # (B,)
    ideal = torch.cat([disc.new_zeros(1), torch.cumsum(disc, 0)])[ideal_hits]  # (B,) sum of first n discounts
    return dcg / ideal


def _average_precision(hits: torch.Tensor, n_relevant: torch.Tensor) -> torch.Tensor:
    k = hits.shape[1]
    hits = hits.float()  # (B, K)
    ranks = torch.arange(1, k + 1, device=hits.device, dtype=torch.float32)  # (K,)
    precision_at_i = torch.cumsum(hits, 1) / ranks  # (B, K)
    return (precision_at_i * hits).sum(1) / torch.clamp(n_relevant, max=k)


def coverage(topk: torch.Tensor, n_items: int) -> float:
    """Fraction of the catalogue (``n_items`` movies) that appears in at least one list."""
    if n_items <= 0:
        raise ValueError(f"n_items must be positive, got {n_items}")
    listed = topk[topk >= 0]
    seen = torch.zeros(n_items, dtype=torch.bool, device=topk.device)
    seen[listed] = True
    return float(seen.sum()) / n_items


# -- which metrics judge which models ---------------------------------------------------------------------
@dataclass(frozen=True)
class MetricInfo:
    """One metric as reports show it and models are judged by it."""

    key: str
    """Its key in a metrics dict; ``{k}`` stands for the length of the lists (``ndcg@{k}``)."""
    label: str
    """Its column header (``NDCG@{k}``)."""
    higher_is_better: bool
    judges: frozenset[str] = frozenset()
    """The kinds of model ("rating", "like", "rank") judged by it: what a model of that kind is for."""


METRICS: tuple[MetricInfo, ...] = (
    MetricInfo("rmse", "RMSE", False, frozenset({"rating"})),
    MetricInfo("mae", "MAE", False),
    MetricInfo("like_error", "error", False, frozenset({"like"})),
    MetricInfo("accuracy", "acc", True, frozenset({"like"})),
    MetricInfo("auc", "AUC", True, frozenset({"like"})),
    MetricInfo("precision@{k}", "P@{k}", True, frozenset({"rank"})),
    MetricInfo("recall@{k}", "R@{k}", True, frozenset({"rank"})),
    MetricInfo("ndcg@{k}", "NDCG@{k}", True, frozenset({"rating", "rank"})),
    MetricInfo("hit@{k}", "Hit@{k}", True),
    MetricInfo("map@{k}", "MAP@{k}", True),
    MetricInfo("coverage@{k}", "Cov@{k}", True),
)
"""Every metric :func:`movierec.evaluate.evaluate` reports, in the order tables show them. A rating model is
judged by its RMSE and the ranking of its lists; the like/dislike RBM by its like error, accuracy and AUC; a
top-N model by its lists (NDCG, recall, precision)."""

HEADLINE: dict[str, str] = {"rating": "rmse", "like": "like_error", "rank": "ndcg@{k}"}
"""The first metric a model of each kind is judged by: early stopping watches it on the validation slice, and
the train summary says whether the trivial answer was beaten on it."""


def metric_info(key: str) -> MetricInfo:
    """The :data:`METRICS` entry of ``key`` (``"ndcg@10"`` is ``ndcg@{k}``'s); ValueError for an unknown key."""
    name, at, _ = key.partition("@")
    for info in METRICS:
        own, own_at, _ = info.key.partition("@")
        if own == name and own_at == at:
            return info
    raise ValueError(f"unknown metric {key!r}")


def higher_is_better(key: str) -> bool:
    """Whether a larger value of metric ``key`` is better (NDCG, accuracy) or worse (RMSE, like error)."""
    return metric_info(key).higher_is_better


def judged_by(kind: str, k: int = 10) -> list[str]:
    """The keys of the metrics a model of ``kind`` is judged by, in table order (lists of length ``k``)."""
    return [info.key.format(k=k) for info in METRICS if kind in info.judges]


def headline(kind: str, k: int = 10) -> str:
    """:data:`HEADLINE`'s metric for ``kind``, for lists of length ``k``; ValueError for an unknown kind."""
    if kind not in HEADLINE:
        raise ValueError(f"unknown model kind {kind!r}")
    return HEADLINE[kind].format(k=k)
