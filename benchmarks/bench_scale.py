"""How movierec's commands cost at ML-1M, ML-10M and ML-25M scale, as a user runs them. Not part of the tests.

For each synthetic release shape (written once with the synthetic-release generator and cached under
``benchmarks/.cache/``), in a throw-away ``MOVIEREC_HOME``:

- ``movierec fetch NAME --from-file`` (the first parse) — wall time and peak memory;
- ``movierec train MODEL [--mode M]`` for every model with its defaults (``--epochs N`` or
  ``--epochs rbm=1,autoencoder=1`` caps the epochs, so a 25M-rating run stays affordable) — wall time, seconds
  per epoch, peak memory, the final test metric;
- the peers on the same training ratings (same release, split and seed as ``train``): implicit's CPU ALS on 1
  and 2 threads against ``als --mode implicit``, Surprise's SVD against ``mf``, at the same factors, each
  contender in a process of its own, alternating ``--peer-rounds`` times (medians; movierec over the peer);
- ``movierec evaluate``, ``recommend --user``, ``recommend --rate``, ``similar``, ``models`` (with 50 saved
  checkpoints) and ``--help`` — median of ``--repeat`` runs, process start included, peak memory.

Every command runs as a separate process (``python -m movierec``); peak memory is that process's own maximum
resident set size (``os.wait4``). The load average is recorded next to the timings: on a busy machine compare
ratios within one run, not numbers across runs.

    python benchmarks/bench_scale.py                          # ml-1m shape, CPU
    python benchmarks/bench_scale.py --shapes ml-1m,ml-10m --device cuda --epochs 2
    python benchmarks/bench_scale.py --shapes ml-25m --models als,als-implicit,mf --epochs 1
    python benchmarks/bench_scale.py --shapes ml-10m --models rbm,autoencoder --epochs 1 --peers ""

Results: a Markdown table on stdout and ``--out``/bench_scale_<device>.json.
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
CACHE = HERE / ".cache"

# (row name, `movierec train` arguments)
MODELS: dict[str, list[str]] = {
    "rbm": ["rbm"],
    "rbm-rating": ["rbm", "--mode", "rating"],
    "autoencoder": ["autoencoder"],
    "autoencoder-item": ["autoencoder", "--mode", "item"],
    "mf": ["mf"],
    "als": ["als"],
    "als-implicit": ["als", "--mode", "implicit"],
}
SHAPES = ("ml-latest-small", "ml-1m", "ml-10m", "ml-25m")


def _generator() -> Path:
    """The synthetic-release generator: the repository's copy, else the one beside the checkout."""
    for candidate in (HERE / "synth_release.py", HERE.parent.parent / "shared" / "synth" / "synth_release.py"):
        if candidate.is_file():
            return candidate
    raise SystemExit("No synth_release.py found (looked in benchmarks/ and ../shared/synth/).")


def _archive(shape: str) -> Path:
    CACHE.mkdir(parents=True, exist_ok=True)
    path = CACHE / f"synth-{shape}.zip"
    if not path.is_file():
        print(f"writing a synthetic {shape}-shaped release to {path} (minutes at 25M) ...", file=sys.stderr)
        tmp = path.with_suffix(".zip.tmp")
        subprocess.run([sys.executable, str(_generator()), shape, str(tmp)], check=True)
        os.replace(tmp, path)
    return path


def _run_measured(args: list[str], env: dict[str, str], timeout: float,
                  program: tuple[str, ...] = ("-m", "movierec")) -> tuple[float, float, str]:
    """Run ``python -m movierec ARGS`` (or ``python PROGRAM ARGS``): (seconds, peak RSS of that process in MB
    via os.wait4, stdout)."""
    start = time.perf_counter()
    with tempfile.TemporaryFile("w+") as out_f, tempfile.TemporaryFile("w+") as err_f:
        proc = subprocess.Popen([sys.executable, *program, *args], env=env, stdout=out_f, stderr=err_f)
        deadline = start + timeout
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.perf_counter() > deadline:
                proc.kill()
                os.wait4(proc.pid, 0)
                raise RuntimeError(f"`movierec {' '.join(args)}` ran past {timeout:.0f} s")
            time.sleep(0.02)
        proc.returncode = os.waitstatus_to_exitcode(status)
        seconds = time.perf_counter() - start
        out_f.seek(0)
        err_f.seek(0)
        out, err = out_f.read(), err_f.read()
    if proc.returncode != 0:
        raise RuntimeError(f"`movierec {' '.join(args)}` failed ({proc.returncode}): {err.strip()[-400:]}")
    return seconds, usage.ru_maxrss / 1024, out


