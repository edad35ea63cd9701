"""How long `movierec recommend --user 1 --top 10`, `movierec recommend --rate 1=5 --top 10` (a new user) and
`movierec similar 1` take per model, process start included (median of ``--repeat`` runs). Not part of the test run.

Trains each model on ml-100k (split u1), or on ``--release`` from ``--zip`` (its default split), with the
model's defaults and ``--epochs`` epochs (answering costs the same after one epoch as after fifty) in a fresh
home, or reuses ``--home``'s checkpoints, then times the three. Targets: < 0.3 s each on ml-100k and < 1 s
at ML-25M, every model.

    python benchmarks/bench_answer.py --zip ../shared/data/ml-100k.zip
    python benchmarks/bench_answer.py --home /tmp/bench-home --out benchmarks/results
    python benchmarks/bench_answer.py --release ml-25m --zip benchmarks/.cache/synth-ml-25m.zip --models mf,als

Exit status 1 when a target is missed.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
MODELS = {
    "rbm-like": ["rbm", "--mode", "like"],
    "rbm-rating": ["rbm", "--mode", "rating"],
    "ae-user": ["autoencoder", "--mode", "user"],
    "ae-item": ["autoencoder", "--mode", "item"],
    "vae": ["autoencoder", "--mode", "vae"],
    "dae": ["autoencoder", "--mode", "dae"],
    "mf": ["mf"],
    "als": ["als"],
}
TARGET_S = {"ml-100k": 0.3}  # and 1 s on any larger release
LABELS = ("recommend", "rate", "similar")


def asks(user: str, movie: str) -> list[tuple[str, list[str]]]:
    """The timed commands: a known user's list, a new user's (who rated ``movie`` 5 stars), movies like ``movie``."""
    return [("recommend", ["recommend", "--user", user, "--top", "10"]),
            ("rate", ["recommend", "--rate", f"{movie}=5", "--top", "10"]),
            ("similar", ["similar", movie])]


def _run(args: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "movierec", *args], env=env, capture_output=True, text=True,
                          cwd=env["MOVIEREC_HOME"])  # not the checkout: `-m` would import the package there first
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"`movierec {' '.join(args)}` failed: {done.stderr.strip()}")
    return seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--zip", type=Path, default=HERE.parent.parent / "shared" / "data" / "ml-100k.zip",
                        help="the release's zip (default: ../shared/data/ml-100k.zip)")
    parser.add_argument("--release", default="ml-100k", help="which release the zip is (default ml-100k)")
    parser.add_argument("--home", type=Path, help="a movierec home whose checkpoints are named as MODELS here; "
                        "default: a fresh one, trained first")
    parser.add_argument("--models", default=",".join(MODELS), help="comma-separated (default: all)")
    parser.add_argument("--epochs", type=int, default=1, help="training epochs of each model (default 1)")
    parser.add_argument("--repeat", type=int, default=5, help="runs per timed command (median reported)")
    parser.add_argument("--out", type=Path, help="write answer.md and answer.json here")
    parser.add_argument("--user", default="1", help="the user asked for (default 1)")
    parser.add_argument("--movie", default="1", help="the movie `similar` is asked about (default 1)")
    args = parser.parse_args()
    names = [m.strip() for m in args.models.split(",") if m.strip()]
    home = args.home or Path(tempfile.mkdtemp(prefix="movierec-bench-answer-"))
    env = {**os.environ, "MOVIEREC_HOME": str(home), "COLUMNS": "100"}
    if args.home is None:
        _run(["fetch", args.release, "--from-file", str(args.zip), "--no-verify"], env)
        for name in names:
            _run(["train", *MODELS[name], "--epochs", str(args.epochs), "--device", "cpu", "--name", name], env)
    rows = []
    for name in names:
        row = {"model": name}
        for label, cmd in asks(args.user, args.movie):
            _run([*cmd, "--model", name], env)  # warm the file cache
            row[label] = round(statistics.median(_run([*cmd, "--model", name], env) for _ in range(args.repeat)), 3)
        rows.append(row)
        print(f"{name:12} " + "   ".join(f"{label} {row[label]:.3f} s" for label in LABELS), flush=True)
    load = os.getloadavg()
    print(f"{args.release}; load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        stem = "answer" if args.release == "ml-100k" else f"answer-{args.release}"
        (args.out / f"{stem}.json").write_text(json.dumps({"release": args.release, "rows": rows, "load": load},
                                                          indent=2) + "\n")
        lines = ["| model | " + " | ".join(f"{label} (s)" for label in LABELS) + " |",
                 "| --- |" + " ---: |" * len(LABELS)]
        lines += [f"| {r['model']} | " + " | ".join(f"{r[label]:.3f}" for label in LABELS) + " |" for r in rows]
        (args.out / f"{stem}.md").write_text("\n".join(lines) + "\n")
    target = TARGET_S.get(args.release, 1.0)
    return int(any(r[label] >= target for r in rows for label in LABELS))


if __name__ == "__main__":
    raise SystemExit(main())
