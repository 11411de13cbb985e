"""The synthetic knowledge-signal dataset: its knobs, and its atomic files round-tripping through the loader."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from kgglm.data.loader import load_dataset
from kgglm.synthetic.small import main, make_knowledge_dataset, make_synthetic_dataset, write_atomic

SMALL = {"n_users": 80, "n_items": 150, "n_genres": 6, "n_actors": 40, "n_directors": 20, "genres_per_item": 2,
         "actors_per_item": 3, "liked_values": 3, "interactions_per_user": 12, "signal_share": 0.7,
         "popularity_skew": 1.0, "seed": 3}


def all_interactions(ds) -> tuple[np.ndarray, np.ndarray]:
    users = np.concatenate([ds.splits[s].users for s in ("train", "valid", "test")])
    items = np.concatenate([ds.splits[s].items for s in ("train", "valid", "test")])
    return users, items


def item_entity_tokens(ds) -> list[set[str]]:
    """Tokens of the KG entities of every item, read from the triples (independently of the generator)."""
    out: list[set[str]] = [set() for _ in range(ds.n_items)]
    offset = ds.n_users + ds.n_items
    for h, t in zip(ds.kg_heads, ds.kg_tails):
        if ds.n_users <= h < offset and t >= offset:
            out[h - ds.n_users].add(str(ds.entity_tokens[t - offset]))
    return out


def matching_share(ds) -> float:
    """Share of interactions whose item has one of its user's liked attribute values."""
    entities = item_entity_tokens(ds)
    users, items = all_interactions(ds)
    liked = [set(v) for v in ds.stats["liked"]]
    return float(np.mean([bool(entities[i] & liked[u]) for u, i in zip(users, items)]))


def test_sizes_and_attributes_follow_the_knobs():
    ds = make_knowledge_dataset(**{**SMALL, "signal_share": 0.0})
    users, items = all_interactions(ds)
    assert ds.n_users == 80 and 140 <= ds.n_items <= 150  # items nobody drew are left out
    assert ds.graph.n_nodes == 80 + ds.n_items + 6 + 40 + 20 - (66 - ds.n_entities)  # no orphan movie entities
    assert all(str(t).split("_")[0] in ("genre", "actor", "director") for t in ds.entity_tokens)
    assert (np.bincount(users, minlength=80) == 12).all()  # no signal: every user gets all 12 from noise
    assert len(set(zip(users.tolist(), items.tolist()))) == len(users)
    relations = ds.relation_tokens[ds.kg_relations]
    for rel, per_item in (("has_genre", 2), ("starring", 3), ("directed_by", 1)):
        heads = ds.kg_heads[relations == rel]
        assert (np.bincount(heads - ds.n_users, minlength=ds.n_items) == per_item).all(), rel
    kinds = {str(t).split("_")[0] for t in ds.entity_tokens}
    assert kinds == {"genre", "actor", "director"}
    assert all(len(v) == 3 for v in ds.stats["liked"])
    split_sizes = [len(ds.splits[s]) for s in ("train", "valid", "test")]
    assert split_sizes == [80 * 10, 80, 80]  # RecBole's RS counts: floor(0.1 * 12) = 1 each for valid and test


def test_signal_share_one_means_every_interaction_matches_a_liked_value():
    ds = make_knowledge_dataset(**{**SMALL, "signal_share": 1.0})
    assert matching_share(ds) == 1.0


def test_signal_share_raises_the_matching_share():
    shares = [matching_share(make_knowledge_dataset(**{**SMALL, "signal_share": s})) for s in (0.0, 0.5, 1.0)]
    assert shares[0] < 0.5 < shares[1] < shares[2] == 1.0


def test_popularity_skew_concentrates_interactions():
    def top_share(skew: float) -> float:
        ds = make_knowledge_dataset(**{**SMALL, "signal_share": 0.0, "popularity_skew": skew})
        counts = np.sort(np.bincount(all_interactions(ds)[1]))[::-1]
        return counts[:15].sum() / counts.sum()  # the 10% most popular items

    flat, skewed = top_share(0.0), top_share(1.5)
    assert flat < 0.2 and skewed > 0.4


