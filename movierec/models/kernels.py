"""Whether training may use the compiled CPU loops of :mod:`movierec.models._numba_kernels` (the ``fast`` extra).

ALS's conjugate-gradient half-step and mf's SGD epoch are memory-bound loops that torch runs as many small
operations; compiled with numba they are about twice as fast on the CPU and give the same numbers (to float32
rounding). They are opt-in for now: used with ``MOVIEREC_KERNELS=1`` when the ratings are on the CPU and numba
can be imported; otherwise, and always on CUDA, the torch path runs. They stay off by default until they keep
training's promise to stop within 2 s of Ctrl-C (numba's first compile, several seconds, cannot be interrupted,
and an mf epoch of up to a million ratings runs as one call without progress) and their speed is measured
against the peers. numba is imported on first use only, never by ``import movierec`` or ``movierec --help``.
"""

from __future__ import annotations

import os
from types import ModuleType

import torch

_loaded: ModuleType | None = None
_missing = False


def load(device: torch.device) -> ModuleType | None:
    """The compiled loops for work on ``device``, or None where the torch path runs: off the CPU, without
    numba, or unless ``MOVIEREC_KERNELS=1``."""
    global _loaded, _missing
    if device.type != "cpu" or os.environ.get("MOVIEREC_KERNELS", "0").strip() != "1" or _missing:
        return None
    if _loaded is None:
        try:
            from movierec.models import _numba_kernels
        except ImportError:
            _missing = True
            return None
        _loaded = _numba_kernels
    # numba's threads follow torch's setting (the one --threads and OMP_NUM_THREADS set).
    import numba

    numba.set_num_threads(max(1, min(torch.get_num_threads(), numba.config.NUMBA_NUM_THREADS)))  # type: ignore[attr-defined]
    return _loaded
