"""How fast `movierec serve` answers under load, on loopback. Not part of the test run.

For each model: a temporary home, the data set fetched, the model trained (``--epochs 1``: serving costs the
same after one epoch as after fifty, since it depends on the model's shape, not its accuracy), then the real
``movierec serve`` (``--workers``, one by default) in a subprocess, and ``--requests`` requests from ``--clients``
concurrent clients (keep-alive connections, driven by one asyncio loop) after a warm-up, mixed:

- 40% ``GET /recommend?user=ID`` for a random known user,
- 30% ``POST /recommend`` for a new user with 5-20 random ratings of movies with at least 20 ratings (by id),
- 30% ``GET /similar?movie=ID`` for a random such movie.

Each model's load runs twice: flat out (each client sends its next request when the last is answered: the most
the server answers per second, and the server's CPU time per request, which other work on the machine hardly
changes) and paced at ``--rate`` requests/s (latency at that load, queueing included). Reported: latency p50/p99
(overall and per kind, as the clients see it), throughput, errors (anything but 200; must be 0), the server's
resident memory after start, after the warm-up and after the load (must not grow). Targets (issue 12, 2-core
machine, factor models), read as latency at --rate 500 and throughput flat out: at ml-100k p50 < 5 ms and
p99 < 50 ms, at an ML-25M shape p99 < 100 ms; at least 500 requests/s; and every model at ml-100k at least
1,000 requests/s flat out. (Flat out, 50 clients always waiting
make the latency 50 / throughput by Little's law: 5 ms would need 10,000 requests/s.)

    python benchmarks/bench_serve.py --zip /path/to/ml-100k.zip            # als, mf, autoencoder at ml-100k
    python benchmarks/bench_serve.py --release ml-25m --zip synth-25m.zip  # an ML-25M-shaped release
    python benchmarks/bench_serve.py --models als --requests 2000 --out /tmp/bench

Exit status 1 when a target is missed or a request failed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
FACTOR_MODELS = ("als", "mf")
TRAIN = {"als": ["als"], "mf": ["mf"], "autoencoder": ["autoencoder"], "rbm": ["rbm"],
         "als-implicit": ["als", "--mode", "implicit"], "rbm-like": ["rbm", "--mode", "like"],
         "rbm-rating": ["rbm", "--mode", "rating"], "ae-user": ["autoencoder", "--mode", "user"],
         "ae-item": ["autoencoder", "--mode", "item"], "vae": ["autoencoder", "--mode", "vae"],
         "dae": ["autoencoder", "--mode", "dae"]}
EVERY_MODEL_RPS = 1000
"""Requests/s flat out that every model, not only the factor models, reaches at ml-100k."""
MIX = (("known", 0.4), ("new", 0.3), ("similar", 0.3))


def _movierec(args: list[str], env: dict[str, str]) -> str:
    done = subprocess.run([sys.executable, "-m", "movierec", *args], env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"`movierec {' '.join(args)}` failed: {done.stderr.strip()}")
    return done.stdout


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


class Load:
    """The request mix for one served model, drawn from a seeded generator."""

    def __init__(self, users: list[int], movies: list[int], seed: int):
        self.users, self.movies, self.rng = users, movies, random.Random(seed)

    def next(self) -> tuple[str, str, str, bytes | None]:
        r = self.rng.random()
        if r < MIX[0][1]:
            return "known", "GET", f"/recommend?user={self.rng.choice(self.users)}", None
        if r < MIX[0][1] + MIX[1][1]:
            picks = self.rng.sample(self.movies, self.rng.randint(5, 20))
            body = json.dumps([{"movie": m, "stars": self.rng.randint(1, 5)} for m in picks]).encode()
            return "new", "POST", "/recommend", body
        return "similar", "GET", f"/similar?movie={self.rng.choice(self.movies)}", None


def _hammer(
    port: int, load: Load, total: int, clients: int, rate: float | None = None
) -> tuple[list[tuple[str, float]], list[str], float]:
    """``total`` requests from ``clients`` keep-alive connections, each sending its next request when the last is
    answered or, with ``rate``, request i due at i / rate seconds (its latency counted from then, so a late answer
    also counts against the requests it delays). Returns (kind, seconds) of each answer, the errors and the wall
    time. One asyncio loop writes the requests and reads the answers: a lighter client than threads, as it
    shares the cores with the server."""
    return asyncio.run(_hammer_async(port, load, total, clients, rate))


async def _hammer_async(
    port: int, load: Load, total: int, clients: int, rate: float | None
) -> tuple[list[tuple[str, float]], list[str], float]:
    results: list[tuple[str, float]] = []
    errors: list[str] = []
    sent = [0]
    t0 = time.perf_counter() + 0.2

    async def client() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            while sent[0] < total:
                i, sent[0] = sent[0], sent[0] + 1
                kind, method, path, body = load.next()
                head = f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                if body is not None:
                    head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
                request = (head + "\r\n").encode() + (body or b"")
                if rate:
                    due = t0 + i / rate
                    await asyncio.sleep(max(0.0, due - time.perf_counter()))
                start = due if rate else time.perf_counter()
                writer.write(request)
                header = await reader.readuntil(b"\r\n\r\n")
                status = int(header.split(b" ", 2)[1])
                length = next(int(line.split(b":", 1)[1]) for line in header.split(b"\r\n")
                              if line.lower().startswith(b"content-length:"))
                payload = await reader.readexactly(length)
                seconds = time.perf_counter() - start
                if status != 200:
                    errors.append(f"{method} {path}: {status} {payload[:200]!r}")
                else:
                    results.append((kind, seconds))
        except (OSError, asyncio.IncompleteReadError, ValueError, StopIteration) as exc:
            errors.append(f"connection failed: {exc!r}")
        finally:
            writer.close()

    start = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(clients)))
    return results, errors, time.perf_counter() - start


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time the process ``pid`` and its worker processes (``--workers``) have used."""
    total = 0
    for each in [pid, *_children(pid)]:
        fields = Path(f"/proc/{each}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def _children(pid: int) -> list[int]:
    return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))] * 1000


