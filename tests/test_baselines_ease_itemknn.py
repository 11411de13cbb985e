"""EASE and ItemKNN against independent dense/loop computations on tiny matrices, and through the CLI."""

from __future__ import annotations

import math

import numpy as np
import pytest
from test_baselines import hand_dataset

from atomic_helpers import TINY, write_atomic_dataset
from cases import baseline_settings, eval_settings
from kgglm.baselines import EASE, ItemKNN, get_baseline
from kgglm.baselines.base import make_evaluate_fn
from kgglm.cli import main
from kgglm.config import Config
from kgglm.quick_start import run_kgglm
from kgglm.tasks.ranking import evaluate_model

N_USERS, N_ITEMS = 14, 9


@pytest.fixture(scope="module")
def tiny():
    """A random binary user-item matrix split per user into train / valid / test (disjoint)."""
    rng = np.random.default_rng(3)
    split = {"train": [], "valid": [], "test": []}
    for u in range(N_USERS):
        items = rng.permutation(N_ITEMS)[: rng.integers(4, 8)]
        split["valid"].append((u, int(items[0])))
        split["test"].append((u, int(items[1])))
        split["train"] += [(u, int(i)) for i in items[2:]]
    ds = hand_dataset(N_USERS, N_ITEMS, split["train"], valid=split["valid"], test=split["test"])
    x = np.zeros((N_USERS, N_ITEMS))
    for u, i in split["train"]:
        x[u, i] = 1.0
    return ds, x


def dense_ease(x: np.ndarray, lam: float) -> np.ndarray:
    """The issue's formula: B = I - P diag(1/diag(P)), P = (X'X + lambda I)^-1, diagonal zeroed."""
    p = np.linalg.inv(x.T @ x + lam * np.eye(x.shape[1]))
    b = np.eye(x.shape[1]) - p @ np.diag(1.0 / np.diag(p))
    b[np.diag_indices_from(b)] = 0.0
    return b


def hand_ndcg(scores: np.ndarray, ds, k: int) -> float:
    """Mean NDCG@k over valid users, train items excluded, by a per-user loop."""
    valid, train = ds.splits["valid"], ds.splits["train"]
    values = []
    for u in np.unique(valid.users):
        s = scores[u].copy()
        s[train.items[train.users == u]] = -np.inf
        top = list(np.argsort(-s, kind="stable")[:k])
        relevant = set(valid.items[valid.users == u].tolist())
        dcg = sum(1 / math.log2(r + 2) for r, i in enumerate(top) if i in relevant)
        values.append(dcg / sum(1 / math.log2(r + 2) for r in range(min(len(relevant), k))))
    return float(np.mean(values))


