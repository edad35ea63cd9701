"""How good every model's top-N lists are, beside "most popular" and EASE, on several release shapes.

For each shape and split, every default model is trained through the library (``fit_split``: the model, then
its picks model where it has one, exactly as ``movierec train`` does) and its lists are judged by the protocol
of ``movierec evaluate`` (NDCG@10, relevant = test rating >= 4 stars): ``lists`` ranks as ``recommend`` does,
``own`` by the model's own scores alone (stars / P(liked): what lists ranked by before the picks model).
Popularity and EASE (Steck 2019, its penalty chosen on a slice of the training ratings) are scored the same way.

Shapes: ``ml-100k`` (the real release, official splits u1..u5, from ``--zip``), and synthetic releases drawn
*with taste* (``benchmarks/synth_release.py``; on taste-free shapes popularity is right by construction):
``ml-latest-small`` (610 users x 9,700 movies, 100,000 half stars, a long tail of movies with under 5 ratings)
and ``taste-ml-1m`` (ml-1m's shape, whole stars). Synthetic shapes use seeded random splits (``--seeds``).

Targets (judged per shape, on the mean over its splits): every default model >= 1.2x popularity's NDCG@10;
``rbm`` (the like RBM, as the design card trains it) >= 1.5x; the best model >= EASE. Writes
``results/lists_<shapes>.md`` and ``.json``. Not part of the test run::

    python benchmarks/lists.py --zip ../shared/data/ml-100k.zip                     # every shape
    python benchmarks/lists.py --zip ../shared/data/ml-100k.zip --shapes ml-100k --splits u1
    python benchmarks/lists.py --shapes ml-latest-small --seeds 0,1,2 --models mf,rbm
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent), str(HERE)]

K, RELEVANCE = 10, 4.0
# name -> (model, mode): the defaults `movierec train MODEL [--mode MODE]` trains.
MODELS = {
    "rbm": ("rbm", "like"), "rbm-rating": ("rbm", "rating"), "autoencoder": ("autoencoder", "user"),
    "autoencoder-item": ("autoencoder", "item"), "mf": ("mf", "explicit"), "als": ("als", "explicit"),
    "als-implicit": ("als", "implicit"), "autoencoder-vae": ("autoencoder", "vae"),
    "autoencoder-dae": ("autoencoder", "dae"),
}
SHAPES = {"ml-100k": "ml-100k", "ml-latest-small": "ml-latest-small", "taste-ml-1m": "ml-1m"}
"""Shape -> the release it is fetched as."""
TARGET_LEAD, DESIGN_CARD_LEAD = 1.2, 1.5


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def splits_of(shape: str, args: argparse.Namespace) -> list[tuple[str, int]]:
    if shape == "ml-100k":
        return [(s, 0) for s in args.splits.split(",")]
    return [("random", int(seed)) for seed in args.seeds.split(",")]


def prepare(shape: str, args: argparse.Namespace, cache: Path) -> None:
    """Fetch the shape's release into the current home: the real zip, or a synthetic one written once."""
    from movierec.data.download import fetch

    if shape == "ml-100k":
        if args.zip is None:
            raise SystemExit("ml-100k needs --zip PATH/ml-100k.zip")
        fetch("ml-100k", from_file=args.zip, verify=False)
        return
    import synth_release

    archive = cache / f"{shape}.zip"
    if not archive.is_file():
        log(f"writing the synthetic {shape} release")
        cache.mkdir(parents=True, exist_ok=True)
        synth_release.write_release(shape, archive)
    fetch(synth_release.SHAPES[shape].release, from_file=archive, verify=False)


def run_split(shape: str, split_name: str, seed: int, models: list[str]) -> list[dict[str, Any]]:
    import peers

    from movierec.data.movielens import load_dataset
    from movierec.data.split import make_split
    from movierec.device import resolve_device
    from movierec.evaluate import PopularityBaseline, evaluate
    from movierec.options import TrainOptions
    from movierec.training import fit_split

    data = load_dataset(SHAPES[shape])
    split = make_split(data, split_name, seed=seed)
    matrix = split.train.matrix()
    label = split_name if split_name != "random" else f"random seed {seed}"
    rows = [{"shape": shape, "split": label, "model": "popularity",
             "lists": evaluate(PopularityBaseline(matrix), matrix, split.test, k=K, relevance=RELEVANCE)[f"ndcg@{K}"]}]
    lam, _ = peers.choose_ease_lambda(split.train, seed, K, RELEVANCE)
    ease = peers.fit_ease(split.train, lam)
    rows.append({"shape": shape, "split": label, "model": "ease", "lambda": lam,
                 "lists": evaluate(ease, matrix, split.test, k=K, relevance=RELEVANCE)[f"ndcg@{K}"]})
    del ease
    log(f"{shape} {label}: popularity {rows[0]['lists']:.4f}, EASE {rows[1]['lists']:.4f} (lambda {lam:g})")
    for name in models:
        model_name, mode = MODELS[name]
        row: dict[str, Any] = {"shape": shape, "split": label, "model": name}
        try:
            start = time.perf_counter()
            fitted = fit_split(TrainOptions(model_name, mode=mode, seed=seed, device="cpu"), data, split,
                               device=resolve_device("cpu"))
            row["fit_seconds"] = time.perf_counter() - start
            lists = evaluate(fitted.ranked, fitted.known, split.test, k=K, relevance=RELEVANCE)
            own = evaluate(fitted.model, fitted.known, split.test, k=K, relevance=RELEVANCE)
            # rmse for rating models, loss for like models: each has one of them.
            row.update(lists=lists[f"ndcg@{K}"], own=own[f"ndcg@{K}"], rmse=lists.get("rmse"),
                       like_loss=lists.get("loss"))
            log(f"{shape} {label}: {name} lists {row['lists']:.4f} (own {row['own']:.4f}), "
                f"fit {row['fit_seconds']:.1f} s")
        except Exception as exc:  # one failing model must not lose the others
            row["error"] = f"{type(exc).__name__}: {exc}"
            log(f"{shape} {label}: {name} FAILED\n{traceback.format_exc()}")
        rows.append(row)
    return rows


