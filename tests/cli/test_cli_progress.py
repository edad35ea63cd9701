"""The live display of long steps: what it leaves behind on stdout and stderr (no terminal here, so no bar)."""

from __future__ import annotations

import pytest

from movierec.cli import progress


@pytest.fixture(autouse=True)
def every_step_counts(monkeypatch):
    monkeypatch.setattr(progress, "SHOW_DONE_AFTER", 0.0)  # no test waits for a step to be "long"


def test_finished_steps_leave_one_line_each_and_the_command_lines_go_to_stdout(capsys):
    with progress.Steps(unlined=("Epoch ",)) as steps:
        steps.step("Loading ml-1m")
        steps.step("Epoch 1/2")
        steps.progress(1, 2)
        steps.progress(2, 2)
        steps.line("epoch   1/2  train: loss 1.0")
        steps.step("Saving")
    out, err = capsys.readouterr()
    lines = out.splitlines()
    assert [line.split(":")[0] for line in lines] == ["Loading ml-1m", "epoch   1/2  train", "Saving"]
    assert lines[0].endswith(" s") and lines[2].endswith(" s")
    assert err == ""  # the transient display is drawn only on a terminal


def test_quiet_steps_and_a_failed_step_leave_nothing(capsys):
    with progress.Steps(quiet=True) as steps:
        steps.step("Loading ml-1m")
    assert capsys.readouterr().out == ""
    with pytest.raises(RuntimeError), progress.Steps() as steps:
        steps.step("Evaluating")
        raise RuntimeError("boom")
    assert capsys.readouterr().out == ""  # the error's one line is all the user should see


def test_a_record_stays_one_line_in_a_file_however_long(capsys):
    groups = [["epoch   1/2", *(f"train: metric{i} 0.1234" for i in range(20))], ["|  valid: rmse 0.9000"], ["(0.05s)"]]
    with progress.Steps() as steps:
        steps.record(groups, indent=13)
    out = capsys.readouterr().out
    assert out == "  ".join(item for group in groups for item in group) + "\n"


def test_fold_breaks_between_groups_then_items_never_inside_one():
    groups = [["epoch   1/3", "train: loss 0.8263", "accuracy 0.4054", "rmse 1.0277"],
              ["|  valid: rmse 1.0279", "mae 0.8256"], ["(0.72s) *"]]
    assert progress.fold(groups, 200, 13) == ("epoch   1/3  train: loss 0.8263  accuracy 0.4054  rmse 1.0277  "
                                              "|  valid: rmse 1.0279  mae 0.8256  (0.72s) *")
    assert progress.fold(groups, 80, 13).splitlines() == [
        "epoch   1/3  train: loss 0.8263  accuracy 0.4054  rmse 1.0277",
        "             |  valid: rmse 1.0279  mae 0.8256  (0.72s) *",
    ]
    narrow = progress.fold(groups, 40, 13).splitlines()
    assert all(len(line) <= 40 for line in narrow)
    assert [line.strip() for line in narrow] == ["epoch   1/3  train: loss 0.8263", "accuracy 0.4054", "rmse 1.0277",
                                                 "|  valid: rmse 1.0279", "mae 0.8256  (0.72s) *"]
