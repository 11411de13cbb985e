"""The ``kgglm`` command end to end on a small atomic-file dataset (tiny model through --key=value)."""

from __future__ import annotations

import csv
import json
import subprocess
import sys

import pytest
import yaml

from atomic_helpers import TINY, write_atomic_dataset
from kgglm.cli import main
from kgglm.data import load_dataset


def overrides(d: dict) -> list[str]:
    return [f"--{k}={yaml.safe_dump(v, default_flow_style=True).strip().removesuffix('...').strip()}"
            for k, v in d.items()]


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = write_atomic_dataset(tmp_path_factory.mktemp("data"))
    saved = tmp_path_factory.mktemp("saved")
    args = ["--dataset", "toy", "--data-path", str(root), *overrides({**TINY, "checkpoint_dir": str(saved)})]
    return root, saved, args


@pytest.fixture(scope="module")
def run_dir(env):
    """`kgglm run`: pretrain, finetune and test in one run directory."""
    _, saved, args = env
    assert main(["run", *args]) == 0
    (found,) = saved.glob("KGGLM-toy-run-*")
    return found


def test_help_lists_every_command():
    out = subprocess.run([sys.executable, "-m", "kgglm.cli", "--help"], capture_output=True, text=True, check=True)
    for command in ("run", "train", "evaluate", "recommend", "tune", "data", "paths", "serve"):
        assert command in out.stdout
    out = subprocess.run([sys.executable, "-m", "kgglm.cli", "recommend", "--help"], capture_output=True,
                         text=True, check=True)
    assert "--checkpoint" in out.stdout and "--user" in out.stdout and "--key=value" in out.stdout


def test_run_writes_everything_in_one_directory(run_dir, capsys):
    result = json.loads((run_dir / "result.json").read_text())
    for name in ("config.yaml", "run.log", "result.json", "recommendations.jsonl"):
        assert (run_dir / name).is_file(), name
    assert (run_dir / "checkpoint" / "best" / "model.safetensors").is_file()
    assert any((run_dir / "pretrain").glob("step-*/model.safetensors"))
    assert result["train_stage"] == "pretrain+finetune"
    assert set(result["baselines"]["Pop"]["test"]) >= {"ndcg@5"} and result["test_result"]["valid_paths"] == 1.0
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert config["embedding_size"] == TINY["embedding_size"] and config["dataset"] == "toy"


def test_run_prints_metrics_and_explanations(env, capsys, tmp_path):
    root, _, args = env
    assert main(["run", *args, f"--checkpoint_dir={tmp_path}", "--show_examples=1"]) == 0
    out = capsys.readouterr().out
    assert "KGGLM test" in out and "Pop test" in out and "ndcg@5" in out
    assert "user " in out and " -> " in out  # an explained recommendation
    assert "run directory:" in out


def test_evaluate_from_checkpoint_reproduces_the_run(run_dir, capsys):
    result = json.loads((run_dir / "result.json").read_text())
    capsys.readouterr()
    assert main(["evaluate", "--checkpoint", str(run_dir), "--format", "json"]) == 0
    metrics = json.loads(capsys.readouterr().out)
    for key in ("ndcg@5", "recall@5", "hit@5", "valid_paths"):
        assert metrics[key] == pytest.approx(result["test_result"][key])
    assert main(["evaluate", "--checkpoint", str(run_dir / "checkpoint" / "best"), "--split", "valid"]) == 0
    assert "KGGLM valid" in capsys.readouterr().out


def test_recommend_from_checkpoint(env, run_dir, capsys):
    root = env[0]
    ds = load_dataset("toy", data_path=root)
    users = [str(ds.user_tokens[0]), str(ds.user_tokens[7])]
    capsys.readouterr()
    assert main(["recommend", "--checkpoint", str(run_dir), "--user", users[0], "--user", users[1],
                 "-k", "3", "--format", "json"]) == 0
    recs = json.loads(capsys.readouterr().out)
    assert [r["user"] for r in recs] == users
    for r in recs:
        u = int(ds.user_index([r["user"]])[0])
        seen = {str(ds.item_tokens[i]) for s in ("train", "valid")
                for uu, i in zip(ds.splits[s].users, ds.splits[s].items) if uu == u}
        assert len(r["recommendations"]) == 3
        assert len({x["item"] for x in r["recommendations"]}) == 3
        for x in r["recommendations"]:
            assert x["item"] not in seen
            assert x["path"][0] == r["user"] and x["path"][-1] == x["item"] and x["explanation"]
    assert main(["recommend", "--checkpoint", str(run_dir), "--user", users[0]]) == 0
    out = capsys.readouterr().out
    assert f"user {users[0]}:" in out and " 1. " in out and " -> " in out


