"""movierec's models against Surprise and implicit on MovieLens-100K's official splits u1..u5.

Every movierec model is trained with its *current* default settings (read from its config class at run
time), through the library (``movierec.models.build_model`` + ``movierec.training.fit``, seeded); the peers
with theirs (see ``peers.py``). Everything is evaluated by the one protocol of ``movierec evaluate``
(``movierec.evaluate.evaluate(model, train_matrix, test, k=10)``), the peers through small adapters that
score every movie from their learned parameters. Prints one table -- mean over the splits run and u1
alone -- then each team target with the measured value and PASS/MISS, and writes the same as Markdown and
JSON (with the machine and library versions) to ``benchmarks/results/``. Not part of the test run::

    pip install -e '.[bench]'                                    # scikit-surprise, implicit
    python benchmarks/compare.py --zip /path/to/ml-100k.zip      # all five splits (~17 min on 2 busy cores)
    python benchmarks/compare.py --quick                         # u1 only, from the fetched ml-100k
    python benchmarks/compare.py --models svd,mf --splits u1,u2 --out /tmp/bench

A peer whose library cannot be imported is skipped with a note; its row is never filled in. Exit status 1
when a model failed (its error is in the notes); ``--strict`` also fails on a missed target.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
# Benchmark the checkout this script sits in, whatever movierec is installed elsewhere.
sys.path[:0] = [str(REPO), str(HERE)]

DATASET = "ml-100k"
ALL_SPLITS = ("u1", "u2", "u3", "u4", "u5")
K = 10
RELEVANCE = 4.0


@dataclass(frozen=True)
class Entry:
    """One row of the comparison."""

    name: str
    family: str  # "movierec", "surprise", "implicit" or "reference" (numpy only): which library it needs
    label: str
    model: str = ""  # movierec model name
    config: dict[str, Any] = field(default_factory=dict)  # "mode" (the class) and overrides of its defaults


ENTRIES: dict[str, Entry] = {e.name: e for e in [
    Entry("rbm", "movierec", "movierec rbm", "rbm"),
    Entry("rbm-rating", "movierec", "movierec rbm, mode=rating (item-based)", "rbm", {"mode": "rating"}),
    Entry("rbm-rating-user", "movierec", "movierec rbm, mode=rating, orientation=user", "rbm",
          {"mode": "rating", "orientation": "user"}),
    Entry("autoencoder", "movierec", "movierec autoencoder", "autoencoder"),
    Entry("autoencoder-item", "movierec", "movierec autoencoder, mode=item", "autoencoder", {"mode": "item"}),
    Entry("autoencoder-vae", "movierec", "movierec autoencoder, mode=vae (Mult-VAE)", "autoencoder", {"mode": "vae"}),
    Entry("autoencoder-dae", "movierec", "movierec autoencoder, mode=dae (Mult-DAE)", "autoencoder", {"mode": "dae"}),
    Entry("mf", "movierec", "movierec mf", "mf"),
    Entry("als", "movierec", "movierec als", "als"),
    Entry("als-implicit", "movierec", "movierec als, mode=implicit", "als", {"mode": "implicit"}),
    Entry("als-implicit-exact", "movierec", "movierec als, mode=implicit, solver=cholesky (exact)", "als",
          {"mode": "implicit", "solver": "cholesky"}),
    Entry("popularity", "movierec", "popularity (movierec baseline)"),
    Entry("svd", "surprise", "Surprise SVD"),
    Entry("svdpp", "surprise", "Surprise SVD++"),
    Entry("knnbaseline", "surprise", "Surprise KNNBaseline (item, pearson_baseline)"),
    Entry("baselineonly", "surprise", "Surprise BaselineOnly"),
    Entry("implicit-als", "implicit", "implicit ALS (64 factors, binary)"),
    Entry("ease", "reference", "EASE (Steck 2019), lambda chosen on a validation slice of the training data"),
]}
MOVIEREC_MODELS = ("rbm", "rbm-rating", "rbm-rating-user", "autoencoder", "autoencoder-item", "autoencoder-vae",
                   "autoencoder-dae", "mf", "als", "als-implicit", "als-implicit-exact")
# Tolerance between a Surprise adapter's scores and Surprise's own predict (float32 rounding is ~3e-7).
CHECK_TOLERANCE = 1e-4


@dataclass(frozen=True)
class Target:
    """A number the team is measured against: a peer's reference value and which movierec row must meet it."""

    label: str
    metric: str  # a key of the summary: rmse, ndcg@10, loss, fit_seconds
    scope: str  # "mean" (over u1..u5) or "u1"
    reference: float
    op: str  # "<=", "<" or ">=": how the movierec value must compare to the reference
    peer: str  # the entry whose reference it is ("always-like" for the RBM target)
    candidates: tuple[str, ...]  # movierec entries eligible
    every: bool = False  # True: every candidate must meet it (the worst is judged); False: the best one


