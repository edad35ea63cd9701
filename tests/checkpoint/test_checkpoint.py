"""Checkpoints: exact round trips, atomic writes, and files that are damaged, foreign, newer or hostile."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import pickle
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from movierec import checkpoint, loading, paths
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
    return checkpoint.save(loading.state_arrays(small_model(seed)), make_meta(name, **changes), user_ids, item_ids)[0]


def one_sentence(exc: pytest.ExceptionInfo, *fragments: str) -> str:
    text = str(exc.value)
    assert "\n" not in text and text.endswith("."), text
    for fragment in fragments:
        assert fragment in text, text
    return text


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if not p.name.endswith(checkpoint.SUFFIX))


def valid_payload() -> dict:
    """A format-1 (torch.save) checkpoint's payload: still read, so still checked."""
    model = small_model()
    return {
        "format": checkpoint.FORMAT, "format_version": checkpoint.LEGACY_VERSION,
        "meta": json.dumps(dataclasses.asdict(make_meta(created="2020-01-01T00:00:00+00:00"))),
        "state": dict(model.state_dict()),
        "user_ids": torch.arange(N_USERS), "item_ids": torch.arange(N_ITEMS),
    }


# -- round trip ----------------------------------------------------------------------------------------
def test_round_trip_is_exact(home):
    model = small_model(seed=3)
    meta = make_meta("round-trip")
    path, saved = checkpoint.save(loading.state_arrays(model), meta, np.arange(N_USERS) + 1,
                                  np.array([3, 9, 27, 81, 243]))
    assert path == paths.models_dir() / "round-trip.pt"
    assert leftovers(path.parent) == []

    loaded = loading.load(path)
    assert loaded.path == path
    assert loaded.meta == saved  # what save() returns is what was written
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


@pytest.mark.parametrize("missing", [(), ("preadv",), ("preadv", "pread")],
                         ids=["preadv", "pread", "seek-and-read"])
def test_every_way_of_reading_gives_the_saved_arrays(home, monkeypatch, missing):
    """Systems lack positioned reads of several buffers (preadv) or any (Windows): the rows come back alike."""
    model = small_model(seed=5)
    path = checkpoint.save(loading.state_arrays(model), make_meta("reads"), range(N_USERS), range(N_ITEMS))[0]
    for name in missing:
        monkeypatch.delattr(os, name)
    with checkpoint.container.open_file(path) as saved:
        whole = saved.get("state.user_factors")
        rows = saved.rows("state.user_factors", 2, 5)
    assert np.array_equal(whole, model.user_factors.detach().numpy())
    assert np.array_equal(rows, whole[2:5])


def test_round_trip_of_a_model_with_choices(home):
    model = build_model("rbm", "rating", {"hidden": 4}, N_USERS, N_ITEMS, STARS)
    meta = make_meta("rbm-rating", model="rbm", mode="rating", config=model.config.to_dict())
    path, _ = checkpoint.save(loading.state_arrays(model), meta, range(7), range(5))
    loaded = loading.load(path)
    assert loaded.meta.mode == "rating" and loaded.model.kind == "rating" and loaded.model.config.hidden == 4
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), loaded.model.state_dict().values()))


def test_nan_metrics_survive_the_round_trip(home):
    path = save("nan-metrics", metrics={"like_error": 0.2, "auc": math.nan})
    meta = checkpoint.read_meta(path)
    assert meta.metrics["like_error"] == 0.2 and math.isnan(meta.metrics["auc"])


def test_the_like_error_saved_as_loss_is_read_under_its_name(home):
    """Checkpoints written before 0.2 called the like RBM's share of wrong like calls "loss"."""
    path = save("old-keys", metrics={"loss": 0.2, "auc": 0.7}, train_metrics={"loss": 0.5},
                baseline={"name": "always like", "loss": 0.18}, valid_metrics={"loss": 0.21},
                history=[{"epoch": 1, "train": {"loss": 0.5}, "valid": {"loss": 0.21}}])
    meta = checkpoint.read_meta(path)
    assert meta.metrics == {"like_error": 0.2, "auc": 0.7} and meta.valid_metrics == {"like_error": 0.21}
    assert meta.baseline == {"name": "always like", "like_error": 0.18}
    assert meta.history[0] == {"epoch": 1, "train": {"loss": 0.5}, "valid": {"like_error": 0.21}}
    assert meta.train_metrics == {"loss": 0.5}  # the training objective keeps its name


