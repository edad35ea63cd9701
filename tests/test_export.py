"""`movierec export` and export_recommendations: every user's list, as `recommend` shows it, in a complete file."""

from __future__ import annotations

import csv
import json
import os
import sys

import numpy as np
import pytest
from conftest import assert_one_line_error, isolated_home, run_cli_in_subprocess
from typer.testing import CliRunner

from movierec.cli import app
from movierec.errors import MovierecError
from movierec.export import export_recommendations
from movierec.loading import open_model
from movierec.recommend import rank_items, rank_rows

USERS = (1, 42, 943)


# -- ranking a batch is ranking each row -------------------------------------------------------------------------
def test_rank_rows_is_rank_items_row_by_row_ties_included():
    rng = np.random.default_rng(0)
    scores = rng.integers(0, 4, (50, 30)).astype(np.float32)  # (B, I) many equal scores
    exclude = rng.random((50, 30)) < 0.3
    exclude[0] = True  # nothing allowed
    exclude[1, 3:] = True  # fewer allowed than asked for
    counts = rng.integers(0, 3, 30)  # equal counts too: the movie index decides
    for n in (1, 5, 30, 40):
        got = rank_rows(scores, n, exclude, counts)
        want = [rank_items(scores[b], n, exclude[b], counts) for b in range(50)]
        assert all(np.array_equal(g, w) for g, w in zip(got, want))
    assert len(rank_rows(scores, 5, exclude, counts)[0]) == 0


def test_rank_rows_refuses_nan_scores():
    scores = np.zeros((2, 4), dtype=np.float32)
    scores[1, 2] = np.nan
    with pytest.raises(MovierecError, match="NaN"):
        rank_rows(scores, 2, np.zeros((2, 4), dtype=bool), np.zeros(4))


# -- on ml-100k ----------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def home(trained_home):
    """ml-100k with a tiny als (answered from its arrays in numpy) and a tiny autoencoder (rebuilt in torch)."""
    trains = (["train", "als", "--factors", "8", "--epochs", "3", "--name", "ex-als"],
              ["train", "autoencoder", "--epochs", "1", "--name", "ex-ae"])
    with isolated_home(trained_home(*trains)) as h:
        yield h


def run(*args: str):
    return CliRunner(env={"COLUMNS": "100"}).invoke(app, list(args))


def ok(*args: str):
    result = run(*args)
    assert result.exit_code == 0, f"movierec {' '.join(args)}: {result.stderr}{result.exception!r}"
    return result


