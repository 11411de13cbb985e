"""Params-file parsing (every form, malformed lines) and the Optuna search around it.

The search tests (failing trials included) use a cheap objective with a known optimum; the
both-stage, fine-tune-only and shipped ``hyper.test`` tests run one real trial each on a small slice
of the synthetic dataset; the CLI test (tests/test_cli.py) runs a real 2-trial tuning end to end.
"""

from __future__ import annotations

import csv
import itertools
import json
import logging
import math
import re
from pathlib import Path

import pytest
import yaml

from atomic_helpers import TINY, write_atomic_dataset
from kgglm.config import Config, ConfigError
from kgglm.quick_start import run_kgglm
from kgglm.tune import (
    ParamsFileError,
    check_params,
    format_trials,
    params_to_config_dict,
    parse_params_file,
    parse_params_text,
    pretraining_keys,
    tune,
)

REPO = Path(__file__).resolve().parents[1]
SHIPPED = REPO / "hyper.test"

FT = {"train_stage": "finetune", "pre_model_path": "unused-by-these-objectives"}

GOOD = """
# hopwise-style params file
learning_rate loguniform -9,-6     # e^-9 .. e^-6
embedding_size choice [64,128]
dropout uniform 0.0,0.3
warmup_steps quniform 50,250,50
path_generation_args.num_beams choice [10, 20]
path_sample_args.pretrain_hop_length choice [[3,3],[1,3]]
train_stage choice ['finetune']
"""


def test_parse_every_form():
    params = {p.name: p for p in parse_params_text(GOOD, "hyper.test")}
    assert list(params) == ["learning_rate", "embedding_size", "dropout", "warmup_steps",
                            "path_generation_args.num_beams", "path_sample_args.pretrain_hop_length", "train_stage"]
    lr = params["learning_rate"]
    assert (lr.kind, lr.low, lr.high, lr.line) == ("loguniform", -9.0, -6.0, 3)
    assert params["embedding_size"].values == (64, 128)
    assert (params["dropout"].low, params["dropout"].high) == (0.0, 0.3)
    assert (params["warmup_steps"].low, params["warmup_steps"].high, params["warmup_steps"].q) == (50, 250, 50)
    assert params["path_sample_args.pretrain_hop_length"].values == ([3, 3], [1, 3])
    assert params["train_stage"].values == ("finetune",)
    check_params(params.values())  # all names are config keys with fitting values


@pytest.mark.parametrize("line, message", [
    ("learning_rate", "expected 'name type values'"),
    ("learning_rate loguniform", "expected 'name type values'"),
    ("learning_rate unifrm 0,1", "unknown search type 'unifrm'.*did you mean 'uniform'"),
    ("dropout uniform 0.3", "uniform needs 2 comma-separated numbers"),
    ("dropout uniform a,b", "uniform needs 2 comma-separated numbers"),
    ("dropout uniform 0.5,0.1", "needs a < b"),
    ("warmup_steps quniform 50,250", "quniform needs 3 comma-separated numbers"),
    ("warmup_steps quniform 50,250,0", "step q"),
    ("embedding_size choice 64", "non-empty list"),
    ("embedding_size choice []", "non-empty list"),
    ("embedding_size choice [64,64]", "distinct"),
    ("embedding_size choice [64,", "list"),
    ("9lives choice [1]", "bad parameter name"),
])
def test_malformed_lines_name_file_and_line(line, message):
    text = "epochs choice [1,2]\n\n" + line + "\n"
    with pytest.raises(ParamsFileError, match=rf"hyper.test, line 3: .*{message}"):
        parse_params_text(text, "hyper.test")


def test_duplicates_empty_files_and_unknown_keys(tmp_path):
    with pytest.raises(ParamsFileError, match="line 2: parameter 'epochs' already given on line 1"):
        parse_params_text("epochs choice [1]\nepochs choice [2]\n", "f")
    with pytest.raises(ParamsFileError, match="no parameters"):
        parse_params_text("# nothing\n\n", "f")
    with pytest.raises(ParamsFileError, match="not found"):
        parse_params_file(tmp_path / "missing.test")
    with pytest.raises(ParamsFileError, match="line 1: unknown config key 'learning_rat'.*'learning_rate'"):
        check_params(parse_params_text("learning_rat loguniform -9,-6\n"))
    with pytest.raises(ParamsFileError, match="line 1: unknown key 'path_generation_args.num_beam'.*'num_beams'"):
        check_params(parse_params_text("path_generation_args.num_beam choice [1]\n"))
    with pytest.raises(ParamsFileError, match="line 2:.*'epochs'.*expected an integer"):
        check_params(parse_params_text("dropout uniform 0,0.1\nepochs choice [a,b]\n"))
    f = tmp_path / "h.test"
    f.write_text("epochs choice [1,2]\n")
    assert parse_params_file(f)[0].values == (1, 2)


