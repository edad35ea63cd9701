"""How fast is a 25M-rating release parsed and loaded, and how much memory does it take?

Writes a synthetic ``ratings.csv`` / ``movies.csv`` of ML-25M's shape (25,000,095 ratings, 162,541 users,
59,047 movies, half stars) as an extracted ``ml-25m/ml-25m/`` folder in a temporary MOVIEREC_HOME, then
measures, each in a fresh process so the peaks are its own:

- ``prepare("ml-25m")``: the first parse and the cache write   (target: under 60 s)
- ``load_dataset("ml-25m")``: a load from the parsed cache      (target: under 2 s, also when
  followed by one full pass over the arrays, since the cache is memory-mapped)
- the peak resident memory of each                             (target: under 3 GB)

Prints a small table and exits 1 when a target is missed. Not part of the test run::

    python benchmarks/bench_load.py                   # full size; writing the data takes a few minutes
    python benchmarks/bench_load.py --keep /tmp/b25m  # keep (and reuse) the generated release there
    python benchmarks/bench_load.py --rows 1000000    # a quick smaller run (targets still checked)
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ML25M_ROWS = 25_000_095
ML25M_USERS = 162_541
ML25M_MOVIES = 59_047
ML25M_MAX_MOVIE_ID = 209_171

TARGET_PREPARE_S = 60.0
TARGET_LOAD_S = 2.0
TARGET_PEAK_BYTES = 3 * 1024**3


def generate(folder: Path, rows: int, n_users: int, n_movies: int, seed: int) -> None:
    """Write ratings.csv and movies.csv in ML-25M's format: sorted by user, then movie, like the real file."""
    import pandas as pd

    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    movie_ids = np.sort(rng.choice(np.arange(1, ML25M_MAX_MOVIE_ID + 1), n_movies, replace=False))
    # Every user has at least 20 ratings (as in ML-25M); activity and popularity are heavy-tailed.
    base = min(20, rows // n_users)
    activity = rng.lognormal(0.0, 1.2, n_users)
    counts = base + rng.multinomial(rows - base * n_users, activity / activity.sum())
    users = np.repeat(np.arange(1, n_users + 1, dtype=np.int64), counts)
    popularity = 1.0 / (np.arange(n_movies) + 10.0) ** 1.1
    items = rng.choice(n_movies, rows, p=popularity / popularity.sum())
    # Every movie rated at least once, so the index space has exactly n_movies movies.
    items[rng.choice(rows, n_movies, replace=False)] = rng.permutation(n_movies)
    order = np.lexsort((items, users))
    items = movie_ids[items[order]]
    stars = (
        rng.choice(np.arange(1, 11), rows, p=[0.02, 0.03, 0.03, 0.07, 0.06, 0.2, 0.13, 0.26, 0.08, 0.12]) / 2
    )
    times = rng.integers(789_652_009, 1_574_327_703, rows)
    star_text = np.array([f"{s / 2:.1f}" for s in range(11)], dtype=object)

    with open(folder / "ratings.csv", "w", encoding="utf-8", newline="\n") as f:
        f.write("userId,movieId,rating,timestamp\n")
        chunk = 1_000_000
        for start in range(0, rows, chunk):
            stop = min(start + chunk, rows)
            pd.DataFrame(
                {
                    "u": users[start:stop],
                    "m": items[start:stop],
                    "r": star_text[(stars[start:stop] * 2).astype(np.int64)],
                    "t": times[start:stop],
                }
            ).to_csv(f, header=False, index=False, lineterminator="\n")
            print(f"\r  wrote {stop:,} / {rows:,} ratings", end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)
    genres = np.array(["Drama", "Comedy", "Action|Thriller", "Animation|Children's", "(no genres listed)"])
    pd.DataFrame(
        {
            "movieId": movie_ids,
            "title": [f"Synthetic Movie, Number {m} ({1900 + m % 120})" for m in movie_ids],
            "genres": genres[movie_ids % len(genres)],
        }
    ).to_csv(folder / "movies.csv", index=False, lineterminator="\n")


def child(phase: str) -> None:
    """Run one measured phase in this (fresh) process and print its numbers as JSON."""
    t0 = time.perf_counter()
    from movierec.data import movielens

    imported = time.perf_counter() - t0
    t0 = time.perf_counter()
    if phase == "prepare":
        s = movielens.prepare("ml-25m")
        counts = (s.users, s.items, s.ratings)
    else:
        d = movielens.load_dataset("ml-25m")
        counts = (d.n_users, d.n_items, len(d.ratings))
    seconds = time.perf_counter() - t0
    touched = seconds
    if phase == "load":
        # The cache is memory-mapped, so load_dataset() alone defers reading; one full pass over every
        # array makes the number include actually bringing the 500 MB in.
        r = d.ratings
        for arr in (r.users, r.items, r.ratings, r.timestamps, d.user_ids, d.item_ids):
            arr.sum()
        touched = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB
    result = {"seconds": seconds, "with_full_read": touched, "import_seconds": imported, "peak_bytes": peak}
    print(json.dumps({**result, "counts": counts}))


def run_phase(phase: str, home: Path) -> dict:
    env = {**os.environ, "MOVIEREC_HOME": str(home)}
    out = subprocess.run(
        [sys.executable, __file__, "--phase", phase], env=env, check=True, capture_output=True, text=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=ML25M_ROWS)
    parser.add_argument("--users", type=int, default=ML25M_USERS)
    parser.add_argument("--movies", type=int, default=ML25M_MOVIES)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--keep", type=Path, help="MOVIEREC_HOME to keep the release in (reused if present)")
    parser.add_argument("--phase", choices=("prepare", "load"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.phase:
        child(args.phase)
        return 0

    tmp = None
    if args.keep:
        home = args.keep.resolve()
    else:
        tmp = tempfile.TemporaryDirectory(prefix="movierec-bench-")
        home = Path(tmp.name)
    try:
        folder = home / "datasets" / "ml-25m" / "ml-25m"
        if not (folder / "ratings.csv").is_file():
            t0 = time.perf_counter()
            generate(folder, args.rows, args.users, args.movies, args.seed)
            print(f"generated the synthetic release in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
        size = (folder / "ratings.csv").stat().st_size
        prep = run_phase("prepare", home)
        load = run_phase("load", home)
    finally:
        if tmp is not None:
            tmp.cleanup()

    expected = [args.users, args.movies, args.rows]
    rows = [
        ("prepare (parse + write cache)", prep["seconds"], TARGET_PREPARE_S, prep["peak_bytes"]),
        ("load_dataset (from cache)", load["seconds"], TARGET_LOAD_S, load["peak_bytes"]),
        ("load_dataset + one full read", load["with_full_read"], TARGET_LOAD_S, load["peak_bytes"]),
    ]
    print(
        f"ratings.csv: {size / 1e6:,.0f} MB, {args.rows:,} ratings; "
        f"users/movies/ratings parsed: {prep['counts']}"
    )
    print(f"{'phase':32} {'seconds':>8} {'target':>7} {'peak RSS':>9}  ok")
    failed = prep["counts"] != expected or load["counts"] != expected
    for name, seconds, target, peak in rows:
        ok = seconds < target and peak < TARGET_PEAK_BYTES
        failed |= not ok
        print(f"{name:32} {seconds:8.2f} {target:7.0f} {peak / 1024**3:7.2f} GB  {'yes' if ok else 'NO'}")
    print(
        f"(importing movierec.data.movielens, i.e. torch, took {load['import_seconds']:.2f} s "
        "before the load)"
    )
    if prep["counts"] != expected:
        print(f"counts {prep['counts']} differ from the generated {expected}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
