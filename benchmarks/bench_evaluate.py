"""How long full-ranking evaluation takes at a release's shape, without parsing a release. Not part of the tests.

Builds an in-memory ratings table with the shape of a MovieLens release (users x movies, ratings, long-tailed
movie popularity), holds out 10% of it as the test split, and evaluates a 64-factor implicit ALS with random
factors (the cost of ranking does not depend on what the factors learned) over every test user, or the first
``--users`` of them (the time per user is what scales).

    python benchmarks/bench_evaluate.py --shape ml-25m --users 20000
    python benchmarks/bench_evaluate.py --shape ml-25m --profile    # cProfile's top functions too

Prints users per second, the projected time over every test user and the load average.
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import resource
import time

import numpy as np
import torch

from movierec.data.ratings import Ratings
from movierec.evaluate import evaluate
from movierec.models.als import ImplicitALS, ImplicitALSConfig

SHAPES = {"ml-1m": (6_040, 3_706, 1_000_209), "ml-10m": (69_878, 10_677, 10_000_054),
          "ml-25m": (162_541, 59_047, 25_000_095)}


def make_tables(shape: str, seed: int = 0) -> tuple[Ratings, Ratings]:
    n_users, n_items, n = SHAPES[shape]
    rng = np.random.default_rng(seed)
    pop = (np.arange(n_items) + 10.0) ** -1.0
    items = rng.choice(n_items, size=n, p=pop / pop.sum()).astype(np.int32)
    activity = rng.lognormal(0, 1.2, n_users)
    users = rng.choice(n_users, size=n, p=activity / activity.sum()).astype(np.int32)
    key = np.unique(users.astype(np.int64) * n_items + items)  # one rating per pair
    users, items = (key // n_items).astype(np.int32), (key % n_items).astype(np.int32)
    stars = (rng.integers(1, 11, users.shape[0]) / 2).astype(np.float32)
    table = Ratings(users, items, stars, np.zeros(users.shape[0], np.int64), n_users, n_items)
    test = rng.random(users.shape[0]) < 0.1
    return table.take(~test), table.take(test)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", default="ml-25m", choices=list(SHAPES))
    parser.add_argument("--users", type=int, default=0, help="Evaluate only the first N test users (0: all).")
    parser.add_argument("--batch-users", type=int, default=None)
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()

    t = time.perf_counter()
    train, test = make_tables(args.shape)
    all_users = np.unique(test.users).shape[0]
    if args.users:
        chosen = np.unique(test.users)[: args.users]
        test = test.take(np.isin(test.users, chosen))
    matrix = train.matrix()
    torch.manual_seed(0)  # the movie factors are drawn when the model is built
    model = ImplicitALS(ImplicitALSConfig(), train.n_users, train.n_items, (0.5, 1.0, 2.0, 3.0, 4.0, 5.0))
    model.user_factors.normal_(0, 0.1)
    print(f"{args.shape}: {train.n_users:,} users x {train.n_items:,} movies, {len(train):,} training and "
          f"{len(test):,} test ratings ({time.perf_counter() - t:.1f} s to build)")
    kwargs = {} if args.batch_users is None else {"batch_users": args.batch_users}
    profiler = cProfile.Profile() if args.profile else None
    before = resource.getrusage(resource.RUSAGE_SELF)
    t = time.perf_counter()
    if profiler:
        profiler.enable()
    out = evaluate(model, matrix, test, **kwargs)
    if profiler:
        profiler.disable()
    seconds = time.perf_counter() - t
    after = resource.getrusage(resource.RUSAGE_SELF)
    users = np.unique(test.users).shape[0]
    print(f"evaluated {users:,} test users in {seconds:.1f} s ({users / seconds:,.0f} users/s; user "
          f"{after.ru_utime - before.ru_utime:.1f} s, system {after.ru_stime - before.ru_stime:.1f} s); "
          f"all {all_users:,} would take {all_users / users * seconds:.0f} s; ndcg@10 {out['ndcg@10']!r}, "
          f"coverage {out['coverage@10']!r}; "
          f"peak RSS {after.ru_maxrss / 1024:.0f} MB; load average {os.getloadavg()[0]:.2f}")
    if profiler:
        pstats.Stats(profiler).sort_stats("tottime").print_stats(15)


if __name__ == "__main__":
    main()