def test_params_to_config_dict():
    assert params_to_config_dict({"a.b": 1, "a.c": 2, "d": 3}) == {"a": {"b": 1, "c": 2}, "d": 3}


def test_grid_search_covers_the_grid_and_finds_the_best(tmp_path):
    params = parse_params_text("embedding_size choice [32,64,128]\npath_generation_args.num_beams choice [5,10]\n")
    seen = []

    def objective(cfg):
        seen.append((cfg["embedding_size"], cfg["path_generation_args"]["num_beams"]))
        assert cfg["epochs"] == 2  # fixed config_dict values reach every trial
        return -abs(cfg["embedding_size"] - 64) + cfg["path_generation_args"]["num_beams"], {"extra": 1}

    res = tune(params, config_dict={**FT, "epochs": 2}, out_dir=tmp_path / "out", objective_fn=objective)
    assert sorted(seen) == sorted((e, b) for e in (32, 64, 128) for b in (5, 10))  # the full grid, once each
    assert res.best_params == {"embedding_size": 64, "path_generation_args.num_beams": 10}
    assert res.best_value == 10
    rows = list(csv.DictReader(Path(res.files["trials_csv"]).read_text().splitlines()))
    assert len(rows) == 6 and {r["state"] for r in rows} == {"COMPLETE"}
    assert json.loads(Path(res.files["trials_json"]).read_text())[0]["extra"] == 1
    assert yaml.safe_load(Path(res.files["best_params"]).read_text())["best_params"]["embedding_size"] == 64


def test_tpe_respects_bounds_and_log_scale(tmp_path):
    params = parse_params_text("learning_rate loguniform -9,-6\nwarmup_steps quniform 50,250,50\n"
                               "dropout uniform 0.1,0.2\nnum_layers choice [1,2]\n")
    values = []

    def objective(cfg):
        values.append(cfg)
        return -abs(math.log(cfg["learning_rate"]) + 7), {}

    res = tune(params, n_trials=12, config_dict=FT, out_dir=tmp_path, objective_fn=objective)
    assert len(values) == 12
    for v in values:
        assert math.exp(-9) <= v["learning_rate"] <= math.exp(-6)  # RecBole/hopwise: bounds are exponents
        assert v["warmup_steps"] in (50, 100, 150, 200, 250) and isinstance(v["warmup_steps"], int)
        assert 0.1 <= v["dropout"] <= 0.2 and v["num_layers"] in (1, 2)
    assert res.best_value == max(-abs(math.log(v["learning_rate"]) + 7) for v in values)


def test_shared_storage_continues_a_study(tmp_path):
    params = parse_params_text("dropout uniform 0.0,0.3\n")
    url = f"sqlite:///{tmp_path / 'study.db'}"
    def objective(cfg):
        return cfg["dropout"], {}

    kw = dict(n_trials=2, config_dict=FT, storage=url, study_name="s", objective_fn=objective)
    first = tune(params, out_dir=tmp_path / "a", **kw)
    second = tune(params, out_dir=tmp_path / "b", **kw)
    assert len(first.trials) == 2 and len(second.trials) == 4  # the second process sees the first's trials
    assert second.best_value == max(t["NDCG@10"] for t in second.trials)


def test_tuning_needs_a_validation_score(tmp_path):
    with pytest.raises(ConfigError, match="only fine-tuning computes"):
        tune(parse_params_text("dropout uniform 0,0.1\n"), out_dir=tmp_path, objective_fn=lambda c: (0.0, {}))


def test_finetune_only_search_needs_a_pre_model_path(tmp_path):
    with pytest.raises(ConfigError, match="pre_model_path"):
        tune(parse_params_text("dropout uniform 0,0.1\n"), config_dict={"train_stage": "finetune"},
             out_dir=tmp_path, objective_fn=lambda c: (0.0, {}))
    # a model-size key makes every trial pretrain first: neither train_stage nor pre_model_path is needed
    res = tune(parse_params_text("num_layers choice [1,2]\n"), out_dir=tmp_path, objective_fn=lambda c: (1.0, {}))
    assert res.best_value == 1.0


