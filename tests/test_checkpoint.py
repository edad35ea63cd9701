"""Checkpoints: exact round trips, atomic writes, and files that are damaged, foreign, newer or hostile."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from movierec import checkpoint, paths
from movierec.errors import MovierecError
from movierec.models import build_model

STARS = (1.0, 2.0, 3.0, 4.0, 5.0)
N_USERS, N_ITEMS = 7, 5


def small_model(seed: int = 0, name: str = "mf", config: dict | None = None):
    torch.manual_seed(seed)
    return build_model(name, None, config or {"factors": 3}, N_USERS, N_ITEMS, STARS)


def make_meta(name: str = "m", model: str = "mf", **changes) -> checkpoint.CheckpointMeta:
    meta = checkpoint.CheckpointMeta(
        name=name, model=model, config={"factors": 3}, dataset="synthetic", fingerprint="abc", split="holdout",
        seed=4, n_users=N_USERS, n_items=N_ITEMS, rating_values=list(STARS), metrics={"rmse": 0.9, "mae": 0.7},
        train_metrics={"loss": 0.5}, history=[{"epoch": 1, "train": {"loss": 0.5}, "valid": {"rmse": 0.9}}],
        fit_seconds=1.25, epochs=1, device="cpu", test_fraction=0.2, mode="explicit",
    )
    return dataclasses.replace(meta, **changes)


def save(name: str = "m", seed: int = 0, **changes) -> Path:
    user_ids = np.arange(N_USERS) * 10 + 1
    item_ids = np.arange(N_ITEMS) * 100 + 7
    return checkpoint.save(small_model(seed), make_meta(name, **changes), user_ids, item_ids)


def one_sentence(exc: pytest.ExceptionInfo, *fragments: str) -> str:
    text = str(exc.value)
    assert "\n" not in text and text.endswith("."), text
    for fragment in fragments:
        assert fragment in text, text
    return text


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if not p.name.endswith(checkpoint.SUFFIX))


def valid_payload() -> dict:
    model = small_model()
    return {
        "format": checkpoint.FORMAT, "format_version": checkpoint.FORMAT_VERSION,
        "meta": json.dumps(dataclasses.asdict(make_meta())), "state": dict(model.state_dict()),
        "user_ids": torch.arange(N_USERS), "item_ids": torch.arange(N_ITEMS),
    }


# -- round trip ----------------------------------------------------------------------------------------
def test_round_trip_is_exact(home):
    model = small_model(seed=3)
    meta = make_meta("round-trip")
    path = checkpoint.save(model, meta, np.arange(N_USERS) + 1, np.array([3, 9, 27, 81, 243]))
    assert path == paths.models_dir() / "round-trip.pt"
    assert leftovers(path.parent) == []

    loaded = checkpoint.load(path)
    assert loaded.path == path
    assert dataclasses.replace(loaded.meta, created="") == meta
    assert loaded.meta.created  # stamped at save time
    assert loaded.meta == checkpoint.read_meta(path)
    state, again = model.state_dict(), loaded.model.state_dict()
    assert state.keys() == again.keys()
    for key in state:
        assert again[key].dtype == state[key].dtype and torch.equal(again[key], state[key]), key
    assert loaded.user_ids.tolist() == list(range(1, N_USERS + 1))
    assert loaded.item_ids.tolist() == [3, 9, 27, 81, 243]
    assert type(loaded.model) is type(model) and loaded.model.config == model.config
    assert not loaded.model.training  # ready to predict


def test_round_trip_of_a_model_with_choices(home):
    model = build_model("rbm", "rating", {"hidden": 4}, N_USERS, N_ITEMS, STARS)
    meta = make_meta("rbm-rating", model="rbm", mode="rating", config=model.config.to_dict())
    path = checkpoint.save(model, meta, [1] * 7, range(5))
    loaded = checkpoint.load(path)
    assert loaded.meta.mode == "rating" and loaded.model.kind == "rating" and loaded.model.config.hidden == 4
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), loaded.model.state_dict().values()))


def test_nan_metrics_survive_the_round_trip(home):
    path = save("nan-metrics", metrics={"loss": 0.2, "auc": math.nan})
    meta = checkpoint.read_meta(path)
    assert meta.metrics["loss"] == 0.2 and math.isnan(meta.metrics["auc"])


def test_models_json_turns_nan_into_null(home, runner):
    from movierec.cli import app

    save("nan-metrics", metrics={"loss": 0.2, "auc": math.nan})
    result = runner.invoke(app, ["models", "--json"])
    assert result.exit_code == 0, result.stderr
    (row,) = json.loads(result.stdout)
    assert row["metrics"] == {"loss": 0.2, "auc": None}


# -- files that must not load --------------------------------------------------------------------------
class Hostile:
    """Unpickling this runs ``os.mkdir(marker)``: the proof that code ran."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