RATING_MODELS = ("rbm-rating", "autoencoder", "autoencoder-item", "mf", "als")
TOPN_MODELS = ("als-implicit", "als-implicit-exact", "autoencoder-vae", "autoencoder-dae")  # claim top-N lists
TARGETS = [
    Target("every rating model: RMSE, mean u1..u5", "rmse", "mean", 0.938, "<", "svd", RATING_MODELS, every=True),
    Target("every rating model: RMSE, u1", "rmse", "u1", 0.951, "<", "svd", RATING_MODELS, every=True),
    Target("mf and als: RMSE, mean u1..u5", "rmse", "mean", 0.920, "<", "knnbaseline", ("mf", "als"), every=True),
    Target("mf and als: RMSE, u1", "rmse", "u1", 0.936, "<", "knnbaseline", ("mf", "als"), every=True),
    Target("best model: RMSE, u1", "rmse", "u1", 0.895, "<=", "published", RATING_MODELS),
    Target("best model: RMSE, mean u1..u5", "rmse", "mean", 0.900, "<=", "published", RATING_MODELS),
    Target("best model: NDCG@10, mean u1..u5", "ndcg@10", "mean", 0.325, ">=", "implicit-als", MOVIEREC_MODELS),
    Target("top-N models: NDCG@10, mean u1..u5", "ndcg@10", "mean", 0.198, ">", "popularity", TOPN_MODELS,
           every=True),
    Target("vae and dae: NDCG@10, mean u1..u5, 1.2x popularity", "ndcg@10", "mean", round(1.2 * 0.198, 3), ">=",
           "popularity", ("autoencoder-vae", "autoencoder-dae"), every=True),
    Target("RBM like-loss, u1", "loss", "u1", 0.17, "<", "always-like", ("rbm",)),
    Target("als fit time (s), u1", "fit_seconds", "u1", 0.38, "<=", "svd", ("als",)),
    Target("mf fit time (s), u1, within 3x SVD", "fit_seconds", "u1", round(3 * 0.38, 2), "<=", "svd", ("mf",)),
]
ALWAYS_LIKE_REFERENCE = 0.179
TABLE_COLUMNS = [  # (summary key, header, decimals)
    ("rmse", "RMSE", 4), ("mae", "MAE", 4), ("ndcg@10", "NDCG@10", 4), ("recall@10", "Recall@10", 4),
    ("loss", "like-loss", 4), ("auc", "AUC", 4), ("fit_seconds", "fit s", 2),
]


# -- running -------------------------------------------------------------------------------------
class Timer:
    def __enter__(self) -> Timer:
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self.start


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def timed_import(*modules: str) -> float:
    """Seconds to import ``modules`` in this process (0 for what is already loaded)."""
    with Timer() as t:
        for name in modules:
            importlib.import_module(name)
    return t.seconds


