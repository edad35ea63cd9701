"""Saved models that cannot hurt the user, end to end: `models --remove`, damaged and hostile checkpoints met by
every command, read-only homes, over-long names, killed and concurrent writers. Real processes where a kill
or a race is the point; the real MovieLens-100K with one tiny model."""

from __future__ import annotations

import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from conftest import assert_one_line_error, isolated_home

from movierec import checkpoint, loading
from movierec.cli import app

TINY = ["mf", "--epochs", "1", "--factors", "4", "--device", "cpu"]


@pytest.fixture(scope="module")
def shared(trained_home) -> Path:
    """A home with ml-100k fetched and one tiny mf model, ``tiny``, to copy from."""
    with isolated_home(trained_home(["train", *TINY, "--name", "tiny", "--json"])) as h:
        yield h


@pytest.fixture
def home(shared, tmp_path) -> Path:
    """A fresh home for one test: the shared dataset (read-only to these tests) and a copy of ``tiny``."""
    with isolated_home(tmp_path / "home") as h:
        (h / "models").mkdir(parents=True)
        (h / "datasets").symlink_to(shared / "datasets", target_is_directory=True)
        shutil.copy2(shared / "models" / "tiny.pt", h / "models" / "tiny.pt")
        yield h


def env(home: Path) -> dict[str, str]:
    return {**os.environ, "MOVIEREC_HOME": str(home), "OMP_NUM_THREADS": "1", "COLUMNS": "200",
            "PYTHONUNBUFFERED": "1"}


def movierec(home: Path, *args: str, read_only: Path | None = None) -> subprocess.CompletedProcess:
    """Run the real `movierec` in a new process; with ``read_only``, that folder cannot be written meanwhile."""
    command = [sys.executable, "-m", "movierec", *args]
    if read_only is None:
        return subprocess.run(command, capture_output=True, text=True, env=env(home), timeout=300)
    if os.geteuid() != 0:
        modes = {p: p.stat().st_mode for p in [read_only, *read_only.rglob("*")] if p.is_dir()}
        for p in modes:
            p.chmod(0o555)
        try:
            return subprocess.run(command, capture_output=True, text=True, env=env(home), timeout=300)
        finally:
            for p, mode in modes.items():
                p.chmod(mode)
    # File modes do not stop root: make the folder a read-only mount, seen only by this one process.
    script = 'mount --bind "$1" "$1" && mount -o remount,bind,ro "$1" "$1" && shift && exec "$@"'
    if subprocess.run(["unshare", "-m", "sh", "-c", script, "sh", str(read_only), "true"], capture_output=True,
                      timeout=60).returncode != 0:
        pytest.skip("cannot make a read-only folder here (root without mount namespaces)")
    return subprocess.run(["unshare", "-m", "sh", "-c", script, "sh", str(read_only), *command],
                          capture_output=True, text=True, env=env(home), timeout=300)