def test_models_json_turns_nan_into_null(home, runner):
    from movierec.cli import app

    save("nan-metrics", metrics={"like_error": 0.2, "auc": math.nan})
    result = runner.invoke(app, ["models", "--json"])
    assert result.exit_code == 0, result.stderr
    (row,) = json.loads(result.stdout)
    assert row["metrics"] == {"like_error": 0.2, "auc": None}


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
        loading.load(path)
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
        loading.load(path)
    one_sentence(exc, "not a readable movierec checkpoint")
    assert not marker.exists()


def test_pickled_callable_is_refused(home, tmp_path):
    payload = valid_payload()
    payload["meta"] = os.system  # a reference to a function is code too
    path = tmp_path / "callable.pt"
    torch.save(payload, path)
    with pytest.raises(MovierecError) as exc:
        loading.load(path)
    one_sentence(exc, "not a readable movierec checkpoint")


def test_truncated_file(home):
    path = save("cut")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(MovierecError) as exc:
        loading.load(path)
    one_sentence(exc, str(path), "truncated, corrupted or not a checkpoint")


@pytest.mark.parametrize("content", [b"", os.urandom(4096), b"PK\x03\x04 not really a zip"])
def test_random_bytes(home, tmp_path, content):
    path = tmp_path / "junk.pt"
    path.write_bytes(content)
    with pytest.raises(MovierecError) as exc:
        loading.load(path)
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
        loading.load(path)
    assert one_sentence(exc) == f"{path} is not a movierec checkpoint."


def test_future_format_version(home, tmp_path):
    payload = valid_payload()
    payload["format_version"] = checkpoint.FORMAT_VERSION + 1
    path = tmp_path / "future.pt"
    torch.save(payload, path)
    with pytest.raises(MovierecError) as exc:
        loading.load(path)
    one_sentence(exc, "newer movierec", f"format {checkpoint.FORMAT_VERSION + 1}", "upgrade")
    path = write_payload(tmp_path / "future2.pt", format_version=str(checkpoint.FORMAT_VERSION + 1))
    for read in (checkpoint.read_meta, loading.load):
        with pytest.raises(MovierecError) as exc:
            read(path)
        one_sentence(exc, "newer movierec", f"format {checkpoint.FORMAT_VERSION + 1}", "upgrade")


def test_tensors_that_do_not_match_the_model(home, tmp_path):
    payload = valid_payload()
    name, tensor = next(iter(payload["state"].items()))
    payload["state"][name] = torch.zeros(tensor.shape[0] + 1, *tensor.shape[1:])
    path = tmp_path / "mismatch.pt"
    torch.save(payload, path)
    with pytest.raises(MovierecError) as exc:
        loading.load(path)
    one_sentence(exc, "is damaged")


def test_damaged_metadata(home, tmp_path):
    payload = valid_payload()
    payload["meta"] = "{not json"
    path = tmp_path / "meta.pt"
    torch.save(payload, path)
    with pytest.raises(MovierecError) as exc:
        checkpoint.read_meta(path)
    one_sentence(exc, f"{path} is damaged (its metadata is not valid JSON)")
    with pytest.raises(MovierecError):
        loading.load(path)


def test_missing_file(home, tmp_path):
    with pytest.raises(MovierecError) as exc:
        loading.load(tmp_path / "nothing.pt")
    one_sentence(exc, "No checkpoint at")


# -- atomic save ---------------------------------------------------------------------------------------
def _failing_save(error: BaseException):
    def fake(f, *args, **kwargs):
        f.write(b"half a checkpoint")  # the failure strikes mid-write
        raise error

    return fake