def test_same_seed_same_data_other_seed_other_data():
    a, b, c = (make_knowledge_dataset(**{**SMALL, "seed": s}) for s in (3, 3, 4))
    assert np.array_equal(a.splits["test"].items, b.splits["test"].items)
    assert np.array_equal(a.item_tokens, b.item_tokens) and np.array_equal(a.kg_tails, b.kg_tails)
    assert not np.array_equal(all_interactions(a)[1], all_interactions(c)[1])


def test_bad_knobs_are_rejected():
    with pytest.raises(ValueError, match="signal_share"):
        make_knowledge_dataset(**{**SMALL, "signal_share": 1.5})
    with pytest.raises(ValueError, match="interactions_per_user"):
        make_knowledge_dataset(**{**SMALL, "interactions_per_user": 500})


def assert_same_dataset(a, b) -> None:
    for name in ("user_tokens", "item_tokens", "entity_tokens", "relation_tokens", "item_names", "kg_heads",
                 "kg_relations", "kg_tails"):
        assert np.array_equal(getattr(a, name), getattr(b, name)), name
    for split in ("train", "valid", "test"):
        assert np.array_equal(a.splits[split].users, b.splits[split].users), split
        assert np.array_equal(a.splits[split].items, b.splits[split].items), split


def test_atomic_files_round_trip_through_the_loader(tmp_path: Path):
    ds = make_knowledge_dataset(**SMALL, split=(0.8, 0.1, 0.1))
    folder = write_atomic(ds, tmp_path)
    assert folder == tmp_path / "synthetic-kg"
    for ext in ("inter", "kg", "link", "item", "user", "train.inter", "valid.inter", "test.inter"):
        assert (folder / f"synthetic-kg.{ext}").is_file(), ext
    first = (folder / "synthetic-kg.inter").read_text().splitlines()[0]
    assert first == "user_id:token\titem_id:token\trating:float\ttimestamp:float"  # ml-100k's header
    assert (folder / "synthetic-kg.kg").read_text().startswith("head_id:token\trelation_id:token\ttail_id:token\n")
    # the loader's own random split with the same seed gives the same dataset ...
    assert_same_dataset(ds, load_dataset("synthetic-kg", data_path=tmp_path, seed=3, download=False))
    # ... and the benchmark files hold the same split whatever the seed (ids follow their own order)
    bench = load_dataset("synthetic-kg", data_path=tmp_path, seed=99, download=False,
                         benchmark_filename=["train", "valid", "test"])
    for split in ("train", "valid", "test"):
        assert token_pairs(bench, split) == token_pairs(ds, split), split


def token_pairs(ds, split: str) -> list[tuple[str, str]]:
    inter = ds.splits[split]
    return sorted(zip(ds.user_tokens[inter.users].tolist(), ds.item_tokens[inter.items].tolist()))


def test_write_atomic_of_any_dataset_keeps_its_split(tmp_path: Path):
    ds = make_synthetic_dataset(seed=2)  # no timestamps, its own split
    write_atomic(ds, tmp_path)
    back = load_dataset("synthetic", data_path=tmp_path, download=False, benchmark_filename=["train", "valid", "test"])
    for split in ("train", "valid", "test"):
        assert token_pairs(back, split) == token_pairs(ds, split), split


def test_write_atomic_from_knobs_and_command_line(tmp_path: Path, capsys):
    knobs = {**SMALL, "name": "kgsig"}
    folder = write_atomic(knobs, tmp_path / "a")
    assert_same_dataset(make_knowledge_dataset(**knobs), load_dataset("kgsig", data_path=folder.parent, seed=3))
    out = main(["--out", str(tmp_path / "b"), "--name", "kgsig", "--n-users", "80", "--n-items", "150",
                "--n-genres", "6", "--n-actors", "40", "--n-directors", "20", "--liked-values", "3",
                "--interactions-per-user", "12", "--signal-share", "0.7", "--seed", "3",
                "--split", "0.8", "0.1", "0.1"])
    assert "kgsig: 80 users" in capsys.readouterr().out
    assert (out / "kgsig.inter").read_bytes() == (folder / "kgsig.inter").read_bytes()
