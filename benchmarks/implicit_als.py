"""Implicit ALS: do its defaults follow the data, and how fast is an iteration? Not part of the tests.

``accuracy``: NDCG@10 (relevance 4 stars) of ``als --mode implicit`` against EASE (its penalty chosen on a
validation slice of the training ratings, as benchmarks/peers.py does) and popularity, on ml-100k's u1..u5 and
on variants built from the real ml-100k (each split 80/20 at random per rating, seeded):

- ``users30``: a random 30 % of the users;
- ``heavy``: only the users with at least 150 ratings;
- ``thin``: a random 12 % of the ratings (most movies keep fewer than 5);
- ``recent``: every user's last 20 % of ratings (by time) is the test.

``select``: every candidate penalty rule on three random validation slices (10 %) of the training ratings of
u1 and each variant, never looking at the test split; the defaults of ImplicitALSConfig were chosen so.

``speed``: seconds per iteration of ImplicitALS (``--solver cg`` in the ``fast`` extra's compiled loop, ``kernel``,
and on torch alone, ``cg``; ``cholesky``) and implicit's CPU
AlternatingLeastSquares (same factors, 3 CG steps each, same data, BLAS 1 thread) on a MovieLens-shaped archive
(``/work/shared/synth/synth_release.py ml-1m out.zip``), 1 and 2 threads for everyone, each contender in a
process of its own (torch and implicit bring different OpenMP runtimes; together they slow torch down). Wall
time and the process's CPU time, each: on a busy machine the CPU time of a 1-thread run varies less (it leaves
out the time spent waiting for a core).

    python benchmarks/implicit_als.py accuracy --zip ../shared/data/ml-100k.zip
    python benchmarks/implicit_als.py select --zip ../shared/data/ml-100k.zip
    python benchmarks/implicit_als.py speed --zip out.zip --iters 3
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import subprocess
import sys
import time
import zipfile

import numpy as np

K = 10
RELEVANCE = 4.0
SEED = 0


def read_ml100k(path: str, member: str = "ml-100k/u.data") -> np.ndarray:
    with zipfile.ZipFile(path) as zf:
        return np.loadtxt(zf.open(member), dtype=np.int64)  # (N, 4) user, item, stars, time (1-based ids)


def to_ratings(rows: np.ndarray, n_users: int, n_items: int):
    from movierec.data.ratings import Ratings

    return Ratings(rows[:, 0].astype(np.int32), rows[:, 1].astype(np.int32), rows[:, 2].astype(np.float32),
                   rows[:, 3], n_users, n_items)


def reindex(rows: np.ndarray) -> tuple[np.ndarray, int, int]:
    """0-based contiguous user and movie indices over the rows kept."""
    rows = rows.copy()
    _, rows[:, 0] = np.unique(rows[:, 0], return_inverse=True)
    _, rows[:, 1] = np.unique(rows[:, 1], return_inverse=True)
    return rows, int(rows[:, 0].max()) + 1, int(rows[:, 1].max()) + 1


def random_split(rows: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    test = np.random.default_rng(seed).random(len(rows)) < fraction
    return rows[~test], rows[test]


def datasets(zip_path: str) -> dict[str, tuple]:
    """name -> (train Ratings, test Ratings)."""
    out = {}
    for i in range(1, 6):
        parts = [read_ml100k(zip_path, f"ml-100k/u{i}.{s}") for s in ("base", "test")]
        out[f"u{i}"] = tuple(to_ratings(np.c_[p[:, :2] - 1, p[:, 2:]], 943, 1682) for p in parts)
    full = read_ml100k(zip_path)
    rng = np.random.default_rng(SEED)
    counts = np.bincount(full[:, 0])
    variants = {
        "users30": full[np.isin(full[:, 0], rng.permutation(np.unique(full[:, 0]))[:283])],
        "heavy": full[counts[full[:, 0]] >= 150],
        "thin": full[rng.random(len(full)) < 0.12],
    }
    for name, rows in variants.items():
        rows, n_users, n_items = reindex(rows)
        train, test = random_split(rows, 0.2, SEED + 1)
        out[name] = (to_ratings(train, n_users, n_items), to_ratings(test, n_users, n_items))
    rows, n_users, n_items = reindex(full)
    # Each user's last 20 % by time (ties by position) is the test.
    order = np.lexsort((np.arange(len(rows)), rows[:, 3], rows[:, 0]))
    rows = rows[order]
    starts = np.r_[0, np.cumsum(np.bincount(rows[:, 0]))[:-1]]
    rank = np.arange(len(rows)) - starts[rows[:, 0]]
    size = np.bincount(rows[:, 0])[rows[:, 0]]
    late = rank >= np.ceil(0.8 * size)
    out["recent"] = (to_ratings(rows[~late], n_users, n_items), to_ratings(rows[late], n_users, n_items))
    return out


def shape(r) -> str:
    return (f"{r.n_users} users x {r.n_items} movies, {len(r)} ratings, "
            f"median movie {int(np.median(np.bincount(r.items, minlength=r.n_items)))} ratings")


def fit_als(train, **config):
    import torch

    from movierec.device import make_generator
    from movierec.models.als import ImplicitALS, ImplicitALSConfig

    cfg = ImplicitALSConfig(**config)
    torch.manual_seed(SEED)
    model = ImplicitALS(cfg, train.n_users, train.n_items, (1.0, 2.0, 3.0, 4.0, 5.0))
    matrix = train.matrix()
    gen = make_generator(torch.device("cpu"), SEED)
    trainer = model.trainer(matrix, gen)
    for _ in range(cfg.epochs):
        trainer.train_epoch()
    trainer.finalize()
    return model


def ndcg(model, train, test) -> float:
    from movierec.evaluate import evaluate

    return float(evaluate(model, train.matrix(), test, k=K, relevance=RELEVANCE)[f"ndcg@{K}"])


def validation(train, seed: int = SEED + 2):
    held = np.random.default_rng(seed).random(len(train)) < 0.1
    return train.take(~held), train.take(held)


def accuracy(args: argparse.Namespace) -> None:
    import peers

    from movierec.evaluate import PopularityBaseline

    rows = []
    for name, (train, test) in datasets(args.zip).items():
        if args.only and name not in args.only.split(","):
            continue
        line = {"data": name, "shape": shape(train)}
        line["als (defaults)"] = ndcg(fit_als(train), train, test)
        line["als cholesky"] = ndcg(fit_als(train, solver="cholesky"), train, test)
        line["als tau 12, nu 0.25"] = ndcg(fit_als(train, tau=12.0, reg_exponent=0.25), train, test)
        lam, _ = peers.choose_ease_lambda(train, SEED, K, RELEVANCE)
        line["ease"] = (lam, ndcg(peers.fit_ease(train, lam), train, test))
        line["popularity"] = ndcg(PopularityBaseline(train.matrix()), train, test)
        print(line, flush=True)
        rows.append(line)
    print("| data | shape | als (defaults, cg) | als (cholesky) | als (tau 12, nu 0.25) | EASE (lambda) | popularity |")
    print("|---|---|---|---|---|---|---|")
    for line in rows:
        lam, ease = line["ease"]
        print(f"| {line['data']} | {line['shape']} | {line['als (defaults)']:.4f} | {line['als cholesky']:.4f} | "
              f"{line['als tau 12, nu 0.25']:.4f} | {ease:.4f} ({lam:g}) | {line['popularity']:.4f} |")
    split_rows = [line for line in rows if line["data"] in {f"u{i}" for i in range(1, 6)}]
    if split_rows:
        means = [np.mean([line[key] for line in split_rows]) for key in ("als (defaults)", "als cholesky",
                                                                         "als tau 12, nu 0.25")]
        ease = np.mean([line["ease"][1] for line in split_rows])
        pop = np.mean([line["popularity"] for line in split_rows])
        print(f"| mean {len(split_rows)} splits | | {means[0]:.4f} | {means[1]:.4f} | {means[2]:.4f} | {ease:.4f} | "
              f"{pop:.4f} |")


# The rules tried by ``select``: (penalty base, exponent) pairs.
CANDIDATES = [
    {"tau": tau, "reg_exponent": nu}
    for nu, taus in ((0.0, (25.0, 30.0, 35.0, 40.0)), (0.25, (10.0, 12.0, 14.0, 16.0)), (0.5, (4.0, 5.0, 6.0)))
    for tau in taus
]
SELECT_ON = ("u1", "users30", "heavy", "thin", "recent")


def select(args: argparse.Namespace) -> None:
    """Every candidate on ``--slices`` random validation slices (10 %) of each set's training ratings; the
    winner has the best NDCG@10 relative to each set's best, averaged over the sets. The test split is
    never read."""
    data = datasets(args.zip)
    table = {}
    for name in SELECT_ON:
        train = data[name][0]
        slices = [validation(train, seed) for seed in range(100, 100 + args.slices)]
        table[name] = [float(np.mean([ndcg(fit_als(f, **c), f, v) for f, v in slices])) for c in CANDIDATES]
        print(name, [round(v, 4) for v in table[name]], flush=True)
    relative = np.array([np.array(v) / max(v) for v in table.values()])  # (sets, candidates)
    print("| tau | exponent | " + " | ".join(SELECT_ON) + " | mean relative | worst relative |")
    print("|---" * (len(SELECT_ON) + 4) + "|")
    for i, c in enumerate(CANDIDATES):
        cells = " | ".join(f"{table[n][i]:.4f}" for n in SELECT_ON)
        print(f"| {c['tau']:g} | {c['reg_exponent']:g} | {cells} | {relative[:, i].mean():.4f} | "
              f"{relative[:, i].min():.4f} |")
    best = int(np.argmax(relative.mean(0)))
    print("chosen:", CANDIDATES[best])


def load_release(path: str):
    with zipfile.ZipFile(path) as zf:
        member = next(n for n in zf.namelist() if n.endswith("ratings.dat"))
        text = zf.read(member).decode("latin-1").replace("::", "\t")
    import pandas as pd

    table = pd.read_csv(io.StringIO(text), sep="\t", header=None, usecols=[0, 1, 2, 3])
    rows = table.to_numpy(np.float64)
    rows[:, 2] = np.ceil(rows[:, 2])  # half stars -> whole: confidence only, speed does not depend on them
    rows = rows.astype(np.int64)
    rows, n_users, n_items = reindex(rows)
    return to_ratings(rows, n_users, n_items)


def implicit_seconds_per_iter(train, factors: int, iters: int, threads: int) -> float:
    """Wall seconds per iteration of implicit's CPU AlternatingLeastSquares (see :func:`implicit_times_per_iter`)."""
    return implicit_times_per_iter(train, factors, iters, threads)[0]