def test_failed_save_keeps_the_old_checkpoint(home, monkeypatch):
    path = save("keep", seed=1)
    before = path.read_bytes()
    monkeypatch.setattr(checkpoint.container, "_write_body", _failing_save(OSError(28, "No space left on device")))
    with pytest.raises(MovierecError) as exc:
        save("keep", seed=2)
    one_sentence(exc, "Could not save the model", "No space left on device")
    assert path.read_bytes() == before
    assert leftovers(path.parent) == []
    monkeypatch.undo()
    assert loading.load(path).meta.name == "keep"


@pytest.mark.parametrize("error", [RuntimeError("boom"), KeyboardInterrupt()], ids=["bug", "interrupt"])
def test_interrupted_save_cleans_up(home, monkeypatch, error):
    path = save("keep")
    before = path.read_bytes()
    monkeypatch.setattr(checkpoint.container, "_write_body", _failing_save(error))
    with pytest.raises(type(error)):
        save("keep", seed=5)
    assert path.read_bytes() == before and leftovers(path.parent) == []


def test_save_replaces_an_existing_checkpoint(home):
    first = save("same", seed=1)
    second = save("same", seed=2)
    assert first == second
    loaded = loading.load(second).model.state_dict()
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


# -- metadata of the wrong type or shape -----------------------------------------------------------------
def write_payload(path: Path, meta: object = None, **changes) -> Path:
    """A format-2 checkpoint file whose metadata is ``meta`` (JSON-encoded unless it is a string), else the
    valid one with ``changes`` to its fields; ``changes`` to the header's own keys (format_version) or to the
    arrays (user_ids, item_ids, state.*) replace them."""
    model = small_model()
    metadata = {"format": checkpoint.FORMAT, "format_version": str(checkpoint.FORMAT_VERSION)}
    arrays = {f"state.{k}": v.numpy() for k, v in model.state_dict().items()}
    arrays.update(user_ids=np.arange(N_USERS), item_ids=np.arange(N_ITEMS))
    data = dataclasses.asdict(make_meta(created="2020-01-01T00:00:00+00:00"))
    data.update({k: v for k, v in changes.items() if k not in metadata and k not in arrays})
    metadata.update({k: v for k, v in changes.items() if k in metadata})
    arrays.update({k: v for k, v in changes.items() if k in arrays})
    if meta is not None:
        metadata["meta"] = meta if isinstance(meta, str) else json.dumps(meta)
    else:
        metadata["meta"] = json.dumps(data)
    checkpoint.write_file(path, metadata, arrays)
    return path


def write_legacy(path: Path, **changes) -> Path:
    """A format-1 (torch.save) file: the valid payload with ``changes`` to its keys or metadata fields."""
    payload = valid_payload()
    data = json.loads(payload["meta"])
    data.update({k: v for k, v in changes.items() if k not in payload})
    payload.update({k: v for k, v in changes.items() if k in payload})
    payload["meta"] = json.dumps(data)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(payload, path)
    return path


