"""The two pictures of docs/plots.md, made with the commands it shows. Not part of the test run.

Fetches MovieLens-100K into a temporary home, trains two small models there with the command line, and writes
``benchmarks/results/plot-curves.png`` (``movierec plot curves``: implicit ALS with a validation slice and early
stopping) and ``benchmarks/results/plot-map.png`` (``movierec plot map``: the movie vectors of ALS, coloured by
k-means cluster). Same data, same seeds, same pictures.

    python benchmarks/make_readme_images.py --zip /path/to/ml-100k.zip   # default: ../shared/data/ml-100k.zip
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
MAX_BYTES = 200_000
"""Each picture stays small enough to keep in the repository."""

TRAIN = [
    ["train", "als", "--mode", "implicit", "--epochs", "20", "--patience", "3", "--name", "als-implicit"],
    ["train", "als", "--factors", "32", "--iters", "15", "--name", "als"],
]
PLOTS = [
    ["plot", "curves", "--model", "als-implicit", "--output", "{out}/plot-curves.png"],
    ["plot", "map", "--model", "als", "--color-by", "cluster", "--k", "8", "--labels", "15",
     "--output", "{out}/plot-map.png"],
]


def _movierec(args: list[str], env: dict[str, str]) -> None:
    print("$ movierec " + " ".join(args), flush=True)
    done = subprocess.run([sys.executable, "-m", "movierec", *args], env=env, cwd=REPO, text=True,
                          capture_output=True)
    if done.returncode != 0:
        raise SystemExit(f"`movierec {' '.join(args)}` failed: {done.stderr.strip()}")
    print(done.stdout.strip().splitlines()[-1] if done.stdout.strip() else "", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--zip", type=Path, default=REPO.parent / "shared" / "data" / "ml-100k.zip",
                        help="the MovieLens-100K archive (ml-100k.zip)")
    parser.add_argument("--out", type=Path, default=HERE / "results", help="folder for the two PNG files")
    args = parser.parse_args()
    if not args.zip.is_file():
        raise SystemExit(f"No archive at {args.zip}; give --zip /path/to/ml-100k.zip.")
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="movierec-images-") as home:
        env = {**os.environ, "MOVIEREC_HOME": home, "PYTHONPATH": str(REPO)}
        _movierec(["fetch", "ml-100k", "--from-file", str(args.zip), "--no-verify"], env)
        for command in TRAIN:
            _movierec(command, env)
        for command in PLOTS:
            _movierec([a.format(out=args.out.resolve()) for a in command], env)
    for name in ("plot-curves.png", "plot-map.png"):
        size = (args.out / name).stat().st_size
        print(f"{args.out / name}: {size:,} bytes")
        if size > MAX_BYTES:
            raise SystemExit(f"{name} is {size:,} bytes, more than {MAX_BYTES:,}; make it smaller before committing.")


if __name__ == "__main__":
    main()
