"""The Amazon-book-shaped synthetic generator at tiny scale: counts, long tails, determinism, loading."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

from cases import is_symmetric
from kgglm.data.loader import load_dataset
from kgglm.synthetic.large import (
    DEFAULT_NAME,
    INTER_HEADER,
    KG_HEADER,
    LINK_HEADER,
    LargeSpec,
    main,
    make_large_data,
    write_large_synthetic,
)

SCALE = 0.01  # 700 users, 250 items, 8.5k interactions, 890 KG entities, 25k triples


@pytest.fixture(scope="module")
def data():
    return make_large_data(SCALE, seed=0)


@pytest.fixture(scope="module")
def written(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("large")
    write_large_synthetic(out, scale=SCALE, seed=0)
    return out


def test_scaled_counts_follow_amazon_book():
    full, tiny = LargeSpec(), LargeSpec().scaled(SCALE)
    assert (full.n_users, full.n_items, full.n_interactions, full.n_kg_entities, full.n_triples) == (
        70_000, 25_000, 850_000, 89_000, 2_500_000)
    assert (tiny.n_users, tiny.n_items, tiny.n_interactions, tiny.n_kg_entities, tiny.n_triples) == (
        700, 250, 8_500, 890, 25_000)
    assert tiny.n_relations == full.n_relations == 39
    with pytest.raises(ValueError, match="scale"):
        LargeSpec().scaled(0)


def test_exact_counts_and_distinct_rows(data):
    spec = data.spec
    assert len(data.users) == spec.n_interactions
    assert len(data.heads) == spec.n_triples
    # every user, item, entity and relation occurs: the loader will see exactly these counts
    assert np.array_equal(np.unique(data.users), np.arange(spec.n_users))
    assert np.array_equal(np.unique(data.items), np.arange(spec.n_items))
    assert np.array_equal(np.unique(np.concatenate([data.heads, data.tails])), np.arange(spec.n_kg_entities))
    assert np.array_equal(np.unique(data.relations), np.arange(spec.n_relations))
    # no repeated interaction, no repeated triple, no self-loop
    assert len(np.unique(data.users * spec.n_items + data.items)) == spec.n_interactions
    keys = (data.heads * spec.n_relations + data.relations) * spec.n_kg_entities + data.tails
    assert len(np.unique(keys)) == spec.n_triples
    assert not (data.heads == data.tails).any()
    assert np.bincount(data.users).min() >= spec.min_user_degree
    assert set(np.unique(data.ratings)) <= {1, 2, 3, 4, 5}


def test_degrees_are_long_tailed(data):
    """Max degree far above the median for users, items and entities (a uniform draw would not be)."""
    for name, values in (("user", data.users), ("item", data.items),
                         ("entity", np.concatenate([data.heads, data.tails]))):
        deg = np.bincount(values)
        assert deg.max() >= 5 * np.median(deg), name
    rel = np.bincount(data.relations)
    assert rel.max() >= 10 * rel.min()


def test_timestamps_increase_in_time_per_user_but_not_by_item(data):
    order = np.lexsort((data.timestamps, data.users))
    assert np.array_equal(order, np.arange(len(order)))  # rows are by user, then time
    assert (data.timestamps > 9e8).all()
    first_user = data.users == 0
    assert not np.all(np.diff(data.items[first_user]) > 0)  # items are not in id order


def test_same_seed_same_files_other_seed_other_files(tmp_path, written):
    def digest(root: Path) -> str:
        folder = root / DEFAULT_NAME
        return hashlib.sha256(b"".join((folder / f"{DEFAULT_NAME}.{ext}").read_bytes()
                                       for ext in ("inter", "kg", "link"))).hexdigest()

    write_large_synthetic(tmp_path / "a", scale=SCALE, seed=0)
    write_large_synthetic(tmp_path / "b", scale=SCALE, seed=1)
    assert digest(tmp_path / "a") == digest(written)
    assert digest(tmp_path / "b") != digest(written)


def test_atomic_file_headers(written):
    folder = written / DEFAULT_NAME
    for ext, header in (("inter", INTER_HEADER), ("kg", KG_HEADER), ("link", LINK_HEADER)):
        first = (folder / f"{DEFAULT_NAME}.{ext}").read_text().split("\n", 1)[0]
        assert first == header
    assert not list(folder.glob("*.tmp"))


def test_loads_through_the_loader_with_the_generated_counts(written, data):
    ds = load_dataset(DEFAULT_NAME, data_path=written, download=False)
    spec = data.spec
    assert (ds.n_users, ds.n_items, ds.n_entities) == (spec.n_users, spec.n_items, spec.n_entities)
    assert ds.n_relations == spec.n_relations + 1  # + the user-item relation
    assert ds.stats["interactions"] == spec.n_interactions
    assert ds.stats["triples"] == spec.n_triples
    assert ds.stats["linked_items_in_kg"] == spec.n_items
    assert sum(len(ds.splits[s]) for s in ("train", "valid", "test")) == spec.n_interactions
    assert len(ds.eval_users("test")) == spec.n_users  # every user has >= 5 items, so a test item
    assert is_symmetric(ds.graph)


def test_command_line(tmp_path, capsys):
    folder = main(["--out", str(tmp_path), "--scale", "0.002", "--seed", "3", "--name", "tiny"])
    assert folder == tmp_path / "tiny"
    assert "wrote tiny" in capsys.readouterr().out
    ds = load_dataset("tiny", data_path=tmp_path, download=False)
    assert ds.n_users == LargeSpec().scaled(0.002).n_users