def _median_run(args: list[str], env: dict[str, str], repeat: int, timeout: float) -> dict[str, float]:
    runs = [_run_measured(args, env, timeout) for _ in range(repeat)]
    return {"seconds": statistics.median(r[0] for r in runs), "peak_mb": max(r[1] for r in runs)}


def bench_shape(shape: str, args: argparse.Namespace) -> list[dict[str, object]]:
    rows: list[dict[str, object]] = []
    archive = _archive(shape)
    home = Path(tempfile.mkdtemp(prefix=f"movierec-bench-{shape}-"))
    env = {**os.environ, "MOVIEREC_HOME": str(home)}
    env.pop("MOVIEREC_MIRROR", None)
    try:
        seconds, peak, _ = _run_measured(["fetch", shape, "--from-file", str(archive), "--no-verify"], env,
                                         args.timeout)
        rows.append({"shape": shape, "what": f"fetch {shape} (first parse)", "seconds": seconds, "peak_mb": peak})
        print(f"[{shape}] fetch: {seconds:.1f} s, {peak:.0f} MB", file=sys.stderr)
        trained: list[str] = []
        for name in args.models:
            train_args = ["train", *MODELS[name], "--dataset", shape, "--device", args.device,
                          "--name", f"bench-{name}", "--json"]
            epochs_cap = args.epochs.get(name, args.epochs.get("*"))
            if epochs_cap:
                train_args += ["--epochs", str(epochs_cap)]
            try:
                seconds, peak, out = _run_measured(train_args, env, args.timeout)
            except RuntimeError as exc:
                rows.append({"shape": shape, "what": f"train {name}", "error": str(exc)})
                print(f"[{shape}] train {name}: {exc}", file=sys.stderr)
                continue
            result = json.loads(out)
            epochs = int(result.get("epochs") or 0)
            fit = float(result.get("fit_seconds") or 0.0)
            metrics = result.get("metrics") or {}
            baseline = result.get("baseline") or {}
            rows.append({"shape": shape, "what": f"train {name}", "seconds": seconds, "peak_mb": peak,
                         "epochs": epochs, "seconds_per_epoch": fit / epochs if epochs else None,
                         "metrics": metrics, "baseline": baseline})
            trained.append(name)
            print(f"[{shape}] train {name}: {seconds:.1f} s wall, {fit / max(epochs, 1):.2f} s/epoch, "
                  f"{peak:.0f} MB, {metrics}", file=sys.stderr)
        rows += _peer_rows(shape, rows, env, args)
        if not trained:
            return rows
        model = f"bench-{'als' if 'als' in trained else trained[0]}"
        movies = _movie_ids(shape, env)  # synthetic releases need not have movie 1
        commands = {
            "evaluate (one model, all test users)": ["evaluate", "--model", model, "--json"],
            "recommend --user": ["recommend", "--model", model, "--user", args.user, "--top", "10", "--json"],
            "recommend --rate (new user)": ["recommend", "--model", model, "--rate", f"{movies[0]}=5",
                                            "--rate", f"{movies[1]}=4", "--rate", f"{movies[2]}=1", "--json"],
            "similar": ["similar", movies[0], "--model", model, "--json"],
        }
        for what, cmd in commands.items():
            try:
                res = _median_run(cmd, env, args.repeat if what.startswith(("recommend", "similar")) else 1,
                                  args.timeout)
            except RuntimeError as exc:
                rows.append({"shape": shape, "what": what, "error": str(exc)})
                continue
            rows.append({"shape": shape, "what": what, **res})
            print(f"[{shape}] {what}: {res['seconds']:.2f} s, {res['peak_mb']:.0f} MB", file=sys.stderr)
        models_dir = home / "models"
        source = next(models_dir.glob(f"{model}.*"), None)
        if source is not None:
            for i in range(50 - len(list(models_dir.glob("*.pt")))):
                shutil.copy(source, models_dir / f"copy-{i}{source.suffix}")
            res = _median_run(["models", "--json"], env, args.repeat, args.timeout)
            rows.append({"shape": shape, "what": "models (50 checkpoints)", **res})
    finally:
        shutil.rmtree(home, ignore_errors=True)
    return rows


