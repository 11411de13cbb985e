"""Durable writes: content, nothing left on failure, fsync of the file and its directory, directory swaps."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from kgglm import durable


@pytest.fixture()
def fsynced(monkeypatch) -> list[int]:
    """Inode numbers of what os.fsync was called on (the call still happens)."""
    seen: list[int] = []
    real = os.fsync

    def spy(fd):
        seen.append(os.fstat(fd).st_ino)
        return real(fd)

    monkeypatch.setattr(os, "fsync", spy)
    return seen


def test_text_json_bytes_land_whole_and_are_fsynced_with_their_directory(tmp_path, fsynced):
    durable.write_text(tmp_path / "a.txt", "héllo\n")
    durable.write_json(tmp_path / "b.json", {"x": [1, 2.5]}, indent=2)
    durable.write_bytes(tmp_path / "c.bin", b"\x00\x01")
    with durable.open_atomic(tmp_path / "d.tsv", "w", newline="\n") as f:
        f.write("a\tb\n")
    assert (tmp_path / "a.txt").read_bytes() == "héllo\n".encode()
    assert json.loads((tmp_path / "b.json").read_text()) == {"x": [1, 2.5]}
    assert (tmp_path / "c.bin").read_bytes() == b"\x00\x01"
    assert (tmp_path / "d.tsv").read_bytes() == b"a\tb\n"
    assert sorted(os.listdir(tmp_path)) == ["a.txt", "b.json", "c.bin", "d.tsv"]  # no temporary left
    for name in os.listdir(tmp_path):  # the file renamed into place is the one that was fsync-ed
        assert (tmp_path / name).stat().st_ino in fsynced
    assert tmp_path.stat().st_ino in fsynced  # and the directory, after the rename


def test_new_files_get_the_usual_mode(tmp_path):
    durable.write_text(tmp_path / "a", "x")
    plain = tmp_path / "b"
    plain.write_text("x")
    assert (tmp_path / "a").stat().st_mode == plain.stat().st_mode  # not mkstemp's 0600


@pytest.mark.parametrize("where", ["body", "fsync"])
def test_a_failed_write_keeps_the_old_file_and_leaves_nothing(tmp_path, monkeypatch, where):
    target = tmp_path / "f.json"
    target.write_text("old")
    if where == "fsync":
        def broken(fd):
            raise OSError("disk gone")

        monkeypatch.setattr(os, "fsync", broken)
    with pytest.raises(OSError, match="disk gone"), durable.open_atomic(target) as f:
        f.write("new, half")
        if where == "body":
            raise OSError("disk gone")
    assert target.read_text() == "old"
    assert os.listdir(tmp_path) == ["f.json"]


def test_open_atomic_refuses_other_modes(tmp_path):
    with pytest.raises(ValueError, match="mode"), durable.open_atomic(tmp_path / "x", "a"):
        pass


def test_move_fsyncs_then_renames(tmp_path, fsynced):
    src = tmp_path / "stage" / "f"
    src.parent.mkdir()
    src.write_text("data")
    ino = src.stat().st_ino
    durable.move(src, tmp_path / "f")
    assert (tmp_path / "f").read_text() == "data" and not src.exists()
    assert ino in fsynced and tmp_path.stat().st_ino in fsynced


def _fill(directory: Path, text: str) -> None:
    (directory / "sub").mkdir()
    (directory / "a").write_text(text)
    (directory / "sub" / "b").write_text(text * 2)


def _read(directory: Path) -> tuple[str, str]:
    return (directory / "a").read_text(), (directory / "sub" / "b").read_text()


@pytest.mark.parametrize("swap", ["exchange", "fallback"])
def test_atomic_dir_replaces_a_directory_and_fsyncs_its_files(tmp_path, monkeypatch, fsynced, swap):
    if swap == "fallback":
        monkeypatch.setattr(durable, "_renameat2", None)  # as on a system without renameat2
    final = tmp_path / "best"
    with durable.atomic_dir(final, tag="run1") as tmp:
        assert tmp.parent == tmp_path and tmp.name.startswith(".best.tmp-run1-")
        _fill(tmp, "one")
    assert _read(final) == ("one", "oneone")
    inodes = {(final / "a").stat().st_ino, (final / "sub" / "b").stat().st_ino, final.stat().st_ino,
              (final / "sub").stat().st_ino, tmp_path.stat().st_ino}
    assert inodes <= set(fsynced)
    with durable.atomic_dir(final) as tmp:
        _fill(tmp, "two")
    assert _read(final) == ("two", "twotwo")
    assert os.listdir(tmp_path) == ["best"]  # the old content and the temporary folder are gone


def test_a_failed_directory_write_keeps_the_old_one(tmp_path):
    final = tmp_path / "best"
    with durable.atomic_dir(final) as tmp:
        _fill(tmp, "one")
    with pytest.raises(RuntimeError, match="killed"), durable.atomic_dir(final) as tmp:
        (tmp / "a").write_text("half")
        raise RuntimeError("killed")
    assert _read(final) == ("one", "oneone") and os.listdir(tmp_path) == ["best"]


def test_replacing_a_directory_never_leaves_the_name_absent(tmp_path, monkeypatch):
    """Every rename the swap makes is checked: the final name must hold a complete directory after it."""
    final = tmp_path / "best"
    with durable.atomic_dir(final) as tmp:
        _fill(tmp, "one")
    seen = []

    def checked(real):
        def call(*args):
            out = real(*args)
            seen.append(_read(final))  # raises FileNotFoundError when the name is absent or half there
            return out
        return call

    monkeypatch.setattr(os, "replace", checked(os.replace))
    monkeypatch.setattr(os, "rename", checked(os.rename))
    monkeypatch.setattr(durable, "exchange", checked(durable.exchange))
    if durable._renameat2 is None:
        pytest.skip("no renameat2 here: the fallback moves the old directory aside first")
    with durable.atomic_dir(final) as tmp:
        _fill(tmp, "two")
    assert seen == [("two", "twotwo")]  # one step, from complete old to complete new


def test_remove_leftovers_removes_only_what_matches(tmp_path):
    (tmp_path / ".step-1.tmp-runA-x").mkdir()
    (tmp_path / ".step-1.tmp-runA-x" / "f").write_text("half")
    (tmp_path / ".best.tmp-runA-y").mkdir()
    (tmp_path / ".best.tmp-runB-z").mkdir()
    (tmp_path / "step-1").mkdir()
    removed = durable.remove_leftovers(tmp_path, ".*.tmp-runA-*")
    assert sorted(p.name for p in removed) == [".best.tmp-runA-y", ".step-1.tmp-runA-x"]
    assert sorted(os.listdir(tmp_path)) == [".best.tmp-runB-z", "step-1"]
    assert durable.remove_leftovers(tmp_path / "missing", "*") == []
