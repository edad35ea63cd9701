"""Seconds per epoch of movierec's ``mf`` (its SGD epoch in the ``fast`` extra's compiled loop, ``kernel``, and on
torch alone, ``torch``) and Surprise's SVD on the same training ratings, in one process, alternating. Not part of
the tests.

Both at the same size (``mf``'s default factors), on the ratings ``movierec train`` learns from (same synthetic
release shape, split and seed as ``bench_scale.py``, whose ``--peers svd`` row times each contender in a
process of its own). Each round times, for each of ``--threads``, ``--epochs`` epochs of ``mf`` both ways (after
making its trainer and one epoch), and then a Surprise SVD fit of ``--epochs`` epochs (one thread: its fit is its
epochs, after drawing the initial factors); the medians and their ratios are printed with the load average, which
on a shared machine says how far to trust them. The compiled loop is sequential (mini-batch SGD's steps in
order), so it does not gain from a second thread.

    python benchmarks/mf_epoch.py                    # ml-10m shape, 3 rounds of 2 epochs, 1 and 2 threads
    python benchmarks/mf_epoch.py --shape ml-1m --rounds 5 --threads 1

Needs scikit-surprise (the ``bench`` extra) and numba (the ``fast`` extra). The shape's archive is written once
under ``benchmarks/.cache/``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))


def _load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", default="ml-10m", help="synthetic release shape, e.g. ml-1m, ml-10m")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds (medians over them)")
    parser.add_argument("--epochs", type=int, default=2, help="epochs timed per round, each contender")
    parser.add_argument("--threads", default="1,2", help="torch threads for mf, comma-separated")
    args = parser.parse_args()

    import torch
    from bench_scale import _archive, _lean_trainset, _movierec_seconds_per_epoch, _training_ratings
    from peers import make_surprise_algo

    from movierec.models import kernels
    from movierec.models.mf import MFConfig

    if kernels.load(torch.device("cpu")) is None:
        raise SystemExit("mf_epoch: numba is not installed (pip install movierec[fast])")
    threads = [int(t) for t in args.threads.split(",")]
    load_before = _load()
    home = Path(tempfile.mkdtemp(prefix="movierec-mf-epoch-"))
    os.environ["MOVIEREC_HOME"] = str(home)
    try:
        from movierec.data import download

        download.fetch(args.shape, from_file=_archive(args.shape), verify=False)
        train = _training_ratings(args.shape)
    finally:
        shutil.rmtree(home, ignore_errors=True)
    factors = MFConfig().factors
    trainset = _lean_trainset(train)
    times: dict[str, list[float]] = {}
    for _ in range(args.rounds):
        for n in threads:
            torch.set_num_threads(n)
            for way, flag in (("kernel", "1"), ("torch", "0")):
                os.environ["MOVIEREC_KERNELS"] = flag
                times.setdefault(f"mf {way} {n}t", []).append(
                    _movierec_seconds_per_epoch(train, "mf", factors, args.epochs))
        torch.set_num_threads(1)
        algo = make_surprise_algo("svd", 0, n_factors=factors, n_epochs=args.epochs)
        start = time.perf_counter()
        algo.fit(trainset)
        times.setdefault("svd 1t", []).append((time.perf_counter() - start) / args.epochs)
        print(", ".join(f"{k} {v[-1]:.2f}" for k, v in times.items()) + " s/epoch", file=sys.stderr)
    medians = {k: statistics.median(v) for k, v in times.items()}
    svd = medians["svd 1t"]
    print(f"[{args.shape}, {len(train):,} training ratings, {factors} factors] s/epoch, medians of {args.rounds}; "
          f"load average {load_before} -> {_load()}")
    print("| contender | threads | s / epoch | x Surprise SVD |\n|---|---|---|---|")
    for key, value in medians.items():
        who, n = key.rsplit(" ", 1)
        print(f"| {who} | {n[:-1]} | {value:.2f} | {value / svd:.2f} |")
    print(json.dumps({"shape": args.shape, "ratings": len(train), "seconds_per_epoch": medians, "runs": times,
                      "load_before": load_before, "load_after": _load()}))


if __name__ == "__main__":
    main()