def one_error_line(proc: subprocess.CompletedProcess, *fragments: str) -> str:
    assert proc.returncode == 1, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stdout + proc.stderr and "Warning" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), proc.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every non-hidden file in ``folder`` and its bytes: what the user has there."""
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file() and not p.name.startswith(".")}


def rewrite(source: Path, target: Path, change) -> Path:
    """A copy of checkpoint ``source`` at ``target``, its payload changed by ``change(payload, meta_dict)``.

    The payload is the file's header metadata (``format``, ``format_version``, ...) with ``state`` (name ->
    tensor), ``user_ids`` and ``item_ids`` as tensors; the serving arrays are copied unchanged."""
    with checkpoint.open_file(source) as saved:
        payload: dict = dict(saved.metadata)
        arrays = {k: saved.get(k) for k in saved.names()}
    payload["state"] = {k.removeprefix("state."): torch.from_numpy(v) for k, v in arrays.items()
                        if k.startswith("state.")}
    payload["user_ids"] = torch.from_numpy(arrays["user_ids"])
    payload["item_ids"] = torch.from_numpy(arrays["item_ids"])
    meta = json.loads(payload["meta"])
    change(payload, meta)
    payload["meta"] = json.dumps(meta)
    out = {k: v for k, v in arrays.items() if not k.startswith("state.")}
    out.update({f"state.{k}": v.numpy() for k, v in payload.pop("state").items()})
    out.update(user_ids=payload.pop("user_ids").numpy(), item_ids=payload.pop("item_ids").numpy())
    checkpoint.write_file(target, payload, out)
    return target


# -- models --remove ------------------------------------------------------------------------------------
@pytest.mark.parametrize("how", ["absolute", "relative", "dir-relative", "into-models", "suffix"])
def test_remove_never_deletes_a_path(home, tmp_path, monkeypatch, runner, how):
    precious = tmp_path / "dir" / "precious.pt"
    precious.parent.mkdir()
    precious.write_bytes((home / "models" / "tiny.pt").read_bytes())
    monkeypatch.chdir(tmp_path)
    target = {"absolute": str(precious), "relative": "precious.pt", "dir-relative": "dir/precious.pt",
              "into-models": "home/models/tiny.pt", "suffix": "tiny.pt"}[how]
    if how == "relative":
        monkeypatch.chdir(precious.parent)
    before = snapshot(home / "models")
    assert_one_line_error(runner.invoke(app, ["models", "--remove", target]), "Invalid model name", "no path")
    assert precious.exists() and snapshot(home / "models") == before


def test_remove_by_name(home, runner):
    shutil.copy2(home / "models" / "tiny.pt", home / "models" / "other.pt")
    result = runner.invoke(app, ["models", "--remove", "other"])
    assert result.exit_code == 0, result.stderr
    assert "Removed other" in result.stdout
    assert list(snapshot(home / "models")) == ["tiny.pt"]
    assert_one_line_error(runner.invoke(app, ["models", "--remove", "other"]), "No saved model named 'other'",
                          "Saved models: tiny.")


# -- damaged checkpoints among good ones ----------------------------------------------------------------
def test_listing_skips_damaged_files_and_says_how_many(home):
    models = home / "models"
    rewrite(models / "tiny.pt", models / "created-number.pt", lambda p, m: m.update(created=5, name="created-number"))
    rewrite(models / "tiny.pt", models / "text-version.pt", lambda p, m: p.update(format_version="two"))
    (models / "raw.pt").write_bytes(pickle.dumps({"format": checkpoint.FORMAT}, protocol=4))
    before = snapshot(models)

    listed = movierec(home, "models")
    assert listed.returncode == 0, listed.stderr
    assert "tiny" in listed.stdout and "created-number" not in listed.stdout
    assert listed.stderr.strip().splitlines() == [
        "Warning: Skipped 3 damaged or unreadable files in the models folder (created-number.pt, raw.pt, "
        "text-version.pt); `movierec models --remove NAME` deletes one."
    ]
    as_json = movierec(home, "models", "--json")
    assert as_json.returncode == 0 and [r["name"] for r in json.loads(as_json.stdout)] == ["tiny"]

    # The commands that pick the newest model pick the newest readable one, naming it and nothing else.
    recommended = movierec(home, "recommend", "--user", "1", "--top", "3", "--json")
    # (The one line a tiny model may earn is the note that its lists rank below the most popular movies'.)
    quiet = [line for line in recommended.stderr.splitlines() if not line.startswith("Note: tiny's lists ranked")]
    assert recommended.returncode == 0 and quiet == ["Answered by the default model, tiny."], recommended.stderr
    assert len(json.loads(recommended.stdout)) == 3
    chosen = movierec(home, "recommend", "--user", "1", "--model", "text-version")
    one_error_line(chosen, "text-version.pt is damaged (its format version is \"two\", not a whole number)")
    assert snapshot(models) == before


def shrink_users(payload: dict, meta: dict, keep: int = 900) -> None:
    """A checkpoint of the first ``keep`` users only, consistent in itself."""
    n = meta["n_users"]
    payload["state"] = {k: v[:keep] if v.dim() and v.shape[0] == n else v for k, v in payload["state"].items()}
    payload["user_ids"] = payload["user_ids"][:keep]
    meta["n_users"] = keep


def shift_user_ids(payload: dict, meta: dict) -> None:
    payload["user_ids"] = payload["user_ids"] + 10_000


def poison(payload: dict, meta: dict) -> None:
    payload["state"] = {k: torch.full_like(v, float("nan")) if v.is_floating_point() else v
                        for k, v in payload["state"].items()}


COMMANDS = {
    "recommend": ["recommend", "--user", "1"],
    "similar": ["similar", "Star Wars"],
    "clusters": ["clusters", "--clusters", "3"],
    "evaluate": ["evaluate"],
}
# What each command says. `evaluate` reads the dataset, so a checkpoint must fit it; `recommend`, `similar` and
# `clusters` answer from the checkpoint alone, so it must fit itself (its users' saved ratings here), and a
# consistent checkpoint with other ids answers in its own ids.
FAULTS = {
    "fewer-users": (shrink_users, {
        "evaluate": "is damaged (it has 900 users and 1,682 movies, ml-100k has 943 and 1,682); retrain it.",
        None: "is damaged (its 'seen.indptr' has the wrong shape).",
    }),
    "other-ids": (shift_user_ids, {
        "evaluate": "is damaged (its user ids are not those of ml-100k); retrain it.",
        "recommend": None,  # user 1 is not among its users: said below
        None: "",
    }),
    "nan-weights": (poison, {
        "evaluate": "holds non-finite weights (in user_factors); retrain it.",
        None: "holds non-finite weights (in ",
    }),
}


@pytest.mark.parametrize("fault", FAULTS)
@pytest.mark.parametrize("command", COMMANDS)
def test_checkpoint_that_does_not_fit_its_data(home, runner, fault, command):
    change, sentences = FAULTS[fault]
    sentence = sentences.get(command, sentences[None])
    bad = rewrite(home / "models" / "tiny.pt", home / "models" / "bad.pt", change)
    before = snapshot(home / "models")
    result = runner.invoke(app, [*COMMANDS[command], "--model", "bad"])
    if sentence == "":
        assert result.exit_code == 0, result.stderr
    elif sentence is None:
        assert_one_line_error(result, "User 1 is not in ml-100k: its user ids run from 10001 to 10943.")
    else:
        assert_one_line_error(result, f"{bad} {sentence}", "retrain it." if "finite" in sentence else "")
    assert snapshot(home / "models") == before


# -- nothing trains that cannot be saved --------------------------------------------------------------------
def test_read_only_models_folder(home):
    models = home / "models"
    before = snapshot(models)
    trained = movierec(home, "train", *TINY, "--name", "new", read_only=models)
    one_error_line(trained, f"Cannot save models in {models}", "Read-only file system" if os.geteuid() == 0 else "")
    assert "Training" not in trained.stdout  # refused before any work
    removed = movierec(home, "models", "--remove", "tiny", read_only=models)
    one_error_line(removed, f"Could not remove {models / 'tiny.pt'}")
    listed = movierec(home, "models", read_only=models)
    assert listed.returncode == 0 and "tiny" in listed.stdout and listed.stderr == ""
    assert snapshot(models) == before


def test_read_only_home_without_a_models_folder(home):
    shutil.rmtree(home / "models")
    trained = movierec(home, "train", *TINY, "--name", "new", read_only=home)
    one_error_line(trained, f"Cannot save models in {home / 'models'}")
    assert "Training" not in trained.stdout and not (home / "models").exists()


def test_over_long_name_is_refused_before_training(home, runner):
    before = snapshot(home / "models")
    result = runner.invoke(app, ["train", *TINY, "--name", "a" * 300])
    assert_one_line_error(result, "Invalid model name", "300 characters", "at most 150")
    assert "Training" not in result.stdout
    assert snapshot(home / "models") == before


# -- writers killed or racing ---------------------------------------------------------------------------
def start(home: Path, *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "movierec", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env(home))


def wait_for(proc: subprocess.Popen, text: str) -> None:
    for line in proc.stdout:
        if text in line:
            return
    raise AssertionError(f"the process ended (rc {proc.wait()}) without printing {text!r}: {proc.stderr.read()}")


def test_second_writer_of_the_same_name_is_refused(home):
    first = start(home, "train", "mf", "--epochs", "2", "--factors", "4", "--device", "cpu", "--name", "same")
    try:
        wait_for(first, "Training mf")
        first.send_signal(signal.SIGSTOP)  # frozen mid-training, holding the name
        try:
            second = movierec(home, "train", *TINY, "--name", "same")
        finally:
            first.send_signal(signal.SIGCONT)
        one_error_line(second, "Another movierec is training same right now")
        assert "Training" not in second.stdout
        out, err = first.communicate(timeout=300)
    finally:
        first.kill()
        first.wait()
    assert first.returncode == 0, err
    assert checkpoint.read_meta(home / "models" / "same.pt").epochs == 2  # the first writer's model
    assert sorted(snapshot(home / "models")) == ["same.pt", "tiny.pt"]


def test_a_killed_writer_leaves_its_name_free(home):
    first = start(home, "train", "mf", "--epochs", "50", "--factors", "4", "--device", "cpu", "--name", "same")
    try:
        wait_for(first, "Training mf")
    finally:
        first.kill()  # SIGKILL: no cleanup runs
        first.wait()
    second = movierec(home, "train", *TINY, "--name", "same", "--json")
    assert second.returncode == 0, second.stderr
    assert checkpoint.read_meta(home / "models" / "same.pt").epochs == 1


STUCK_SAVE = textwrap.dedent("""
    import time
    from movierec import checkpoint, loading
    saved = loading.load(checkpoint.resolve("tiny"))
    def stuck(f, *args, **kwargs):
        f.write(b"half a checkpoint")
        f.flush()
        print("writing", flush=True)
        time.sleep(600)
    checkpoint.container._write_body = stuck
    checkpoint.save(loading.state_arrays(saved.model), saved.meta, saved.user_ids, saved.item_ids)