_VALID = dataclasses.asdict(make_meta(created="2020-01-01T00:00:00+00:00"))
BAD_META = {
    "list": ([_VALID], "its metadata is a list, not an object"),
    "string": ("\"just text\"", "its metadata is text, not an object"),
    "created-number": ({**_VALID, "created": 5}, "its 'created' is 5, not text"),
    "created-not-a-date": ({**_VALID, "created": "yesterday"}, "its 'created' is \"yesterday\", not a date"),
    "integer-name": ({**_VALID, "name": 7}, "its 'name' is 7, not text"),
    "list-metrics": ({**_VALID, "metrics": [0.9, 0.7]}, "its 'metrics' is a list, not an object"),
    "text-metric": ({**_VALID, "metrics": {"rmse": "good"}}, "its 'metrics' are not all numbers"),
    "empty-stars": ({**_VALID, "rating_values": []}, "its 'rating_values' is empty"),
    "text-stars": ({**_VALID, "rating_values": ["1", "2"]}, "its 'rating_values' is a list, not a list of numbers"),
    "descending-stars": ({**_VALID, "rating_values": [5, 4, 3]}, "not ascending finite numbers"),
    "no-users": ({**_VALID, "n_users": 0}, "it has 0 users"),
    "bool-seed": ({**_VALID, "seed": True}, "its 'seed' is true, not a whole number"),
    "float-items": ({**_VALID, "n_items": 5.0}, "its 'n_items' is 5.0, not a whole number"),
    "missing-model": ({k: v for k, v in _VALID.items() if k != "model"}, "its metadata has no 'model'"),
    "config-list": ({**_VALID, "config": []}, "its 'config' is an empty list, not an object"),
    "history-text": ({**_VALID, "history": "none"}, "its 'history' is \"none\", not a list of objects"),
    "path-name": ({**_VALID, "name": "../x"}, "its name \"../x\" is not a model name"),
    "fraction": ({**_VALID, "test_fraction": 5}, "its 'test_fraction' is 5, not between 0 and 1"),
}


@pytest.mark.parametrize("case", BAD_META, ids=list(BAD_META))
def test_metadata_of_the_wrong_type_or_shape(home, case):
    meta, reason = BAD_META[case]
    good = save("good")
    bad = write_payload(paths.models_dir() / "bad.pt", meta)
    for read in (checkpoint.read_meta, loading.load):
        with pytest.raises(MovierecError) as exc:
            read(bad)
        one_sentence(exc, f"{bad} is damaged (", reason)
    # Listings and "the newest model" carry on without the damaged file, and say it was skipped.
    assert checkpoint.scan_checkpoints() == ([(good, checkpoint.read_meta(good))], [bad])
    assert checkpoint.resolve(None) == good
    assert loading.load(good).meta.name == "good"


@pytest.mark.parametrize(
    ("version", "shown"), [("1", '"1"'), (1.0, "1.0"), (True, "true"), (0, "0"), (None, "null")]
)
def test_format_version_that_is_not_a_positive_integer(home, tmp_path, version, shown):
    path = write_legacy(tmp_path / "version.pt", format_version=version)
    with pytest.raises(MovierecError) as exc:
        loading.load(path)
    text = one_sentence(exc, f"{path} is damaged (its format version is {shown}, not a whole number)")
    assert "newer" not in text


def test_metadata_that_is_not_text(home, tmp_path):
    payload = valid_payload()
    payload["meta"] = torch.zeros(2)
    path = tmp_path / "meta.pt"
    torch.save(payload, path)
    with pytest.raises(MovierecError) as exc:
        checkpoint.read_meta(path)
    one_sentence(exc, "is damaged (its metadata is a Tensor, not JSON text)")


def test_metadata_is_checked_from_a_plain_dict():
    # The check knows nothing of torch files: any container that yields a dict can use it.
    meta = checkpoint.meta_from_dict(json.loads(json.dumps(_VALID)), "somewhere")
    assert meta == make_meta(created="2020-01-01T00:00:00+00:00")
    older = {k: v for k, v in _VALID.items() if k not in ("history", "baseline", "version")}
    assert checkpoint.meta_from_dict(older, "old").history == []  # fields with defaults may be absent
    newer = {**_VALID, "something_new": [1, 2]}
    assert checkpoint.meta_from_dict(newer, "new") == meta  # unknown fields are ignored
    with pytest.raises(MovierecError) as exc:
        checkpoint.meta_from_dict({**_VALID, "epochs": "3"}, "somewhere")
    assert one_sentence(exc) == "somewhere is damaged (its 'epochs' is \"3\", not a whole number)."