def run_movierec(entry: Entry, data: Any, split: Any, matrix: Any, seed: int, device: Any) -> dict[str, Any]:
    """Train one movierec model with its current defaults (plus the entry's overrides) and evaluate it."""
    from movierec.device import seed_everything
    from movierec.evaluate import PopularityBaseline, evaluate
    from movierec.models import build_model
    from movierec.models.picks import Ranked
    from movierec.training import fit, fit_picks

    if entry.name == "popularity":
        with Timer() as t_fit:
            model = PopularityBaseline(matrix)
        return {"model_obj": model, "fit_seconds": t_fit.seconds, "metrics": evaluate(model, matrix, split.test, k=K)}
    seed_everything(seed)
    config = dict(entry.config)
    mode = config.pop("mode", None)  # which class; the rest overrides its defaults
    model = build_model(entry.model, mode, config, data.n_users, data.n_items, tuple(data.rating_values)).to(device)
    # No validation set: per-epoch validation is not training, and nothing here early-stops on the test split.
    with Timer() as t_fit:
        result = fit(model, split.train, None, seed=seed)
    # Rating and like models' lists rank through a picks model trained beside them, as `movierec train` does
    # (timed apart: fit s stays the model's own, comparable with the peers').
    with Timer() as t_picks:
        picks = fit_picks(model, split.train, matrix, seed=seed)
    metrics = evaluate(Ranked(model, None if picks is None else picks[0]), matrix, split.test, k=K,
                       relevance=RELEVANCE)
    return {
        "model_obj": model, "fit_seconds": t_fit.seconds, "picks_seconds": t_picks.seconds, "metrics": metrics,
        "config": model.config.to_dict(), "epochs": len(result.history),
        "train_loss": result.final_train.get("loss"),
    }


def run_surprise(entry: Entry, sdata: Any, split: Any, matrix: Any, seed: int) -> dict[str, Any]:
    """Fit a Surprise algorithm, evaluate its adapter, and check the adapter against Surprise's predict."""
    import peers

    from movierec.evaluate import evaluate

    algo = peers.make_surprise_algo(entry.name, seed)
    with Timer() as t_fit:
        algo.fit(sdata.trainset)
    scorer = peers.surprise_scorer(entry.name, algo, sdata)
    metrics = evaluate(scorer, matrix, split.test, k=K, relevance=RELEVANCE)
    check = peers.check_against_surprise(algo, scorer, split.test)
    out: dict[str, Any] = {"fit_seconds": t_fit.seconds, "metrics": metrics, "check": vars(check).copy()}
    if not check.max_abs_diff <= CHECK_TOLERANCE:
        # The reimplementation is not Surprise's model: report Surprise's own pointwise numbers, no ranking.
        for key in list(metrics):
            if key not in ("users", "ratings"):
                metrics[key] = None
        metrics["rmse"], metrics["mae"] = check.rmse, check.mae
        out["note"] = (f"{entry.name} on {split.name}: all-movie scores differ from Surprise's predict by up to "
                       f"{check.max_abs_diff:.2g}; RMSE/MAE are Surprise's own, ranking metrics skipped")
    return out


def run_implicit(entry: Entry, interactions: Any, split: Any, matrix: Any, seed: int) -> dict[str, Any]:
    import peers

    from movierec.evaluate import evaluate

    with Timer() as t_fit:
        model = peers.fit_implicit_als(interactions, seed)
    scorer = peers.implicit_scorer(model)
    return {"fit_seconds": t_fit.seconds, "metrics": evaluate(scorer, matrix, split.test, k=K, relevance=RELEVANCE)}


def run_ease(split: Any, matrix: Any, seed: int) -> dict[str, Any]:
    """EASE with its penalty chosen on a slice of the training ratings (the choice is not fit time)."""
    import peers

    from movierec.evaluate import evaluate

    lam, tried = peers.choose_ease_lambda(split.train, seed, K, RELEVANCE)
    with Timer() as t_fit:
        model = peers.fit_ease(split.train, lam)
    return {"model_obj": model, "fit_seconds": t_fit.seconds,
            "metrics": evaluate(model, matrix, split.test, k=K, relevance=RELEVANCE),
            "config": {"lambda": lam, "validation_ndcg@10": {str(k): v for k, v in tried.items()}}}