""")


def test_temporaries_of_writers_killed_mid_save_are_cleaned(home):
    models = home / "models"
    before = snapshot(models)
    for _ in range(3):
        writer = subprocess.Popen([sys.executable, "-c", STUCK_SAVE], stdout=subprocess.PIPE, text=True,
                                  env=env(home))
        try:
            assert writer.stdout.readline().strip() == "writing"
        finally:
            writer.kill()
            writer.wait()
        # Each save swept away the temporary of the writer killed before it: only the last one's is left.
        temporaries = [p.name for p in models.iterdir() if p.name.endswith(".tmp")]
        assert temporaries == [f".tiny.pt.{checkpoint.names._HOST}-{writer.pid}.{temporaries[0].split('.')[-2]}.tmp"]

    listed = movierec(home, "models")
    assert listed.returncode == 0 and listed.stderr == ""
    assert [p.name for p in models.iterdir() if p.name.endswith(".tmp")] == []
    assert snapshot(models) == before
    assert loading.load(models / "tiny.pt").meta.name == "tiny"


def test_models_help_says_names_only(runner):
    result = runner.invoke(app, ["models", "--help"])
    assert result.exit_code == 0
    text = " ".join(line.strip(" │╭╮╰╯─") for line in result.stdout.splitlines())  # unwrap rich's panel
    assert "--remove NAME Delete the saved model with this name (a name, not a path)." in " ".join(text.split())


# -- the default model: pinned, else the newest -----------------------------------------------------------------
def _default_of_listing(runner) -> list[str]:
    result = runner.invoke(app, ["models", "--json"])
    assert result.exit_code == 0, result.stderr
    return [row["name"] for row in json.loads(result.stdout) if row["default"]]


def test_pinned_default_survives_a_later_train_and_unpinning_brings_back_the_newest(home, runner):
    from movierec.evaluate import select_checkpoints

    pinned = runner.invoke(app, ["models", "--default", "ti"])  # a unique beginning is enough
    assert pinned.exit_code == 0, pinned.stderr
    assert "tiny is now the default model" in pinned.stdout
    later = runner.invoke(app, ["train", *TINY, "--name", "later", "--split", "random", "--json"])
    assert later.exit_code == 0, later.stderr
    assert _default_of_listing(runner) == ["tiny"]
    table = runner.invoke(app, ["models"])
    assert "tiny (default)" in table.stdout and "later (newest)" in table.stdout
    shown = runner.invoke(app, ["recommend", "--user", "1", "--json"])
    assert shown.exit_code == 0, shown.stderr
    assert "default model, tiny." in shown.stderr
    json.loads(shown.stdout)  # stdout stays JSON
    # evaluate's default set is the default model's split, not the newest one's
    chosen = select_checkpoints()
    assert [Path(p).stem for p in chosen.paths] == ["tiny"] and chosen.left_out == ["later"]

    unpinned = runner.invoke(app, ["models", "--default", "none"])
    assert unpinned.exit_code == 0 and "the newest model is the default" in unpinned.stdout
    assert _default_of_listing(runner) == ["later"]
    assert not (home / "models" / checkpoint.PIN_FILE).exists()
    assert "default model, later." in runner.invoke(app, ["recommend", "--user", "1", "--json"]).stderr
    assert [Path(p).stem for p in select_checkpoints().paths] == ["later"]


def test_pin_of_an_unknown_name_is_one_sentence(home, runner):
    assert_one_line_error(runner.invoke(app, ["models", "--default", "nope"]), "No saved model named 'nope'")
    assert not (home / "models" / checkpoint.PIN_FILE).exists()


def test_removing_the_pinned_model_drops_the_pin(home, runner):
    shutil.copy2(home / "models" / "tiny.pt", home / "models" / "other.pt")
    assert runner.invoke(app, ["models", "--default", "other"]).exit_code == 0
    assert checkpoint.resolve(None).stem == "other"
    assert runner.invoke(app, ["models", "--remove", "other"]).exit_code == 0
    assert checkpoint.pinned() is None and checkpoint.resolve(None).stem == "tiny"


def test_a_pin_left_by_a_model_deleted_by_hand_is_one_sentence(home, runner):
    shutil.copy2(home / "models" / "tiny.pt", home / "models" / "other.pt")
    assert runner.invoke(app, ["models", "--default", "other"]).exit_code == 0
    (home / "models" / "other.pt").unlink()
    assert_one_line_error(runner.invoke(app, ["recommend", "--user", "1"]), "default model 'other' is no longer saved",
                          "--default none")
    assert _default_of_listing(runner) == []  # the listing still works, so the user can pin another
    assert runner.invoke(app, ["models", "--default", "none"]).exit_code == 0
    assert checkpoint.resolve(None).stem == "tiny"


def test_api_set_default(home):
    import movierec as mr

    shutil.copy2(home / "models" / "tiny.pt", home / "models" / "zz.pt")  # the newest (same stamp, later name)
    assert mr.set_default("tiny") == "tiny"
    frame = mr.saved_models()
    assert frame.loc[frame["default"], "path"].map(lambda p: Path(p).stem).tolist() == ["tiny"]
    assert frame.loc[frame["newest"], "path"].map(lambda p: Path(p).stem).tolist() == ["zz"]
    assert checkpoint.resolve(None).stem == "tiny"
    assert mr.set_default(None) is None and checkpoint.pinned() is None
    assert checkpoint.resolve(None).stem == "zz"
