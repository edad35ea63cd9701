"""How fast the everyday commands answer, end to end, as a user runs them. Not part of the test run.

Measures, on MovieLens-100K split u1 with every model trained on its defaults:
- ``movierec recommend --user 42`` (process start included; median of ``--repeat`` runs), target < 1.5 s;
- ``movierec evaluate`` of the four checkpoints with the baselines (process start included), target < 10 s;
and, on a synthetic data set of ML-1M's shape (6,040 users x 3,706 movies, 1,000,209 ratings), evaluating one
model over all users in-process, target < 30 s.

    python benchmarks/bench_commands.py --zip /path/to/ml-100k.zip   # or use the fetched ml-100k
    python benchmarks/bench_commands.py --repeat 5 --out benchmarks/results

Exit status 1 when a target is missed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

MODELS = ("rbm", "autoencoder", "mf", "als")


def _run(args: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "movierec", *args], env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"`movierec {' '.join(args)}` failed: {done.stderr.strip()}")
    return seconds


def _synthetic_ml1m_evaluate() -> dict[str, float]:
    import numpy as np
    import torch

    from movierec.data.ratings import Ratings
    from movierec.evaluate import evaluate
    from movierec.models import build_model
    from movierec.training import fit

    rng = np.random.default_rng(0)
    n_users, n_items, n = 6040, 3706, 1_000_209
    # Popular movies get more ratings, as in the real data (a long tail, but mild enough that 1M distinct
    # user-movie pairs exist); draw extra pairs, drop repeats, keep ML-1M's count.
    item_p = 1.0 / (np.arange(n_items) + 50.0)
    item_p /= item_p.sum()
    users = rng.integers(0, n_users, 2 * n)
    items = rng.choice(n_items, 2 * n, p=item_p)
    keep = np.sort(np.unique(users.astype(np.int64) * n_items + items, return_index=True)[1])[:n]
    users, items = users[keep].astype(np.int32), items[keep].astype(np.int32)
    stars = rng.integers(1, 6, users.shape[0]).astype(np.float32)
    ts = np.arange(users.shape[0], dtype=np.int64)
    ratings = Ratings(users, items, stars, ts, n_users, n_items)
    test_mask = rng.random(len(ratings)) < 0.1
    train, test = ratings.take(~test_mask), ratings.take(test_mask)
    torch.manual_seed(0)
    model = build_model("als", None, {"epochs": 2}, n_users, n_items, (1.0, 2.0, 3.0, 4.0, 5.0))
    fit(model, train, None)
    matrix = train.matrix()
    start = time.perf_counter()
    metrics = evaluate(model, matrix, test, k=10)
    return {"seconds": time.perf_counter() - start, "users": metrics["users"], "ratings": metrics["ratings"]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--zip", type=Path, help="MovieLens-100K zip to import (default: the fetched ml-100k)")
    parser.add_argument("--repeat", type=int, default=5, help="runs per timed command (median reported)")
    parser.add_argument("--out", type=Path, default=HERE / "results", help="folder for commands.{md,json}")
    args = parser.parse_args(argv)

    home = Path(tempfile.mkdtemp(prefix="movierec-bench-"))
    env = {**os.environ, "MOVIEREC_HOME": str(home)}
    try:
        if args.zip:
            _run(["fetch", "ml-100k", "--from-file", str(args.zip), "--no-verify"], env)
        else:
            from movierec import paths

            shutil.copytree(paths.dataset_dir("ml-100k"), home / "datasets" / "ml-100k")
        for model in MODELS:
            _run(["train", model, "--json"], env)
        recommend = [_run(["recommend", "--user", "42", "--top", "10"], env) for _ in range(args.repeat)]
        evaluate = [_run(["evaluate"], env) for _ in range(max(1, args.repeat // 2))]
        help_ = [_run(["--help"], env) for _ in range(args.repeat)]
    finally:
        shutil.rmtree(home, ignore_errors=True)
    synthetic = _synthetic_ml1m_evaluate()

    rows = [
        ("movierec --help", statistics.median(help_), 0.5),
        ("movierec recommend --user 42 (ml-100k)", statistics.median(recommend), 1.5),
        ("movierec evaluate, 4 checkpoints (ml-100k)", statistics.median(evaluate), 10.0),
        ("evaluate one model over all users (ML-1M shape, in-process)", synthetic["seconds"], 30.0),
    ]
    when = time.strftime("%Y-%m-%d %H:%M")
    machine = f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}"
    lines = [f"# Command speed ({when}; {machine}; Python {platform.python_version()})", "",
             "| what | seconds (median) | target | |", "|---|---|---|---|"]
    missed = 0
    for what, seconds, target in rows:
        ok = seconds < target
        missed += not ok
        lines.append(f"| {what} | {seconds:.2f} | < {target:g} | {'PASS' if ok else 'MISS'} |")
    text = "\n".join(lines) + "\n"
    print(text)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "commands.md").write_text(text)
    (args.out / "commands.json").write_text(json.dumps(
        {"date": when, "machine": machine, "rows": [{"what": w, "seconds": s, "target": t} for w, s, t in rows],
         "synthetic": synthetic}, indent=2))
    return 1 if missed else 0


if __name__ == "__main__":
    raise SystemExit(main())