def summarise(rows: list[dict[str, Any]]) -> dict[str, dict[str, dict[str, float]]]:
    """shape -> model -> mean of lists / own / rmse / like_loss over its splits."""
    out: dict[str, dict[str, dict[str, float]]] = {}
    for row in rows:
        if row.get("error"):
            continue
        slot = out.setdefault(row["shape"], {}).setdefault(row["model"], {})
        for key in ("lists", "own", "rmse", "like_loss"):
            if row.get(key) is not None:
                slot.setdefault(key, []).append(float(row[key]))  # type: ignore[attr-defined]
    return {s: {m: {k: sum(v) / len(v) for k, v in d.items()} for m, d in ms.items()} for s, ms in out.items()}


def verdicts(summary: dict[str, dict[str, dict[str, float]]]) -> list[str]:
    lines = []
    for shape, by_model in summary.items():
        pop = by_model["popularity"]["lists"]
        ease = by_model["ease"]["lists"]
        models = {m: v["lists"] for m, v in by_model.items() if m not in ("popularity", "ease")}
        for m, v in models.items():
            need = (DESIGN_CARD_LEAD if m == "rbm" else TARGET_LEAD) * pop
            lines.append(f"{shape}: {m} {v:.4f} >= {need:.4f} ({v / pop:.2f}x popularity): "
                         f"{'PASS' if v >= need else 'MISS'}")
        if models:
            best = max(models, key=models.get)
            lines.append(f"{shape}: best ({best}) {models[best]:.4f} >= EASE {ease:.4f}: "
                         f"{'PASS' if models[best] >= ease else 'MISS'}")
    return lines


def table(summary: dict[str, dict[str, dict[str, float]]]) -> str:
    shapes = list(summary)
    models = list(dict.fromkeys(m for s in shapes for m in summary[s]))
    head = "| model | " + " | ".join(f"{s} lists (own)" for s in shapes) + " |"
    lines = [head, "|---" * (len(shapes) + 1) + "|"]
    for m in models:
        cells = []
        for s in shapes:
            v = summary[s].get(m)
            if v is None:
                cells.append("-")
            else:
                own = f" ({v['own']:.4f})" if "own" in v else ""
                cells.append(f"{v['lists']:.4f}{own}")
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--zip", type=Path, help="ml-100k.zip (for the ml-100k shape).")
    parser.add_argument("--shapes", default=",".join(SHAPES), help=f"Comma-separated, among {', '.join(SHAPES)}.")
    parser.add_argument("--splits", default="u1,u2,u3,u4,u5", help="ml-100k's official splits [u1..u5].")
    parser.add_argument("--seeds", default="0", help="Seeds of the synthetic shapes' random splits [0].")
    parser.add_argument("--models", default=",".join(MODELS), help=f"Comma-separated, among {', '.join(MODELS)}.")
    parser.add_argument("--out", type=Path, default=HERE / "results")
    args = parser.parse_args(argv)
    shapes = [s.strip() for s in args.shapes.split(",") if s.strip()]
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    if bad := [s for s in shapes if s not in SHAPES] + [m for m in models if m not in MODELS]:
        parser.error(f"unknown shapes or models: {', '.join(bad)}")
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    import torch

    torch.set_num_threads(1)
    from movierec import paths

    load_start, started = os.getloadavg(), dt.datetime.now(dt.timezone.utc)
    rows: list[dict[str, Any]] = []
    for shape in shapes:
        with tempfile.TemporaryDirectory(prefix="movierec-lists-") as home:
            paths.set_home(home)
            try:
                prepare(shape, args, HERE / ".cache")
                for split_name, seed in splits_of(shape, args):
                    rows += run_split(shape, split_name, seed, models)
            finally:
                paths.set_home(None)
    summary = summarise(rows)
    lines = verdicts(summary)
    load_end = os.getloadavg()
    text = table(summary)
    print(text)
    print("\n".join(lines))
    tag = "+".join(shapes)
    args.out.mkdir(parents=True, exist_ok=True)
    report = {"date": started.isoformat(timespec="seconds"), "command": " ".join(["python", *sys.argv]),
              "load_average_start": load_start, "load_average_end": load_end, "k": K, "relevance": RELEVANCE,
              "summary": summary, "targets": lines, "rows": rows}
    (args.out / f"lists_{tag}.json").write_text(json.dumps(report, indent=2, default=float) + "\n")
    md = [f"# Top-N lists beside popularity and EASE: {', '.join(shapes)}", "",
          f"- date: {report['date']}; command: `{report['command']}`; one torch thread",
          f"- load average {load_start[0]:.1f} -> {load_end[0]:.1f} on {os.cpu_count()} cores",
          f"- NDCG@{K}, relevant = test rating >= {RELEVANCE:g}, mean over each shape's splits; "
          "`lists` ranks as `recommend` does, `own` (in parentheses) by the model's own scores alone", "",
          text, "", "## Targets", "", *[f"- {line}" for line in lines], ""]
    (args.out / f"lists_{tag}.md").write_text("\n".join(md))
    return 1 if any(r.get("error") for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