# -- tensors that disagree with the metadata -------------------------------------------------------------
@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf], ids=["nan", "inf", "-inf"])
def test_non_finite_weights_are_refused(home, bad):
    model = small_model()
    with torch.no_grad():
        next(iter(model.parameters())).fill_(bad)
    path, _ = checkpoint.save(loading.state_arrays(model), make_meta("broken"), range(N_USERS), range(N_ITEMS))
    assert checkpoint.read_meta(path).name == "broken"  # still listed: the metadata is fine
    with pytest.raises(MovierecError) as exc:
        loading.load(path)
    one_sentence(exc, f"{path} holds non-finite weights", "retrain it")


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"user_ids": torch.arange(N_USERS - 1)}, f"it has {N_USERS - 1} user ids for {N_USERS} users"),
        ({"item_ids": torch.arange(N_ITEMS + 2)}, f"it has {N_ITEMS + 2} movie ids for {N_ITEMS} movies"),
        ({"user_ids": torch.zeros(N_USERS, dtype=torch.int64)}, "its user ids repeat"),
        ({"item_ids": torch.arange(N_ITEMS) + 0.5}, "its movie ids are not a list of whole numbers"),
        ({"item_ids": torch.arange(N_ITEMS).reshape(1, -1)}, "its movie ids are not a list of whole numbers"),
        ({"user_ids": [1, 2, 3]}, "its user ids are not a list of whole numbers"),
        ({"state": {"user_factors": 3}}, "its weights are not a table of named tensors"),
        ({"n_users": N_USERS - 2}, f"it has {N_USERS} user ids for {N_USERS - 2} users"),
    ],
    ids=["short-users", "long-items", "repeated", "float-ids", "2d-ids", "list-ids", "int-weight", "meta-users"],
)
def test_tensors_and_id_maps_must_match_the_metadata(home, tmp_path, changes, reason):
    path = write_legacy(tmp_path / "ids.pt", **changes)
    with pytest.raises(MovierecError) as exc:
        loading.load(path)
    one_sentence(exc, f"{path} is damaged ({reason})")
    numpy_changes = {k: v.numpy() if isinstance(v, torch.Tensor) else v for k, v in changes.items()}
    if not all(isinstance(v, (np.ndarray, int)) for v in numpy_changes.values()):
        return  # only a torch file can hold a list or a number where an array belongs
    path = write_payload(tmp_path / "ids2.pt", **numpy_changes)
    with pytest.raises(MovierecError) as exc:
        loading.load(path)
    one_sentence(exc, f"{path} is damaged ({reason})")


def test_a_raw_pickle_is_refused_without_warnings(home):
    good = save("good")
    raw = paths.models_dir() / "raw.pt"
    raw.write_bytes(pickle.dumps({"format": checkpoint.FORMAT}, protocol=4))  # torch warns about protocol 4
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(MovierecError) as exc:
            loading.load(raw)
        assert checkpoint.scan_checkpoints()[1] == [raw]
        assert checkpoint.resolve(None) == good
    one_sentence(exc, "not a readable movierec checkpoint")
    assert [str(w.message) for w in caught] == []


# -- temporary files of writers that died -----------------------------------------------------------------
def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_stale_temporaries_are_removed(home):
    folder = paths.models_dir()
    keep = save("keep")
    host = checkpoint.names._HOST
    dead = folder / f".keep.pt.{host}-{dead_pid()}.abc123.tmp"
    live = folder / f".keep.pt.{host}-{os.getpid()}.def456.tmp"  # a save in progress right now
    other_host = folder / f".keep.pt.elsewhere{host}-{dead_pid()}.ghi789.tmp"  # its pids mean nothing here
    old_style = folder / ".keep.pt.jkl012.tmp"
    aged = folder / f".keep.pt.{host}-{os.getpid()}.mno345.tmp"
    unrelated = [folder / ".notes.tmp", folder / "keep.pt.tmp", folder / ".keep.pt.123-4.x.txt"]
    for p in (dead, live, other_host, old_style, aged, *unrelated):
        p.write_bytes(b"half a checkpoint")
    an_hour_ago = time.time() - checkpoint.STALE_SECONDS - 60
    os.utime(aged, (an_hour_ago, an_hour_ago))

    assert checkpoint.clean_temporaries() == 2
    assert not dead.exists() and not aged.exists()
    assert live.exists() and other_host.exists() and old_style.exists() and all(p.exists() for p in unrelated)

    os.utime(old_style, (an_hour_ago, an_hour_ago))
    os.utime(other_host, (an_hour_ago, an_hour_ago))
    assert [p for p, _ in checkpoint.list_checkpoints()] == [keep]  # listing sweeps too
    assert not old_style.exists() and not other_host.exists() and live.exists()
    assert loading.load(keep).meta.name == "keep"