def implicit_times_per_iter(train, factors: int, iters: int, threads: int) -> tuple[float, float]:
    """Wall and CPU seconds per iteration of implicit's CPU AlternatingLeastSquares on ``train`` (a Ratings) as
    binary interactions, BLAS on one thread, ``threads`` of its own: two fits (1 and ``iters`` + 1 iterations),
    so the difference is ``iters`` iterations without the setup. Run it in a process without torch (see
    :func:`time_one`). implicit takes 3 conjugate-gradient steps per row, as ``als --mode implicit`` does by
    default."""
    import scipy.sparse as sp
    import threadpoolctl
    from implicit.cpu.als import AlternatingLeastSquares

    ones = sp.csr_matrix((np.ones(len(train), np.float32), (train.users, train.items)),
                         shape=(train.n_users, train.n_items))
    times: list[tuple[float, float]] = []
    with threadpoolctl.threadpool_limits(1, "blas"):
        for it in (1, iters + 1):
            peer = AlternatingLeastSquares(factors=factors, iterations=it, num_threads=threads,
                                           random_state=SEED, calculate_training_loss=False)
            start, cpu = time.perf_counter(), time.process_time()
            peer.fit(ones, show_progress=False)
            times.append((time.perf_counter() - start, time.process_time() - cpu))
    return (times[1][0] - times[0][0]) / iters, (times[1][1] - times[0][1]) / iters


