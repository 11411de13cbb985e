"""The KG audit: lifts against an independent computation, verdicts on real and synthetic data."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from kgglm.cli import main as cli_main
from kgglm.data.audit import audit_dataset, warn_if_suspect
from kgglm.data.loader import load_dataset
from kgglm.synthetic.small import make_knowledge_dataset, write_atomic

SMALL = {"n_users": 200, "n_items": 150, "interactions_per_user": 25, "n_actors": 40, "n_directors": 20}


@pytest.fixture(autouse=True)
def no_dataset_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("KGGLM_DATASET_CACHE", "off")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


def synthetic(tmp_path: Path, shuffle_link: bool = False):
    folder = write_atomic(make_knowledge_dataset(**SMALL, seed=5), tmp_path)
    if shuffle_link:
        link = folder / "synthetic-kg.link"
        frame = pd.read_csv(link, sep="\t", dtype=str)
        frame.iloc[:, 1] = np.random.default_rng(0).permutation(frame.iloc[:, 1].to_numpy())
        frame.to_csv(link, sep="\t", index=False)
    return load_dataset("synthetic-kg", data_path=tmp_path, download=False)


def brute_force_lift(data, relation: str, base_mean: float) -> float:
    """Mean cosine over all item pairs sharing an entity through ``relation``, by dense algebra."""
    train = data.splits["train"]
    x = np.zeros((data.n_items, data.n_users))
    x[train.items, train.users] = 1.0
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    cos = (x / np.where(norm > 0, norm, 1)) @ (x / np.where(norm > 0, norm, 1)).T
    rel = int(np.flatnonzero(data.relation_tokens == relation)[0])
    pick = data.kg_relations == rel
    heads, tails = data.kg_heads[pick] - data.n_users, data.kg_tails[pick]
    share = np.zeros((data.n_items, data.n_items), dtype=bool)
    for tail in np.unique(tails):
        members = heads[tails == tail]
        share[np.ix_(members, members)] = True
    iu = np.triu_indices(data.n_items, 1)
    return float(cos[iu][share[iu]].mean() / base_mean), int(share[iu].sum())


def test_synthetic_ok_and_lift_matches_brute_force(tmp_path):
    data = synthetic(tmp_path)
    report = audit_dataset(data, max_pairs=10**9)  # every pair: exact means
    assert report["verdict"] == "ok"
    for name, r in report["relations"].items():
        lift, pairs = brute_force_lift(data, name, report["random"]["mean_cosine"])
        assert r["pairs"] == pairs
        assert r["lift"] == pytest.approx(lift, abs=1e-3)
        assert r["low"] < r["lift"] < r["high"]
    json.dumps(report, allow_nan=False)


def test_shuffled_link_is_suspect_and_warned(tmp_path, caplog):
    data = synthetic(tmp_path, shuffle_link=True)
    with caplog.at_level(logging.WARNING):
        report = warn_if_suspect(data)
    assert report["verdict"] == "suspect"
    assert all(r["low"] <= 1.2 for r in report["relations"].values())
    assert "ml-100k-dbpedia" in caplog.text and "lift" in caplog.text


def test_cli_audit_json(tmp_path, capsys):
    synthetic(tmp_path)
    assert cli_main(["data", "--dataset", "synthetic-kg", "--data-path", str(tmp_path), "--audit",
                     "--format", "json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["verdict"] == "ok" and all({"lift", "pairs"} <= set(r) for r in out["relations"].values())


@pytest.mark.parametrize(("name", "verdict"), [("ml-100k", "suspect"), ("ml1m", "ok"), ("ml-100k-dbpedia", "ok")])
def test_real_verdicts(shared_data, tmp_path, name, verdict):
    if not (shared_data / "ml1m" / "ml1m.kg").is_file():
        pytest.skip("ml1m not found")
    if name == "ml-100k-dbpedia":
        from kgglm.data.dbpedia_link import build_ml100k_dbpedia

        build_ml100k_dbpedia(shared_data, root=tmp_path)
    path = tmp_path if name == "ml-100k-dbpedia" else shared_data
    extra = {"benchmark_filename": ["train", "valid", "test"]} if name == "ml1m" else {}
    report = audit_dataset(load_dataset(name, data_path=path, download=False, **extra))
    assert report["verdict"] == verdict
    if name == "ml-100k":
        assert all(r["lift"] is None or r["lift"] < 1.4 for r in report["relations"].values())