def test_pretraining_keys():
    names = ["learning_rate", "embedding_size", "num_heads", "num_layers", "pretrain_epochs", "use_kg_token_types",
             "path_hop_length", "path_sample_args.pretrain_hop_length", "path_sample_args.pretrain_max_paths",
             "path_sample_args", "dropout", "epochs", "path_generation_args.num_beams",
             "path_sample_args.collaborative_path", "MAX_PATHS_PER_USER", "warmup_steps"]
    assert pretraining_keys(names) == ["embedding_size", "num_heads", "num_layers", "pretrain_epochs",
                                       "use_kg_token_types", "path_hop_length", "path_sample_args.pretrain_hop_length",
                                       "path_sample_args.pretrain_max_paths", "path_sample_args"]
    assert pretraining_keys(["learning_rate", "dropout", "path_generation_args.num_beams"]) == []


def test_failing_trials_are_pruned_with_their_reason_and_the_study_goes_on(tmp_path, caplog):
    params = parse_params_text("embedding_size choice [32,48,64]\nnum_heads choice [2,3]\n")

    def objective(cfg):
        if cfg["embedding_size"] % cfg["num_heads"]:
            raise ConfigError(f"embedding_size ({cfg['embedding_size']}) must be divisible by num_heads")
        if cfg["embedding_size"] == 64:
            raise RuntimeError("CUDA out of memory")
        return cfg["embedding_size"] / 100, {}

    with caplog.at_level(logging.WARNING, logger="kgglm"):
        res = tune(params, config_dict=FT, out_dir=tmp_path, objective_fn=objective)
    by = {(t["param:embedding_size"], t["param:num_heads"]): t for t in res.trials}
    assert len(res.trials) == 6  # the whole grid ran: no failure ended the study
    assert {k for k, t in by.items() if t["state"] == "COMPLETE"} == {(32, 2), (48, 2), (48, 3)}
    assert {k for k, t in by.items() if t["state"] == "PRUNED"} == {(32, 3), (64, 2), (64, 3)}
    assert re.match(r"ConfigError: embedding_size \(32\) must be divisible", by[(32, 3)]["error"])
    assert by[(64, 2)]["error"] == "RuntimeError: CUDA out of memory"
    assert "error" not in by[(48, 2)]
    assert res.best_value == 0.48 and res.best_params["embedding_size"] == 48
    table = csv.DictReader(Path(res.files["trials_csv"]).read_text().splitlines())
    rows = {(r["param:embedding_size"], r["param:num_heads"]): r for r in table}
    assert rows[("64", "3")]["error"].startswith("ConfigError") and rows[("64", "3")]["NDCG@10"] == ""
    assert "CUDA out of memory" in caplog.text and "trial" in caplog.text
    long = [{"number": 0, "state": "PRUNED", "error": "ConfigError: " + "x" * 200}]
    assert "x" * 200 not in format_trials(long) and "..." in format_trials(long)  # full text stays in trials.csv


def test_a_study_where_every_trial_fails_still_writes_its_table(tmp_path, caplog):
    def objective(cfg):
        raise ValueError("bad")

    with caplog.at_level(logging.ERROR, logger="kgglm"):
        res = tune(parse_params_text("dropout choice [0.1,0.2]\n"), config_dict=FT, out_dir=tmp_path,
                   objective_fn=objective)
    assert res.best_value is None and res.best_params == {}
    assert [t["state"] for t in res.trials] == ["PRUNED", "PRUNED"]
    assert yaml.safe_load(Path(res.files["best_params"]).read_text())["best_value"] is None
    assert "no trial completed" in caplog.text and "ValueError: bad" in caplog.text


# ------------------------------------------------------------------- real tiny trials
@pytest.fixture(scope="module")
def toy(tmp_path_factory) -> dict:
    """A fine-tuning config with a 32-wide pretrained checkpoint, on a slice small enough that each
    stage is one optimisation step (15 users, 3 paths each, 64 pre-training walks)."""
    root = write_atomic_dataset(tmp_path_factory.mktemp("data"), n_users=15)
    saved = tmp_path_factory.mktemp("saved")
    base = {**TINY, "data_path": str(root), "checkpoint_dir": str(saved), "export_recommendations": False,
            "epochs": 1, "pretrain_epochs": 1, "MAX_PATHS_PER_USER": 3, "path_sample_args": {"pretrain_max_paths": 64}}
    run_kgglm("KGGLM", "toy", config_dict={**base, "train_stage": "pretrain"})
    return {**base, "train_stage": "finetune", "pre_model_path": str(saved / "KGGLM-pretrain")}