def time_one(args: argparse.Namespace) -> None:
    """Seconds per iteration of one contender (``--who``), in this process only: implicit and torch load
    different OpenMP runtimes, and one process holding both slows torch down several times."""
    train = load_release(args.zip)
    if args.who == "implicit":
        seconds, cpu = implicit_times_per_iter(train, args.factors, args.iters, args.threads)
        print(json.dumps({"who": "implicit", "threads": args.threads, "s_per_iter": seconds, "cpu_s_per_iter": cpu,
                          "load": os.getloadavg()[0]}), flush=True)
        return
    # "kernel" is the CG solver in the fast extra's compiled loop, "cg" the same solver on torch alone.
    os.environ["MOVIEREC_KERNELS"] = "1" if args.who == "kernel" else "0"
    import torch

    from movierec.models import kernels
    from movierec.models.als import ImplicitALS, ImplicitALSConfig

    torch.set_num_threads(args.threads)
    if args.who == "kernel" and kernels.load(torch.device("cpu")) is None:
        raise SystemExit("kernel: numba is not installed (pip install movierec[fast])")
    matrix = train.matrix()
    cfg = ImplicitALSConfig(factors=args.factors, solver="cholesky" if args.who == "cholesky" else "cg", cg_steps=3)
    model = ImplicitALS(cfg, train.n_users, train.n_items, (1.0, 2.0, 3.0, 4.0, 5.0))
    gen = torch.Generator().manual_seed(SEED)
    trainer = model.trainer(matrix, gen)  # lays out the solves
    trainer.train_epoch()
    start, cpu = time.perf_counter(), time.process_time()
    for _ in range(args.iters):
        trainer.train_epoch()
    seconds = (time.perf_counter() - start) / args.iters
    cpu = (time.process_time() - cpu) / args.iters
    # The longest stretch without a chance to stop (Ctrl-C lands between torch calls) is at most one CG
    # block's work: time each block once more.
    longest = 0.0
    if args.who == "cg":
        inner = trainer._cg_block

        def timed(*a, **k):
            nonlocal longest
            t0 = time.perf_counter()
            out = inner(*a, **k)
            longest = max(longest, time.perf_counter() - t0)
            return out

        trainer._cg_block = timed
        trainer.train_epoch()
    elif args.who == "kernel":
        from movierec.models import _numba_kernels

        inner_rows = _numba_kernels.cg_rows

        def timed_rows(*a):
            nonlocal longest
            t0 = time.perf_counter()
            out = inner_rows(*a)
            longest = max(longest, time.perf_counter() - t0)
            return out

        _numba_kernels.cg_rows = timed_rows
        trainer.train_epoch()
    print(json.dumps({"who": args.who, "threads": args.threads, "s_per_iter": seconds, "cpu_s_per_iter": cpu,
                      "longest_block_s": longest, "load": os.getloadavg()[0]}), flush=True)


