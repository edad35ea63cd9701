"""Cold starts: movies nobody rated and people nobody knows, ranked from what the release says about them.

**Cold movies.** Every rating of a seeded 10% of the movies is held out; the models learn from the rest. For each
user who rated a held-out movie 4 stars or more, the held-out movies (only those: the question is which new
movie, not whether a new one beats an old) are ranked for them, and judged by AUC (a movie they liked above one
they did not) and NDCG@10 (relevant: their held-out ratings of 4 stars or more). Rankers:

- ``hybrid``: the order of ``movierec recommend --include-unrated`` (P(picked and liked) through its picks model,
  whose cold movies are placed from their features), answered by the served model as the CLI does;
- ``genre popularity``: a movie's genres' mean number of liked training ratings per movie (the same order for
  everyone);
- ``user's genres``: the share of the user's liked training ratings that fall in the movie's genres (personal,
  no model);
- ``lightfm``: LightFM (WARP loss, 32 components, its defaults otherwise) on the same split, with the same
  features plus one per movie and person (identity features only for rows with training ratings, so a cold
  movie is its features alone, as LightFM's docs advise), trained on the ratings of 4 stars or more.

**Cold users.** A seeded 10% of the users are held out entirely. Each is given ``G`` = 0, 1, 3 of their ratings
(a seeded random draw) and their age, gender and occupation; relevant: their other ratings of 4 stars or more,
ranked among every movie but the given ones (NDCG@10). Rankers: ``hybrid`` (``recommend --age --gender
--occupation [--rate ...]``); ``mf`` without features (``recommend --rate``, G >= 1); ``popularity`` (training
ratings); ``group popularity`` (training ratings of the people of the same age band, gender and occupation, or
of the same age band and gender where fewer than 20 training users share all three); ``lightfm`` at G = 0 (the
person's features alone; LightFM cannot take ratings without retraining).

**Warm.** ``hybrid`` and ``mf`` on ml-100k's u1 for seeds 0, 1, 2: test RMSE and NDCG@10, as ``movierec train``
measures them (lists through the picks model).

Shapes: the real ml-100k (``--zip``) and ``side-ml-1m`` (``benchmarks/synth_release.py``: ml-1m's counts, whose
genres and demographics follow the synthetic tastes, with noise). Writes ``results/cold_start.md`` and
``.json``. LightFM is imported from ``--lightfm PATH`` when given (a folder it was installed to with ``pip
install --target``), else from the environment; without it its rows are left out. Not part of the test run::

    python benchmarks/cold_start.py --zip ../shared/data/ml-100k.zip
    python benchmarks/cold_start.py --zip ../shared/data/ml-100k.zip --shapes ml-100k --parts items,users
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

from lists import prepare  # noqa: E402  (fetches the real zip, or writes a synthetic release once)

K, RELEVANCE, SHARE = 10, 4.0, 0.1
GIVEN = (0, 1, 3)
SEEDS = (0, 1, 2)
GROUP_MIN = 20
"""Fewer training users than this of one age band, gender and occupation: their group is their age band and gender."""
SHAPES = {"ml-100k": "ml-100k", "side-ml-1m": "ml-1m", "tagged-ml-20m": "ml-20m"}
PARTS = ("items", "users", "warm")


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# -- shared pieces ------------------------------------------------------------------------------------------
def _hold_out(data: Any, side: str, name: str, seed: int) -> tuple[np.ndarray, np.ndarray, Any]:
    """A seeded :data:`SHARE` of the movies (``side="items"``) or users, every one of their ratings held out: the
    chosen indices (sorted), a mask of them (by index), and the split (test: their ratings)."""
    from movierec.data.split import Split

    ratings = data.ratings
    n = data.n_items if side == "items" else data.n_users
    chosen = np.sort(np.random.default_rng(seed).choice(n, int(round(SHARE * n)), replace=False))
    mask = np.zeros(n, dtype=bool)
    mask[chosen] = True
    out = mask[ratings.items if side == "items" else ratings.users]
    return chosen, mask, Split(name, ratings.take(~out), ratings.take(out), seed)


def _train(name: str, data: Any, split: Any, seed: int, features: str | None = None) -> Any:
    from movierec.device import resolve_device
    from movierec.options import TrainOptions
    from movierec.training import fit_split

    start = time.perf_counter()
    config = {} if features is None else {"features": features}
    fitted = fit_split(TrainOptions(name, seed=seed, device="cpu", config=config), data, split,
                       device=resolve_device("cpu"))
    log(f"  {name} {features or ''} trained in {time.perf_counter() - start:.0f} s")
    return fitted


def _served(fitted: Any, split: Any, data: Any) -> Any:
    from movierec.loading import serve_unsaved

    return serve_unsaved(fitted.model, split.train, data, picks=fitted.picks, split=split.name)


def _ndcg(ranked: np.ndarray, relevant: np.ndarray) -> float:
    import torch

    from movierec import metrics

    return float(metrics.ndcg_at_k(torch.as_tensor(ranked[None, :K]), torch.as_tensor(relevant[None]))[0])


def _auc(scores: np.ndarray, labels: np.ndarray) -> float | None:
    import torch

    from movierec import metrics

    return metrics.roc_auc(torch.as_tensor(scores, dtype=torch.float64), torch.as_tensor(labels))


TIES = np.random.default_rng(7).random(200_000)
"""Equal scores are ordered by these (a seeded draw per movie index), not by index: ml-100k's low movie ids are
its best-known movies, so a baseline whose scores tie (every drama alike) would be ranked by popularity."""


def _order(scores: np.ndarray, candidates: np.ndarray) -> np.ndarray:
    """``candidates`` best first by ``scores`` (I,), ties in a seeded random order."""
    return candidates[np.lexsort((TIES[candidates], -scores[candidates]))]


def _lightfm(train: Any, data: Any, keep_users: np.ndarray, keep_items: np.ndarray, seed: int, epochs: int,
             tags: bool = False) -> tuple[Any, Any, Any]:
    """LightFM fitted on ``train``'s ratings of 4 stars or more, with every feature the hybrid has and an identity
    feature for the users and movies that have training ratings (``keep_*``); the model and both feature
    matrices (rows normalised to sum 1, as ``lightfm.data.Dataset`` builds them)."""
    import scipy.sparse as sp
    from lightfm import LightFM

    from movierec.data.features import movie_features, people_features

    def matrix(side: Any, own: np.ndarray) -> Any:
        n, width = side.index.shape
        rows = np.repeat(np.arange(n), width)
        weight = side.weight.reshape(-1)
        used = weight > 0
        feats = sp.csr_matrix((weight[used], (rows[used], side.index.reshape(-1)[used])), shape=(n, len(side.names)))
        ident = sp.diags(own.astype(np.float32))
        full = sp.hstack([ident, feats]).tocsr()
        sums = np.asarray(full.sum(1)).ravel()
        return sp.diags(1.0 / np.where(sums > 0, sums, 1.0)) @ full

    liked = train.ratings >= RELEVANCE
    interactions = sp.coo_matrix((np.ones(int(liked.sum()), np.float32), (train.users[liked], train.items[liked])),
                                 shape=(data.n_users, data.n_items))
    users = matrix(people_features(data), keep_users).tocsr()
    items = matrix(movie_features(data, tags=tags), keep_items).tocsr()
    start = time.perf_counter()
    model = LightFM(no_components=32, loss="warp", random_state=seed)
    model.fit(interactions, user_features=users, item_features=items, epochs=epochs, num_threads=1)
    log(f"  lightfm trained in {time.perf_counter() - start:.0f} s ({epochs} epochs)")
    return model, users, items


def _lightfm_scores(fitted: tuple[Any, Any, Any], user: int, n_items: int) -> np.ndarray:
    model, users, items = fitted
    return model.predict(np.full(n_items, user, np.int32), np.arange(n_items, dtype=np.int32),
                         user_features=users, item_features=items, num_threads=1)


# -- cold movies -------------------------------------------------------------------------------------------
def cold_items(data: Any, seed: int, epochs: int, with_lightfm: bool) -> list[dict[str, Any]]:
    from movierec.data.features import movie_features

    cold, is_cold, split = _hold_out(data, "items", "cold-movies", seed)
    train, test = split.train, split.test
    log(f"  {len(cold)} cold movies, {len(test)} held-out ratings")

    # The baselines' genre table: each movie's genres, a field's weight 1 shared among them.
    features = movie_features(data)
    genre_cols = [k for k, n in enumerate(features.names) if n.startswith("genre:")]
    genre = np.zeros((data.n_items, len(features.names) + 1), np.float32)
    np.add.at(genre, (np.arange(data.n_items)[:, None], features.index), features.weight)
    genre = genre[:, genre_cols]  # (I, G)
    liked = train.ratings >= RELEVANCE
    rated_movies = np.bincount(train.items, minlength=data.n_items) > 0
    likes_per_movie = (np.bincount(train.items[liked], minlength=data.n_items) @ genre
                       / np.maximum(rated_movies @ genre, 1e-9))  # (G,)
    popular_genres = genre @ likes_per_movie  # (I,)
    user_likes = np.zeros((data.n_users, genre.shape[1]), np.float64)
    np.add.at(user_likes, train.users[liked], genre[train.items[liked]])
    user_share = user_likes / np.maximum(user_likes.sum(1, keepdims=True), 1e-9)  # (U, G)

    tagged = _has_tags(data)
    fitted = _train("hybrid", data, split, seed)
    served = _served(fitted, split, data)
    untagged = _served(_train("hybrid", data, split, seed, "movies,people"), split, data) if tagged else None
    lights = {}
    if with_lightfm:
        users = np.bincount(train.users, minlength=data.n_users) > 0
        for label, tags in (("lightfm", tagged), ("lightfm without tags", False))[: 1 + tagged]:
            lights[label] = _lightfm(train, data, users, rated_movies, seed, epochs, tags=tags)

    test_liked = test.ratings >= RELEVANCE
    judged = np.unique(test.users[test_liked])
    scores: dict[str, list[tuple[float, float]]] = {"hybrid": [], "genre popularity": [], "user's genres": []}
    if untagged is not None:
        scores["hybrid without tags"] = []
    for label in lights:
        scores[label] = []
    hybrid_all = served.scorer.listed_and_own(judged)[0]  # (B, I): what `recommend --include-unrated` ranks by
    untagged_all = untagged.scorer.listed_and_own(judged)[0] if untagged is not None else None
    for row, u in enumerate(judged):
        relevant = np.zeros(data.n_items, dtype=bool)
        relevant[test.items[(test.users == u) & test_liked]] = True
        rankers = {"hybrid": hybrid_all[row], "genre popularity": popular_genres,
                   "user's genres": genre @ user_share[u]}
        if untagged_all is not None:
            rankers["hybrid without tags"] = untagged_all[row]
        for label, light in lights.items():
            rankers[label] = _lightfm_scores(light, int(u), data.n_items)
        for name, s in rankers.items():
            s = np.asarray(s, dtype=np.float64)
            scores[name].append((_auc(s[cold], relevant[cold]), _ndcg(_order(s, cold), relevant)))
    # The served model lists them as ranked here: its top cold movie for the first judged user is this one.
    first = served.recommend(int(data.user_ids[judged[0]]), data.n_items, include_unrated=True)
    listed = [data.item_index(r["movie_id"]) for r in first]
    assert [i for i in listed if is_cold[i]][0] == cold[np.argmax(hybrid_all[0][cold])]
    served.close()
    if untagged is not None:
        untagged.close()
    rows = []
    for name, pairs in scores.items():
        aucs = [a for a, _ in pairs if a is not None]
        rows.append({"ranker": name, "users": len(pairs), "auc": float(np.mean(aucs)),
                     "ndcg@10": float(np.mean([n for _, n in pairs]))})
        log(f"  {name}: AUC {rows[-1]['auc']:.4f}, NDCG@10 {rows[-1]['ndcg@10']:.4f}")
    return rows


# -- cold users --------------------------------------------------------------------------------------------
def _person(data: Any, u: int) -> dict[str, Any]:
    row = data.users.loc[int(data.user_ids[u])]
    return {"age": int(row["age"]), "gender": str(row["gender"]), "occupation": str(row["occupation"])}


def _groups(data: Any, users: np.ndarray) -> tuple[dict[tuple, np.ndarray], dict[tuple, np.ndarray]]:
    """The training users of each (age band, gender, occupation) and of each (age band, gender)."""
    from movierec.data.features import age_band

    full: dict[tuple, list[int]] = {}
    broad: dict[tuple, list[int]] = {}
    for u in users:
        p = _person(data, int(u))
        band = age_band(p["age"])
        full.setdefault((band, p["gender"], p["occupation"]), []).append(int(u))
        broad.setdefault((band, p["gender"]), []).append(int(u))
    return ({k: np.asarray(v) for k, v in full.items()}, {k: np.asarray(v) for k, v in broad.items()})


def cold_users(data: Any, seed: int, epochs: int, with_lightfm: bool) -> list[dict[str, Any]]:
    from movierec.data.features import age_band

    held, is_held, split = _hold_out(data, "users", "cold-users", seed)
    rng = np.random.default_rng([seed, 1])  # the order of each held-out person's ratings
    ratings, train = data.ratings, split.train
    log(f"  {len(held)} held-out users, {len(split.test)} of their ratings")
    counts = np.bincount(train.items, minlength=data.n_items).astype(np.float64)
    kept = np.flatnonzero(~is_held)
    full, broad = _groups(data, kept)
    seen_groups: dict[int, np.ndarray] = {}

    def group_counts(members: np.ndarray) -> np.ndarray:
        key = hash(members.tobytes())
        if key not in seen_groups:
            rows = np.isin(train.users, members)
            seen_groups[key] = np.bincount(train.items[rows], minlength=data.n_items).astype(np.float64)
        return seen_groups[key]

    served = {name: _served(_train(name, data, split, seed), split, data) for name in ("hybrid", "mf")}
    light = None
    if with_lightfm:
        light = _lightfm(train, data, ~is_held, counts > 0, seed, epochs)
    people = []
    for u in held:
        order = rng.permutation(np.flatnonzero(ratings.users == u))
        people.append((int(u), ratings.items[order].astype(np.int64), ratings.ratings[order].astype(np.float32)))

    results: dict[tuple[str, int], list[float]] = {}
    for u, items, stars in people:
        person = _person(data, u)
        band = age_band(person["age"])
        members = full.get((band, person["gender"], person["occupation"]), np.empty(0, np.int64))
        if len(members) < GROUP_MIN:
            members = broad.get((band, person["gender"]), kept)
        in_group = group_counts(members)
        for given in GIVEN:
            relevant = np.zeros(data.n_items, dtype=bool)
            relevant[items[given:][stars[given:] >= RELEVANCE]] = True
            if not relevant.any():
                continue
            candidates = np.setdiff1d(np.arange(data.n_items), items[:given])
            pairs = [(int(data.item_ids[i]), float(s)) for i, s in zip(items[:given], stars[:given])]
            lists = {"popularity": _order(counts, candidates), "group popularity": _order(in_group, candidates)}
            for name, s in served.items():
                if name == "mf" and given == 0:
                    continue
                rows = s.recommend_new(pairs, K, person=person if name == "hybrid" else None)
                lists[name] = np.asarray([data.item_index(r["movie_id"]) for r in rows])
            if light is not None and given == 0:
                lists["lightfm"] = _order(_lightfm_scores(light, u, data.n_items).astype(np.float64), candidates)
            for name, ranked in lists.items():
                results.setdefault((name, given), []).append(_ndcg(ranked, relevant))
    for s in served.values():
        s.close()
    rows = [{"ranker": name, "given": given, "users": len(v), "ndcg@10": float(np.mean(v))}
            for (name, given), v in results.items()]
    for r in rows:
        log(f"  {r['ranker']} from {r['given']}: NDCG@10 {r['ndcg@10']:.4f} ({r['users']} users)")
    return rows


def _has_tags(data: Any) -> bool:
    from movierec.data.tags import release_tags

    return release_tags(data, asked=False) is not None


# -- warm accuracy -----------------------------------------------------------------------------------------
def warm(data: Any) -> list[dict[str, Any]]:
    """mf and the hybrid on ml-100k's u1 (on a release without it: a seeded random 80/20 split); on a release
    with tags, the hybrid without them too."""
    from movierec.data.split import make_split
    from movierec.training import score_test_split

    split = make_split(data, "u1") if data.name == "ml-100k" else make_split(data, "random", seed=0)
    rows = []
    models = [("mf", None, "mf"), ("hybrid", None, "hybrid")]
    if _has_tags(data):
        models.append(("hybrid", "movies,people", "hybrid without tags"))
    for name, features, label in models:
        for seed in SEEDS:
            fitted = _train(name, data, split, seed, features)
            tested = score_test_split(fitted.ranked, fitted.known, split.test)
            rows.append({"model": label, "seed": seed, "rmse": tested.metrics["rmse"],
                         "ndcg@10": tested.metrics["ndcg@10"]})
            log(f"  {name} seed {seed}: RMSE {rows[-1]['rmse']:.4f}, NDCG@10 {rows[-1]['ndcg@10']:.4f}")
    return rows


# -- the report --------------------------------------------------------------------------------------------
def _item_table(rows: list[dict[str, Any]]) -> list[str]:
    lines = ["| shape | ranker | AUC | NDCG@10 | users |", "|---|---|---|---|---|"]
    lines += [f"| {r['shape']} | {r['ranker']} | {r['auc']:.3f} | {r['ndcg@10']:.3f} | {r['users']} |" for r in rows]
    return lines


def _user_table(rows: list[dict[str, Any]]) -> list[str]:
    lines = ["| shape | ranker | " + " | ".join(f"{g} ratings" for g in GIVEN) + " |",
             "|---|---|" + "---|" * len(GIVEN)]
    for shape in dict.fromkeys(r["shape"] for r in rows):
        for name in dict.fromkeys(r["ranker"] for r in rows if r["shape"] == shape):
            cells = []
            for g in GIVEN:
                hit = [r for r in rows if r["shape"] == shape and r["ranker"] == name and r["given"] == g]
                cells.append(f"{hit[0]['ndcg@10']:.3f}" if hit else "—")
            lines.append(f"| {shape} | {name} | " + " | ".join(cells) + " |")
    return lines


def _warm_table(rows: list[dict[str, Any]]) -> list[str]:
    lines = ["| model | RMSE (seeds " + ", ".join(map(str, SEEDS)) + ") | mean | NDCG@10 (seeds) | mean |",
             "|---|---|---|---|---|"]
    for name in dict.fromkeys(r["model"] for r in rows):
        mine = [r for r in rows if r["model"] == name]
        rm, nd = [r["rmse"] for r in mine], [r["ndcg@10"] for r in mine]
        lines.append(f"| {name} | {', '.join(f'{x:.4f}' for x in rm)} | {np.mean(rm):.4f} | "
                     f"{', '.join(f'{x:.4f}' for x in nd)} | {np.mean(nd):.4f} |")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--zip", type=Path, help="ml-100k.zip (for the ml-100k shape and the warm part).")
    parser.add_argument("--shapes", default=",".join(SHAPES), help=f"Comma-separated, among {', '.join(SHAPES)}.")
    parser.add_argument("--parts", default=",".join(PARTS), help=f"Comma-separated, among {', '.join(PARTS)}.")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--lightfm", type=Path, help="A folder LightFM was installed to (pip install --target).")
    parser.add_argument("--lightfm-epochs", type=int, default=30)
    parser.add_argument("--out", type=Path, default=HERE / "results")
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    if args.lightfm is not None:
        sys.path.insert(0, str(args.lightfm))
    try:
        import lightfm  # noqa: F401

        with_lightfm, lightfm_note = True, f"LightFM {lightfm.__version__}"
    except ImportError as exc:
        with_lightfm, lightfm_note = False, f"LightFM could not be imported ({exc})"
    log(lightfm_note)
    from movierec import paths
    from movierec.data.movielens import load_dataset

    load_start, started = os.getloadavg(), dt.datetime.now(dt.timezone.utc)
    parts = [p for p in args.parts.split(",") if p]
    found: dict[str, list[dict[str, Any]]] = {p: [] for p in parts}
    timings = {}
    for shape in [s for s in args.shapes.split(",") if s]:
        with tempfile.TemporaryDirectory(prefix="movierec-cold-") as home:
            paths.set_home(home)
            try:
                prepare(shape, args, HERE / ".cache")
                data = load_dataset(SHAPES[shape])
                for part in parts:
                    if part == "warm" and shape not in ("ml-100k", "tagged-ml-20m"):
                        continue
                    if part == "users" and data.users is None:
                        continue  # nobody's age, gender or occupation to start from
                    log(f"{shape}: {part}")
                    start = time.perf_counter()
                    if part == "items":
                        rows = cold_items(data, args.seed, args.lightfm_epochs, with_lightfm)
                    elif part == "users":
                        rows = cold_users(data, args.seed, args.lightfm_epochs, with_lightfm)
                    else:
                        rows = warm(data)
                    timings[f"{shape} {part}"] = round(time.perf_counter() - start, 1)
                    found[part] += [{"shape": shape, **r} for r in rows]
            finally:
                paths.set_home(None)
    load_end = os.getloadavg()
    md = ["# Cold starts: movies without ratings, people without ratings", "",
          f"- date: {started.isoformat(timespec='seconds')}; command: `python {' '.join(sys.argv)}`; one torch "
          "thread, one LightFM thread",
          f"- load average {load_start[0]:.1f} -> {load_end[0]:.1f} on {os.cpu_count()} cores; seed {args.seed}; "
          f"{lightfm_note}; seconds per part: {timings}", ""]
    if found.get("items"):
        md += ["## Movies without training ratings (10% of movies, every rating held out)", "",
               *_item_table(found["items"]), ""]
    if found.get("users"):
        md += ["## People without training ratings (10% of users held out), NDCG@10 from 0, 1, 3 ratings", "",
               *_user_table(found["users"]), ""]
    if found.get("warm"):
        for shape in dict.fromkeys(r["shape"] for r in found["warm"]):
            where = "u1" if shape == "ml-100k" else "a seeded random 80/20 split"
            md += [f"## Warm: {shape}, {where}", "", *_warm_table([r for r in found["warm"] if r["shape"] == shape]),
                   ""]
    text = "\n".join(md)
    print(text)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "cold_start.md").write_text(text)
    (args.out / "cold_start.json").write_text(json.dumps({**found, "lightfm": lightfm_note, "seconds": timings,
                                                          "load_average": [load_start, load_end]}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
