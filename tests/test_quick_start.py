"""The quick-start calls of the seed, on a small atomic-file dataset written into a temp folder.

The two seed calls are run as written (train_stage, pretrain_epochs, pre_model_path
'saved/KGGLM-pretrain/' relative to the working directory), with a tiny model and the small
dataset added through config_dict. Metrics are checked against an independent computation
from the recommendations export.
"""

from __future__ import annotations

import json

import pytest
import yaml

from atomic_helpers import TINY, write_atomic_dataset
from cases import reference_metrics
from kgglm.config import ConfigError
from kgglm.data import load_dataset
from kgglm.quick_start import RunResult, run, run_kgglm
from kgglm.train.checkpoint import CheckpointError, read_info, resolve_checkpoint


@pytest.fixture(scope="module")
def seed_runs(tmp_path_factory):
    """Pretrain then finetune, exactly the seed's two calls, in a fresh working directory."""
    work = tmp_path_factory.mktemp("work")
    root = write_atomic_dataset(tmp_path_factory.mktemp("data"))
    mp = pytest.MonkeyPatch()
    mp.chdir(work)
    base = {**TINY, "data_path": str(root)}
    pre = run_kgglm(model="KGGLM", dataset="toy", config_dict={**base, "train_stage": "pretrain", "pretrain_epochs": 5})
    fine = run_kgglm(model="KGGLM", dataset="toy",
                     config_dict={**base, "train_stage": "finetune", "pre_model_path": "saved/KGGLM-pretrain/"})
    yield work, root, pre, fine
    mp.undo()


def test_pretrain_writes_checkpoint_where_finetune_looks(seed_runs):
    work, _, pre, _ = seed_runs
    ckpt = resolve_checkpoint(work / "saved" / "KGGLM-pretrain")
    assert (work / pre.checkpoint).resolve() == ckpt.resolve()
    info = read_info(ckpt)
    assert info["meta"]["stage"] == "pretrain" and info["meta"]["dataset"] == "toy"
    assert info["meta"]["kgglm_config"]["pretrain_epochs"] == 5
    assert info["model"]["embedding_size"] == TINY["embedding_size"]
    assert pre.train_stats["epochs"] == 5 and pre.train_stats["steps"] >= 5
    assert pre.best_valid_score is None and pre.test_result is None
    run_dir = work / pre.run_dir
    assert yaml.safe_load((run_dir / "config.yaml").read_text())["train_stage"] == "pretrain"
    assert "pretrain corpus" in (run_dir / "run.log").read_text()


def test_finetune_result_and_run_directory(seed_runs):
    work, _, pre, fine = seed_runs
    run_dir = work / fine.run_dir
    assert fine.train_stage == "finetune"
    assert set(fine.files) >= {"config", "log", "result", "checkpoint", "recommendations"}
    for path in fine.files.values():
        assert (work / path).exists(), path
    # validation drove early stopping: the best score is the best epoch's valid_metric
    assert fine.best_valid_score == pytest.approx(fine.best_valid_result["ndcg@5"])
    assert fine.best_valid_score == pytest.approx(max(h["score"] for h in fine.history))
    assert (work / fine.checkpoint).name == "best"
    assert read_info(work / fine.checkpoint)["meta"]["stage"] == "finetune"
    for key in ("recall@5", "mrr@5", "ndcg@5", "hit@5", "precision@5"):
        assert 0.0 <= fine.test_result[key] <= 1.0
    assert fine.test_result["valid_paths"] == 1.0 and fine.test_result["path_coverage"] == 1.0
    log = (run_dir / "run.log").read_text()
    assert "fine-tuning from" in log and "metrics:" in log
    # the result saves itself and loads back
    again = RunResult.load(run_dir)
    assert again.test_result == pytest.approx(fine.test_result) and again.checkpoint == fine.checkpoint
    other = fine.save(work / "elsewhere")
    assert json.loads(other.read_text())["best_valid_score"] == pytest.approx(fine.best_valid_score)
    assert fine.examples and fine.examples[0]["recommendations"][0]["explanation"].startswith("user ")


def test_test_metrics_match_an_independent_computation(seed_runs):
    """Recompute hit/recall/NDCG@5 from the export and the test split, with plain Python."""
    work, root, _, fine = seed_runs
    ds = load_dataset("toy", data_path=root, seed=TINY.get("seed", 2024))
    test = {}
    for u, i in zip(ds.splits["test"].users, ds.splits["test"].items):
        test.setdefault(str(ds.user_tokens[u]), set()).add(str(ds.item_tokens[i]))
    seen = {}
    for s in ("train", "valid"):
        for u, i in zip(ds.splits[s].users, ds.splits[s].items):
            seen.setdefault(str(ds.user_tokens[u]), set()).add(str(ds.item_tokens[i]))
    ranked = {}
    for line in (work / fine.files["recommendations"]).read_text().splitlines():
        rec = json.loads(line)
        ranked.setdefault(rec["user"], {})[rec["rank"]] = rec["item"]
        assert rec["item"] not in seen.get(rec["user"], set())  # never a train/valid item
        assert rec["path"][0] == rec["user"] and rec["path"][-1] == rec["item"]
    assert set(ranked) == set(test)  # every user with a test item, and only those
    users = sorted(test)
    reference = reference_metrics([[ranked[u][r] for r in sorted(ranked[u])] for u in users],
                                  [test[u] for u in users], 5)
    for name in ("hit@5", "recall@5", "ndcg@5", "mrr@5", "precision@5"):
        assert fine.test_result[name] == pytest.approx(reference[name]), name