def speed(args: argparse.Namespace) -> None:
    """Each contender in its own process, alternating, ``--rounds`` times; the median per contender."""
    train = load_release(args.zip)
    print(f"{args.zip}: {shape(train)}; {args.factors} factors", flush=True)
    results: dict[tuple[str, int], list[float]] = {}
    cpu: dict[tuple[str, int], list[float]] = {}
    for _ in range(args.rounds):
        for threads in [int(t) for t in args.threads.split(",")]:
            for who in ["implicit", *args.solvers.split(",")]:
                out = subprocess.run(
                    [sys.executable, __file__, "time-one", "--zip", args.zip, "--who", who, "--threads", str(threads),
                     "--iters", str(args.iters), "--factors", str(args.factors)],
                    capture_output=True, text=True, check=True, env={**os.environ, "OMP_NUM_THREADS": str(threads)})
                line = json.loads(out.stdout.strip().splitlines()[-1])
                print(line, flush=True)
                results.setdefault((who, threads), []).append(line["s_per_iter"])
                cpu.setdefault((who, threads), []).append(line["cpu_s_per_iter"])
    print(f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print("| threads | contender | s / iteration (median) | x implicit | CPU s / iteration (median) | x implicit |\n"
          "|---|---|---|---|---|---|")
    for (who, threads), values in results.items():
        med, med_cpu = statistics.median(values), statistics.median(cpu[(who, threads)])
        ratio = med / statistics.median(results[("implicit", threads)])
        ratio_cpu = med_cpu / statistics.median(cpu[("implicit", threads)])
        print(f"| {threads} | {who} | {med:.3f} | {ratio:.2f} | {med_cpu:.3f} | {ratio_cpu:.2f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    acc = sub.add_parser("accuracy")
    acc.add_argument("--zip", default="../shared/data/ml-100k.zip")
    acc.add_argument("--only", default="")
    sel = sub.add_parser("select")
    sel.add_argument("--zip", default="../shared/data/ml-100k.zip")
    sel.add_argument("--slices", type=int, default=3)
    sp_ = sub.add_parser("speed")
    sp_.add_argument("--zip", required=True)
    sp_.add_argument("--iters", type=int, default=3)
    sp_.add_argument("--factors", type=int, default=64)
    sp_.add_argument("--threads", default="1,2")
    sp_.add_argument("--rounds", type=int, default=2)
    sp_.add_argument("--solvers", default="kernel,cg,cholesky")
    one = sub.add_parser("time-one")
    one.add_argument("--zip", required=True)
    one.add_argument("--who", required=True)
    one.add_argument("--iters", type=int, default=3)
    one.add_argument("--factors", type=int, default=64)
    one.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    {"accuracy": accuracy, "select": select, "speed": speed, "time-one": time_one}[args.command](args)


if __name__ == "__main__":
    main()