def test_recommend_is_the_same_from_the_dataset_cache(env, run_dir, capsys, tmp_path, monkeypatch):
    """Same items, scores and paths parsing the files, writing the cache, reading it (and with two
    threads); a cache hit imports none of the modules the command does not need."""
    import os
    import time

    root = env[0]
    old = time.time() - 3600  # fresh files are not cached (racy timestamps)
    for f in (root / "toy").iterdir():
        os.utime(f, (old, old))
    ds = load_dataset("toy", data_path=root, cache=False)
    cmd = ["recommend", "--checkpoint", str(run_dir), "--user", str(ds.user_tokens[3]), "--user",
           str(ds.user_tokens[11]), "-k", "4", "--format", "json"]
    outs = []
    for cache, extra in (("off", []), (str(tmp_path / "cache"), []), (str(tmp_path / "cache"), []),
                         (str(tmp_path / "cache"), ["--threads", "2"])):
        monkeypatch.setenv("KGGLM_DATASET_CACHE", cache)
        capsys.readouterr()
        assert main(cmd + extra) == 0
        outs.append(capsys.readouterr().out)
    assert len(list((tmp_path / "cache").glob("*.npz"))) == 1
    assert json.loads(outs[0])[0]["recommendations"] and outs[1:3] == [outs[0]] * 2  # one thread: identical
    # two threads sum floating-point products in another order: the same items and paths, scores to 1e-5
    two, one = json.loads(outs[3]), json.loads(outs[0])
    strip = [[{k: v for k, v in x.items() if "score" not in k} for x in r["recommendations"]] for r in one]
    assert [[{k: v for k, v in x.items() if "score" not in k} for x in r["recommendations"]] for r in two] == strip
    assert [x["score"] for r in two for x in r["recommendations"]] == \
        pytest.approx([x["score"] for r in one for x in r["recommendations"]], rel=1e-5)
    code = ("import sys; from kgglm.cli import main; rc = main(sys.argv[1:]); "
            "print(sorted(m for m in ('pandas', 'pooch', 'optuna', 'fastapi', 'uvicorn', 'tqdm.contrib', 'sklearn')"
            " if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code, *cmd], capture_output=True, text=True, check=True,
                         env={**os.environ, "KGGLM_DATASET_CACHE": str(tmp_path / "cache")})
    assert out.stdout.strip().splitlines()[-1] == "[]", out.stderr
    assert out.stdout.strip().splitlines()[0] == outs[0].strip().splitlines()[0]


