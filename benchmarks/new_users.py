"""New users from 5 ratings: which keeps their top 10 sensible, a minimum-ratings filter or shrinking rare movies?

A seeded tenth of ml-100k's users is held out of training entirely. Every model is trained with its default
settings on the other users' ratings (``movierec.training.fit``, seed 0). Each held-out user is then folded in
(``model.fold_in``, no retraining) from 5 of their ratings, drawn at random; their remaining ratings of at
least 4 stars are the relevant movies, and NDCG@10 of the top 10 (the 5 given movies excluded, ties broken as
``movierec recommend`` breaks them) is averaged over the users. Per model, for each option:

- ``none``: the raw list;
- ``min N``: only movies with at least N training ratings (N also shown as a share of the users);
- ``shrink Fx``: each movie's score pulled towards a neutral value by its number of training ratings n,
  ``prior + (score - prior) * n / (n + K)`` with K = F x the mean number of training ratings per movie
  (prior: the training mean for stars, the liked share for P(liked), 0 for top-N scores):
  :func:`movierec.recommend.shrink_rare`.

``rare@10`` is the share of listed movies with fewer than 5 training ratings. Not part of the test run::

    python benchmarks/new_users.py --zip /path/to/ml-100k.zip      # writes benchmarks/results/new_users.*
    python benchmarks/new_users.py --models mf,als --users 0.1
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from movierec import metrics, paths
from movierec.data import download
from movierec.data.movielens import load_dataset
from movierec.data.ratings import Ratings
from movierec.models import build_model
from movierec.recommend import item_counts, rank_items, shrink_rare
from movierec.training import fit

CASES = {
    "rbm": ("rbm", {}),
    "rbm-rating": ("rbm", {"mode": "rating"}),
    "autoencoder": ("autoencoder", {}),
    "autoencoder-item": ("autoencoder", {"mode": "item"}),
    "mf": ("mf", {}),
    "als": ("als", {}),
    "als-implicit": ("als", {"mode": "implicit"}),
}
MIN_RATINGS = (5, 10, 20, 40)
SHRINK = (0.5, 1, 2, 4, 8, 16)  # multiples of the mean number of training ratings per movie
RARE = 5
GIVEN = 5


def hold_out_users(ratings: Ratings, share: float, seed: int) -> tuple[Ratings, np.ndarray]:
    rng = np.random.default_rng(seed)
    users = np.unique(ratings.users)
    held = np.sort(rng.choice(users, int(round(share * len(users))), replace=False))
    return ratings.take(~np.isin(ratings.users, held)), held


def variants(kind: str, scores: torch.Tensor, counts: torch.Tensor, prior: float) -> dict[str, tuple]:
    """Option name -> (scores, extra exclusion mask or None)."""
    out: dict[str, tuple] = {"none": (scores, None)}
    for n in MIN_RATINGS:
        out[f"min {n}"] = (scores, counts < n)
    mean = float(counts.float().mean())
    for f in SHRINK:
        out[f"shrink {f:g}x"] = (shrink_rare(scores, counts, f * mean, prior), None)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--zip", type=Path, default=Path(__file__).resolve().parents[2] / "shared/data/ml-100k.zip")
    parser.add_argument("--models", default=",".join(CASES))
    parser.add_argument("--users", type=float, default=0.1, help="share of users held out")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    args = parser.parse_args()

    os.environ[paths.ENV_HOME] = tempfile.mkdtemp(prefix="movierec-new-users-")  # memory-mapped: keep it
    download.fetch("ml-100k", from_file=args.zip, verify=False)
    data = load_dataset("ml-100k")
    train, held = hold_out_users(data.ratings, args.users, args.seed)
    matrix = train.matrix()
    counts = item_counts(matrix)  # (I,)
    mean = float(train.ratings.mean())
    liked_share = float((train.ratings >= 3).mean())
    rng = np.random.default_rng(args.seed + 1)
    people = []  # (given items, given stars, relevant mask)
    for u in held:
        rows = np.flatnonzero(data.ratings.users == u)
        pick = rng.permutation(rows)
        given, rest = pick[:GIVEN], pick[GIVEN:]
        relevant = torch.zeros(data.n_items, dtype=torch.bool)
        relevant[data.ratings.items[rest][data.ratings.ratings[rest] >= 4].astype(np.int64)] = True
        if relevant.any():
            people.append((torch.from_numpy(data.ratings.items[given].astype(np.int64)),
                           torch.from_numpy(data.ratings.ratings[given].astype(np.float32)), relevant))
    print(f"ml-100k: {len(held)} users held out ({len(people)} with a relevant movie), {len(train):,} training "
          f"ratings; movies' training ratings: quartiles {np.percentile(counts.numpy(), [25, 50, 75]).tolist()}",
          file=sys.stderr)

    results: dict[str, dict[str, dict[str, float]]] = {}
    pop_scores = counts.float()
    results["popularity"] = score_lists(people, lambda i, r: pop_scores, "rank", counts, 0.0)
    for case in args.models.split(","):
        model_name, config = CASES[case]
        torch.manual_seed(0)
        model = build_model(model_name, config, data.n_users, data.n_items, tuple(data.rating_values))
        start = time.perf_counter()
        fit(model, train, None, seed=0, matrix=matrix)
        model.eval()
        prior = {"rating": mean, "like": liked_share}.get(model.kind, 0.0)
        with torch.no_grad():
            results[case] = score_lists(people, model.fold_in, model.kind, counts, prior)
        print(f"{case}: trained in {time.perf_counter() - start:.0f}s; "
              + ", ".join(f"{k} {v['ndcg@10']:.3f}" for k, v in results[case].items()), file=sys.stderr)
    report(results, counts, len(people), data.n_users, args)


def score_lists(people, fold_in, kind: str, counts: torch.Tensor, prior: float) -> dict[str, dict[str, float]]:
    sums: dict[str, list[float]] = {}
    for items, stars, relevant in people:
        raw = fold_in(items, stars).float()  # (I,)
        given = torch.zeros_like(relevant)
        given[items] = True
        for name, (scores, extra) in variants(kind, raw, counts, prior).items():
            exclude = given | extra if extra is not None else given
            top = torch.from_numpy(rank_items(scores, 10, exclude, counts))  # (10,)
            ndcg = float(metrics.ndcg_at_k(top[None], relevant[None])[0])
            rare = float((counts[top] < RARE).float().mean())
            acc = sums.setdefault(name, [0.0, 0.0])
            acc[0] += ndcg
            acc[1] += rare
    return {name: {"ndcg@10": s[0] / len(people), "rare@10": s[1] / len(people)} for name, s in sums.items()}


def report(results, counts, n_people: int, n_users: int, args) -> None:
    options = ["none", *(f"min {n}" for n in MIN_RATINGS), *(f"shrink {f:g}x" for f in SHRINK)]
    mean = float(counts.float().mean())
    heads = ["none", *(f"min {n} ({n / n_users:.1%} of users)" for n in MIN_RATINGS),
             *(f"shrink {f:g}x (K={f * mean:.0f})" for f in SHRINK)]
    lines = [
        f"New users folded in from {GIVEN} ratings: NDCG@10 of their other ratings (>= 4 stars relevant), "
        f"mean over {n_people} held-out ml-100k users; in brackets the share of listed movies with fewer than "
        f"{RARE} training ratings.",
        "",
        "| model | " + " | ".join(heads) + " |",
        "|---|" + "---|" * len(heads),
    ]
    for case, by_option in results.items():
        cells = [f"{by_option[o]['ndcg@10']:.3f} ({by_option[o]['rare@10']:.0%})" if o in by_option else "-"
                 for o in options]
        lines.append(f"| {case} | " + " | ".join(cells) + " |")
    text = "\n".join(lines) + "\n"
    print(text)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "new_users.md").write_text(text)
    meta = {"machine": platform.platform(), "torch": torch.__version__, "users_held_out": args.users,
            "seed": args.seed, "given": GIVEN, "results": results}
    (args.out / "new_users.json").write_text(json.dumps(meta, indent=2) + "\n")


if __name__ == "__main__":
    main()
