"""New users from a few ratings: are their lists their own, and better than "most popular"?

A seeded tenth of the users is held out of training entirely. Every default model is trained on the other
users' ratings through the library (``fit_split``: the model, then its picks model where it has one, as
``movierec train`` does). Each held-out user is then folded in from ``G`` of their ratings drawn at random
(G = 3, 5, 10; no retraining), exactly as ``movierec recommend --rate`` answers
(:func:`movierec.recommend.for_new_user` with the default shrinkage). Their remaining ratings of at least 4 stars
are the relevant movies. Per model and G:

- ``ndcg``: NDCG@10 of the list (the given movies excluded), averaged over the users, beside popularity's;
- ``shared``: how many of the list's 10 movies are also in the popularity top 10 (the given movies excluded
  from both), on average: a list of one's own shares at most half.

Shapes: the real ml-100k (``--zip``) and the synthetic long-tail half-star ``ml-latest-small`` shape drawn with
taste (``benchmarks/synth_release.py``). Targets: NDCG@10 >= 1.2x popularity's and ``shared`` <= 5, for every
model and G. Writes ``results/new_users.md`` and ``.json``. Not part of the test run::

    python benchmarks/new_users.py --zip ../shared/data/ml-100k.zip
    python benchmarks/new_users.py --zip ../shared/data/ml-100k.zip --shapes ml-100k --models mf,rbm
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent), str(HERE)]

from lists import MODELS, SHAPES, prepare  # noqa: E402  (the same models and shapes as the lists benchmark)

GIVEN = (3, 5, 10)
TARGET_LEAD, MAX_SHARED = 1.2, 5.0


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def hold_out(data: Any, share: float, seed: int) -> tuple[Any, list[tuple[np.ndarray, np.ndarray, np.ndarray]]]:
    """The split whose training ratings are the kept users' (its test: the held-out users' ratings), and each
    held-out user's ratings in a seeded random order: (movies, stars, relevant mask)."""
    from movierec.data.split import Split

    ratings = data.ratings
    rng = np.random.default_rng(seed)
    users = np.unique(ratings.users)
    held = np.sort(rng.choice(users, int(round(share * len(users))), replace=False))
    out = np.isin(ratings.users, held)
    people = []
    for u in held:
        rows = rng.permutation(np.flatnonzero(ratings.users == u))
        people.append((ratings.items[rows].astype(np.int64), ratings.ratings[rows].astype(np.float32)))
    return Split("new-users", ratings.take(~out), ratings.take(out), seed), people


def judge(scorer: Any, people: list, counts: np.ndarray, neutral: float, given: int) -> tuple[float, float, float]:
    """Mean NDCG@10 of the model's lists, of popularity's, and the mean number of movies they share."""
    import torch

    from movierec import metrics
    from movierec import recommend as rec

    ndcg, pop_ndcg, shared, n = 0.0, 0.0, 0.0, 0
    for items, stars in people:
        rest = slice(given, None)
        relevant = np.zeros(counts.shape[0], dtype=bool)
        relevant[items[rest][stars[rest] >= 4.0]] = True
        if len(items) <= given or not relevant.any():
            continue
        exclude = np.zeros(counts.shape[0], dtype=bool)
        exclude[items[:given]] = True
        mine = [r.item for r in rec.for_new_user(scorer, items[:given], stars[:given], 10, counts=counts,
                                                 neutral=neutral)]
        pop = rec.rank_items(counts.astype(np.float32), 10, exclude, counts).tolist()
        rel = torch.from_numpy(relevant)[None]
        ndcg += float(metrics.ndcg_at_k(torch.tensor([mine]), rel)[0])
        pop_ndcg += float(metrics.ndcg_at_k(torch.tensor([pop]), rel)[0])
        shared += len(set(mine) & set(pop))
        n += 1
    return ndcg / n, pop_ndcg / n, shared / n