def test_train_stage_and_errors(env, tmp_path, capsys):
    _, _, args = env
    assert main(["train", *args, f"--checkpoint_dir={tmp_path}", "--train_stage=pretrain", "--pretrain_epochs=1",
                 "--state=WARNING"]) == 0
    assert "checkpoint:" in capsys.readouterr().out
    assert any((tmp_path / "KGGLM-pretrain").glob("step-*"))
    (run,) = tmp_path.glob("KGGLM-toy-pretrain-*")
    assert (run / "run.log").is_file() and " INFO " not in (run / "run.log").read_text()  # state = log level
    assert main(["train", *args, "--learning_rat=0.1"]) == 2
    assert "did you mean 'learning_rate'" in capsys.readouterr().err
    assert main(["recommend", "--checkpoint", str(tmp_path / "nothing"), "--user", "1"]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_data_command_goes_through_the_config(env, capsys):
    """`kgglm data` resolves the config like every other command: presets, files, --key=value."""
    root = env[0]
    assert main(["data", "--dataset", "toy", "--data-path", str(root), "--json"]) == 0
    default = json.loads(capsys.readouterr().out)
    assert main(["data", "--dataset", "toy", "--data-path", str(root), "--json",
                 "--eval_args={split: {RS: [0.5, 0.25, 0.25]}}"]) == 0
    halves = json.loads(capsys.readouterr().out)
    assert halves["interactions"] == default["interactions"]
    assert halves["train_interactions"] < default["train_interactions"]
    assert main(["data", "--dataset", "toy", "--data-path", str(root), "--learning_rat=1"]) == 2
    assert "did you mean" in capsys.readouterr().err


def test_data_command_reads_ml1m_split_files(shared_data, capsys):
    """Defect: `kgglm data --dataset ml1m` split ml1m.inter at random instead of reading the paper's
    split files that `kgglm run` uses (the dataset config's benchmark_filename)."""
    assert main(["data", "--dataset", "ml1m", "--data-path", str(shared_data), "--json"]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert (stats["train_interactions"], stats["valid_interactions"], stats["test_interactions"]) == (
        556_989, 190_063, 185_241)


def test_unknown_user_is_a_clear_error(run_dir, capsys):
    assert main(["recommend", "--checkpoint", str(run_dir), "--user", "no-such-user"]) == 2
    assert "unknown user id 'no-such-user'" in capsys.readouterr().err


def test_tune_two_trials(env, run_dir, tmp_path, capsys):
    root, _, _ = env
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(yaml.safe_dump({**TINY, "data_path": str(root), "checkpoint_dir": str(tmp_path / "runs"),
                                   "train_stage": "finetune", "pre_model_path": str(run_dir / "pretrain"),
                                   "epochs": 1, "export_recommendations": False}))
    params = tmp_path / "hyper.test"
    params.write_text("learning_rate loguniform -7,-5\npath_generation_args.num_beams choice [3,5]\n")
    out_dir = tmp_path / "tune"
    assert main(["tune", "--dataset", "toy", "--config-files", str(cfg), "--params-file", str(params),
                 "--trials", "2", "--storage", f"sqlite:///{tmp_path / 'study.db'}", "--out-dir", str(out_dir),
                 "--tracker", "csv"]) == 0
    out = capsys.readouterr().out
    assert "best" in out and "param:learning_rate" in out
    rows = list(csv.DictReader(open(out_dir / "trials.csv")))
    assert len(rows) == 2 and all(r["state"] == "COMPLETE" for r in rows)
    scores = [float(r["NDCG@5"]) for r in rows]
    best = yaml.safe_load((out_dir / "best_params.yaml").read_text())
    assert best["best_value"] == pytest.approx(max(scores))
    assert set(best["best_params"]) == {"learning_rate", "path_generation_args.num_beams"}
    trial_dirs = list((tmp_path / "runs").glob("KGGLM-toy-finetune-*"))
    assert len(trial_dirs) == 2  # one run directory per trial
    assert all((d / "tracker.csv").is_file() for d in trial_dirs)  # --tracker: one tracked run per trial
    bad = tmp_path / "bad.test"
    bad.write_text("learning_rate loguniform -7\n")
    assert main(["tune", "--dataset", "toy", "--params-file", str(bad)]) == 2
    assert "bad.test, line 1" in capsys.readouterr().err


def test_run_with_pre_model_path_skips_pretraining(env, run_dir, tmp_path):
    _, _, args = env
    assert main(["run", *args, f"--checkpoint_dir={tmp_path}", f"--pre_model_path={run_dir / 'pretrain'}",
                 "--epochs=1"]) == 0
    (new,) = tmp_path.glob("KGGLM-toy-run-*")
    assert not (new / "pretrain").exists() and (new / "checkpoint" / "best").is_dir()
    assert "skipping pre-training" in (new / "run.log").read_text()


def test_baselines_as_models_and_as_run_columns(env, run_dir, tmp_path, capsys):
    """`kgglm train --model BPR` fits a baseline through the same evaluation; `kgglm run
    --baselines=...` prints each baseline as a column beside KGGLM (same split)."""
    _, _, args = env
    assert main(["train", *args, "--model", "BPR", f"--checkpoint_dir={tmp_path}", "--epochs=3",
                 "--train_batch_size=64"]) == 0
    out = capsys.readouterr().out
    assert "BPR valid" in out and "BPR test" in out and "ndcg@5" in out
    assert main(["run", *args, f"--checkpoint_dir={tmp_path}", f"--pre_model_path={run_dir / 'pretrain'}",
                 "--epochs=1", "--baselines=Pop,KGItemKNN", "--show_examples=0"]) == 0
    out = capsys.readouterr().out
    header = out.splitlines()[0]
    assert "KGGLM test" in header and "Pop test" in header and "KGItemKNN test" in header
    (new,) = tmp_path.glob("KGGLM-toy-run-*")
    result = json.loads((new / "result.json").read_text())
    assert set(result["baselines"]) == {"Pop", "KGItemKNN"}
    assert main(["run", *args, "--baselines=Pop,NoSuchModel"]) == 2
    assert "unknown baseline" in capsys.readouterr().err