def _latencies(results: list[tuple[str, float]], row: dict, prefix: str) -> None:
    for kind in ("all", *(k for k, _ in MIX)):
        mine = [sec for k, sec in results if kind in ("all", k)]
        if mine:
            row[f"{prefix}{'' if kind == 'all' else kind + '_'}p50_ms"] = round(_pct(mine, 50), 2)
            row[f"{prefix}{'' if kind == 'all' else kind + '_'}p99_ms"] = round(_pct(mine, 99), 2)


def bench_model(model: str, env: dict[str, str], requests: int, clients: int, rate: float, seed: int,
                trained: bool = False, workers: int = 1) -> dict:
    """``trained``: the home already holds a model of that name (``--home``), served as it is."""
    name = model if trained else f"bench-{model}"
    start = time.perf_counter()
    if not trained:
        _movierec(["train", *TRAIN[model], "--epochs", "1", "--device", "cpu", "--name", name, "--json"], env)
    train_seconds = time.perf_counter() - start
    code = ("from movierec.loading import open_model\n"
            f"s = open_model({name!r})\n"
            "import json; print(json.dumps([s.user_ids.tolist(), "
            "s.catalogue.item_ids[s.counts >= 20].tolist()]))")
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    users, movies = json.loads(done.stdout)
    server = subprocess.Popen([sys.executable, "-m", "movierec", "serve", "--model", name, "--port", "0",
                               "--workers", str(workers)],
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = server.stdout.readline()
        if not line.startswith("Serving "):
            raise SystemExit(f"movierec serve did not start: {line}{server.stderr.read()}")
        port = int(line.split(" at http://", 1)[1].split("/", 1)[0].rsplit(":", 1)[1])
        rss_start = _rss_mb(server.pid)
        load = Load(users, movies, seed)
        _, warm_errors, _ = _hammer(port, load, min(500, requests), clients)
        rss_warm = _rss_mb(server.pid)
        cpu = _cpu_seconds(server.pid)
        flat_out, errors, wall = _hammer(port, load, requests, clients)
        cpu = _cpu_seconds(server.pid) - cpu
        paced, paced_errors, paced_wall = _hammer(port, load, requests, clients, rate)
        rss_after = _rss_mb(server.pid)
    finally:
        server.terminate()
        server.communicate(timeout=60)
    failed = warm_errors + errors + paced_errors
    row = {
        "model": model, "requests": requests, "clients": clients, "rate": rate, "workers": workers,
        "train_seconds": round(train_seconds, 1),
        "errors": len(failed), "error_examples": failed[:3],
        "throughput": round(len(flat_out) / wall, 1), "paced_throughput": round(len(paced) / paced_wall, 1),
        "server_cpu_ms_per_request": round(cpu / max(1, len(flat_out)) * 1000, 3),
        "rss_start_mb": round(rss_start, 1), "rss_warm_mb": round(rss_warm, 1), "rss_after_mb": round(rss_after, 1),
    }
    _latencies(flat_out, row, "")
    _latencies(paced, row, "paced_")
    return row


def check(row: dict, release: str) -> list[str]:
    """The targets a row misses (factor models only; network models are reported, not held to them)."""
    missed = []
    if row["errors"]:
        missed.append(f"{row['model']}: {row['errors']} failed requests")
    if release == "ml-100k" and row["throughput"] < EVERY_MODEL_RPS:
        missed.append(f"{row['model']}: {row['throughput']} requests/s < {EVERY_MODEL_RPS}")
    if row["model"] not in FACTOR_MODELS:
        return missed
    p50, p99 = (5.0, 50.0) if release == "ml-100k" else (None, 100.0)
    if p50 is not None and row["paced_p50_ms"] >= p50:
        missed.append(f"{row['model']}: p50 {row['paced_p50_ms']} ms >= {p50} ms at {row['rate']:g} requests/s")
    if row["paced_p99_ms"] >= p99:
        missed.append(f"{row['model']}: p99 {row['paced_p99_ms']} ms >= {p99} ms at {row['rate']:g} requests/s")
    if row["throughput"] < 500:
        missed.append(f"{row['model']}: {row['throughput']} requests/s < 500")
    if row["rss_after_mb"] > row["rss_warm_mb"] * 1.05 + 5:
        missed.append(f"{row['model']}: memory grew from {row['rss_warm_mb']} to {row['rss_after_mb']} MB")
    return missed


def _workers(n: int) -> str:
    return "One uvicorn worker" if n == 1 else f"{n} worker processes (`--workers {n}`)"


def markdown(rows: list[dict], release: str, load_before: tuple[float, ...], load_after: tuple[float, ...]) -> str:
    r0 = rows[0]
    lines = [
        f"# `movierec serve` under load: {release}",
        "",
        f"Per model, {r0['requests']:,} requests from {r0['clients']} concurrent keep-alive clients on loopback "
        "(40% known users, 30% new users with 5-20 ratings, 30% similar movies), after a 500-request warm-up, "
        "twice: **flat out** (each client sends its next request when the last is answered: the most the server "
        f"answers per second) and **paced** at {r0['rate']:g} requests/s (request i due at i/{r0['rate']:g} s, its "
        f"latency counted from then). {_workers(r0['workers'])}; latency as the clients see it; server CPU = its "
        "user + system time per request flat out (every worker's); memory = the server's RSS after start, after "
        "the warm-up and after both runs (the first worker's). The clients (one asyncio loop) run on the same "
        "cores.",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}; load average "
        f"before {', '.join(f'{x:.2f}' for x in load_before)}, after {', '.join(f'{x:.2f}' for x in load_after)}.",
        "",
        f"| model | flat out: req/s | p50 / p99 ms | server CPU ms/req | paced {r0['rate']:g}/s: p50 / p99 ms "
        "| known | new user | similar | errors | RSS MB |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        per = [f"{r.get(f'paced_{k}_p50_ms', '-')} / {r.get(f'paced_{k}_p99_ms', '-')}" for k, _ in MIX]
        lines.append(f"| {r['model']} | {r['throughput']:.0f} | {r['p50_ms']} / {r['p99_ms']} "
                     f"| {r['server_cpu_ms_per_request']} "
                     f"| {r['paced_p50_ms']} / {r['paced_p99_ms']} | {' | '.join(per)} | {r['errors']} "
                     f"| {r['rss_start_mb']} / {r['rss_warm_mb']} / {r['rss_after_mb']} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--zip", type=Path, help="The release's archive (default: ../shared/data/ml-100k.zip).")
    parser.add_argument("--release", default="ml-100k", help="Which release the archive is (default ml-100k).")
    parser.add_argument("--models", default="als,mf,autoencoder", help="Comma-separated (default als,mf,autoencoder).")
    parser.add_argument("--requests", type=int, default=10_000)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--rate", type=float, default=500.0, help="Requests/s of the paced run (default 500).")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=1, help="`movierec serve --workers` (default 1).")
    parser.add_argument("--out", type=Path, help="Write serve[-RELEASE].md and .json here.")
    parser.add_argument("--home", type=Path, help="A movierec home that holds the release and a model named as each "
                        "of --models: serve those (no fetch, no training).")
    args = parser.parse_args()
    archive = args.zip or REPO.parent / "shared" / "data" / "ml-100k.zip"
    if not archive.is_file():
        raise SystemExit(f"No archive at {archive}; pass --zip.")
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="bench-serve-") as fresh:
        home = str(args.home) if args.home else fresh
        env = {**os.environ, "MOVIEREC_HOME": home, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"),
               "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
        if not args.home:
            _movierec(["fetch", args.release, "--from-file", str(archive), "--no-verify"], env)
        rows = []
        for model in args.models.split(","):
            row = bench_model(model, env, args.requests, args.clients, args.rate, args.seed, trained=bool(args.home),
                              workers=args.workers)
            print(json.dumps(row), flush=True)
            rows.append(row)
    load_after = os.getloadavg()
    report = markdown(rows, args.release, load_before, load_after)
    print(report)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        stem = "serve" if args.release == "ml-100k" else f"serve-{args.release}"
        (args.out / f"{stem}.md").write_text(report)
        (args.out / f"{stem}.json").write_text(json.dumps({"release": args.release, "load_before": load_before,
                                                           "load_after": load_after, "rows": rows}, indent=1) + "\n")
    missed = [m for r in rows for m in check(r, args.release)]
    for m in missed:
        print(f"missed: {m}", file=sys.stderr)
    sys.exit(1 if missed else 0)


if __name__ == "__main__":
    main()