def read_csv(path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def by_user(rows: list[dict[str, str]]) -> dict[int, list[tuple[int, int, str, float]]]:
    out: dict[int, list] = {}
    for r in rows:
        out.setdefault(int(r["user_id"]), []).append((int(r["rank"]), int(r["movie_id"]), r["title"],
                                                      round(float(r["score"]), 4)))
    return out


@pytest.mark.parametrize("model", ["ex-als", "ex-ae"])
@pytest.mark.parametrize("seen", [[], ["--include-seen"]])
def test_csv_rows_are_the_lists_recommend_shows(home, tmp_path, model, seen):
    path = tmp_path / "recs.csv"
    result = ok("export", "--model", model, "--top", "7", "--output", str(path), *seen)
    assert result.stdout.strip().splitlines()[-1] == f"Wrote 6,601 rows for 943 users to {path}."
    rows = read_csv(path)
    assert list(rows[0]) == ["user_id", "rank", "movie_id", "title", "score"]
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask  # an ordinary file, not the private temporary one
    assert len(rows) == 943 * 7
    lists = by_user(rows)
    assert sorted(lists) == list(range(1, 944))  # every user, in id order
    assert [int(r["user_id"]) for r in rows] == sorted(int(r["user_id"]) for r in rows)
    for user in USERS:
        shown = json.loads(ok("recommend", "--user", str(user), "--top", "7", "--model", model, *seen,
                              "--json").stdout)
        assert lists[user] == [(r["rank"], r["movie_id"], r["title"], r["score"]) for r in shown]


def test_a_users_list_leaves_out_what_they_rated(home, tmp_path):
    path = tmp_path / "recs.csv"
    ok("export", "--model", "ex-als", "--top", "20", "-o", str(path))
    lists = by_user(read_csv(path))
    served = open_model("ex-als")
    try:
        for user in USERS:
            seen = set(served.catalogue.item_ids[served.seen(served.user_index(user))[0]].tolist())
            assert seen and not seen & {movie for _, movie, _, _ in lists[user]}
    finally:
        served.close()


def test_batches_do_not_change_the_lists(home, tmp_path):
    served = open_model("ex-ae")
    try:
        whole, small = tmp_path / "whole.csv", tmp_path / "small.csv"
        assert export_recommendations(served, whole, users=[5, 1, 900, 3], n=4) == 16
        done = []
        assert export_recommendations(served, small, users=[5, 1, 900, 3], n=4, batch_users=3,
                                      progress=lambda d, t: done.append((d, t))) == 16
        a, b = read_csv(whole), read_csv(small)
        assert [(r["user_id"], r["rank"], r["movie_id"], r["title"]) for r in a] == \
            [(r["user_id"], r["rank"], r["movie_id"], r["title"]) for r in b]
        # A network scores a batch with other float32 kernels than one user: the same numbers but for rounding.
        assert [float(r["score"]) for r in a] == pytest.approx([float(r["score"]) for r in b], rel=1e-6)
        assert done == [(3, 4), (4, 4)]
        assert [int(r["user_id"]) for r in read_csv(whole)][::4] == [5, 1, 900, 3]  # the order given
    finally:
        served.close()


def test_chosen_users_from_a_file_and_the_command_line(home, tmp_path):
    users = tmp_path / "users.csv"
    users.write_text("user_id,note\n42,a\n\n7,b\n42,again\n", encoding="utf-8")
    path = tmp_path / "some.csv"
    result = ok("export", "--model", "ex-als", "--users", str(users), "--user", "1", "--top", "3", "-o", str(path))
    assert result.stdout.strip().splitlines()[-1] == f"Wrote 9 rows for 3 users to {path}."
    assert [int(r["user_id"]) for r in read_csv(path)] == [42] * 3 + [7] * 3 + [1] * 3


def test_parquet_is_readable_and_holds_the_csv_rows(home, tmp_path):
    pytest.importorskip("pyarrow")
    import pandas as pd

    ok("export", "--model", "ex-als", "--user", "42", "--user", "1", "-o", str(tmp_path / "a.csv"))
    result = ok("export", "--model", "ex-als", "--user", "42", "--user", "1", "-o", str(tmp_path / "a.parquet"),
                "--json")
    summary = json.loads(result.stdout)
    assert summary == {"path": str(tmp_path / "a.parquet"), "format": "parquet", "model": "ex-als", "users": 2,
                       "rows": 20, "top": 10, "include_seen": False}
    table = pd.read_parquet(tmp_path / "a.parquet")
    assert list(table.columns) == ["user_id", "rank", "movie_id", "title", "score"]
    assert str(table["score"].dtype) == "float32"
    from_csv = pd.read_csv(tmp_path / "a.csv")
    assert table[["user_id", "rank", "movie_id"]].values.tolist() == from_csv[["user_id", "rank", "movie_id"]]\
        .values.tolist()
    assert table["title"].tolist() == from_csv["title"].tolist()
    assert np.array_equal(table["score"].to_numpy(), from_csv["score"].to_numpy(dtype=np.float32))


def test_format_option_beats_the_suffix(home, tmp_path):
    pytest.importorskip("pyarrow")
    import pandas as pd

    ok("export", "--model", "ex-als", "--user", "1", "-o", str(tmp_path / "recs.out"), "--format", "parquet")
    assert len(pd.read_parquet(tmp_path / "recs.out")) == 10


def test_an_interrupted_export_leaves_no_file_and_keeps_the_old_one(home, tmp_path):
    served = open_model("ex-als")
    path = tmp_path / "recs.csv"
    path.write_text("what the user had\n", encoding="utf-8")

    def stop(done: int, total: int) -> None:
        raise KeyboardInterrupt

    try:
        with pytest.raises(KeyboardInterrupt):
            export_recommendations(served, path, batch_users=10, progress=stop)
    finally:
        served.close()
    assert path.read_text(encoding="utf-8") == "what the user had\n"
    path.chmod(0o640)
    served = open_model("ex-als")
    try:
        assert export_recommendations(served, path, users=[1], n=2) == 2
    finally:
        served.close()
    assert path.stat().st_mode & 0o777 == 0o640  # replaced whole, keeping its permissions
    assert os.listdir(tmp_path) == ["recs.csv"]  # no temporary file left behind


def test_ctrl_c_in_the_command(home, tmp_path, monkeypatch):
    import movierec.recommend

    def ctrl_c(*args, **kwargs):  # while the first batch is ranked: the file is open, nothing is complete
        raise KeyboardInterrupt

    monkeypatch.setattr(movierec.recommend, "rank_rows", ctrl_c)
    result = run("export", "--model", "ex-ae", "-o", str(tmp_path / "recs.parquet"))
    assert result.exit_code == 130
    assert result.stderr.strip() == "Error: Interrupted."
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize(("args", "fragments"), [
    (["--user", "99999"], ["User 99999 is not in ml-100k"]),
    (["--user", "1", "--format", "xlsx"], ["Unknown export format 'xlsx'; choose csv or parquet."]),
])
def test_bad_requests_are_one_sentence_and_write_nothing(home, tmp_path, args, fragments):
    assert_one_line_error(run("export", "--model", "ex-als", "-o", str(tmp_path / "recs.csv"), *args), *fragments)
    assert os.listdir(tmp_path) == []


def test_bad_paths_and_files_are_one_sentence(home, tmp_path):
    base = ["export", "--model", "ex-als"]
    assert_one_line_error(run(*base, "-o", str(tmp_path / "recs.txt")),
                          "Cannot tell the format of", "end it in .csv or .parquet")
    assert_one_line_error(run(*base, "-o", str(tmp_path / "no" / "recs.csv")), "does not exist")
    bad = tmp_path / "users.txt"
    bad.write_text("user_id\n1\nabc\n", encoding="utf-8")
    assert_one_line_error(run(*base, "--users", str(bad), "-o", str(tmp_path / "r.csv")),
                          "line 3: 'abc' is not a user id")
    (tmp_path / "empty.txt").write_text("\n", encoding="utf-8")
    assert_one_line_error(run(*base, "--users", str(tmp_path / "empty.txt"), "-o", str(tmp_path / "r.csv")),
                          "has no user ids")
    assert not (tmp_path / "r.csv").exists()


def test_parquet_without_pyarrow_says_how_to_install_it(home, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # import pyarrow now raises ImportError
    result = run("export", "--model", "ex-als", "--user", "1", "-o", str(tmp_path / "recs.parquet"))
    assert_one_line_error(result, 'install it with pip install "movierec[parquet]"')
    assert os.listdir(tmp_path) == []


def test_a_factor_model_exports_csv_without_torch_or_pandas(home, tmp_path):
    args = ["export", "--model", "ex-als", "--top", "3", "-o", str(tmp_path / "recs.csv")]
    proc = run_cli_in_subprocess(home, *args)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.rstrip().endswith("IMPORTED False False")
    assert len(read_csv(tmp_path / "recs.csv")) == 943 * 3


@pytest.mark.parametrize("users", [[0, 1, 2, 3], [7], [9, 3, 500], list(range(900, 943))])
def test_seen_many_is_seen_user_by_user(home, users):
    served = open_model("ex-als")
    try:
        rows, items = served.seen_many(np.array(users))
        want = [(r, int(i)) for r, u in enumerate(users) for i in served.seen(u)[0]]
        assert list(zip(rows.tolist(), items.tolist())) == want
    finally:
        served.close()