# Peers timed on the same training ratings as `movierec train` (same release, split and seed): (row name, peer,
# threads, the movierec model it is compared with).
PEERS: dict[str, tuple[str, int, str]] = {
    "implicit-1": ("implicit", 1, "als-implicit"),
    "implicit-2": ("implicit", 2, "als-implicit"),
    "svd": ("svd", 1, "mf"),
}


def _peer_rows(shape: str, rows: list[dict[str, object]], env: dict[str, str],
               args: argparse.Namespace) -> list[dict[str, object]]:
    """Seconds per iteration/epoch of implicit's CPU ALS and Surprise's SVD against the movierec model of the
    same size (implicit: ``als --mode implicit``'s factors, 3 CG steps each; SVD: ``mf``'s factors), each in a
    process of its own, on the same threads, alternating ``--peer-rounds`` times so both see the same load:
    the medians and movierec's over the peer's. Both are timed in-process over ``--peer-iters`` epochs, data
    loading and setup excluded (movierec: making its trainer and its first epoch; implicit: a 1-iteration fit)."""
    from movierec.models.als import ImplicitALSConfig
    from movierec.models.mf import MFConfig

    out: list[dict[str, object]] = []
    script = (str(Path(__file__).resolve()),)
    for name in args.peers:
        who, threads, against = PEERS[name]
        factors = ImplicitALSConfig().factors if who == "implicit" else MFConfig().factors
        peer_what = (f"implicit ALS, {factors} factors" if who == "implicit" else f"Surprise SVD, {factors} factors")
        what = f"{against} vs {peer_what}, {threads} thread(s)"
        times: dict[str, list[float]] = {"movierec": [], "peer": []}
        peaks: dict[str, float] = {"movierec": 0.0, "peer": 0.0}
        try:
            for _ in range(args.peer_rounds):
                for side, timed in (("movierec", against), ("peer", who)):
                    seconds, peak, printed = _run_measured(
                        ["--peer", timed, "--shapes", shape, "--threads", str(threads), "--factors", str(factors),
                         "--epochs", str(args.peer_iters)], {**env, "OMP_NUM_THREADS": str(threads)},
                        args.timeout, program=script)
                    times[side].append(float(json.loads(printed.strip().splitlines()[-1])["seconds_per_epoch"]))
                    peaks[side] = max(peaks[side], peak)
        except RuntimeError as exc:
            out.append({"shape": shape, "what": what, "error": str(exc)})
            print(f"[{shape}] {what}: {exc}", file=sys.stderr)
            continue
        ours, theirs = statistics.median(times["movierec"]), statistics.median(times["peer"])
        out.append({"shape": shape, "what": what, "seconds_per_epoch": ours, "peer_seconds_per_epoch": theirs,
                    "ratio": ours / theirs, "runs": times, "peak_mb": max(peaks.values()), "peaks_mb": peaks})
        print(f"[{shape}] {what}: {ours:.2f} vs {theirs:.2f} s/epoch (medians of {args.peer_rounds}), "
              f"ratio {ours / theirs:.2f}; runs {times}", file=sys.stderr)
    return out


def _training_ratings(shape: str):
    """The ratings `movierec train` learns from on ``shape`` with its defaults (split, seed 0, 10% test, no
    validation slice), from the fetched release in ``MOVIEREC_HOME``."""
    from movierec.data.movielens import load_dataset
    from movierec.data.split import default_split, make_split

    data = load_dataset(shape)
    return make_split(data, default_split(shape), seed=0, test_fraction=0.1).train


def _movierec_seconds_per_epoch(train, name: str, factors: int, epochs: int) -> float:
    """Seconds per epoch of movierec's ``mf`` or ``als --mode implicit`` with its defaults (``factors`` as
    given), in this process: its trainer and one epoch first (ALS lays out its solves), then ``epochs``."""
    import torch

    from movierec.device import make_generator, seed_everything
    from movierec.models import build_model

    model_name, mode = ("als", "implicit") if name == "als-implicit" else (name, None)
    seed_everything(0)
    values = tuple(float(v) for v in sorted(set(train.ratings.tolist())))
    model = build_model(model_name, mode, {"factors": factors}, train.n_users, train.n_items, values)
    matrix = train.matrix()
    generator = make_generator(torch.device("cpu"), 0)
    trainer = model.trainer(matrix, generator)
    trainer.train_epoch()
    start = time.perf_counter()
    for _ in range(epochs):
        trainer.train_epoch()
    return (time.perf_counter() - start) / epochs


