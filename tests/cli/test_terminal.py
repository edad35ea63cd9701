"""What a person sees in a real terminal (a tmux pane of 80x24 and 120x30) while fetch, train and evaluate run.

Live progress is drawn only on a terminal, so only a terminal shows what it leaves behind: here every frame of
the pane is read while the commands run, and the whole scrollback at the end.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from conftest import REPO, require_ml100k

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("tmux") is None,
                       reason="tmux is not installed; these tests read what a real terminal shows (apt install tmux)"),
]

SPINNER = set("⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏")
LONG_NAME = "a-rather-long-name-for-an-als-model-trained-here"
DONE = "ALL-DONE"


def _tmux(socket: str, *args: str, check: bool = True) -> str:
    proc = subprocess.run(["tmux", "-L", socket, "-f", "/dev/null", *args], capture_output=True, text=True,
                          check=check, timeout=30)
    return proc.stdout


def _run_in_pane(width: int, height: int, home: Path, commands: list[list[str]]) -> tuple[str, list[str]]:
    """Run ``commands`` (movierec's arguments) one after the other in a fresh ``width`` x ``height`` pane;
    returns the whole scrollback at the end and every distinct frame seen meanwhile."""
    socket = f"movierec-test-{uuid.uuid4().hex[:8]}"
    movierec = f"{shlex.quote(sys.executable)} -m movierec"
    script = " && ".join(f"{movierec} {shlex.join(args)}" for args in commands)
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES", "TMUX")}
    env.update(MOVIEREC_HOME=str(home), PYTHONPATH=str(REPO), OMP_NUM_THREADS="1", TERM="xterm-256color")
    frames: list[str] = []
    _tmux(socket, "new-session", "-d", "-x", str(width), "-y", str(height), "-c", str(REPO),
          *(a for k, v in env.items() if k.isidentifier() for a in ("-e", f"{k}={v}")),
          f"{script}; echo {DONE} $?; sleep 300")
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            frame = _tmux(socket, "capture-pane", "-p")
            if not frames or frame != frames[-1]:
                frames.append(frame)
            if DONE in frame:
                break
            time.sleep(0.1)
        else:
            pytest.fail("the commands did not finish within 300 s:\n" + frames[-1])
        return _tmux(socket, "capture-pane", "-p", "-S", "-", "-E", "-"), frames
    finally:
        _tmux(socket, "kill-server", check=False)


@pytest.mark.parametrize(("width", "height"), [(80, 24), (120, 30)])
def test_progress_leaves_a_clean_screen(tmp_path, width, height):
    archive = require_ml100k()
    screen, frames = _run_in_pane(width, height, tmp_path / "home", [
        ["fetch", "ml-100k", "--from-file", str(archive), "--no-verify"],
        ["train", "als", "--epochs", "3", "--valid-fraction", "0.05", "--factors", "8", "--name", LONG_NAME],
        ["evaluate"],  # its steps name the model: a description too long for 80 columns with the bar
    ])
    lines = [line.rstrip() for line in screen.splitlines()]
    assert f"{DONE} 0" in lines, screen

    # While running: one live line at a time, the last on the screen (a wrapped display would leave a piece
    # below it), never an empty "0/?" count.
    for frame in frames:
        shown = [line.rstrip() for line in frame.splitlines() if line.strip()]
        live = [line for line in shown if line[:1] in SPINNER]
        assert len(live) <= 1, frame
        assert not live or shown[-1] == live[0], frame
        assert "0/?" not in frame, frame

    # At the end: no spinner, no bar or count of a step left behind, nothing glued to a header.
    assert not SPINNER & set(screen), screen
    assert not [line for line in lines if re.search(r"(?<![\w/])0/\d+\b", line)], screen
    assert any(line.startswith("Fetched ml-100k") for line in lines), screen
    assert [line for line in lines if line.startswith("Training als on ml-100k")], screen
    # The training curve: one line per epoch, folded (if at all) between whole metrics onto indented lines.
    epochs = []
    for i, line in enumerate(lines):
        if line.startswith("epoch "):
            more = []
            while lines[i + 1 + len(more)].startswith(" " * 13) and lines[i + 1 + len(more)].strip():
                more.append(lines[i + 1 + len(more)].strip())
            epochs.append((line, more))
    assert len(epochs) == 3, screen
    for line, more in epochs:
        whole = "  ".join([line, *more])
        assert re.fullmatch(r"epoch   \d/3  train: loss \d\.\d{4}  rmse \d\.\d{4}  \|  valid: rmse \d\.\d{4}  "
                            r"mae \d\.\d{4}  \(\d+\.\d\ds\)( \*)?", whole), whole
        assert all(len(part) <= width for part in [line, *more])
        assert bool(more) == (len(whole) > width), whole  # folded only when it does not fit
    # A finished step leaves one line ("Loading ml-100k: 1.2 s"), never a second, stale copy of it.
    finished = [i for i, line in enumerate(lines) if re.fullmatch(r"[A-Z][^:]*: \d+\.\d s", line)]
    assert not [i for i in finished if lines[i] == lines[i - 1]], screen