# -- summarising ---------------------------------------------------------------------------------------
def metric_of(row: dict[str, Any], key: str) -> float | None:
    value = row.get(key) if key == "fit_seconds" else row["metrics"].get(key)
    return None if value is None or not math.isfinite(float(value)) else float(value)


def summarise(rows: list[dict[str, Any]], splits: list[str]) -> dict[str, dict[str, Any]]:
    """Per entry: each table metric's mean over the splits run (None unless every split has it) and u1."""
    keys = [c[0] for c in TABLE_COLUMNS] + ["accuracy", "precision@10", "hit@10", "map@10", "coverage@10"]
    out: dict[str, dict[str, Any]] = {}
    for name in dict.fromkeys(r["entry"] for r in rows):
        mine = {r["split"]: r for r in rows if r["entry"] == name and r.get("error") is None}
        summary: dict[str, Any] = {"splits": [s for s in splits if s in mine]}
        for key in keys:
            values = [metric_of(mine[s], key) if s in mine else None for s in splits]
            summary[f"{key}/mean"] = (sum(values) / len(values)) if values and None not in values else None
            summary[f"{key}/u1"] = metric_of(mine["u1"], key) if "u1" in mine else None
        summary["load_seconds"] = (sum(mine[s]["load_seconds"] for s in mine) / len(mine)) if mine else None
        out[name] = summary
    return out


def judge(target: Target, summary: dict[str, dict[str, Any]], splits: list[str],
          extra: dict[str, float]) -> dict[str, Any]:
    """The target's verdict: PASS/MISS for the best eligible movierec row, or n/a with the reason."""
    key = f"{target.metric}/{target.scope}"
    peer_now = extra.get("always_like_loss_u1") if target.peer == "always-like" else (
        summary.get(target.peer, {}).get(key))
    result: dict[str, Any] = {
        "target": target.label, "reference": target.reference, "op": target.op, "peer": target.peer,
        "every": target.every,
        "peer_now": peer_now, "model": None, "value": None, "verdict": "n/a", "why": "",
    }
    if target.scope == "mean" and tuple(splits) != ALL_SPLITS:
        result["why"] = "needs all five splits"
        return result
    if target.scope == "u1" and "u1" not in splits:
        result["why"] = "needs u1"
        return result
    found = [(summary[c][key], c) for c in target.candidates if c in summary and summary[c].get(key) is not None]
    if not found:
        result["why"] = "no eligible movierec model was run"
        return result
    lower_is_better = target.op in ("<", "<=")
    # "every" judges the worst candidate, otherwise the best one.
    value, model = (max(found) if target.every else min(found)) if lower_is_better else (
        min(found) if target.every else max(found))
    ok = {"<": value < target.reference, "<=": value <= target.reference, ">=": value >= target.reference,
          ">": value > target.reference}[target.op]
    result.update(model=model, value=value, verdict="PASS" if ok else "MISS")
    return result


# -- reporting -------------------------------------------------------------------------------------------
def fmt(value: float | None, decimals: int) -> str:
    return "-" if value is None else f"{value:.{decimals}f}"


