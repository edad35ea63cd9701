"""Seconds per epoch of movierec's ``mf`` and Surprise's SVD on the same training ratings, in one process,
alternating. Not part of the tests.

Both at the same size (``mf``'s default factors), on the ratings ``movierec train`` learns from (same synthetic
release shape, split and seed as ``bench_scale.py``, whose ``--peers svd`` row times each contender in a
process of its own). Each round times ``--epochs`` epochs of ``mf`` (after making its trainer and one epoch) and then
a Surprise SVD fit of ``--epochs`` epochs (its fit is its epochs, after drawing the initial factors); the
medians and their ratio are printed with the load average, which on a shared machine says how far to trust them.

    OMP_NUM_THREADS=1 python benchmarks/mf_epoch.py                    # ml-10m shape, 3 rounds of 2 epochs
    OMP_NUM_THREADS=1 python benchmarks/mf_epoch.py --shape ml-1m --rounds 5

Needs scikit-surprise (the ``bench`` extra). The shape's archive is written once under ``benchmarks/.cache/``.
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
    args = parser.parse_args()

    import torch
    from bench_scale import _archive, _lean_trainset, _movierec_seconds_per_epoch, _training_ratings
    from peers import make_surprise_algo

    from movierec.models.mf import MFConfig

    torch.set_num_threads(1)
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
    times: dict[str, list[float]] = {"mf": [], "svd": []}
    for _ in range(args.rounds):
        times["mf"].append(_movierec_seconds_per_epoch(train, "mf", factors, args.epochs))
        algo = make_surprise_algo("svd", 0, n_factors=factors, n_epochs=args.epochs)
        start = time.perf_counter()
        algo.fit(trainset)
        times["svd"].append((time.perf_counter() - start) / args.epochs)
        print(f"mf {times['mf'][-1]:.2f} s/epoch, Surprise SVD {times['svd'][-1]:.2f} s/epoch", file=sys.stderr)
    mf, svd = statistics.median(times["mf"]), statistics.median(times["svd"])
    print(f"[{args.shape}, {len(train):,} training ratings, {factors} factors, 1 thread] mf {mf:.2f} vs SVD {svd:.2f} "
          f"s/epoch (medians of {args.rounds}), ratio {mf / svd:.2f}; load average {load_before} -> {_load()}")
    print(json.dumps({"shape": args.shape, "ratings": len(train), "mf_seconds_per_epoch": mf,
                      "svd_seconds_per_epoch": svd, "ratio": mf / svd, "runs": times,
                      "load_before": load_before, "load_after": _load()}))


if __name__ == "__main__":
    main()
