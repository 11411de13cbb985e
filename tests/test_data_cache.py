"""The parsed-dataset cache (kgglm.data.cache): same dataset as parsing, invalidated by any change of
the files or options, never trusted when broken, and a hit needs no pandas."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from atomic_helpers import write_atomic_dataset
from kgglm.data import cache as dcache
from kgglm.data import loader
from kgglm.data.loader import load_dataset

HOUR = 3600.0


def age(folder: Path, seconds: float = HOUR) -> None:
    """Date the dataset's files ``seconds`` back (files this fresh are never cached: racy timestamps)."""
    t = time.time() - seconds
    for f in folder.iterdir():
        os.utime(f, (t, t))


@pytest.fixture()
def toy(tmp_path, monkeypatch):
    """An aged atomic-file dataset and an empty cache folder of its own."""
    root = write_atomic_dataset(tmp_path / "data")
    age(root / "toy")
    monkeypatch.setenv(dcache.ENV, str(tmp_path / "cache"))
    return root


def cache_files(root: Path) -> list[Path]:
    return sorted((root.parent / "cache").glob("*.npz"))


def assert_same(a, b, where: str = "dataset") -> None:
    """Field by field, arrays with their dtypes and element types (load_seconds aside)."""
    if dataclasses.is_dataclass(a):
        assert type(a) is type(b), where
        for f in dataclasses.fields(a):
            if f.name != "_cache":
                assert_same(getattr(a, f.name), getattr(b, f.name), f"{where}.{f.name}")
    elif isinstance(a, dict):
        assert set(a) == set(b), where
        for k in a:
            if k != "load_seconds":
                assert_same(a[k], b[k], f"{where}[{k!r}]")
    elif isinstance(a, np.ndarray):
        assert isinstance(b, np.ndarray) and a.dtype == b.dtype and a.shape == b.shape, where
        assert np.array_equal(a, b), where
        if a.dtype == object:
            assert [type(x) for x in a.tolist()] == [type(x) for x in b.tolist()], where
    else:
        assert type(a) is type(b) and a == b, (where, a, b)


def test_cached_dataset_is_the_parsed_one(toy, monkeypatch):
    parsed = load_dataset("toy", data_path=toy, cache=False)
    assert cache_files(toy) == []
    first = load_dataset("toy", data_path=toy)  # miss: parses and writes
    assert len(cache_files(toy)) == 1
    monkeypatch.setattr(loader, "_parse", lambda *a, **k: pytest.fail("parsed again despite the cache"))
    hit = load_dataset("toy", data_path=toy)
    assert_same(parsed, first)
    assert_same(parsed, hit)
    assert hit.stats["path"] == str(toy / "toy")
    # derived views work on the cached arrays
    assert np.array_equal(hit.seen_items("test")[1], parsed.seen_items("test")[1])
    assert np.array_equal(hit.graph.edge_keys, parsed.graph.edge_keys)
    with np.load(cache_files(toy)[0], allow_pickle=False) as npz:  # plain arrays: no pickle needed
        assert all(npz[name].dtype != object for name in npz.files)


def test_a_changed_file_or_option_is_a_new_entry(toy):
    base = load_dataset("toy", data_path=toy)
    inter = toy / "toy" / "toy.inter"
    lines = inter.read_text().splitlines()
    inter.write_text("\n".join(lines[:-5]) + "\n")  # five interactions fewer
    age(toy / "toy", HOUR / 2)
    changed = load_dataset("toy", data_path=toy)
    assert len(changed.splits["train"]) + len(changed.splits["valid"]) + len(changed.splits["test"]) == \
        sum(len(base.splits[s]) for s in ("train", "valid", "test")) - 5
    assert_same(changed, load_dataset("toy", data_path=toy, cache=False))
    other_seed = load_dataset("toy", data_path=toy, seed=7)
    assert_same(other_seed, load_dataset("toy", data_path=toy, seed=7, cache=False))
    assert len(cache_files(toy)) == 3


def test_fresh_files_are_not_cached(tmp_path, monkeypatch):
    root = write_atomic_dataset(tmp_path / "data")  # written just now: a second write could keep size+mtime
    monkeypatch.setenv(dcache.ENV, str(tmp_path / "cache"))
    load_dataset("toy", data_path=root)
    assert not (tmp_path / "cache").exists() or not list((tmp_path / "cache").glob("*.npz"))


@pytest.mark.parametrize("value", ["off", "0", "false"])
def test_cache_can_be_turned_off(toy, monkeypatch, value):
    monkeypatch.setenv(dcache.ENV, value)
    assert dcache.cache_folder() is None
    load_dataset("toy", data_path=toy)
    assert cache_files(toy) == []


def test_a_broken_cache_file_is_a_miss(toy, caplog):
    parsed = load_dataset("toy", data_path=toy)
    (file,) = cache_files(toy)
    file.write_bytes(file.read_bytes()[:1000])
    again = load_dataset("toy", data_path=toy)
    assert "unreadable dataset cache" in caplog.text
    assert_same(parsed, again)
    assert_same(parsed, load_dataset("toy", data_path=toy))  # rewritten, and read back


def test_find_folder_agrees_with_resolve_dataset(toy, tmp_path, monkeypatch):
    from kgglm.data.download import resolve_dataset

    assert dcache.find_folder("toy", toy) == resolve_dataset("toy", toy, download=False)
    monkeypatch.setenv("KGGLM_DATA", str(toy))
    assert dcache.find_folder("toy", None) == resolve_dataset("toy", None, download=False)
    assert dcache.find_folder("toy", tmp_path / "elsewhere") == resolve_dataset("toy", tmp_path / "elsewhere",
                                                                                download=False)
    assert dcache.find_folder("../toy", toy) is None and dcache.find_folder("nothing", toy) is None


def test_old_entries_are_pruned(toy, monkeypatch):
    monkeypatch.setattr(dcache, "KEEP", 2)
    for seed in (1, 2, 3):
        load_dataset("toy", data_path=toy, seed=seed)
        time.sleep(0.01)
    assert len(cache_files(toy)) == 2  # the newest two


def test_a_cache_hit_imports_no_pandas(toy):
    load_dataset("toy", data_path=toy)  # writes the entry
    code = ("import sys; from kgglm.data import load_dataset; "
            f"d = load_dataset('toy', data_path={str(toy)!r}); "
            "assert d.n_users > 0; print('pandas' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=os.environ)
    assert out.stdout.strip() == "False", out.stderr
