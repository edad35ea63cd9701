"""Building a torch model from its saved arrays at ML-25M size (162,541 users x 59,047 movies): what every
`recommend` of an RBM or autoencoder pays before it can answer, with initial weights drawn first and then
overwritten ("drawn", the way models used to be built) against the meta-device build `movierec` uses
(:func:`movierec.serving.build_from_state`). Median of ``--repeat`` runs, one torch thread; synthetic arrays.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from movierec import checkpoint, loading, serving
from movierec.models import build_model

sys.path[:0] = [str(Path(__file__).resolve().parent)]
from bench_checkpoint_load import timed  # noqa: E402 -- the median of repeated runs, measured the same way

USERS, ITEMS = 162_541, 59_047
STARS = (0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 3.5, 4.0, 4.5, 5.0)
CASES = (("rbm", "rating", {"hidden": 100}), ("rbm", "like", {"hidden": 100}), ("autoencoder", "item", {}),
         ("autoencoder", "vae", {}))


def drawn(meta, state) -> torch.nn.Module:
    model = build_model(meta.model, meta.mode, meta.config, meta.n_users, meta.n_items, tuple(meta.rating_values))
    model.load_state_dict({k.removeprefix("state."): torch.from_numpy(v) for k, v in state.items()})
    return model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(1)
    rows = []
    for name, mode, config in CASES:
        model = build_model(name, mode, config, USERS, ITEMS, STARS)
        meta = checkpoint.CheckpointMeta(name="bench", model=name, mode=mode, config=model.config.to_dict(),
                                         dataset="ml-25m", fingerprint="x", split="random", seed=0, n_users=USERS,
                                         n_items=ITEMS, rating_values=list(STARS))
        state = loading.state_arrays(model)
        old = timed(lambda meta=meta, state=state: drawn(meta, state), args.repeat)
        new = timed(lambda meta=meta, state=state: serving.build_from_state(meta, state, Path("b")),
                             args.repeat)
        weights = sum(v.size for v in state.values())
        rows.append({"model": f"{name} {mode}", "weights": weights, "drawn_s": old, "meta_s": new})
        print(f"{name:>11} {mode:<6} {weights / 1e6:6.1f} M weights  drawn {old:6.3f} s  meta {new:6.3f} s  "
              f"({old / max(new, 1e-9):.0f}x)")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
