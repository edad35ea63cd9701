"""Load time of a factor model's arrays at ML-25M size (162,541 users x 59,047 movies x 64 factors, float32),
by container: what `recommend` must read before it can answer.

- npz: ``np.savez`` (uncompressed), ``np.load(allow_pickle=False)`` of every array;
- torch: ``torch.save`` of the tensors, ``torch.load(weights_only=True)`` (the format-1 checkpoint);
- movierec format 2 (header + raw arrays), every array: what ``checkpoint.load`` reads;
- movierec format 2, what serving one known user reads: the movie arrays and that user's row.

Median of ``--repeat`` runs, warm page cache (the file was just written). Synthetic arrays, no dataset.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from movierec import checkpoint

USERS, ITEMS, D = 162_541, 59_047, 64


def timed(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    arrays = {
        "state.user_factors": rng.standard_normal((USERS, D), dtype=np.float32),
        "state.item_factors": rng.standard_normal((ITEMS, D), dtype=np.float32),
        "state.user_bias": rng.standard_normal(USERS, dtype=np.float32),
        "state.item_bias": rng.standard_normal(ITEMS, dtype=np.float32),
        "state.mean": np.array(3.5, dtype=np.float32),
    }
    folder = Path(tempfile.mkdtemp(prefix="movierec-load-"))
    npz, pt, mine = folder / "a.npz", folder / "a.pt", folder / "a.mr"
    np.savez(npz, **arrays)
    meta = checkpoint.CheckpointMeta(
        name="bench", model="mf", config={}, dataset="ml-25m", fingerprint="", split="holdout", seed=0,
        n_users=USERS, n_items=ITEMS, rating_values=[0.5, 5.0], created="2020-01-01T00:00:00+00:00")
    checkpoint.write_file(mine, {"format": checkpoint.FORMAT, "format_version": str(checkpoint.FORMAT_VERSION),
                                 "meta": json.dumps(dataclasses.asdict(meta))}, arrays)

    def load_npz() -> None:
        with np.load(npz, allow_pickle=False) as f:
            _ = {k: f[k] for k in f.files}

    def load_mine() -> None:
        with checkpoint.open_file(mine) as f:
            _ = {k: f.get(k) for k in f.names()}

    def serve_mine() -> None:
        with checkpoint.open_file(mine) as f:
            _ = f.get("state.item_factors"), f.get("state.item_bias"), f.get("state.mean")
            _ = f.rows("state.user_factors", 1000, 1001), f.rows("state.user_bias", 1000, 1001)

    rows = [("npz, all arrays", timed(load_npz, args.repeat)),
            ("format 2, all arrays", timed(load_mine, args.repeat)),
            ("format 2, one user + movies (serving)", timed(serve_mine, args.repeat))]
    try:
        import torch

        torch.save({k: torch.from_numpy(v) for k, v in arrays.items()}, pt)
        rows.insert(1, ("torch.load weights_only (format 1)",
                        timed(lambda: torch.load(pt, weights_only=True), args.repeat)))
    except ImportError:
        pass
    size = sum(a.nbytes for a in arrays.values()) / 2**20
    print(f"arrays: {size:.1f} MiB; median of {args.repeat}")
    for what, seconds in rows:
        print(f"  {what:<40} {seconds * 1000:8.1f} ms")


if __name__ == "__main__":
    main()
