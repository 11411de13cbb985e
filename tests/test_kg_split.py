"""KG triple splits: seeded ratios, pre-split files with de-duplication, and the train-only guarantee
(no valid/test triple in the graph, the pre-training walks or the fine-tuning triple paths)."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from kgglm.data.atomic import DatasetError
from kgglm.data.kg_split import edge_keys, load_kg_split, normalize_kg_eval_args, seeded_split
from kgglm.paths.sampling import sample_pretrain_paths
from kgglm.paths.vocab import Vocabulary
from kgglm.synthetic.small import make_synthetic_dataset
from kgglm.tasks.kg_completion import triple_corpus


@pytest.fixture()
def synth():
    return make_synthetic_dataset(n_items=40, n_clusters=4, entities_per_cluster=3)


def _keys(triples, data):
    return set(edge_keys(triples, data.graph.n_nodes, data.n_relations).tolist())


def test_seeded_ratio_split_partitions_the_triples(synth):
    s = load_kg_split(synth, kg_eval_args={"split": {"RS": [0.8, 0.1, 0.1]}}, seed=7)
    n = len(synth.kg_heads)
    assert (len(s.train), len(s.valid), len(s.test)) == (n - 2 * (n // 10), n // 10, n // 10)
    all_keys = _keys(np.column_stack([synth.kg_heads, synth.kg_relations, synth.kg_tails]), synth)
    parts = [_keys(p, synth) for p in (s.train, s.valid, s.test)]
    assert parts[0] | parts[1] | parts[2] == all_keys
    assert not (parts[0] & parts[1]) and not (parts[0] & parts[2]) and not (parts[1] & parts[2])
    again = load_kg_split(synth, seed=7)
    np.testing.assert_array_equal(again.test, s.test)
    other = load_kg_split(synth, seed=8)
    assert not np.array_equal(other.test, s.test)


def test_seeded_split_sizes_and_order():
    rows = np.arange(30).reshape(10, 3)
    a, b = seeded_split(rows, [0.5, 0.5], seed=1)
    assert len(a) == 5 and len(b) == 5
    assert (np.diff(a[:, 0]) > 0).all()  # original order kept inside a part


def test_bad_kg_eval_args_are_clear_errors():
    with pytest.raises(DatasetError, match="kg_eval_args.split"):
        normalize_kg_eval_args({"split": {"LS": "valid_and_test"}})
    with pytest.raises(DatasetError, match="unknown keys"):
        normalize_kg_eval_args({"ratio": 0.1})


def _write_kg(path, rows):
    lines = ["head_id:token\trelation_id:token\ttail_id:token"] + ["\t".join(r) for r in rows]
    path.write_text("\n".join(lines) + "\n")


def test_pre_split_files_are_deduplicated(synth, tmp_path, caplog):
    # synthetic tokens: items are linked to 'm.item{i}', entities are 'ent_c{c}_{k}', relations 'rel_{k}'
    train = [("m.item0", "rel_0", "ent_c0_0"), ("m.item1", "rel_1", "ent_c1_1"), ("m.item2", "rel_0", "ent_c2_0"),
             ("m.item3", "rel_2", "ent_c3_2"), ("m.item4", "rel_0", "ent_c0_0")]
    test = [("m.item0", "rel_0", "ent_c0_0"),  # also in train: dropped
            ("ent_c1_1", "rel_1", "m.item1"),  # reverse of a train edge (undirected graph): dropped
            ("m.item5", "rel_1", "ent_c1_1"), ("m.item6", "rel_2", "ent_c2_2"),
            ("m.item7", "rel_0", "unknown_entity")]  # unknown token: dropped with a warning
    _write_kg(tmp_path / "synthetic.train.kg", train)
    _write_kg(tmp_path / "synthetic.test.kg", test)
    with caplog.at_level(logging.INFO, logger="kgglm.data.kg_split"):
        s = load_kg_split(synth, folder=tmp_path, kg_eval_args={"valid_ratio": 0.2}, seed=3)
    assert "dropped 2 of 4 test triples also in train" in caplog.text
    assert "dropped 1 of 5 triples" in caplog.text
    assert (len(s.train), len(s.valid), len(s.test)) == (4, 1, 2)
    offset_e = synth.n_users + synth.n_items
    item = synth.n_users  # node of item 0
    assert s.test.tolist() == [[item + 5, 2, offset_e + 1 * 3 + 1], [item + 6, 3, offset_e + 2 * 3 + 2]]
    assert s.stats["kg_split"].startswith("pre-split")


def test_graph_and_corpora_hold_train_triples_only(synth):
    s = load_kg_split(synth, seed=5)
    g = s.dataset.graph
    held = np.concatenate([s.valid, s.test])
    assert len(held) > 0
    assert not g.has_edge(held[:, 0], held[:, 1], held[:, 2]).any()
    assert not g.has_edge(held[:, 2], held[:, 1], held[:, 0]).any()
    assert g.has_edge(s.train[:, 0], s.train[:, 1], s.train[:, 2]).all()
    assert len(s.dataset.kg_heads) == len(s.train)
    # the full dataset's graph did have them (the check can fail)
    assert synth.graph.has_edge(held[:, 0], held[:, 1], held[:, 2]).all()

    vocab = Vocabulary.from_graph(g, synth.name)
    walks = sample_pretrain_paths(g, paths_per_node=20, hop_range=(1, 4), seed=0)
    held_keys = _keys(held, synth)
    nodes, rels = walks.nodes, walks.relations
    for j in range(rels.shape[1]):  # every hop of every walk is a train edge
        ok = rels[:, j] >= 0
        hop = np.column_stack([nodes[ok, j], rels[ok, j], nodes[ok, j + 1]])
        assert not (_keys(hop, synth) & held_keys)
    corpus = triple_corpus(s.train, vocab)
    n, r = vocab.token_node(corpus[:, [1, 3]]), vocab.token_relation(corpus[:, 2])
    assert not (_keys(np.column_stack([n[:, 0], r, n[:, 1]]), synth) & held_keys)


def test_train_only_dataset_derives_its_own_artefacts(synth):
    """Nothing derived from the full graph (the SEP popularity of its nodes, the decoding constraint)
    carries over to the train-only dataset."""
    from kgglm.decode.recommend import make_constraint

    vocab = Vocabulary.from_graph(synth.graph, synth.name)
    full_tables = synth.explanation_tables()
    full_constraint = make_constraint(synth, vocab, split="test", hop_length=3)
    train_only = load_kg_split(synth, seed=5).dataset
    tables = train_only.explanation_tables()
    assert tables is not full_tables and tables.graph is train_only.graph
    np.testing.assert_array_equal(train_only.train_item_counts(), synth.train_item_counts())  # same interactions
    assert make_constraint(train_only, vocab, split="test", hop_length=3).graph is train_only.graph
    assert make_constraint(synth, vocab, split="test", hop_length=3) is full_constraint  # built once per dataset
    with pytest.raises(ValueError):
        synth.train_item_counts()[0] = 1.0  # read-only


def test_ml100k_train_graph_has_no_held_out_triple(shared_data):
    from kgglm.data import load_dataset

    data = load_dataset("ml-100k", data_path=shared_data)
    s = load_kg_split(data, seed=2024)
    held = np.concatenate([s.valid, s.test])
    assert not s.dataset.graph.has_edge(held[:, 0], held[:, 1], held[:, 2]).any()
    assert not s.dataset.graph.has_edge(held[:, 2], held[:, 1], held[:, 0]).any()
    assert (s.dataset.n_users, s.dataset.n_entities) == (data.n_users, data.n_entities)