def test_pickled_object_is_refused_and_never_run(home, tmp_path):
    marker = tmp_path / "code-ran"
    payload = valid_payload()
    payload["state"]["extra"] = Hostile(marker)
    path = tmp_path / "hostile.pt"
    torch.save(payload, path)

    with pytest.raises(MovierecError) as exc:
        checkpoint.load(path)
    one_sentence(exc, str(path), "not a readable movierec checkpoint")
    with pytest.raises(MovierecError):
        checkpoint.read_meta(path)
    assert not marker.exists()

    # The control: an unsafe load of the same file does run the code, so the check above means something.
    torch.load(path, weights_only=False)
    assert marker.is_dir()


def test_plain_pickle_is_refused_and_never_run(home, tmp_path):
    marker = tmp_path / "code-ran"
    path = tmp_path / "plain.pt"
    path.write_bytes(pickle.dumps({"format": checkpoint.FORMAT, "state": Hostile(marker)}, protocol=2))
    with pytest.raises(MovierecError) as exc:
        checkpoint.load(path)
    one_sentence(exc, "not a readable movierec checkpoint")
    assert not marker.exists()


def test_pickled_callable_is_refused(home, tmp_path):
    payload = valid_payload()
    payload["meta"] = os.system  # a reference to a function is code too
    path = tmp_path / "callable.pt"
    torch.save(payload, path)
    with pytest.raises(MovierecError) as exc:
        checkpoint.load(path)
    one_sentence(exc, "not a readable movierec checkpoint")


def test_truncated_file(home):
    path = save("cut")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(MovierecError) as exc:
        checkpoint.load(path)
    one_sentence(exc, str(path), "truncated, corrupted or not a checkpoint")


@pytest.mark.parametrize("content", [b"", os.urandom(4096), b"PK\x03\x04 not really a zip"])
def test_random_bytes(home, tmp_path, content):
    path = tmp_path / "junk.pt"
    path.write_bytes(content)
    with pytest.raises(MovierecError) as exc:
        checkpoint.load(path)
    one_sentence(exc, "not a readable movierec checkpoint")


@pytest.mark.parametrize(
    "payload",
    [{"weights": torch.zeros(3)}, {"format": "someone-else", "format_version": 1}, [torch.zeros(2)], torch.ones(3)],
    ids=["plain-dict", "other-format", "list", "tensor"],
)
def test_foreign_torch_file(home, tmp_path, payload):
    path = tmp_path / "foreign.pt"
    torch.save(payload, path)
    with pytest.raises(MovierecError) as exc:
        checkpoint.load(path)
    assert one_sentence(exc) == f"{path} is not a movierec checkpoint."


def test_future_format_version(home, tmp_path):
    payload = valid_payload()
    payload["format_version"] = checkpoint.FORMAT_VERSION + 1
    path = tmp_path / "future.pt"
    torch.save(payload, path)
    with pytest.raises(MovierecError) as exc:
        checkpoint.load(path)
    one_sentence(exc, "newer movierec", f"format {checkpoint.FORMAT_VERSION + 1}", "upgrade")


def test_tensors_that_do_not_match_the_model(home, tmp_path):
    payload = valid_payload()
    name, tensor = next(iter(payload["state"].items()))
    payload["state"][name] = torch.zeros(tensor.shape[0] + 1, *tensor.shape[1:])
    path = tmp_path / "mismatch.pt"
    torch.save(payload, path)
    with pytest.raises(MovierecError) as exc:
        checkpoint.load(path)
    one_sentence(exc, "is damaged")


def test_damaged_metadata(home, tmp_path):
    payload = valid_payload()
    payload["meta"] = "{not json"
    path = tmp_path / "meta.pt"
    torch.save(payload, path)
    with pytest.raises(MovierecError) as exc:
        checkpoint.read_meta(path)
    one_sentence(exc, "damaged metadata")
    with pytest.raises(MovierecError):
        checkpoint.load(path)


def test_missing_file(home, tmp_path):
    with pytest.raises(MovierecError) as exc:
        checkpoint.load(tmp_path / "nothing.pt")
    one_sentence(exc, "No checkpoint at")


# -- atomic save ---------------------------------------------------------------------------------------
def _failing_save(error: BaseException):
    def fake(obj, f, *args, **kwargs):
        f.write(b"half a checkpoint")  # the failure strikes mid-write
        raise error

    return fake