def test_model_size_trials_pretrain_and_finetune_ignoring_pre_model_path(toy, tmp_path, caplog):
    runs = tmp_path / "runs"
    # 32 wide with 2 heads would fit the fixed checkpoint; with 3 heads it is an invalid config
    params = parse_params_text("embedding_size choice [32]\nnum_heads choice [2,3]\nnum_layers choice [1]\n")
    with caplog.at_level(logging.INFO, logger="kgglm"):
        res = tune(params, dataset="toy", config_dict={**toy, "checkpoint_dir": str(runs)}, out_dir=tmp_path / "t")
    by = {t["param:num_heads"]: t for t in res.trials}
    assert {k: t["state"] for k, t in by.items()} == {2: "COMPLETE", 3: "PRUNED"}  # the study went on
    assert "ConfigError: embedding_size (32) must be divisible by num_heads (3)" in by[3]["error"]
    run_dir = Path(by[2]["run_dir"])  # searched sizes: the trial pretrained its own model, then fine-tuned it
    assert run_dir.parent == runs and run_dir.name.startswith("KGGLM-toy-run-")
    assert (run_dir / "pretrain").is_dir() and (run_dir / "checkpoint" / "best").is_dir()
    assert yaml.safe_load((run_dir / "config.yaml").read_text())["pre_model_path"] == ""
    assert by[2]["stages"] == "pretrain+finetune" and 0.0 <= by[2]["NDCG@5"] <= 1.0
    assert res.best_value == by[2]["NDCG@5"]
    assert not list(runs.glob("KGGLM-toy-finetune-*"))
    assert re.search(r"pre_model_path .*KGGLM-pretrain.* is ignored", caplog.text)


def test_finetune_only_trials_use_pre_model_path_and_a_size_mismatch_is_a_pruned_trial(toy, tmp_path):
    runs = tmp_path / "runs"
    params = parse_params_text("path_generation_args.num_beams choice [5]\n")
    res = tune(params, dataset="toy", config_dict={**toy, "checkpoint_dir": str(runs)}, out_dir=tmp_path / "a")
    (trial,) = res.trials
    assert trial["state"] == "COMPLETE" and trial["stages"] == "finetune"
    run_dir = Path(trial["run_dir"])
    assert run_dir.name.startswith("KGGLM-toy-finetune-") and not (run_dir / "pretrain").exists()
    # the base config's model size does not fit the checkpoint: recorded, not raised
    res = tune(params, dataset="toy", config_dict={**toy, "checkpoint_dir": str(runs), "embedding_size": 64},
               out_dir=tmp_path / "b")
    (trial,) = res.trials
    assert trial["state"] == "PRUNED" and "different model size" in trial["error"]
    assert res.best_value is None


def test_shipped_params_file_runs_as_written(toy, tmp_path):
    params = parse_params_file(SHIPPED)
    check_params(params)
    names = [p.name for p in params]
    assert {"embedding_size", "num_heads", "num_layers", "pretrain_epochs"} <= set(pretraining_keys(names))
    # no combination of its choices is an invalid config (no trial is wasted on one)
    choices = [p for p in params if p.kind == "choice"]
    for combo in itertools.product(*(p.values for p in choices)):
        Config("KGGLM", "ml-100k", config_dict=params_to_config_dict({p.name: v for p, v in zip(choices, combo)}))
    # a real trial as written, with the fixed 32-wide pre_model_path of the base config (ignored)
    res = tune(params, dataset="toy", n_trials=1, config_dict={**toy, "checkpoint_dir": str(tmp_path / "runs")},
               out_dir=tmp_path / "t")
    (trial,) = res.trials
    assert trial["state"] == "COMPLETE" and trial["stages"] == "pretrain+finetune", trial.get("error")
    assert trial["param:embedding_size"] in (128, 256) and res.best_value == trial["NDCG@5"]


def test_readme_shows_the_shipped_params_file():
    readme = (REPO / "README.md").read_text()
    section = readme.split("### Tuning: the params file", 1)[1]
    block = re.search(r"```\n(.*?)```", section, re.DOTALL).group(1)

    def space(params):  # comments may differ; the searched space may not
        return [(p.name, p.kind, p.values, p.low, p.high, p.q) for p in params]

    assert space(parse_params_text(block, "README.md")) == space(parse_params_file(SHIPPED))
