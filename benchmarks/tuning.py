"""What `movierec tune` buys on MovieLens-100K u1: a search per model on a validation slice of u1's training ratings,
then its best configuration and the default one each trained on u1 and tested once on u1's test split. Not part of
the test run.

    python benchmarks/tuning.py --zip /path/to/ml-100k.zip --trials 50 --out benchmarks/results

Each search runs as a user runs it (`movierec tune MODEL --trials N --save NAME --json`, a fresh process) in a
temporary home; its wall time and the machine's load average (before and after) are recorded beside the numbers.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
RUNS = (("mf", []), ("als", ["--mode", "implicit"]))


def _movierec(args: list[str], env: dict[str, str]) -> str:
    done = subprocess.run([sys.executable, "-m", "movierec", *args], env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"`movierec {' '.join(args)}` failed: {done.stderr.strip()}")
    return done.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--zip", type=Path, default=HERE.parent.parent / "shared" / "data" / "ml-100k.zip")
    parser.add_argument("--trials", type=int, default=50)
    parser.add_argument("--out", type=Path, default=HERE / "results")
    args = parser.parse_args()

    rows = []
    with tempfile.TemporaryDirectory() as home:
        env = {**os.environ, "MOVIEREC_HOME": home, "PYTHONPATH": str(HERE.parent)}
        _movierec(["fetch", "ml-100k", "--from-file", str(args.zip), "--no-verify"], env)
        for model, mode in RUNS:
            label = " ".join([model, *mode])
            load_before = os.getloadavg()
            start = time.perf_counter()
            tuned = json.loads(_movierec(["tune", model, *mode, "--trials", str(args.trials), "--seed", "0",
                                          "--save", f"tuned-{model}", "--json"], env))
            seconds = time.perf_counter() - start
            load_after = os.getloadavg()
            _movierec(["train", model, *mode, "--name", f"default-{model}", "--json"], env)
            tested = {r["checkpoint"]: r for r in json.loads(
                _movierec(["evaluate", f"tuned-{model}", f"default-{model}", "--json"], env)) if r.get("checkpoint")}
            metric = tuned["metric"]
            states = [t["state"] for t in tuned["trials"]]
            rows.append({
                "model": label, "trials": len(states), "complete": states.count("complete"),
                "pruned": states.count("pruned"), "seconds": round(seconds, 1),
                "load_before": [round(x, 2) for x in load_before], "load_after": [round(x, 2) for x in load_after],
                "metric": metric, "best_valid": tuned["best"]["value"], "best": tuned["best"]["config"],
                "test_tuned": {k: tested[f"tuned-{model}"].get(k) for k in ("rmse", "ndcg@10")},
                "test_default": {k: tested[f"default-{model}"].get(k) for k in ("rmse", "ndcg@10")},
            })
            print(json.dumps(rows[-1]), flush=True)

    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "tuning.json").write_text(json.dumps({"machine": platform.platform(), "cpus": os.cpu_count(),
                                                      "runs": rows}, indent=2) + "\n")
    lines = ["| model | trials (complete / pruned) | wall | load avg (1 min) before -> after | validation best | "
             "test RMSE tuned / default | test NDCG@10 tuned / default |", "|---|---|---:|---|---:|---:|---:|"]

    def num(value: float | None) -> str:
        return "-" if value is None else f"{value:.4f}"

    for r in rows:
        lines.append(f"| `{r['model']}` | {r['trials']} ({r['complete']} / {r['pruned']}) | {r['seconds']:.0f} s | "
                     f"{r['load_before'][0]:.1f} -> {r['load_after'][0]:.1f} | {r['metric']} {num(r['best_valid'])} | "
                     f"{num(r['test_tuned']['rmse'])} / {num(r['test_default']['rmse'])} | "
                     f"{num(r['test_tuned']['ndcg@10'])} / {num(r['test_default']['ndcg@10'])} |")
    for r in rows:
        best = ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in r["best"].items())
        lines.append(f"\n`{r['model']}` best: {best}.")
    (args.out / "tuning.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
