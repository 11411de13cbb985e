"""Baselines (Pop, BPR, LightGCN, KGItemKNN) against hand computations on tiny graphs."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from cases import baseline_settings, eval_settings
from kgglm.baselines import BASELINES, BPR, KGItemKNN, LightGCN, Pop, get_baseline
from kgglm.baselines import kgitemknn as knn_module
from kgglm.baselines.base import (
    BaselineSettings,
    EarlyStopping,
    make_evaluate_fn,
    pair_keys,
    sample_negatives,
)
from kgglm.baselines.kgitemknn import item_features
from kgglm.baselines.lightgcn import normalized_adjacency
from kgglm.config import Config
from kgglm.data.dataset import Dataset, Interactions, build_graph
from kgglm.evaluate import EvalConfig
from kgglm.synthetic.small import make_synthetic_dataset

FAST = {"device": "cpu", "seed": 0, "learning_rate": 0.02, "train_batch_size": 64, "epochs": 60}


def resolved(name: str, **over) -> BaselineSettings:
    """What a run gives a baseline: its section of the layered config (its model YAML included) with
    FAST on top."""
    return baseline_settings(name, **{**FAST, **over})


def hand_dataset(n_users: int, n_items: int, train: list[tuple[int, int]], triples: list[tuple[int, int, int]] = (),
                 n_entities: int = 0, n_relations: int = 2, valid=(), test=()) -> Dataset:
    """A Dataset from explicit (user, item) pairs and KG triples given as node ids."""
    def inter(pairs) -> Interactions:
        arr = np.array(list(pairs), dtype=np.int64).reshape(-1, 2)
        return Interactions(arr[:, 0], arr[:, 1])

    splits = {"train": inter(train), "valid": inter(valid), "test": inter(test)}
    heads, rels, tails = (np.array([t[k] for t in triples], dtype=np.int64) for k in range(3))
    graph = build_graph(n_users, n_items, n_entities, n_relations, splits["train"], heads, rels, tails)
    return Dataset(name="hand", user_tokens=np.array([f"u{u}" for u in range(n_users)], dtype=object),
                   item_tokens=np.array([f"i{i}" for i in range(n_items)], dtype=object),
                   entity_tokens=np.array([f"e{e}" for e in range(n_entities)], dtype=object),
                   relation_tokens=np.array(["ui"] + [f"r{r}" for r in range(1, n_relations)], dtype=object),
                   item_names=np.array([f"Item {i}" for i in range(n_items)], dtype=object),
                   item_entity_tokens=np.array([f"m{i}" for i in range(n_items)], dtype=object),
                   splits=splits, kg_heads=heads, kg_relations=rels, kg_tails=tails, graph=graph)


# ------------------------------------------------------------------------------------- registry
def test_registry_finds_every_baseline_case_insensitively():
    assert set(BASELINES) == {"Pop", "BPR", "LightGCN", "EASE", "ItemKNN", "KGItemKNN"}
    assert get_baseline("bpr") is BPR and get_baseline("LIGHTGCN") is LightGCN
    assert get_baseline("KGItemKNN") is KGItemKNN and get_baseline("pop") is Pop
    with pytest.raises(KeyError, match="known: Pop, BPR"):
        get_baseline("NCF")


def test_model_yaml_defaults_are_recbole_defaults():
    bpr, lightgcn = Config("BPR", "synthetic"), Config("LightGCN", "synthetic")
    assert (bpr["embedding_size"], bpr["learning_rate"], bpr["train_batch_size"], bpr["stopping_step"]) == (
        64, 1e-3, 2048, 10)
    assert lightgcn["n_layers"] == 3 and lightgcn["reg_weight"] == 1e-4


def test_settings_are_the_resolved_model_layers():
    """A baseline's settings are its section of the layered config: configs/model/<NAME>.yaml over
    overall.yaml, the caller's keys on top (the baselines read no config themselves)."""
    from kgglm.config import CONFIG_ROOT, load_yaml_file

    own = load_yaml_file(CONFIG_ROOT / "model" / "BPR.yaml")
    bpr = baseline_settings("BPR", epochs=7, valid_metric="Hit@5", topk=[5, 10], metrics=["Hit", "NDCG"])
    assert (bpr.embedding_size, bpr.learning_rate, bpr.train_batch_size, bpr.epochs) == (
        own["embedding_size"], own["learning_rate"], own["train_batch_size"], 7)
    assert (bpr.valid.valid_metric, bpr.valid.metrics, bpr.valid.topk) == ("Hit@5", ("Hit",), (5,))
    assert bpr.n_layers == Config()["n_layers"]  # not in BPR.yaml: the package default


