"""Whether training uses the compiled CPU loops of :mod:`movierec.models._numba_kernels` (the ``fast`` extra),
and how it calls them.

ALS's conjugate-gradient half-step and mf's SGD epoch are memory-bound loops that torch runs as many small
operations; compiled with numba they run several times faster on the CPU and give the same numbers (to float32
rounding). They are used whenever the ratings are on the CPU and numba can be imported, unless
``MOVIEREC_KERNELS=0``; otherwise, and always on CUDA, the torch path runs. Every call goes through :func:`run`,
so Ctrl-C stops training at once even while numba compiles (several seconds, the first time only: compiled code
is cached on disk). numba is imported on first use only, never by ``import movierec`` or ``movierec --help``.
"""

from __future__ import annotations

import os
import queue
import threading
from collections.abc import Callable
from types import ModuleType
from typing import Any

import torch

_loaded: ModuleType | None = None
_missing = False
# numba's threads for the calls of run(): the setting is per calling thread, and run() calls from a new one.
_threads = 1


def load(device: torch.device) -> ModuleType | None:
    """The compiled loops for work on ``device``, or None where the torch path runs: off the CPU, without
    numba, or with ``MOVIEREC_KERNELS=0``. numba's threads follow torch's setting (the one ``--threads`` and
    ``OMP_NUM_THREADS`` set)."""
    global _loaded, _missing, _threads
    if device.type != "cpu" or os.environ.get("MOVIEREC_KERNELS", "1").strip() == "0" or _missing:
        return None
    threads = torch.get_num_threads()
    if _loaded is None:
        try:
            from movierec.models import _numba_kernels
        except ImportError:
            _missing = True
            return None
        _loaded = _numba_kernels
    import numba

    _threads = max(1, min(threads, numba.config.NUMBA_NUM_THREADS))  # type: ignore[attr-defined]
    numba.set_num_threads(_threads)
    # Starting numba's OpenMP threads sets the process's OpenMP thread count to all the cores, and torch reads
    # its own from there: put torch's back.
    torch.set_num_threads(threads)
    return _loaded


# How often the waiting thread looks up: Ctrl-C and SIGTERM are handled within this long.
_POLL_S = 0.05
_jobs: queue.SimpleQueue[tuple[Callable[..., Any], tuple[Any, ...], list[Any], threading.Event]] = queue.SimpleQueue()
_worker: threading.Thread | None = None
_worker_lock = threading.Lock()


def _serve() -> None:
    """The worker thread: one call at a time, in the order asked. One long-lived thread, so numba's OpenMP
    threads, which belong to the thread that starts them, are started once."""
    while True:
        loop, args, outcome, done = _jobs.get()
        try:
            if _loaded is not None:
                import numba

                numba.set_num_threads(_threads)
            outcome.append((True, loop(*args)))
        except BaseException as exc:  # handed to the waiting thread, raised there
            outcome.append((False, exc))
        finally:
            done.set()


def run(loop: Callable[..., Any], *args: Any) -> Any:
    """``loop(*args)`` in a worker thread, with this thread waiting in short naps, so that Ctrl-C and SIGTERM
    still stop training at once: Python handles a signal only between bytecodes of the main thread, and a
    compiled call (above all the first, which compiles for several seconds unless numba's cache has it) is one
    long bytecode. The loops release the GIL (``nogil``).

    On a signal the worker is left to finish its call on its own (a daemon thread: it does not keep the
    process alive), and a later call waits for it; the arrays it writes belong to the training that the signal
    stopped, which saves nothing.
    """
    global _worker
    with _worker_lock:
        if _worker is None or not _worker.is_alive():
            _worker = threading.Thread(target=_serve, name="movierec-compiled-loops", daemon=True)
            _worker.start()
    outcome: list[Any] = []
    done = threading.Event()
    _jobs.put((loop, args, outcome, done))
    while not done.wait(_POLL_S):
        pass
    ok, value = outcome[0]
    if not ok:
        raise value
    return value
