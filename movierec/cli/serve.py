"""`movierec serve`: recommendations over HTTP, and a page to try them, until stopped."""

from __future__ import annotations

import contextlib
import errno
import gc
import os
import signal
import socket
import threading
import time
from collections.abc import Callable
from typing import Annotated, Any

import typer

from movierec.device import DEFAULT_DEVICE, DEVICE_HELP
from movierec.errors import MovierecError

MAX_WORKERS = 64
"""Most worker processes ``--workers`` starts."""
ORPHAN_CHECK_S = 0.5
"""How often a forked worker checks that the process it was forked from still runs."""
WORKER_STOP_S = 10.0
"""How long the server waits for its workers' graceful stop (uvicorn allows 5 s) before killing them."""


def serve_command(
    model: Annotated[
        str | None, typer.Option("--model", help="Saved model to serve (name or path) (default: the default model).")
    ] = None,
    host: Annotated[
        str, typer.Option(help="Address to listen on; 0.0.0.0 opens the server to other machines.")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535, help="Port to listen on (0: any free port).")] = 8000,
    device: Annotated[
        str, typer.Option(help=DEVICE_HELP + " Neural models only: the others answer in numpy.")
    ] = DEFAULT_DEVICE,
    workers: Annotated[int, typer.Option(min=1, max=MAX_WORKERS, help=(
        "Processes answering at once, one per core to spare (the model is loaded once and shared). Above 1: "
        "Linux and macOS, on the CPU."))] = 1,
) -> None:
    """Answer recommendations over HTTP (a JSON API, described at /docs) and show a page to try them at /."""
    import importlib.util

    missing = [m for m in ("fastapi", "uvicorn") if importlib.util.find_spec(m) is None]
    if missing:
        raise MovierecError(
            'movierec serve needs fastapi and uvicorn; install them with pip install "movierec[serve]".'
        )
    if workers > 1:
        if not hasattr(os, "fork"):
            raise MovierecError("--workers above 1 needs a system that can fork processes (Linux, macOS); "
                                "serve with one worker here.")
        if device.startswith("cuda"):
            raise MovierecError("--workers above 1 answers on the CPU; serve on a GPU with one worker.")
        device = "cpu"
    sock = _listen(host, port)
    try:
        _serve(sock, model, device, workers)
    finally:
        sock.close()


def _serve(sock: socket.socket, model: str | None, device: str, workers: int = 1) -> None:
    import uvicorn

    from movierec.cli.console import clean, console, err_console
    from movierec.server import ReloadCounter, create_app

    web = create_app(model, device=device, reloads=ReloadCounter() if workers > 1 else None)
    holder = web.state.holder
    # What start-up built (the model, the catalogue, the web framework) lives until the end: out of the garbage
    # collector's sight, its collections under load stop scanning it (10,000 requests on ml-100k: 26 ms of
    # collecting in all instead of 89, the longest pause 1.6 ms instead of 8).
    gc.collect()
    gc.freeze()
    try:
        address, port = sock.getsockname()[:2]
        shown = f"[{address}]" if ":" in address else address
        meta = holder.name
        where = " (every address of this machine)" if address in ("0.0.0.0", "::") else ""
        by = f" by {workers} worker processes" if workers > 1 else ""
        # The model is loaded once, in this process; other workers are forked from it and share its memory. No
        # access log: it would cost more than an answer.
        config = uvicorn.Config(web, log_level="warning", access_log=False, lifespan="off",
                                timeout_graceful_shutdown=5, server_header=False)

        def run() -> None:
            # Ctrl-C or SIGTERM comes back as KeyboardInterrupt after uvicorn's graceful shutdown: a normal stop.
            with contextlib.suppress(KeyboardInterrupt):
                uvicorn.Server(config).run(sockets=[sock])

        children = [_fork_worker(run, holder) for _ in range(workers - 1)]
        try:
            console.print(clean(f"Serving {meta} at http://{shown}:{port}/{where}{by}; the API is described at "
                                "/docs. Ctrl-C stops."), markup=False, soft_wrap=True)
            console.file.flush()
            run()
        finally:
            _stop_workers(children)
        err_console.print("Stopped.", markup=False, highlight=False)
    finally:
        holder.close()


def _fork_worker(run: Callable[[], None], holder: Any) -> int:
    """A worker process answering on the same socket (the kernel hands each connection to one of them); it
    stops with the server: on its signals, and within a second of the first process ending however it ended."""
    parent = os.getpid()
    pid = os.fork()
    if pid:
        return pid
    code = 0
    try:
        def orphaned() -> None:
            while os.getppid() == parent:
                time.sleep(ORPHAN_CHECK_S)
            os.kill(os.getpid(), signal.SIGTERM)

        threading.Thread(target=orphaned, name="movierec-parent-watch", daemon=True).start()
        run()
        holder.close()
    except BaseException:  # noqa: BLE001 -- a worker ends here, never in the code that forked it
        code = 1
    finally:
        os._exit(code)


def _stop_workers(children: list[int]) -> None:
    """Stop the forked workers (gracefully, as the first process stopped), wait for them, and kill any still
    running after :data:`WORKER_STOP_S`."""
    for pid in children:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    running, deadline = set(children), time.monotonic() + WORKER_STOP_S
    while running and time.monotonic() < deadline:
        for pid in list(running):
            try:
                ended = os.waitpid(pid, os.WNOHANG)[0] == pid
            except ChildProcessError:  # already waited for
                ended = True
            if ended:
                running.discard(pid)
        if running:
            time.sleep(0.05)
    for pid in running:
        with contextlib.suppress(ProcessLookupError, ChildProcessError):
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)


def _listen(host: str, port: int) -> socket.socket:
    """A socket listening on ``host``:``port``, or one sentence saying why not."""
    where = f"{host}:{port}" if ":" not in host else f"[{host}]:{port}"
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                                             flags=socket.AI_PASSIVE)[0]
    except (socket.gaierror, UnicodeError):
        raise MovierecError(f"Cannot listen on {host!r}: it is not an address or a known host name.") from None
    sock = socket.socket(family, kind, proto)
    try:
        if hasattr(socket, "SO_REUSEADDR"):  # a restart can take the port while the last run's connections close
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise MovierecError(f"Port {port} on {host} is in use; stop what uses it or choose another with --port.") \
                from None
        if exc.errno == errno.EACCES:
            raise MovierecError(f"Cannot listen on {where}: permission denied (ports below 1024 need privileges); "
                                "choose another with --port.") from None
        if exc.errno == errno.EADDRNOTAVAIL:
            raise MovierecError(f"Cannot listen on {host}: it is not an address of this machine.") from None
        raise MovierecError(f"Cannot listen on {where}: {exc.strerror or exc}.") from None
    sock.set_inheritable(True)
    return sock