# ------------------------------------------------------------------------------------- Pop
def test_pop_scores_are_training_counts_and_seen_items_are_not_masked():
    ds = hand_dataset(3, 4, train=[(0, 2), (1, 2), (2, 2), (0, 1), (1, 1), (2, 3)], test=[(0, 0)])
    model = Pop()
    model.fit(ds, baseline_settings())
    scores = model.score_items(np.array([0, 2]))
    assert scores.shape == (2, 4)
    assert scores.tolist() == [[0, 2, 3, 1], [0, 2, 3, 1]]  # user 0 saw items 1, 2: still scored
    assert np.argsort(-scores[0], kind="stable").tolist() == [2, 1, 3, 0]


# ------------------------------------------------------------------------------------- KGItemKNN
def knn_case() -> Dataset:
    """4 items, 2 entities: e0 tags items 0, 1, 3; e1 tags items 1, 2 (one triple written entity -> item)."""
    n_users, n_items = 3, 4
    e0, e1 = n_users + n_items, n_users + n_items + 1
    item = [n_users + i for i in range(n_items)]
    triples = [(item[0], 1, e0), (item[1], 1, e0), (item[3], 1, e0), (item[1], 1, e1), (e1, 1, item[2])]
    return hand_dataset(n_users, n_items, train=[(0, 0), (1, 2), (2, 0), (2, 2)], triples=triples, n_entities=2)


def test_kgitemknn_item_features_follow_both_directions():
    items, feats = item_features(knn_case())
    assert sorted(zip(items.tolist(), feats.tolist())) == [(0, 7), (1, 7), (1, 8), (2, 8), (3, 7)]


@pytest.mark.parametrize("dense", [True, False])
def test_kgitemknn_scores_match_hand_computation(monkeypatch, dense):
    if not dense:
        monkeypatch.setattr(knn_module, "DENSE_MAX_ITEMS", 0)
    ds = knn_case()
    w0, w1 = math.log(4 / 3), math.log(4 / 2)  # idf: e0 tags 3 of 4 items, e1 tags 2
    model = KGItemKNN()
    model.fit(ds, baseline_settings())
    scores = model.score_items(np.array([0, 1, 2]))
    expected = [
        [0.0, w0, 0.0, w0],  # user 0 has item 0: shares e0 with items 1 and 3; self-similarity is 0
        [0.0, w1, 0.0, 0.0],  # user 1 has item 2: shares e1 with item 1
        [0.0, w0 + w1, 0.0, w0],  # user 2 has items 0 and 2: sums over them
    ]
    np.testing.assert_allclose(scores, expected, rtol=1e-6)
    assert model.similarity.layout == (torch.strided if dense else torch.sparse_coo)


def test_kgitemknn_feature_of_every_item_gets_zero_weight():
    n_users, n_items = 2, 3
    e0 = n_users + n_items
    ds = hand_dataset(n_users, n_items, train=[(0, 0), (1, 1)], n_entities=1,
                      triples=[(n_users + i, 1, e0) for i in range(n_items)])
    model = KGItemKNN()
    model.fit(ds, baseline_settings())
    np.testing.assert_allclose(model.score_items(np.array([0, 1])), 0.0)  # log(3 / 3) = 0


# ------------------------------------------------------------------------------------- sampling, stopping
def test_sample_negatives_never_returns_a_positive_and_covers_the_rest():
    rng = np.random.default_rng(0)
    n_items = 6
    positives = [(0, 0), (0, 1), (0, 2), (0, 3), (1, 5)]
    keys = pair_keys(np.array([p[0] for p in positives]), np.array([p[1] for p in positives]), n_items)
    users = np.array([0] * 3000 + [1] * 3000)
    neg = sample_negatives(users, n_items, keys, rng)
    assert set(neg[users == 0].tolist()) == {4, 5}
    assert set(neg[users == 1].tolist()) == {0, 1, 2, 3, 4}
    counts = np.bincount(neg[users == 1], minlength=n_items)[:5]
    assert counts.min() > 450  # uniform over the 5 negatives: 600 each on average


def test_early_stopping_counts_ties_as_no_improvement():
    stop = EarlyStopping(patience=2)
    assert [stop.update(s) for s in (0.1, 0.3, 0.3, 0.2)] == [True, True, False, False]
    assert not stop.should_stop  # two bad evaluations: not more than the patience yet
    stop.update(0.25)
    assert stop.should_stop and stop.best == 0.3


def test_fit_stops_early_and_restores_the_best_state():
    ds = make_synthetic_dataset(seed=1)
    scores = iter([0.1, 0.3, 0.3, 0.2, 0.25, 0.9, 0.9])
    snapshots = []

    def evaluate_fn(model):
        snapshots.append(model.user_embedding.weight.detach().clone())
        return next(scores), {}

    model = BPR()
    stats = model.fit(ds, resolved("BPR", stopping_step=2, epochs=20), evaluate_fn=evaluate_fn)
    assert stats["epochs"] == 5 and stats["best_epoch"] == 2 and stats["best_score"] == 0.3
    assert torch.equal(model.user_embedding.weight, snapshots[1])
    assert not torch.equal(snapshots[1], snapshots[-1])