def table_markdown(summary: dict[str, dict[str, Any]], rows: list[dict[str, Any]], splits: list[str],
                   import_seconds: dict[str, float]) -> str:
    several = len(splits) > 1
    heads = ["model", "kind"] + [h for _, h, _ in TABLE_COLUMNS] + ["import s", "load s"]
    lines = ["| " + " | ".join(heads) + " |", "|" + "|".join(["---"] * 2 + ["---:"] * (len(heads) - 2)) + "|"]
    kinds = {r["entry"]: r.get("kind", "") for r in rows}
    labels = {r["entry"]: r.get("label", ENTRIES[r["entry"]].label) for r in rows}
    for name, s in summary.items():
        cells = [labels[name], kinds.get(name, "")]
        for key, _, decimals in TABLE_COLUMNS:
            mean, u1 = s[f"{key}/mean"], s[f"{key}/u1"]
            if several and "u1" in splits:
                cells.append("-" if mean is None and u1 is None else f"{fmt(mean, decimals)} ({fmt(u1, decimals)})")
            else:
                cells.append(fmt(mean, decimals))
        cells.append(fmt(import_seconds.get(ENTRIES[name].family), 2))
        cells.append(fmt(s["load_seconds"], 2))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def targets_text(verdicts: list[dict[str, Any]]) -> list[str]:
    out = []
    for v in verdicts:
        ref_name = {"always-like": "always like", "published": "best published u1 result, GLocal-K 2021"}.get(
            v["peer"]) or ENTRIES[v["peer"]].label
        peer_now = "-" if v["peer_now"] is None else f"{v['peer_now']:.3f}"
        decimals = 2 if "fit time" in v["target"] else 4
        measured = f"{v['model']} {v['value']:.{decimals}f}" if v["model"] else v["why"]
        out.append(f"{v['target']} {v['op']} {v['reference']} ({ref_name}; measured now: {peer_now}) -> "
                   f"movierec {'worst' if v.get('every') else 'best'}: {measured} -> {v['verdict']}")
    return out


def detail_markdown(rows: list[dict[str, Any]]) -> str:
    keys = ["rmse", "mae", "ndcg@10", "recall@10", "precision@10", "loss", "auc", "coverage@10"]
    lines = ["| model | split | " + " | ".join(keys) + " | fit s | epochs |",
             "|---|---|" + "---:|" * (len(keys) + 2)]
    for r in rows:
        if r.get("error"):
            lines.append(f"| {r['entry']} | {r['split']} | failed: {r['error']} |")
            continue
        cells = [fmt(metric_of(r, k), 4) for k in keys]
        lines.append(f"| {r['entry']} | {r['split']} | " + " | ".join(cells) +
                     f" | {r['fit_seconds']:.2f} | {r.get('epochs', '')} |")
    return "\n".join(lines)


def machine_info() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info: dict[str, Any] = {"cpu": cpu, "cores": os.cpu_count(), "platform": platform.platform()}
    if hasattr(os, "sched_getaffinity"):
        info["usable_cores"] = len(os.sched_getaffinity(0))
    return info


def versions() -> dict[str, str | None]:
    import numpy
    import torch

    import movierec

    out: dict[str, str | None] = {
        "python": platform.python_version(), "torch": torch.__version__, "numpy": numpy.__version__,
        "movierec": movierec.__version__,
    }
    for name, module in (("surprise", "surprise"), ("implicit", "implicit"), ("scipy", "scipy")):
        try:
            out[name] = importlib.import_module(module).__version__
        except ImportError:
            out[name] = None
    try:
        commit = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True,
                                text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "--", "movierec"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
        out["movierec_commit"] = (commit + ("+uncommitted changes" if dirty else "")) or None
    except (OSError, subprocess.SubprocessError):
        out["movierec_commit"] = None
    return out