# ------------------------------------------------------------------------------------- EASE
@pytest.mark.parametrize("lam", [0.5, 7.0, 300.0])
def test_ease_matches_dense_reference(tiny, lam):
    ds, x = tiny
    model = EASE()
    stats = model.fit(ds, baseline_settings("EASE", reg_weight_grid=[], reg_weight=lam))
    assert stats["reg_weight"] == lam
    np.testing.assert_allclose(model.weights, dense_ease(x, lam), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(model.score_items(np.arange(N_USERS)), x @ dense_ease(x, lam), rtol=1e-4, atol=1e-5)
    assert np.all(np.diag(model.weights) == 0)


def test_ease_chooses_lambda_on_valid(tiny):
    ds, x = tiny
    grid = [0.1, 1.0, 5.0, 30.0, 1000.0]
    hand = [hand_ndcg(x @ dense_ease(x, lam), ds, 3) for lam in grid]
    assert len(set(np.round(hand, 6))) > 1, "the tiny data must make the grid choice matter"
    model = EASE()
    stats = model.fit(ds, baseline_settings("EASE", reg_weight_grid=grid),
                      evaluate_fn=make_evaluate_fn(ds, eval_settings(topk=(3,))))
    np.testing.assert_allclose([h["score"] for h in stats["history"]], hand, atol=1e-6)
    assert stats["reg_weight"] == grid[int(np.argmax(hand))] and stats["best_score"] == pytest.approx(max(hand))
    np.testing.assert_allclose(model.weights, dense_ease(x, stats["reg_weight"]), rtol=1e-4, atol=1e-6)


def test_ease_rejects_a_non_positive_lambda(tiny):
    with pytest.raises(ValueError, match="must be positive"):
        EASE().fit(tiny[0], baseline_settings("EASE", reg_weight_grid=[0.0]))


# ------------------------------------------------------------------------------------- ItemKNN
def loop_itemknn(x: np.ndarray, k: int, shrink: float) -> np.ndarray:
    """Scores by loops: shrunk cosine per pair, each target item's k best neighbours (lower index on ties)."""
    n = x.shape[1]
    sim = np.zeros((n, n))
    for i in range(n):
        for j in range(n):
            if i != j:
                both = sum(x[u, i] * x[u, j] for u in range(x.shape[0]))
                norm = math.sqrt(x[:, i].sum()) * math.sqrt(x[:, j].sum()) + shrink
                sim[i, j] = both / norm if norm > 0 else 0.0
    w = np.zeros((n, n))
    for j in range(n):
        for i in sorted(range(n), key=lambda i: (-sim[i, j], i))[:k]:
            w[i, j] = sim[i, j]
    scores = np.zeros((x.shape[0], n))
    for u in range(x.shape[0]):
        for j in range(n):
            scores[u, j] = sum(w[i, j] for i in range(n) if x[u, i])
    return scores


@pytest.mark.parametrize(("k", "shrink"), [(1, 0.0), (2, 0.0), (3, 2.5), (50, 1.0)])
def test_itemknn_matches_loop_computation(tiny, k, shrink):
    ds, x = tiny
    model = ItemKNN()
    stats = model.fit(ds, baseline_settings("ItemKNN", k_grid=[k], shrink=shrink))
    assert stats["k"] == k and np.all(np.diag(model.weights) == 0)
    assert np.all((model.weights != 0).sum(axis=0) <= k)
    np.testing.assert_allclose(model.score_items(np.arange(N_USERS)), loop_itemknn(x, k, shrink), atol=1e-6)


def test_itemknn_chooses_k_on_valid(tiny):
    ds, x = tiny
    grid = [1, 2, 4, 8]
    hand = [hand_ndcg(loop_itemknn(x, k, 0.0), ds, 3) for k in grid]
    stats = ItemKNN().fit(ds, baseline_settings("ItemKNN", k_grid=grid, valid_metric="NDCG@3", topk=[3]))
    # no evaluate_fn: the grid is chosen by the settings' valid_metric alone
    np.testing.assert_allclose([h["score"] for h in stats["history"]], hand, atol=1e-6)
    assert stats["k"] == grid[int(np.argmax(hand))]


# ------------------------------------------------------------------------------------- masking, CLI
@pytest.mark.parametrize("name", ["EASE", "ItemKNN"])
def test_seen_items_are_never_recommended(tiny, name):
    ds, _ = tiny
    model = get_baseline(name)()
    model.fit(ds, baseline_settings(name, valid_metric="NDCG@5", topk=[5]))
    settings = eval_settings(topk=(5,), eval_batch_size=4)
    for split, seen in (("valid", ("train",)), ("test", ("train", "valid"))):
        recs = evaluate_model(model, ds, split, settings).recommendations
        for row, u in enumerate(recs.users):
            masked = set().union(*(ds.splits[s].items[ds.splits[s].users == u].tolist() for s in seen))
            assert not masked & set(recs.items[row].tolist())


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    root = write_atomic_dataset(tmp_path_factory.mktemp("data"))
    common = {k: TINY[k] for k in ("topk", "valid_metric", "show_progress", "eval_batch_size", "use_gpu")}
    return root, [f"--data_path={root}", f"--checkpoint_dir={tmp_path_factory.mktemp('saved')}", "--topk=[5]",
                  f"--valid_metric={common['valid_metric']}", "--show_progress=false", "--state=WARNING"]


def test_cli_train_model_ease_and_itemknn(toy, capsys):
    root, args = toy
    assert main(["train", "--dataset", "toy", "--data-path", str(root), "--model", "EASE", *args,
                 "--reg_weight_grid=[10,100,1000]"]) == 0
    out = capsys.readouterr().out
    assert "EASE valid" in out and "EASE test" in out and "ndcg@5" in out
    res = run_kgglm("ItemKNN", "toy", cmd_args=args + ["--k_grid=[5,20]", "--shrink=1"], saved=False)
    assert res.train_stats["k"] in (5, 20) and 0 < res.test_result["ndcg@5"] <= 1
    assert res.best_valid_score == pytest.approx(max(h["score"] for h in res.train_stats["history"]))
    assert Config("KGGLM", "toy", cmd_args=["--baselines=EASE,ItemKNN"])["baselines"] == ["EASE", "ItemKNN"]
