"""Tags: read from the releases that ship them, hardened against hostile files, used as the `tags` features."""

from __future__ import annotations

import logging

import numpy as np
import pytest
from conftest import isolated_home
from synthetic import TAG_THEMES, tag_taste_archive

from movierec.data import download
from movierec.data.features import movie_features
from movierec.data.movielens import load_dataset
from movierec.data.tags import MAX_TAG_CHARS, TOP_TAGS, movie_tags, read_tags, tags_path


@pytest.fixture(scope="module")
def tagged(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tags")
    archive, theme = tag_taste_archive()
    (folder / "tagged.zip").write_bytes(archive)
    with isolated_home(folder / "home"):
        download.fetch("ml-20m", from_file=folder / "tagged.zip", verify=False)
        path = tags_path("ml-20m")
        original = path.read_bytes()
        yield load_dataset("ml-20m"), path
        path.write_bytes(original)


def _notes(caplog):
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


def test_tags_are_normalised_and_each_movie_has_its_theme(tagged):
    data, _ = tagged
    rows = movie_tags(data)
    assert rows is not None and len(rows) == data.n_items
    for item, row in enumerate(rows):
        assert row == [TAG_THEMES[(int(data.item_ids[item]) - 1) // 30]]
    names = movie_features(data, tags=True, genres=False).names
    assert names == tuple(sorted(f"tag:{t}" for t in TAG_THEMES))


def test_hostile_tag_files_are_left_out_with_one_note_each(tagged, caplog):
    data, path = tagged
    good = path.read_bytes()
    try:
        path.write_bytes(bytes(np.random.default_rng(0).integers(0, 256, 50_000, dtype=np.uint8)))
        with caplog.at_level(logging.WARNING, logger="movierec"):
            assert movie_tags(data) is None
        assert len(_notes(caplog)) == 1 and "not a text file" in _notes(caplog)[0]
        caplog.clear()
        huge = "x" * 1_000_000
        many = "".join(f"9,1,word{k},1\n" for k in range(10_000))
        path.write_bytes(good + f'9,2,"{huge}",1\n{many}5,999999,"space opera",1\n7,3,"",1\nnot a line\n'.encode()
                         + "8,4,caf\xe9 noir,1\n".encode("latin-1"))
        with caplog.at_level(logging.WARNING, logger="movierec"):
            rows = movie_tags(data)
        notes = _notes(caplog)
        assert rows is not None and all(len(r) <= TOP_TAGS for r in rows)
        assert rows[0] == ["space opera"] and rows[1] == ["space opera"]  # one person's 10,000 words: not a theme
        assert sorted(n.split(": ", 1)[1].split(" ", 2)[1] for n in notes) == ["line(s)", "tag(s)", "tag(s)"]
        assert any("does not list" in n for n in notes) and any("empty" in n for n in notes)
        found = read_tags(path)
        assert found is not None and max(len(t) for t in found.tags) == MAX_TAG_CHARS and "café noir" in found.tags
    finally:
        path.write_bytes(good)


def test_a_tags_dat_file_is_read_with_its_separators(tmp_path):
    path = tmp_path / "tags.dat"
    path.write_text("15::4973::Excellent!::1215184630\n20::1747::  Dark   Comedy ::1188263880\n")
    found = read_tags(path)
    assert found is not None and list(found.tags) == ["excellent!", "dark comedy"]
    assert list(found.movie_ids) == [4973, 1747] and list(found.user_ids) == [15, 20]


def test_a_missing_tags_file_is_a_release_without_tags_with_one_note_when_asked(tagged, caplog):
    data, path = tagged
    good = path.read_bytes()
    path.unlink()
    try:
        with caplog.at_level(logging.WARNING, logger="movierec"):
            assert movie_tags(data, asked=False) is None
            assert _notes(caplog) == []
            assert movie_tags(data, asked=True) is None
        assert len(_notes(caplog)) == 1 and "movierec fetch ml-20m --force" in _notes(caplog)[0]
    finally:
        path.write_bytes(good)