def peer_main(args: argparse.Namespace) -> None:
    """Seconds per iteration (implicit) or epoch of one contender, printed as JSON: ``--peer``."""
    train = _training_ratings(args.shapes)
    if args.peer == "implicit":
        from implicit_als import implicit_seconds_per_iter

        per = implicit_seconds_per_iter(train, args.factors, args.epochs, args.threads)
    elif args.peer == "svd":
        import peers

        trainset = _lean_trainset(train)
        algo = peers.make_surprise_algo("svd", 0, n_factors=args.factors, n_epochs=args.epochs)
        start = time.perf_counter()
        algo.fit(trainset)  # Surprise's fit is its epochs, after drawing the initial factors
        per = (time.perf_counter() - start) / args.epochs
    else:
        import torch

        torch.set_num_threads(args.threads)
        per = _movierec_seconds_per_epoch(train, args.peer, args.factors, args.epochs)
    print(json.dumps({"peer": args.peer, "threads": args.threads, "seconds_per_epoch": per}))


def _lean_trainset(train):
    """A Surprise Trainset of ``train`` built directly, with every (movie, stars) and (user, stars) pair made of
    shared int and float objects: ~130 bytes a rating instead of ~390 through a DataFrame (ML-25M's training
    ratings then fit in ~3 GB). Inner ids in order of first appearance, ratings in file order, as Surprise's
    own reader gives them; SVD's epochs read nothing else."""
    import numpy as np
    import surprise

    _, first_user = np.unique(train.users, return_index=True)
    _, first_item = np.unique(train.items, return_index=True)
    user_order = np.sort(first_user)  # positions where each user first appears, in file order
    item_order = np.sort(first_item)
    inner_user = np.full(train.n_users, -1, np.int64)
    inner_item = np.full(train.n_items, -1, np.int64)
    inner_user[train.users[user_order]] = np.arange(user_order.shape[0])
    inner_item[train.items[item_order]] = np.arange(item_order.shape[0])
    u, i = inner_user[train.users], inner_item[train.items]
    stars, codes = np.unique(train.ratings, return_inverse=True)
    ints = list(range(max(user_order.shape[0], item_order.shape[0])))
    floats = [float(x) for x in stars]

    def grouped(key: np.ndarray, other: np.ndarray, n: int) -> dict[int, list]:
        order = np.argsort(key, kind="stable")
        bounds = np.r_[0, np.cumsum(np.bincount(key, minlength=n))]
        others, rated = other[order].tolist(), codes[order].tolist()
        return {k: [(ints[others[j]], floats[rated[j]]) for j in range(bounds[k], bounds[k + 1])] for k in range(n)}

    ur = grouped(u, i, user_order.shape[0])
    ir = grouped(i, u, item_order.shape[0])
    return surprise.Trainset(ur, ir, user_order.shape[0], item_order.shape[0], len(train),
                             (float(stars[0]), float(stars[-1])),
                             {int(x): k for k, x in enumerate(train.users[user_order])},
                             {int(x): k for k, x in enumerate(train.items[item_order])})


def _cpu_model() -> str:
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return platform.processor() or "unknown CPU"
    return next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")), "unknown CPU")


def _movie_ids(shape: str, env: dict[str, str]) -> list[str]:
    """The first three MovieLens movie ids of the fetched release (in a process that sees ``MOVIEREC_HOME``)."""
    code = ("from movierec.data.movielens import load_dataset; "
            f"print(*load_dataset({shape!r}).item_ids[:3].tolist())")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    return out.stdout.split()


def _epochs(text: str) -> dict[str, int]:
    """``--epochs``: ``N`` (every model) or ``model=N,model=N`` (those models; ``*=N`` the rest); 0 = defaults."""
    caps: dict[str, int] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, _, value = part.rpartition("=")
        caps[name or "*"] = int(value)
    return caps