def run_shape(shape: str, models: list[str], share: float, seed: int) -> list[dict[str, Any]]:
    from movierec import recommend as rec
    from movierec.data.movielens import load_dataset
    from movierec.device import resolve_device
    from movierec.options import TrainOptions
    from movierec.training import fit_split

    data = load_dataset(SHAPES[shape])
    split, people = hold_out(data, share, seed)
    rows = []
    for name in models:
        model_name, mode = MODELS[name]
        start = time.perf_counter()
        fitted = fit_split(TrainOptions(model_name, mode=mode, seed=seed, device="cpu"), data, split,
                           device=resolve_device("cpu"))
        scorer = rec.torch_scorer(fitted.model, fitted.known, fitted.picks)
        counts = rec.item_counts(fitted.known).numpy()
        neutral = rec.neutral_score(fitted.model, fitted.known)
        for given in GIVEN:
            ndcg, pop, shared = judge(scorer, people, counts, neutral, given)
            rows.append({"shape": shape, "model": name, "given": given, "ndcg@10": ndcg, "popularity": pop,
                         "shared": shared})
            log(f"{shape} {name} from {given}: NDCG@10 {ndcg:.4f} (popularity {pop:.4f}), shared {shared:.1f}/10")
        log(f"{shape} {name}: {time.perf_counter() - start:.0f} s")
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--zip", type=Path, help="ml-100k.zip (for the ml-100k shape).")
    parser.add_argument("--shapes", default="ml-100k,ml-latest-small")
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--users", type=float, default=0.1, help="Share of users held out [0.1].")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=HERE / "results")
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    from movierec import paths

    load_start, started = os.getloadavg(), dt.datetime.now(dt.timezone.utc)
    rows: list[dict[str, Any]] = []
    shapes = [s for s in args.shapes.split(",") if s]
    for shape in shapes:
        with tempfile.TemporaryDirectory(prefix="movierec-new-users-") as home:
            paths.set_home(home)
            try:
                prepare(shape, args, HERE / ".cache")
                rows += run_shape(shape, [m for m in args.models.split(",") if m], args.users, args.seed)
            finally:
                paths.set_home(None)
    load_end = os.getloadavg()
    lines = ["| shape | model | " + " | ".join(f"from {g}: NDCG@10 (pop) / shared" for g in GIVEN) + " |",
             "|---|---|" + "---|" * len(GIVEN)]
    verdicts = []
    for shape in shapes:
        for name in dict.fromkeys(r["model"] for r in rows if r["shape"] == shape):
            cells = []
            for g in GIVEN:
                r = next(x for x in rows if x["shape"] == shape and x["model"] == name and x["given"] == g)
                cells.append(f"{r['ndcg@10']:.3f} ({r['popularity']:.3f}) / {r['shared']:.1f}")
                ok = r["ndcg@10"] >= TARGET_LEAD * r["popularity"] and r["shared"] <= MAX_SHARED
                verdicts.append(f"{shape} {name} from {g}: {r['ndcg@10'] / r['popularity']:.2f}x popularity, "
                                f"{r['shared']:.1f} shared: {'PASS' if ok else 'MISS'}")
            lines.append(f"| {shape} | {name} | " + " | ".join(cells) + " |")
    text = "\n".join(lines)
    print(text)
    print("\n".join(verdicts))
    args.out.mkdir(parents=True, exist_ok=True)
    md = [f"# New users folded in from {', '.join(map(str, GIVEN))} ratings", "",
          f"- date: {started.isoformat(timespec='seconds')}; command: `python {' '.join(sys.argv)}`; one torch thread",
          f"- load average {load_start[0]:.1f} -> {load_end[0]:.1f} on {os.cpu_count()} cores; "
          f"{args.users:.0%} of users held out (seed {args.seed})",
          "- NDCG@10 of the held-out users' other ratings >= 4 stars (popularity's in parentheses) / how many of "
          "the 10 are also in the popularity top 10", "", text, "", "## Targets", "",
          *[f"- {v}" for v in verdicts], ""]
    (args.out / "new_users.md").write_text("\n".join(md))
    (args.out / "new_users.json").write_text(json.dumps({"rows": rows, "targets": verdicts,
                                                         "load_average": [load_start, load_end]}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
