"""`movierec import` of a large ratings file against `movierec fetch`'s first parse of the same ratings.

A synthetic release in the official layout (``synth_release.py``, default ml-25m: 25 million ratings) is fetched
from the file (its first parse, what `fetch ml-25m` costs), and its ``ratings.csv`` -- a MovieLens-style
``userId,movieId,rating,timestamp`` file, exactly what a user would import -- is then imported as a dataset of its
own in the same home. Wall time and peak memory of each command, process start included, one run each.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import zipfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent), str(HERE)]

from bench_scale import _archive, _run_measured  # noqa: E402 -- the same synthetic releases and measuring
from synth_release import SHAPES  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", default="ml-25m", help="synthetic release shape (ml-1m, ml-10m, ml-25m, ...)")
    parser.add_argument("--timeout", type=float, default=3600.0)
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args()
    archive = _archive(args.shape)
    release = SHAPES[args.shape].release
    home = Path(tempfile.mkdtemp(prefix="movierec-bench-import-"))
    env = {**os.environ, "MOVIEREC_HOME": str(home)}
    env.pop("MOVIEREC_MIRROR", None)
    try:
        fetch_s, fetch_mb, _ = _run_measured(["fetch", release, "--from-file", str(archive), "--no-verify"], env,
                                             args.timeout)
        with zipfile.ZipFile(archive) as zf:
            member = next(n for n in zf.namelist() if n.endswith(("/ratings.csv", "/ratings.dat")))
            if member.endswith(".dat"):
                raise SystemExit(f"{args.shape} keeps its ratings as '::'-separated .dat; choose a csv shape")
            ratings = home / "ratings.csv"
            with zf.open(member) as src, ratings.open("wb") as out:
                shutil.copyfileobj(src, out, 1 << 20)
        rows = sum(1 for _ in ratings.open("rb")) - 1
        import_s, import_mb, _ = _run_measured(["import", "mine", str(ratings)], env, args.timeout)
    finally:
        shutil.rmtree(home, ignore_errors=True)
    result = {"shape": args.shape, "ratings": rows, "fetch_seconds": fetch_s, "fetch_peak_mb": fetch_mb,
              "import_seconds": import_s, "import_peak_mb": import_mb, "load": os.getloadavg()}
    print(f"{args.shape}: {rows:,} ratings; fetch (first parse) {fetch_s:.1f} s, {fetch_mb:.0f} MB; "
          f"import {import_s:.1f} s, {import_mb:.0f} MB; import / fetch {import_s / fetch_s:.2f}x")
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
