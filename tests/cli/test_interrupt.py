"""Ctrl-C (and SIGTERM) stop a real `movierec train` mid-epoch within 2 s: one line, no checkpoint, no temp file.

The data stays small (ml-100k); the settings make each epoch take several seconds, so the signal lands inside an
epoch's batches, where a long uninterruptible operation would keep the user waiting.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import REPO, isolated_home, require_ml100k

# Settings under which one epoch on ml-100k takes several seconds on a CPU, and the environment they run in.
IMPLICIT_SLOW = ["als", "--mode", "implicit", "--cg-steps", "1000", "--factors", "256", "--epochs", "50"]
SLOW = {
    # The torch path (used on CUDA and with Adam): one step per batch of 2 ratings. The compiled loop (the fast
    # extra) runs such an epoch in a fraction of a second, through the same kernels.run as ALS's below.
    "mf": (["mf", "--batch-size", "2", "--epochs", "50"], {"MOVIEREC_KERNELS": "0"}),
    # The default solver, made slow by many conjugate-gradient steps: in the compiled loop each call then takes
    # seconds (an epoch 10-20 s on 2 cores) ...
    "als-implicit": (IMPLICIT_SLOW, {}),
    # ... and on torch alone.
    "als-implicit-torch": (IMPLICIT_SLOW, {"MOVIEREC_KERNELS": "0"}),
    # The first training after installing: numba compiles the loop for several seconds (an empty cache).
    "als-implicit-compiling": (IMPLICIT_SLOW, {"NUMBA_CACHE_DIR": "{tmp}"}),
}


@pytest.fixture(scope="module")
def fetched_home(tmp_path_factory) -> Path:
    archive = require_ml100k()
    home = tmp_path_factory.mktemp("interrupt") / "home"
    with isolated_home(home):
        from movierec.data import download

        download.fetch("ml-100k", from_file=archive, verify=False)
    return home


def _start_training(home: Path, args: list[str], extra: dict[str, str]) -> subprocess.Popen:
    env = {**os.environ, "MOVIEREC_HOME": str(home), "COLUMNS": "120", "PYTHONPATH": str(REPO), **extra}
    env.pop("MOVIEREC_DEVICE", None)
    # A shell without job control starts background jobs ignoring SIGINT, and the child would inherit that: the
    # test is about movierec, so it starts with the signal's default, as from a terminal.
    return subprocess.Popen([sys.executable, "-m", "movierec", "train", *args, "--device", "cpu", "--name", "stopped"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=REPO,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


@pytest.mark.parametrize("model", list(SLOW))
@pytest.mark.parametrize(("sig", "code", "message"),
                         [(signal.SIGINT, 130, "Error: Interrupted."), (signal.SIGTERM, 143, "Error: Terminated.")])
def test_a_signal_mid_epoch_stops_training_within_two_seconds(fetched_home, tmp_path, model, sig, code, message):
    args, extra = SLOW[model]
    proc = _start_training(fetched_home, args, {k: v.format(tmp=tmp_path) for k, v in extra.items()})
    try:
        seen = ""
        while not seen.startswith("Training "):  # printed once the data is loaded, just before training starts
            seen = proc.stdout.readline()
            assert seen, proc.stderr.read()
        time.sleep(2.0)  # well inside the first epoch
        assert proc.poll() is None, "training ended before it could be interrupted"
        sent = time.monotonic()
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=30)
        waited = time.monotonic() - sent
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == code, err
    assert waited < 2.0, f"took {waited:.1f} s to stop"
    assert "epoch   1/" not in out  # it really was stopped mid-epoch
    assert err.strip().splitlines() == [message], err
    models = fetched_home / "models"
    left = sorted(p.name for p in models.iterdir()) if models.exists() else []
    assert not [name for name in left if not name.startswith(".")] and not any("tmp" in n for n in left), left