def json_safe(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


# -- main ----------------------------------------------------------------------------------------------------
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--zip", type=Path, help="Import this ml-100k.zip into a temporary MOVIEREC_HOME "
                                                 "(unverified) instead of using the fetched ml-100k.")
    parser.add_argument("--splits", help="Comma-separated official splits [default: u1,u2,u3,u4,u5].")
    parser.add_argument("--quick", action="store_true", help="u1 only.")
    parser.add_argument("--models", help=f"Comma-separated rows to run [default: all: {','.join(ENTRIES)}].")
    parser.add_argument("--out", type=Path, default=HERE / "results", help="Folder for the Markdown and JSON.")
    parser.add_argument("--seed", type=int, default=0, help="Seed of every model and peer [default: 0].")
    parser.add_argument("--device", default="cpu", help="movierec's device: cpu, cuda or auto [default: cpu; "
                                                        "the peers run on the CPU].")
    parser.add_argument("--strict", action="store_true", help="Exit 1 when a target is missed.")
    args = parser.parse_args(argv)
    if args.quick and args.splits:
        parser.error("--quick means --splits u1; give one of them")
    splits = ["u1"] if args.quick else [s.strip().lower() for s in (args.splits or ",".join(ALL_SPLITS)).split(",")]
    bad = [s for s in splits if s not in ALL_SPLITS]
    if bad or not splits or len(set(splits)) != len(splits):
        parser.error(f"--splits takes distinct names among {', '.join(ALL_SPLITS)} (got {args.splits!r})")
    args.split_list = [s for s in ALL_SPLITS if s in splits]
    names = [m.strip().lower() for m in (args.models or ",".join(ENTRIES)).split(",") if m.strip()]
    unknown = [m for m in names if m not in ENTRIES]
    if unknown or not names:
        parser.error(f"unknown --models {', '.join(unknown)}; choose among {', '.join(ENTRIES)}")
    args.model_list = [m for m in ENTRIES if m in names]
    return args