def _judged(metrics: dict[str, object], baseline: dict[str, object]) -> str:
    """Whether the model beat the trivial answer on the test split, on the metric that judges its kind."""
    for key, higher in (("rmse", False), ("ndcg@10", True), ("loss", False)):
        mine, theirs = metrics.get(key), baseline.get(key)
        if isinstance(mine, float) and isinstance(theirs, float):
            beaten = mine > theirs if higher else mine < theirs
            return f"{'beats' if beaten else 'does NOT beat'} {baseline.get('name', 'baseline')} {theirs:.4f}"
    return ""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shapes", default="ml-1m", help=f"comma-separated, of {', '.join(SHAPES)}")
    parser.add_argument("--models", default=",".join(MODELS), help=f"comma-separated, of {', '.join(MODELS)}")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda", "auto"))
    parser.add_argument("--epochs", default="0", help="cap the epochs: N for every model, or model=N,... for "
                        "some (*=N the rest); 0: the defaults")
    parser.add_argument("--repeat", type=int, default=3, help="runs per serving command (median)")
    parser.add_argument("--user", default="1", help="MovieLens user id for recommend --user")
    parser.add_argument("--timeout", type=float, default=3600, help="seconds before a command is given up")
    parser.add_argument("--out", type=Path, default=HERE / "results")
    parser.add_argument("--peers", default=",".join(PEERS), help=f"comma-separated, of {', '.join(PEERS)} "
                        "(empty: none); each is compared with the movierec row it matches")
    parser.add_argument("--peer-iters", type=int, default=3, help="epochs timed per run, movierec and peer")
    parser.add_argument("--peer-rounds", type=int, default=3, help="alternating runs of movierec and each peer")
    parser.add_argument("--peer", choices=("implicit", "svd", "mf", "als-implicit"),
                        help=argparse.SUPPRESS)  # one contender's timing, in a process of its own
    parser.add_argument("--factors", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.peer:
        args.epochs = int(args.epochs)
        peer_main(args)
        return
    args.epochs = _epochs(args.epochs)
    args.peers = [p.strip() for p in args.peers.split(",") if p.strip()]
    if any(p not in PEERS for p in args.peers):
        raise SystemExit(f"unknown peer: {args.peers}")
    args.models = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = [m for m in args.models if m not in MODELS]
    shapes = [s.strip() for s in args.shapes.split(",") if s.strip()]
    if unknown or any(s not in SHAPES for s in shapes):
        raise SystemExit(f"unknown model or shape: {unknown or shapes}")

    load_before = os.getloadavg()
    help_time = _median_run(["--help"], dict(os.environ), args.repeat, 60)
    rows: list[dict[str, object]] = [{"shape": "-", "what": "--help", **help_time}]
    for shape in shapes:
        rows += bench_shape(shape, args)
    report = {"device": args.device, "platform": platform.platform(), "cpu": _cpu_model(), "cpus": os.cpu_count(),
              "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
              "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
              "load_before": load_before, "load_after": os.getloadavg(), "epochs_cap": args.epochs, "rows": rows}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"bench_scale_{args.device}.json").write_text(json.dumps(report, indent=2) + "\n")

    print(f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, device {args.device}, {_cpu_model()} "
          f"({os.cpu_count()} CPUs), OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}, load average "
          f"before {load_before[0]:.1f}, after {report['load_after'][0]:.1f}\n")
    print("| shape | what | wall s | s/epoch | peak MB | result |")
    print("|---|---|---:|---:|---:|---|")
    for r in rows:
        if "error" in r:
            print(f"| {r['shape']} | {r['what']} | - | - | - | FAILED: {r['error'][:80]} |")
            continue
        spe = r.get("seconds_per_epoch")
        metrics = r.get("metrics") or {}
        baseline = r.get("baseline") or {}
        result = ", ".join(f"{k} {v:.4f}" for k, v in metrics.items() if isinstance(v, float))
        judged = _judged(metrics, baseline)
        if judged:
            result += f" ({judged})"
        if "ratio" in r:
            result = f"peer {r['peer_seconds_per_epoch']:.2f} s/epoch; movierec / peer = {r['ratio']:.2f}"
        wall = f"{r['seconds']:.2f}" if "seconds" in r else "-"
        print(f"| {r['shape']} | {r['what']} | {wall} | {'-' if spe is None else f'{spe:.2f}'} "
              f"| {r['peak_mb']:.0f} | {result} |")


if __name__ == "__main__":
    main()