def test_failed_save_keeps_the_old_checkpoint(home, monkeypatch):
    path = save("keep", seed=1)
    before = path.read_bytes()
    monkeypatch.setattr(torch, "save", _failing_save(OSError(28, "No space left on device")))
    with pytest.raises(MovierecError) as exc:
        save("keep", seed=2)
    one_sentence(exc, "Could not save the model", "No space left on device")
    assert path.read_bytes() == before
    assert leftovers(path.parent) == []
    monkeypatch.undo()
    assert checkpoint.load(path).meta.name == "keep"


@pytest.mark.parametrize("error", [RuntimeError("boom"), KeyboardInterrupt()], ids=["bug", "interrupt"])
def test_interrupted_save_cleans_up(home, monkeypatch, error):
    path = save("keep")
    before = path.read_bytes()
    monkeypatch.setattr(torch, "save", _failing_save(error))
    with pytest.raises(type(error)):
        save("keep", seed=5)
    assert path.read_bytes() == before and leftovers(path.parent) == []


def test_save_replaces_an_existing_checkpoint(home):
    first = save("same", seed=1)
    second = save("same", seed=2)
    assert first == second
    loaded = checkpoint.load(second).model.state_dict()
    assert all(torch.equal(a, b) for a, b in zip(loaded.values(), small_model(2).state_dict().values()))
    assert leftovers(second.parent) == []


# -- listing, resolving, naming ------------------------------------------------------------------------
def test_list_skips_unreadable_files(home):
    good = save("good")
    folder = paths.models_dir()
    (folder / "junk.pt").write_bytes(os.urandom(256))
    torch.save({"weights": torch.zeros(1)}, folder / "foreign.pt")
    (folder / "notes.txt").write_text("not a checkpoint")
    assert [p for p, _ in checkpoint.list_checkpoints()] == [good]


def test_list_without_a_models_folder(home):
    assert checkpoint.list_checkpoints() == []
    with pytest.raises(MovierecError) as exc:
        checkpoint.resolve(None)
    one_sentence(exc, "No trained models yet", "movierec train")


def test_resolve_none_gives_the_newest(home):
    # Saved out of creation order, and with names that sort the other way, so only `created` can decide.
    older = save("z-older", created="2021-01-01T00:00:00+00:00")
    newest = save("a-newest", created="2022-06-01T00:00:00+00:00")
    save("m-middle", created="2021-06-01T00:00:00+00:00")
    assert [p for p, _ in checkpoint.list_checkpoints()][0] == older
    assert checkpoint.resolve(None) == newest


def test_newest_within_the_same_second(home):
    save("b-first")
    save("a-second")  # saved right after, within the same second most of the time
    assert checkpoint.resolve(None).name == "a-second.pt"
    assert [m.name for _, m in checkpoint.list_checkpoints()] == ["b-first", "a-second"]


def test_resolve_by_name_and_by_path(home, tmp_path):
    path = save("by-name")
    assert checkpoint.resolve("by-name") == path
    assert checkpoint.resolve(str(path)) == path
    elsewhere = tmp_path / "elsewhere.pt"
    elsewhere.write_bytes(path.read_bytes())
    assert checkpoint.resolve(str(elsewhere)) == elsewhere


def test_unknown_name_lists_the_saved_ones(home):
    with pytest.raises(MovierecError) as exc:
        checkpoint.resolve("missing")
    one_sentence(exc, "No saved model named 'missing'", "No models are saved yet")
    save("alpha", created="2021-01-01T00:00:00+00:00")
    save("beta", created="2021-01-02T00:00:00+00:00")
    with pytest.raises(MovierecError) as exc:
        checkpoint.resolve("missing")
    one_sentence(exc, "No saved model named 'missing'", "Saved models: alpha, beta.")


@pytest.mark.parametrize(
    "name", ["../evil", "a/b", "/tmp/x", "a\\b", ".hidden", "-rf", "has space", "x.pt", "", "..", "a\nb"]
)
def test_invalid_names_are_rejected(home, name):
    with pytest.raises(MovierecError) as exc:
        checkpoint.path_for(name)
    one_sentence(exc, "Invalid model name")
    with pytest.raises(MovierecError):
        save(name)
    assert not paths.models_dir().exists() or list(paths.models_dir().iterdir()) == []


@pytest.mark.parametrize("name", ["mf", "mf-ml-100k-u1-20240101-120000", "My_Model.v2", "0"])
def test_valid_names(home, name):
    assert checkpoint.path_for(name) == paths.models_dir() / f"{name}.pt"