def main(argv: list[str] | None = None) -> int:
    wall = time.perf_counter()
    args = parse_args(argv)
    # Before numpy loads (nothing heavy is imported above): implicit runs its own threads and warns, and
    # slows down, when OpenBLAS runs more underneath.
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    started = dt.datetime.now(dt.timezone.utc)
    load_start = os.getloadavg() if hasattr(os, "getloadavg") else None

    import_seconds = {"movierec": timed_import("numpy", "torch", "movierec.data.movielens", "movierec.data.split",
                                               "movierec.models", "movierec.training", "movierec.evaluate",
                                               *[f"movierec.models.{m}" for m in ("rbm", "autoencoder", "mf", "als")
                                                 if any(ENTRIES[n].model == m for n in args.model_list)])}
    notes: list[str] = []
    wanted = {ENTRIES[m].family for m in args.model_list}
    for family, modules, package in (("surprise", ("pandas", "surprise"), "scikit-surprise"),
                                     ("implicit", ("scipy.sparse", "threadpoolctl", "implicit.cpu.als"), "implicit")):
        if family not in wanted:
            continue
        try:
            import_seconds[family] = timed_import(*modules)
        except ImportError as exc:
            skipped = [m for m in args.model_list if ENTRIES[m].family == family]
            notes.append(f"Skipped {', '.join(skipped)}: {package} cannot be imported ({exc}); "
                         f"install the peers with `pip install -e '.[bench]'`.")
            args.model_list = [m for m in args.model_list if m not in skipped]
    import peers
    import torch

    from movierec import metrics as mr_metrics
    from movierec import paths
    from movierec.data.movielens import load_dataset
    from movierec.data.split import make_split
    from movierec.device import resolve_device
    from movierec.errors import MovierecError

    rows: list[dict[str, Any]] = []
    extra: dict[str, float] = {}
    tmp = tempfile.TemporaryDirectory(prefix="movierec-bench-") if args.zip else None
    try:
        device = resolve_device(args.device)
        prepare_seconds = None
        if tmp is not None:
            from movierec.data.download import fetch

            paths.set_home(tmp.name)
            with Timer() as t_prep:
                fetch(DATASET, from_file=args.zip, verify=False)
            prepare_seconds = t_prep.seconds
            log(f"imported {args.zip} into {tmp.name} in {prepare_seconds:.1f} s")
        with Timer() as t_data:
            data = load_dataset(DATASET)
        scale = (float(data.rating_values[0]), float(data.rating_values[-1]))

        for split_name in args.split_list:
            with Timer() as t_split:
                split = make_split(data, split_name, seed=args.seed)
                matrix = split.train.matrix(device)
            base_load = t_data.seconds + t_split.seconds
            peer_inputs: dict[str, tuple[Any, float]] = {}
            if split_name == "u1":
                liked = torch.from_numpy(split.test.ratings) >= 3.0
                extra["always_like_loss_u1"] = mr_metrics.like_loss(torch.ones(liked.shape[0]), liked)
            for name in args.model_list:
                entry = ENTRIES[name]
                row: dict[str, Any] = {"entry": name, "split": split_name, "family": entry.family, "error": None}
                try:
                    if entry.family == "surprise" and "surprise" not in peer_inputs:
                        with Timer() as t_conv:
                            peer_inputs["surprise"] = (peers.surprise_data(split.train, scale), 0.0)
                        peer_inputs["surprise"] = (peer_inputs["surprise"][0], t_conv.seconds)
                    if entry.family == "implicit" and "implicit" not in peer_inputs:
                        with Timer() as t_conv:
                            interactions = peers.implicit_interactions(split.train)
                        peer_inputs["implicit"] = (interactions, t_conv.seconds)
                    with Timer() as t_run:
                        if entry.family == "movierec":
                            out = run_movierec(entry, data, split, matrix, args.seed, device)
                        elif entry.family == "surprise":
                            out = run_surprise(entry, peer_inputs["surprise"][0], split, matrix, args.seed)
                        elif entry.family == "reference":
                            out = run_ease(split, matrix, args.seed)
                        else:
                            out = run_implicit(entry, peer_inputs["implicit"][0], split, matrix, args.seed)
                    model_obj = out.pop("model_obj", None)
                    row.update(out)
                    mode = (row.get("config") or {}).get("mode")
                    row["label"] = entry.label if mode is None or entry.config else f"{entry.label} (mode={mode})"
                    row["kind"] = getattr(model_obj, "kind", None) or ("rank" if entry.family == "implicit"
                                                                       else "rating")
                    row["load_seconds"] = base_load + peer_inputs.get(entry.family, (None, 0.0))[1]
                    row["eval_seconds"] = t_run.seconds - row["fit_seconds"]
                    if "note" in row:
                        notes.append(row.pop("note"))
                    m = row["metrics"]
                    log(f"[{split_name}] {name}: fit {row['fit_seconds']:.2f} s, RMSE {fmt(m.get('rmse'), 4)}, "
                        f"like-loss {fmt(m.get('loss'), 4)}, NDCG@10 {fmt(m.get('ndcg@10'), 4)}")
                except Exception as exc:  # one failing model must not lose the others' results
                    row["error"] = f"{type(exc).__name__}: {exc}"
                    notes.append(f"{name} failed on {split_name}: {row['error']}")
                    log(f"[{split_name}] {name}: FAILED\n{traceback.format_exc()}")
                rows.append(row)
            del peer_inputs
    except MovierecError as exc:
        print(f"Error: {exc}", file=sys.stderr)
        if tmp is None:
            print("Fetch ml-100k first (`movierec fetch ml-100k`) or pass --zip PATH.", file=sys.stderr)
        return 1
    finally:
        if tmp is not None:
            paths.set_home(None)
            tmp.cleanup()

    summary = summarise(rows, args.split_list)
    verdicts = [judge(t, summary, args.split_list, extra) for t in TARGETS]
    wall_seconds = time.perf_counter() - wall
    load_end = os.getloadavg() if hasattr(os, "getloadavg") else None

    notes += [
        "Surprise rows: every movie is scored from the fitted model's learned parameters in vectorised numpy "
        "(SVD, SVD++, BaselineOnly: mu + b_u + b_i [+ p_u.q_i]; KNNBaseline: a vectorised reimplementation of "
        "its item-based estimate), clipped to 1..5 as Surprise's predict does. On every split those scores are "
        "compared with Surprise's own predict on all test pairs (max difference in the JSON, 'check'); "
        f"above {CHECK_TOLERANCE:g} the row keeps Surprise's own RMSE/MAE and drops its ranking metrics.",
        "implicit ALS fits the training ratings as binary interactions (every rating = 1, whatever its stars) "
        "and only ranks (kind 'rank'): no RMSE/MAE/like-loss; its AUC ranks liked vs disliked test movies.",
        "fit s = in-process wall time of training only (movierec: training.fit without a validation set; "
        "Surprise: algo.fit; implicit: model.fit; popularity: counting). import s = this process's import "
        "of the library (movierec includes torch); load s = loading the parsed ml-100k + the split "
        "(+ the peer's own data structure), per split.",
    ]
    if load_start is not None and load_end is not None:
        notes.append(f"Machine load average (1 min) was {load_start[0]:.1f} at the start and {load_end[0]:.1f} "
                     f"at the end on {os.cpu_count()} cores: timings are inflated when it exceeds the core count.")

    table = table_markdown(summary, rows, args.split_list, import_seconds)
    scope = "mean over " + ",".join(args.split_list) + (" (u1 in parentheses)" if len(args.split_list) > 1
                                                        and "u1" in args.split_list else "")
    target_lines = targets_text(verdicts)
    print(f"\nMovieLens-100K, official splits, K={K}, relevant = test rating >= {RELEVANCE:g}; {scope}\n")
    print(table)
    print("\nTargets (reference = the peer's defaults, measured earlier; movierec best = best eligible movierec "
          "model):")
    for line in target_lines:
        print("  " + line)
    print("\nNotes:")
    for note in notes:
        print("  - " + note)
    print(f"\nWall time: {wall_seconds:.0f} s")

    tag = "u1-u5" if tuple(args.split_list) == ALL_SPLITS else "+".join(args.split_list)
    tag += "" if args.model_list == list(ENTRIES) else "_partial"
    args.out.mkdir(parents=True, exist_ok=True)
    info = machine_info()
    vers = versions()
    report = {
        "date": started.isoformat(timespec="seconds"), "command": " ".join(["python", *sys.argv]),
        "dataset": DATASET, "splits": args.split_list, "k": K, "relevance": RELEVANCE, "seed": args.seed,
        "device": str(device), "torch_threads": torch.get_num_threads(), "machine": info, "versions": vers,
        "load_average_start": load_start, "load_average_end": load_end, "wall_seconds": wall_seconds,
        "prepare_seconds": prepare_seconds, "dataset_load_seconds": t_data.seconds,
        "import_seconds": import_seconds, "summary": summary, "targets": verdicts, "rows": rows, "notes": notes,
    }
    json_path = args.out / f"compare_{tag}.json"
    json_path.write_text(json.dumps(json_safe(report), indent=2) + "\n")
    md = [
        f"# movierec vs Surprise and implicit: {DATASET}, splits {', '.join(args.split_list)}", "",
        f"- date: {report['date']}; wall time {wall_seconds:.0f} s; command: `{report['command']}`",
        f"- machine: {info['cpu']}, {info['cores']} cores ({info['platform']}); load average "
        f"{fmt(load_start[0] if load_start else None, 1)} -> {fmt(load_end[0] if load_end else None, 1)}",
        "- versions: " + ", ".join(f"{k} {v}" for k, v in vers.items() if v),
        f"- protocol: `movierec.evaluate.evaluate(model, train_matrix, test, k={K})`; relevant = test rating "
        f">= {RELEVANCE:g}; seed {args.seed}; device {device}", "",
        f"## Results ({scope})", "", table, "", "## Targets", "", *[f"- {line}" for line in target_lines], "",
        "## Notes", "", *[f"- {n}" for n in notes], "", "## Every split", "", detail_markdown(rows), "",
        "## movierec settings used (the defaults at run time)", "",
        *[f"- {r['entry']}: `{json.dumps(r['config'])}`" for r in rows
          if r.get("config") and r["split"] == args.split_list[0]], "",
    ]
    md_path = args.out / f"compare_{tag}.md"
    md_path.write_text("\n".join(md))
    print(f"Wrote {md_path} and {json_path}")
    failed = any(r.get("error") for r in rows)
    missed = any(v["verdict"] == "MISS" for v in verdicts)
    return 1 if failed or (args.strict and missed) else 0


if __name__ == "__main__":
    sys.exit(main())
