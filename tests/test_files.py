"""Atomic writing (`faceedittalker.utils.files`): the target appears complete or not at all, no temporary is left."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from faceedittalker.utils.files import (
    COMPLETE_MARKER,
    TMP_PREFIX,
    atomic_directory,
    atomic_write,
    ensure_directory,
    move_directory,
    temporary_sibling,
    write_json_atomic,
    write_text_atomic,
)


class Boom(Exception):
    pass


def test_temporary_name_is_hidden_unique_and_keeps_the_suffix(tmp_path):
    first, second = temporary_sibling(tmp_path / "grid.png"), temporary_sibling(tmp_path / "grid.png")
    assert first != second and first.parent == tmp_path
    assert first.name.startswith(TMP_PREFIX) and first.name.endswith("-grid.png") and first.suffix == ".png"


def test_atomic_write_writes_the_content_with_format_inferring_writers(tmp_path):
    array = np.arange(12, dtype=np.float32).reshape(3, 4)
    with atomic_write(tmp_path / "a.npy") as tmp:
        np.save(tmp, array)  # np.save appends ".npy" unless the name ends with it
    picture = np.random.default_rng(0).integers(0, 256, (8, 8, 3), dtype=np.uint8)
    with atomic_write(tmp_path / "b.png") as tmp:
        Image.fromarray(picture).save(tmp)  # PIL picks the format from the suffix
    write_text_atomic(tmp_path / "c.txt", "hello\n")
    write_json_atomic(tmp_path / "d.json", {"step": 3, "names": ["a"]}, indent=1)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.npy", "b.png", "c.txt", "d.json"]
    assert np.array_equal(np.load(tmp_path / "a.npy"), array)
    with Image.open(tmp_path / "b.png") as image:
        assert image.format == "PNG" and np.array_equal(np.asarray(image), picture)
    assert (tmp_path / "c.txt").read_text() == "hello\n"
    assert (tmp_path / "d.json").read_text() == json.dumps({"step": 3, "names": ["a"]}, indent=1)


def test_failed_write_leaves_neither_target_nor_temporary(tmp_path):
    with pytest.raises(Boom), atomic_write(tmp_path / "out.txt") as tmp:
        tmp.write_text("half")
        raise Boom
    assert list(tmp_path.iterdir()) == []


def test_failed_write_keeps_the_existing_target(tmp_path):
    target = tmp_path / "out.json"
    write_json_atomic(target, {"version": 1})
    with pytest.raises(Boom), atomic_write(target) as tmp:
        tmp.write_text('{"version": ')
        raise Boom
    assert json.loads(target.read_text()) == {"version": 1}
    assert list(tmp_path.iterdir()) == [target]
    write_json_atomic(target, {"version": 2})  # a successful write replaces it
    assert json.loads(target.read_text()) == {"version": 2}


def test_atomic_directory_appears_complete_and_replaces_an_old_one(tmp_path):
    target = tmp_path / "deep" / "export"
    with atomic_directory(target) as tmp:
        assert tmp.is_dir() and not target.exists()
        (tmp / "weights.txt").write_text("old")
    assert (target / "weights.txt").read_text() == "old"
    with atomic_directory(target) as tmp:
        (tmp / "other.txt").write_text("new")
    assert sorted(p.name for p in target.iterdir()) == ["other.txt"]  # replaced, not merged
    assert sorted(p.name for p in target.parent.iterdir()) == ["export"]


def test_failed_directory_keeps_the_old_one_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "export"
    with atomic_directory(target) as tmp:
        (tmp / "weights.txt").write_text("good")
    with pytest.raises(Boom), atomic_directory(target) as tmp:
        (tmp / "weights.txt").write_text("half")
        raise Boom
    assert (target / "weights.txt").read_text() == "good"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["export"]


def test_directory_without_replace_refuses_an_existing_target(tmp_path):
    target = tmp_path / "set"
    target.mkdir()
    (target / "keep.txt").write_text("theirs")
    with pytest.raises(FileExistsError, match="already exists"), atomic_directory(target, replace=False) as tmp:
        (tmp / "mine.txt").write_text("mine")
    assert sorted(p.name for p in target.iterdir()) == ["keep.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["set"]
    source = tmp_path / "source"
    source.mkdir()
    with pytest.raises(FileExistsError):
        move_directory(source, target, replace=False)
    assert source.is_dir()  # left for the caller


def test_ensure_directory_writes_once(tmp_path):
    calls = []

    def write(folder):
        calls.append(folder)
        (folder / "data.txt").write_text("content")
        (folder / COMPLETE_MARKER).write_text("")

    target = tmp_path / "cache"
    assert ensure_directory(target, write) == target
    assert ensure_directory(target, write) == target
    assert len(calls) == 1 and (target / "data.txt").read_text() == "content"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache"]


def test_ensure_directory_replaces_an_incomplete_folder(tmp_path):
    target = tmp_path / "cache"
    target.mkdir()
    (target / "junk.txt").write_text("half-written, no marker")

    def write(folder):
        (folder / COMPLETE_MARKER).write_text("")

    ensure_directory(target, write)
    assert sorted(p.name for p in target.iterdir()) == [COMPLETE_MARKER]


def test_ensure_directory_keeps_the_folder_another_process_finished_first(tmp_path):
    target = tmp_path / "cache"

    def write(folder):  # while we write, another process completes the same folder
        target.mkdir()
        (target / "winner.txt").write_text("first")
        (target / COMPLETE_MARKER).write_text("")
        (folder / "loser.txt").write_text("second")
        (folder / COMPLETE_MARKER).write_text("")

    assert ensure_directory(target, write) == target
    assert sorted(p.name for p in target.iterdir()) == [COMPLETE_MARKER, "winner.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache"]


def test_ensure_directory_without_the_marker_is_an_error(tmp_path):
    target = tmp_path / "cache"

    def write(folder):  # another process leaves an incomplete folder at the target meanwhile
        target.mkdir()
        (target / "junk.txt").write_text("")

    with pytest.raises(FileExistsError):
        ensure_directory(target, write)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache"]