def test_finetune_errors_are_clear(seed_runs, tmp_path):
    work, root, _, _ = seed_runs
    base = {**TINY, "data_path": str(root), "checkpoint_dir": str(tmp_path)}
    with pytest.raises(ConfigError, match="needs pre_model_path"):
        run_kgglm("KGGLM", "toy", config_dict={**base, "train_stage": "finetune"})
    with pytest.raises(CheckpointError, match="different model size"):
        run_kgglm("KGGLM", "toy", config_dict={**base, "train_stage": "finetune", "embedding_size": 64,
                                                "pre_model_path": str(work / "saved" / "KGGLM-pretrain")})
    write_atomic_dataset(root, name="other", n_users=30)
    with pytest.raises(CheckpointError, match="dataset 'toy'"):
        run_kgglm("KGGLM", "other", config_dict={**base, "train_stage": "finetune",
                                                  "pre_model_path": str(work / "saved" / "KGGLM-pretrain")})


def test_pop_baseline_and_saved_false(seed_runs, tmp_path):
    _, root, _, fine = seed_runs
    res = run("Pop", "toy", config_dict={**TINY, "data_path": str(root), "checkpoint_dir": str(tmp_path)},
              saved=False)
    assert res.run_dir is None and not any(tmp_path.iterdir())  # nothing left behind
    assert res.checkpoint is None and set(res.test_result) >= {"ndcg@5", "recall@5"}
    # Pop ranks by training popularity only: on this dataset (each user likes one cluster) it must
    # lose to a model that learned the graph.
    assert fine.test_result["ndcg@5"] > res.test_result["ndcg@5"]


def test_resume_continues_the_newest_run_directory(seed_runs):
    work, root, _, fine = seed_runs
    again = run_kgglm("KGGLM", "toy", config_dict={**TINY, "data_path": str(root), "train_stage": "finetune",
                                                    "pre_model_path": "saved/KGGLM-pretrain/", "resume": True})
    assert again.run_dir == fine.run_dir  # same directory, not a new one
    assert again.train_stats["steps"] == fine.train_stats["steps"]  # finished run: nothing trained again
    assert again.best_valid_score == pytest.approx(fine.best_valid_score)
    assert again.test_result["ndcg@5"] == pytest.approx(fine.test_result["ndcg@5"])


def test_kg_completion_task_through_the_quick_start(tmp_path):
    """task: kg_completion runs the second task from the same entry points: filtered metrics of the
    zero-shot and the fine-tuned model, valid chooses, the run directory holds the result."""
    root = write_atomic_dataset(tmp_path / "data")
    base = {**TINY, "data_path": str(root), "checkpoint_dir": str(tmp_path / "saved"), "task": "kg_completion"}
    res = run_kgglm(model="KGGLM", dataset="toy", config_dict=base)
    assert res.train_stage == "kg_completion"
    for col in (res.test_result, res.best_valid_result, res.baselines["zero-shot"]["test"]):
        assert 0.0 < col["mrr"] <= 1.0 and col["mr"] >= 1.0 and 0.0 <= col["hits@10"] <= 1.0
    assert res.best_valid_score == res.best_valid_result["mrr"]
    assert RunResult.load(res.run_dir).test_result == pytest.approx(res.test_result)
    with pytest.raises(ConfigError, match="kg_completion"):
        run_kgglm(model="Pop", dataset="toy", config_dict=base)
    with pytest.raises(ConfigError, match="task"):
        run_kgglm(model="KGGLM", dataset="toy", config_dict={**base, "task": "nope"})


def test_pipeline_without_pretraining_fine_tunes_a_fresh_model(tmp_path):
    """pretrain_epochs 0: no pretrain stage, the fine-tuning starts from a fresh (seeded) model."""
    from kgglm.quick_start import run_pipeline

    root = write_atomic_dataset(tmp_path / "data")
    base = {**TINY, "data_path": str(root), "checkpoint_dir": str(tmp_path / "saved"), "baselines": []}
    scratch = run_pipeline("KGGLM", "toy", config_dict={**base, "pretrain_epochs": 0})
    assert "pretrain_checkpoint" not in scratch.files and "pretrain" not in scratch.train_stats
    assert not (tmp_path / "saved" / scratch.run_dir / "pretrain").exists()
    assert "no pre-training" in (tmp_path / "saved" / scratch.run_dir / "run.log").read_text()
    assert 0.0 <= scratch.test_result["ndcg@5"] <= 1.0 and scratch.train_stats["epochs"] >= 1
    again = run_pipeline("KGGLM", "toy", config_dict={**base, "pretrain_epochs": 0})
    timing = {"seconds", "users_per_second"}
    assert {k: v for k, v in again.test_result.items() if k not in timing} == \
        {k: v for k, v in scratch.test_result.items() if k not in timing}  # seeded
    pre = run_pipeline("KGGLM", "toy", config_dict={**base, "pretrain_epochs": 2})
    assert "pretrain_checkpoint" in pre.files
