"""Explanation-quality metrics on a hand-built dataset whose expected values are worked out by hand."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from kgglm.data.dataset import Dataset, Interactions, build_graph
from kgglm.evaluate.explanation import (
    ExplanationTables,
    explanation_arrays,
    explanation_metrics,
    lir_table,
    normalized_ema,
    sep_table,
)

# node ids: users u0..u2 = 0..2, items i0..i4 = 3..7, entities e0 = 8, e1 = 9
U0, U1, U2 = 0, 1, 2
I0, I1, I2, I3, I4 = 3, 4, 5, 6, 7
E0, E1 = 8, 9
UI, GENRE, ACTOR = 0, 1, 2


def tiny_dataset() -> Dataset:
    """u0 saw i0@10, i1@20, i2@40; u1 saw i0@5, i3@5 (tie); u2 saw i1@7 (one interaction).
    KG: i0, i1, i2, i4 -genre-> e0; i2, i3 -actor-> e1."""
    train = Interactions(np.array([0, 0, 0, 1, 1, 2]), np.array([0, 1, 2, 0, 3, 1]),
                         np.array([10.0, 20.0, 40.0, 5.0, 5.0, 7.0]))
    empty = Interactions(np.zeros(0, np.int64), np.zeros(0, np.int64))
    heads = np.array([I0, I1, I2, I4, I2, I3])
    rels = np.array([GENRE, GENRE, GENRE, GENRE, ACTOR, ACTOR])
    tails = np.array([E0, E0, E0, E0, E1, E1])
    graph = build_graph(3, 5, 2, 3, train, heads, rels, tails)
    return Dataset(name="tiny", user_tokens=np.array(["a", "b", "c"], dtype=object),
                   item_tokens=np.array([f"m{i}" for i in range(5)], dtype=object),
                   entity_tokens=np.array(["drama", "alice"], dtype=object),
                   relation_tokens=np.array(["[UI-Relation]", "genre", "actor"], dtype=object),
                   item_names=np.array([f"M{i}" for i in range(5)], dtype=object),
                   item_entity_tokens=np.array([""] * 5, dtype=object),
                   splits={"train": train, "valid": empty, "test": empty},
                   kg_heads=heads, kg_relations=rels, kg_tails=tails, graph=graph)


MISSING_NODES, MISSING_RELS = [-1, -1, -1, -1], [-1, -1, -1]


def tiny_lists():
    """4 rows x K=3 explained lists (paths of 3 hops)."""
    users = np.array([U0, U1, U2, U1])
    items = np.array([[I3 - 3, I4 - 3, I4 - 3],
                      [I1 - 3, I2 - 3, -1],
                      [I0 - 3, I4 - 3, -1],
                      [-1, -1, -1]])
    nodes = np.array([
        [[U0, I2, E1, I3], [U0, I1, E0, I4], [U0, I2, E0, I4]],  # last: e0 -actor-> i4 is no edge
        [[U1, I0, U0, I1], [U1, I3, E1, I2], MISSING_NODES],  # collaborative path, then a KG path
        [[U2, I1, E0, I0], MISSING_NODES, MISSING_NODES],  # item i4 listed but without a path
        [MISSING_NODES] * 3,  # no explanation at all
    ])
    rels = np.array([
        [[UI, ACTOR, ACTOR], [UI, GENRE, GENRE], [UI, GENRE, ACTOR]],
        [[UI, UI, UI], [UI, ACTOR, ACTOR], MISSING_RELS],
        [[UI, GENRE, GENRE], MISSING_RELS, MISSING_RELS],
        [MISSING_RELS] * 3,
    ])
    return users, items, nodes, rels


# ------------------------------------------------------------------------- EMA tables
def test_normalized_ema_hand_values():
    # [0, 10, 20, 60]: n = 4, a = 2/5, q = 0.6; rescaled x = [0, 1/6, 1/3, 1]
    # EMA_1 = (0.6*0 + 1/6) / 1.6 = 0.104167; EMA_2 = (0.6/6 + 1/3) / 1.96 = 0.221088
    # EMA_3 = (0.36/6 + 0.6/3 + 1) / 2.176 = 0.579044; normalised by EMA_3 (EMA_0 = 0)
    got = normalized_ema(np.array([0.0, 10, 20, 60]), np.array([0, 4]))
    np.testing.assert_allclose(got, [0, 0.104167 / 0.579044, 0.221088 / 0.579044, 1], atol=1e-5)


def test_normalized_ema_ties_constant_and_single():
    # segment A [10, 20, 20]: q = 0.5, x = [0, 1, 1] -> EMA [0, 1/1.5, 1.5/1.75] = [0, 2/3, 6/7]
    #   normalised [0, 7/9, 1]; the tie (20, 20) shares (7/9 + 1) / 2 = 8/9
    # segment B [5, 5] (constant -> ranks [0, 1]): EMA [0, 0.75] -> [0, 1] -> tie mean 0.5 each
    # segment C [3] (one value) -> 0; segment D is empty
    got = normalized_ema(np.array([10.0, 20, 20, 5, 5, 3]), np.array([0, 3, 5, 6, 6]))
    np.testing.assert_allclose(got, [0, 8 / 9, 8 / 9, 0.5, 0.5, 0], atol=1e-12)


def test_normalized_ema_matches_pandas_without_ties():
    rng = np.random.default_rng(1)
    segs = [np.sort(rng.choice(10**9, n, replace=False).astype(float)) for n in (2, 7, 300)]
    got = normalized_ema(np.concatenate(segs), np.cumsum([0] + [len(s) for s in segs]))
    start = 0
    for s in segs:
        e = pd.Series(s).ewm(span=len(s)).mean()
        np.testing.assert_allclose(got[start:start + len(s)], (e - e.min()) / (e.max() - e.min()), atol=1e-9)
        start += len(s)


def test_normalized_ema_rejects_unsorted():
    with pytest.raises(ValueError):
        normalized_ema(np.array([2.0, 1.0]), np.array([0, 2]))


def test_lir_table_per_user_with_tie_and_single_interaction():
    ds = tiny_dataset()
    tr = ds.splits["train"]
    keys, values = lir_table(tr.users, tr.items, tr.timestamps, ds.n_items)
    got = dict(zip(keys.tolist(), values.tolist()))
    # u0: [10, 20, 40], q = 0.5, x = [0, 1/3, 1] -> EMA [0, (1/3)/1.5, (1/6 + 1)/1.75] = [0, 2/9, 2/3]
    #     -> normalised [0, 1/3, 1]; u1: tie at 5 -> 0.5 and 0.5; u2: one interaction -> 0
    expected = {0 * 5 + 0: 0.0, 0 * 5 + 1: 1 / 3, 0 * 5 + 2: 1.0, 1 * 5 + 0: 0.5, 1 * 5 + 3: 0.5, 2 * 5 + 1: 0.0}
    assert got.keys() == expected.keys()
    for key, val in expected.items():
        assert got[key] == pytest.approx(val)


def test_lir_table_repeated_pair_keeps_latest():
    # u0 sees item 0 at 1 and again at 3, item 1 at 2: [1, 2, 3], q = 0.5, x = [0, .5, 1]
    # EMA [0, 0.5/1.5, (0.25 + 1)/1.75] = [0, 1/3, 5/7] -> [0, 7/15, 1]; item 0 keeps max(0, 1) = 1
    keys, values = lir_table(np.array([0, 0, 0]), np.array([0, 1, 0]), np.array([1.0, 2.0, 3.0]), 2)
    assert keys.tolist() == [0, 1]
    np.testing.assert_allclose(values, [1.0, 7 / 15])


def test_sep_table_hand_values():
    sep = sep_table(tiny_dataset().graph)
    # users by degree: u2 = 1, u1 = 2, u0 = 3 -> q = 0.5, x = [0, .5, 1]
    #   EMA [0, 0.5/1.5, (0.25 + 1)/1.75] = [0, 1/3, 5/7] -> [0, 7/15, 1]
    np.testing.assert_allclose(sep[[U2, U1, U0]], [0, 7 / 15, 1])
    # items + entities by degree: i4 1, i3 2, e1 2, i0 3, i1 3, i2 3, e0 4 (7 nodes: q = 0.75, weights (4/3)^j)
    #   x = (d - 1)/3; EMA_1 = (4/9)/(7/3) = 4/21, EMA_2 = (4/9 + 16/27)/(37/9) = 28/111, EMA_6 = 0.675354
    #   tie {i3, e1}: (4/21 + 28/111) / 2 / 0.675354 = 0.327775; tie {i0, i1, i2}: mean of positions 3..5
    #   = (0.403810 + 0.489970 + 0.543709) / 3 / 0.675354 = 0.709499
    assert sep[I4] == 0 and sep[E0] == pytest.approx(1.0)
    np.testing.assert_allclose(sep[[I3, E1]], 0.327775, atol=1e-6)
    np.testing.assert_allclose(sep[[I0, I1, I2]], 0.709499, atol=1e-6)


# ------------------------------------------------------------------------- metrics
def test_explanation_metrics_hand_example():
    ds = tiny_dataset()
    out = explanation_metrics(ds, *tiny_lists())
    # explained paths per row: n = [3, 2, 1, 0]; rows 0..2 enter the quality means, all 4 fidelity
    assert out["fidelity"] == pytest.approx((3 / 3 + 2 / 3 + 1 / 3 + 0) / 4)
    # LIR of linked items: row0 i2, i1, i2 -> (1 + 1/3 + 1)/3; row1 i0, i3 (tie) -> 0.5; row2 single -> 0
    assert out["lir"] == pytest.approx((7 / 9 + 0.5 + 0) / 3)
    # SEP of shared nodes: row0 e1, e0, e0 -> (0.327775 + 2)/3; row1 u0, e1 -> (1 + 0.327775)/2; row2 e0 -> 1
    assert out["sep"] == pytest.approx(((0.327775 + 2) / 3 + (1 + 0.327775) / 2 + 1) / 3, abs=1e-6)
    # path types (last relation): row0 {actor, genre, actor}, row1 {UI, actor}, row2 {genre}; T = 3 relations
    assert out["etd"] == pytest.approx((2 / 3 + 2 / 3 + 1 / 3) / 3)  # / min(k=3, T=3)
    assert out["ptd"] == pytest.approx((2 / 3 + 2 / 2 + 1 / 1) / 3)  # / min(n_u, T)
    assert out["lid"] == pytest.approx((2 / 3 + 2 / 2 + 1) / 3)  # linked {i2, i1}, {i0, i3}, {i1}
    assert out["sed"] == pytest.approx((2 / 3 + 2 / 2 + 1) / 3)  # shared {e1, e0}, {u0, e1}, {e0}
    # Simpson: row0 counts actor 2, genre 1 -> 1 - 2*1/(3*2) = 2/3; row1 all distinct -> 1; row2 n=1 -> 0
    assert out["ptc"] == pytest.approx((2 / 3 + 1 + 0) / 3)
    # patterns row0 (UI,a,a), (UI,g,g), (UI,g,a): 3 / min(3, 3^2) = 1; rows 1, 2 also one pattern per path
    assert out["ppt"] == pytest.approx(1.0)
    # row0's third path uses e0 -actor-> i4, not an edge
    assert out["path_faithfulness"] == pytest.approx((2 / 3 + 1 + 1) / 3)
    # row1's collaborative path passes through no entity
    assert out["kg_share"] == pytest.approx((1 + 1 / 2 + 1) / 3)
    # hops 1..2 relations: row0 {a}, {g}, {g, a}; row1 {UI}, {a}; row2 {g}
    share = out["relation_share"]
    assert share.keys() == {"[UI-Relation]", "genre", "actor"}
    assert share["genre"] == pytest.approx((2 / 3 + 0 + 1) / 3)
    assert share["actor"] == pytest.approx((2 / 3 + 1 / 2 + 0) / 3)
    assert share["[UI-Relation]"] == pytest.approx((0 + 1 / 2 + 0) / 3)


def test_k_larger_than_lists_and_truncation():
    ds = tiny_dataset()
    users, items, nodes, rels = tiny_lists()
    wide = explanation_metrics(ds, users, items, nodes, rels, k=5)
    # 5 ranks asked, lists of 3: fidelity (3/5 + 2/5 + 1/5 + 0)/4; ETD divides by min(5, T=3) = 3 as before
    assert wide["fidelity"] == pytest.approx((3 + 2 + 1) / 5 / 4)
    assert wide["etd"] == pytest.approx((2 / 3 + 2 / 3 + 1 / 3) / 3)
    first = explanation_metrics(ds, users, items, nodes, rels, k=1)
    # only rank 1: rows 0..2 each have one explained path; fidelity (1 + 1 + 1 + 0)/4
    assert first["fidelity"] == pytest.approx(0.75)
    assert first["lir"] == pytest.approx((1 + 0.5 + 0) / 3)  # linked i2, i0, i1
    assert first["ptc"] == 0.0 and first["lid"] == 1.0


def test_no_explanation_at_all_gives_nan_quality_and_zero_fidelity():
    ds = tiny_dataset()
    users = np.array([0, 1])
    items = np.full((2, 2), -1)
    out = explanation_metrics(ds, users, items, np.full((2, 2, 4), -1), np.full((2, 2, 3), -1))
    assert out["fidelity"] == 0.0
    assert np.isnan(out["lir"]) and np.isnan(out["sep"]) and out["relation_share"] == {}


def test_linking_item_not_in_training_gets_zero_lir():
    ds = tiny_dataset()
    # u2 never saw i0: the path is unfaithful and its LIR is 0 (as hopwise's zero timestamp matrix)
    out = explanation_metrics(ds, np.array([U2]), np.array([[I1 - 3]]),
                              np.array([[[U2, I0, E0, I1]]]), np.array([[[UI, GENRE, GENRE]]]))
    assert out["lir"] == 0.0 and out["path_faithfulness"] == 0.0 and out["fidelity"] == 1.0


def test_tables_are_reusable_and_shapes_checked():
    ds = tiny_dataset()
    tables = ExplanationTables.from_dataset(ds)
    args = tiny_lists()
    assert explanation_metrics(ds, *args, tables=tables)["lir"] == explanation_metrics(ds, *args)["lir"]
    with pytest.raises(ValueError):
        explanation_metrics(ds, args[0][:2], *args[1:])
    with pytest.raises(ValueError):
        explanation_metrics(ds, args[0], args[1], args[2][..., :3], args[3])


def test_explanation_arrays_from_recommendation_tokens():
    from kgglm.decode.recommend import Recommendations
    from kgglm.paths.vocab import PAD, RELATION_OFFSET, Vocabulary

    ds = tiny_dataset()
    vocab = Vocabulary.from_graph(ds.graph, ds.name)
    node, rel = (lambda n: vocab.node_offset + n), (lambda r: RELATION_OFFSET + r)
    paths = np.array([[[node(U0), rel(UI), node(I2), rel(ACTOR), node(E1), rel(ACTOR), node(I3)],
                       [PAD] * 7]])
    recs = Recommendations(users=np.array([U0]), items=np.array([[I3 - 3, -1]]),
                           scores=np.zeros((1, 2), np.float32), paths=paths)
    users, items, nodes, rels = explanation_arrays(recs, vocab)
    assert nodes.tolist() == [[[U0, I2, E1, I3], [-1] * 4]]
    assert rels.tolist() == [[[UI, ACTOR, ACTOR], [-1] * 3]]
    assert explanation_metrics(ds, users, items, nodes, rels)["fidelity"] == 0.5


def test_lir_is_nan_without_timestamps():
    ds = tiny_dataset()
    tr = ds.splits["train"]
    ds.splits["train"] = Interactions(tr.users, tr.items, None)
    out = explanation_metrics(ds, *tiny_lists())
    assert np.isnan(out["lir"]) and out["lid"] == pytest.approx((2 / 3 + 2 / 2 + 1) / 3)