def test_save_sweeps_dead_writers_temporaries(home):
    first = save("first")
    stale = first.parent / f".first.pt.{checkpoint.names._HOST}-{dead_pid()}.abc123.tmp"
    stale.write_bytes(b"half")
    save("second")
    assert leftovers(first.parent) == []


def test_clean_temporaries_of_a_missing_folder(home):
    assert checkpoint.clean_temporaries() == 0
    assert not paths.models_dir().exists()


# -- names, removal and the lock -------------------------------------------------------------------------
def test_names_too_long_are_refused(home):
    assert checkpoint.path_for("a" * checkpoint.MAX_NAME).name == "a" * checkpoint.MAX_NAME + ".pt"
    with pytest.raises(MovierecError) as exc:
        checkpoint.path_for("a" * 300)
    one_sentence(exc, "Invalid model name", "300 characters", f"at most {checkpoint.MAX_NAME}")
    with pytest.raises(MovierecError):
        checkpoint.resolve("a" * 300)
    with pytest.raises(MovierecError):
        checkpoint.resolve("a" * 300 + ".pt")


def test_longest_name_can_be_saved(home):
    name = "n" * checkpoint.MAX_NAME
    with checkpoint.reserve(name) as path:
        assert save(name) == path
    assert loading.load(path).meta.name == name


def test_remove_takes_names_only(home, tmp_path, monkeypatch):
    keep, gone = save("keep"), save("gone")
    precious = tmp_path / "precious.pt"
    precious.write_bytes(keep.read_bytes())
    monkeypatch.chdir(tmp_path)
    for name in (str(precious), "precious.pt", "./precious.pt", "../home/models/keep.pt", "keep.pt"):
        with pytest.raises(MovierecError) as exc:
            checkpoint.remove(name)
        one_sentence(exc, "Invalid model name")
    with pytest.raises(MovierecError) as exc:
        checkpoint.remove("precious")
    one_sentence(exc, "No saved model named 'precious'", "keep, gone")
    assert checkpoint.remove("gone") == gone
    assert precious.exists() and keep.exists() and not gone.exists()


def test_remove_a_damaged_checkpoint(home):
    bad = write_payload(paths.models_dir() / "bad.pt", {**_VALID, "created": 5})
    assert checkpoint.remove("bad") == bad and not bad.exists()


def test_a_reserved_name_is_refused_to_a_second_writer(home):
    with checkpoint.reserve("busy") as path:
        assert path == paths.models_dir() / "busy.pt"
        with pytest.raises(MovierecError) as exc, checkpoint.reserve("busy"):
            pass
        one_sentence(exc, "Another movierec is training busy right now")
        with checkpoint.reserve("other"):  # other names are free
            pass
    with checkpoint.reserve("busy"):  # released at the end of the block, even after an error
        pass
    with pytest.raises(RuntimeError), checkpoint.reserve("busy"):
        raise RuntimeError("training failed")
    with checkpoint.reserve("busy"):
        pass
    assert leftovers(paths.models_dir()) == sorted([".busy.lock", ".other.lock"])


def test_a_failed_run_leaves_a_new_home_as_it_was(home):
    assert not paths.models_dir().exists()
    with pytest.raises(MovierecError), checkpoint.reserve("first"):
        raise MovierecError("ml-100k is not fetched.")
    assert not paths.models_dir().exists()
    keep = save("keep")
    with pytest.raises(KeyboardInterrupt), checkpoint.reserve("second"):
        raise KeyboardInterrupt
    assert checkpoint.list_checkpoints() == [(keep, checkpoint.read_meta(keep))]  # an existing folder stays
