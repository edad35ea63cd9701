"""Tune the rating RBM on MovieLens-100K without looking at the test sets. Not part of the test run.

``--valid`` trains on 90% of u1.base and reports the RMSE of the other 10% (a seeded random slice) after
every epoch: settings are chosen from these curves. Without it, each setting is trained on uN.base for its
``epochs`` and evaluated once on uN.test, to confirm a choice::

    python benchmarks/tune_rbm.py --zip ../shared/data/ml-100k.zip --valid --grid '{"hidden": [100, 200]}'
    python benchmarks/tune_rbm.py --zip ../shared/data/ml-100k.zip --splits u1,u2,u3,u4,u5

Each line printed is one JSON record: the settings, the split, the RMSE(s) and the fit seconds.
"""

from __future__ import annotations

import argparse
import io
import itertools
import json
import sys
import time
import zipfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from movierec.data.ratings import Ratings  # noqa: E402
from movierec.device import seed_everything  # noqa: E402
from movierec.evaluate import heldout_metrics  # noqa: E402
from movierec.models.rbm import RatingRBM, RatingRBMConfig  # noqa: E402
from movierec.training import fit  # noqa: E402

N_USERS, N_ITEMS = 943, 1682


def load(zip_path: Path, name: str) -> Ratings:
    with zipfile.ZipFile(zip_path) as archive:
        p = np.loadtxt(io.BytesIO(archive.read(f"ml-100k/{name}")), dtype=np.int64)
    return Ratings((p[:, 0] - 1).astype(np.int32), (p[:, 1] - 1).astype(np.int32), p[:, 2].astype(np.float32),
                   p[:, 3], N_USERS, N_ITEMS)


def validation_slice(base: Ratings, fraction: float = 0.1, seed: int = 0) -> tuple[Ratings, Ratings]:
    held = np.random.default_rng(seed).random(len(base)) < fraction
    return base.take(~held), base.take(held)


def run(settings: dict, train: Ratings, valid: Ratings, device: torch.device, seed: int, every_epoch: bool) -> dict:
    seed_everything(seed)
    model = RatingRBM(RatingRBMConfig(**settings), N_USERS, N_ITEMS, (1.0, 2.0, 3.0, 4.0, 5.0)).to(device)
    start = time.perf_counter()
    result = fit(model, train, valid if every_epoch else None, seed=seed)
    seconds = time.perf_counter() - start
    out = {"fit_seconds": round(result.fit_seconds, 2), "wall_seconds": round(seconds, 2)}
    if every_epoch:
        curve = [round(r.valid["rmse"], 4) for r in result.history]
        best = int(np.argmin(curve))
        out.update(valid_rmse=curve[-1], best_valid_rmse=curve[best], best_epoch=best + 1, curve=curve)
    else:
        out["test_rmse"] = round(heldout_metrics(model, train.matrix(device), valid)["rmse"], 4)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--zip", type=Path, required=True, help="the MovieLens-100K archive")
    parser.add_argument("--valid", action="store_true", help="validate on a slice of u1.base, every epoch")
    parser.add_argument("--splits", default="u1", help="comma-separated official splits (test mode)")
    parser.add_argument("--grid", default="{}", help="JSON: field -> list of values; every combination is run")
    parser.add_argument("--configs", default="", help="JSON list of settings dicts, run after the grid")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()

    device = torch.device(args.device)
    grid = json.loads(args.grid)
    settings_list = [dict(zip(grid, values, strict=True)) for values in itertools.product(*grid.values())]
    if args.configs:  # an empty grid is the defaults alone: run them only when nothing else is asked for
        settings_list = (settings_list if grid else []) + json.loads(args.configs)
    if args.valid:
        jobs = [("u1-valid", *validation_slice(load(args.zip, "u1.base")))]
    else:
        jobs = [(s, load(args.zip, f"{s}.base"), load(args.zip, f"{s}.test")) for s in args.splits.split(",")]
    for settings in settings_list:
        for name, train, held in jobs:
            record = {"settings": settings, "split": name}
            record.update(run(settings, train, held, device, args.seed, args.valid))
            print(json.dumps(record), flush=True)


if __name__ == "__main__":
    main()