# ------------------------------------------------------------------------------------- LightGCN
def test_normalized_adjacency_equals_dense_reference():
    users = np.array([0, 0, 1, 2, 0])  # (0, 1) twice: counted once
    items = np.array([0, 1, 1, 1, 1])
    n_users, n_items = 4, 3  # user 3 and item 2 are isolated
    got = normalized_adjacency(n_users, n_items, users, items).to_dense().numpy()
    a = np.zeros((n_users + n_items,) * 2)
    for u, i in zip(users, items):
        a[u, n_users + i] = a[n_users + i, u] = 1.0
    deg = a.sum(1)
    d = np.diag([1 / math.sqrt(x) if x else 0.0 for x in deg])
    np.testing.assert_allclose(got, d @ a @ d, rtol=1e-6)
    assert got[0, n_users + 1] == pytest.approx(1 / math.sqrt(2 * 3))  # deg(user 0) = 2, deg(item 1) = 3


def test_lightgcn_propagation_is_mean_of_layer_embeddings():
    ds = make_synthetic_dataset(n_users=6, n_items=9, seed=3)
    model = LightGCN()
    model.fit(ds, resolved("LightGCN", epochs=1, n_layers=2, embedding_size=4))
    adj = model.adjacency.to_dense().double()
    e0 = torch.cat([model.user_embedding.weight, model.item_embedding.weight]).detach().double()
    final = (e0 + adj @ e0 + adj @ adj @ e0) / 3
    users, items = model.propagate()
    torch.testing.assert_close(torch.cat([users, items]).detach().double(), final, rtol=1e-5, atol=1e-6)
    expected = (final[:ds.n_users] @ final[ds.n_users:].T).numpy()
    np.testing.assert_allclose(model.score_items(np.arange(ds.n_users)), expected, rtol=1e-4, atol=1e-6)


# ------------------------------------------------------------------------------------- training
@pytest.mark.parametrize("name", ["BPR", "LightGCN"])
def test_training_lowers_the_loss_and_ranks_the_planted_cluster_first(name):
    ds = make_synthetic_dataset(seed=2)
    model = get_baseline(name)()
    stats = model.fit(ds, resolved(name))
    losses = [h["loss"] for h in stats["history"]]
    assert len(losses) == FAST["epochs"] and losses[-1] < 0.5 * losses[0]
    scores = model.score_items(np.arange(ds.n_users))
    assert scores.shape == (ds.n_users, ds.n_items) and scores.dtype.kind == "f"
    train = ds.splits["train"]
    scores[train.users, train.items] = -np.inf  # masking is the evaluator's job; done here by hand
    cluster = np.arange(ds.n_items) % 3  # make_synthetic_dataset's planted clusters
    top = scores.argmax(axis=1)
    assert (cluster[top] == np.arange(ds.n_users) % 3).mean() >= 0.9


def test_fit_is_reproducible_with_the_same_seed():
    ds = make_synthetic_dataset(seed=4)
    a, b = BPR(), BPR()
    a.fit(ds, resolved("BPR", epochs=3))
    b.fit(ds, resolved("BPR", epochs=3))
    np.testing.assert_array_equal(a.score_items(np.arange(5)), b.score_items(np.arange(5)))


# ------------------------------------------------------------------------------------- evaluation helper
class Oracle:
    """Scores each user's test items highest, and their train items even higher (to check masking)."""

    def __init__(self, ds):
        self.ds = ds

    def score_items(self, users):
        s = np.zeros((len(users), self.ds.n_items))
        for split, value in (("test", 1.0), ("train", 2.0), ("valid", 2.0)):
            inter = self.ds.splits[split]
            for row, u in enumerate(users):
                s[row, inter.items[inter.users == u]] = value
        return s


def test_evaluation_masks_seen_items_and_scores_an_oracle_perfectly():
    ds = make_synthetic_dataset(seed=5)
    score, result = make_evaluate_fn(ds, eval_settings(eval_batch_size=7), split="test")(Oracle(ds))
    assert result["ndcg@10"] == pytest.approx(1.0) and result["recall@10"] == pytest.approx(1.0)
    hit = EvalConfig(topk=(10,), metrics=("Hit", "NDCG"), valid_metric="Hit@10", eval_batch_size=1024)
    score, metrics = make_evaluate_fn(ds, hit, split="test")(Oracle(ds))
    assert score == 1.0 and metrics["hit@10"] == 1.0
