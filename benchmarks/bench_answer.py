"""How long `movierec recommend --user 1 --top 10` and `movierec similar 1` take per model, process start
included (median of ``--repeat`` runs). Not part of the test run.

Trains each model on ml-100k (split u1, the model's defaults with ``--epochs`` epochs: answering costs the same
after one epoch as after fifty) in a fresh home, or reuses ``--home``'s checkpoints, then times both commands.
Target: < 0.3 s each, every model.

    python benchmarks/bench_answer.py --zip ../shared/data/ml-100k.zip
    python benchmarks/bench_answer.py --home /tmp/bench-home --out benchmarks/results

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
TARGET_S = 0.3


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
                        help="MovieLens-100K zip (default: ../shared/data/ml-100k.zip)")
    parser.add_argument("--home", type=Path, help="a movierec home whose checkpoints are named as MODELS here; "
                        "default: a fresh one, trained first")
    parser.add_argument("--models", default=",".join(MODELS), help="comma-separated (default: all)")
    parser.add_argument("--epochs", type=int, default=1, help="training epochs of each model (default 1)")
    parser.add_argument("--repeat", type=int, default=5, help="runs per timed command (median reported)")
    parser.add_argument("--out", type=Path, help="write answer.md and answer.json here")
    args = parser.parse_args()
    names = [m.strip() for m in args.models.split(",") if m.strip()]
    home = args.home or Path(tempfile.mkdtemp(prefix="movierec-bench-answer-"))
    env = {**os.environ, "MOVIEREC_HOME": str(home), "COLUMNS": "100"}
    if args.home is None:
        _run(["fetch", "ml-100k", "--from-file", str(args.zip), "--no-verify"], env)
        for name in names:
            _run(["train", *MODELS[name], "--epochs", str(args.epochs), "--device", "cpu", "--name", name], env)
    rows = []
    for name in names:
        row = {"model": name}
        for label, cmd in (("recommend", ["recommend", "--user", "1", "--top", "10"]), ("similar", ["similar", "1"])):
            _run([*cmd, "--model", name], env)  # warm the file cache
            row[label] = round(statistics.median(_run([*cmd, "--model", name], env) for _ in range(args.repeat)), 3)
        rows.append(row)
        print(f"{name:12} recommend {row['recommend']:.3f} s   similar {row['similar']:.3f} s", flush=True)
    load = os.getloadavg()
    print(f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "answer.json").write_text(json.dumps({"rows": rows, "load": load}, indent=2) + "\n")
        lines = ["| model | recommend (s) | similar (s) |", "| --- | ---: | ---: |"]
        lines += [f"| {r['model']} | {r['recommend']:.3f} | {r['similar']:.3f} |" for r in rows]
        (args.out / "answer.md").write_text("\n".join(lines) + "\n")
    return int(any(r["recommend"] >= TARGET_S or r["similar"] >= TARGET_S for r in rows))


if __name__ == "__main__":
    raise SystemExit(main())
